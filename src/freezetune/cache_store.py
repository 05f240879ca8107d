"""Where a frozen-prefix cache keeps its states, per example: two shapes of the same idea.

- :class:`TokenStates` (text): unpadded per-example token states in one flat
  ``[total tokens, hidden]`` array; a batch is re-padded to its own width when read.
- :class:`FixedStates` (images): every example's state has one shape (a CNN stage's
  ``[C, H, W]`` feature map, or a ViT's ``[tokens, hidden]``), learnt from the first batch
  stored; the shape changes with the level, so advancing writes into a new store.

Both live in RAM, or in a memory-mapped ``.npy`` file when larger than the budget (numpy has no
bfloat16: its bits are stored as int16 and viewed back). ``PrefixCache`` (``cache.py``) only
calls what :class:`States` names. Neither knows what the model reads: the run's modality
(:class:`Shapes`) measures its batches and builds the stand-in inputs a cached prefix runs on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

__all__ = ["FixedStates", "Inputs", "Shapes", "States", "TokenStates", "allocate"]

#: model inputs by name (a batch, or the stand-in a cached prefix runs on)
Inputs = dict[str, torch.Tensor]


class Shapes(Protocol):
    """What a cache needs of the run's modality (``modality.Modality`` has these methods)."""

    def lengths(self, features: Sequence[dict]) -> list[int] | None:
        """Each example's sequence length when its state is one row per position (text:
        stored unpadded), None when every example's state has one shape (images)."""
        ...

    def input_shape(self, batch: Inputs) -> tuple[int, ...]:
        """One example's input shape in ``batch`` (text: its padded width, images: [C, H, W])."""
        ...

    def stand_in(
        self,
        count: int,
        shape: tuple[int, ...],
        lengths: torch.Tensor | None,
        device: torch.device,
    ) -> Inputs:
        """Inputs of ``count`` examples of one example's ``shape`` that the model runs on in
        place of cached ones: only their shape matters (and the real ``lengths`` of sequences
        in a padded width, None for fixed shapes); the cached state replaces what they give."""
        ...


class States(Protocol):
    """What ``PrefixCache`` needs of a store of per-example states."""

    filled: torch.Tensor  # [examples] bool: which examples are stored
    level: int  # frozen_units when the stored states were computed
    dtype: torch.dtype
    data: torch.Tensor  # the stored states (what checkpoints save)
    spilled: Path | None  # the memory-mapped file in use, None while in RAM (close deletes it)

    @property
    def nbytes(self) -> int: ...
    def reset(self, frozen_units: int) -> None: ...
    def has(self, index: torch.Tensor) -> bool: ...
    def store(self, index: torch.Tensor, hidden: torch.Tensor) -> None: ...
    def gather(self, index: torch.Tensor, batch: Inputs) -> torch.Tensor: ...
    def inputs_for(self, index: torch.Tensor, device: torch.device) -> Inputs: ...
    def advance_order(self) -> torch.Tensor: ...
    def successor(self) -> States: ...
    def load(self, data: torch.Tensor, filled: torch.Tensor, level: int) -> None: ...
    def close(self) -> None: ...


def allocate(shape: tuple[int, ...], dtype: torch.dtype, path: Path | None) -> torch.Tensor:
    """An uninitialised tensor in RAM, or backed by the ``.npy`` file ``path``."""
    if path is None:
        return torch.empty(shape, dtype=dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    np_dtype = np.float32 if dtype == torch.float32 else np.int16
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np_dtype, shape=shape)
    raw = torch.from_numpy(array)
    return raw if dtype == torch.float32 else raw.view(dtype)


class TokenStates:
    """Text: unpadded per-example states in one flat [total tokens, hidden] array."""

    def __init__(
        self,
        lengths: list[int],
        hidden: int,
        dtype: torch.dtype,
        path: Path | None,
        shapes: Shapes,
    ):
        self.shapes = shapes
        self.lengths = torch.tensor(lengths, dtype=torch.long)
        self.offsets = torch.cumsum(torch.tensor([0, *lengths]), 0)
        self.dtype, self.spilled = dtype, path
        self.data = allocate((int(self.offsets[-1]), hidden), dtype, path)
        self.filled = torch.zeros(len(lengths), dtype=torch.bool)
        self.level = 0

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def reset(self, frozen_units: int) -> None:
        self.filled.zero_()
        self.level = frozen_units

    def has(self, index: torch.Tensor) -> bool:
        return bool(self.filled[index].all())

    def _rows(self, index: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(flat rows of the real tokens, their [batch, width] mask) for padded examples."""
        position = torch.arange(width)
        real = position[None, :] < self.lengths[index][:, None]
        return (self.offsets[index][:, None] + position[None, :])[real], real

    def store(self, index: torch.Tensor, hidden: torch.Tensor) -> None:
        hidden = hidden.detach().to("cpu", self.dtype)
        rows, real = self._rows(index, hidden.shape[1])
        self.data[rows] = hidden[real]  # one scatter for the whole batch, padding left out
        self.filled[index] = True

    def gather(self, index: torch.Tensor, batch: Inputs) -> torch.Tensor:
        width = self.shapes.input_shape(batch)[0]
        rows, real = self._rows(index, width)
        out = torch.zeros((len(index), width, self.data.shape[1]), dtype=torch.float32)
        out[real] = self.data[rows].float()
        return out

    def inputs_for(self, index: torch.Tensor, device: torch.device) -> Inputs:
        """Stand-in inputs for these examples: their real lengths in the width of the longest."""
        lengths = self.lengths[index]
        return self.shapes.stand_in(len(index), (int(lengths.max()),), lengths, device)

    def advance_order(self) -> torch.Tensor:
        """Stored examples, longest first (batches of similar widths)."""
        filled = self.filled.nonzero().flatten()
        return filled[torch.argsort(self.lengths[filled], descending=True)]

    def successor(self) -> TokenStates:
        return self  # same width at every level: advanced in place, batch by batch

    def load(self, data: torch.Tensor, filled: torch.Tensor, level: int) -> None:
        self.data.copy_(data)
        self.filled.copy_(filled)
        self.level = level

    def close(self) -> None:
        spilled, self.spilled = self.spilled, None
        self.data = torch.empty((0, 1), dtype=self.dtype)
        if spilled is not None:
            spilled.unlink(missing_ok=True)


class FixedStates:
    """Images: one state shape for every example, allocated at the first store of a level.

    ``budget_mb`` decides RAM or a file once the shape is known; ``input_shape`` (one example's
    input shape, recorded from the first real batch) sizes the stand-in inputs ``shapes`` builds.
    """

    def __init__(
        self,
        count: int,
        dtype: torch.dtype,
        path: Path | None,
        budget_mb: float,
        input_shape: Callable[[], tuple[int, ...]],
        shapes: Shapes,
    ):
        self.shapes = shapes
        self.count, self.dtype, self.path, self.budget_mb = count, dtype, path, budget_mb
        self.input_shape = input_shape
        self.data = torch.empty((0,), dtype=dtype)
        self.filled = torch.zeros(count, dtype=torch.bool)
        self.level = 0
        self.spilled: Path | None = None  # the file in use, when spilled

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def _ensure(self, shape: tuple[int, ...]) -> None:
        if tuple(self.data.shape[1:]) == shape and self.data.shape[0] == self.count:
            return
        size_mb = self.count * math.prod(shape) * self.dtype.itemsize / 2**20
        self.close()
        self.spilled = self.path if self.path is not None and size_mb > self.budget_mb else None
        self.data = allocate((self.count, *shape), self.dtype, self.spilled)

    def reset(self, frozen_units: int) -> None:
        self.filled.zero_()
        self.level = frozen_units

    def has(self, index: torch.Tensor) -> bool:
        return bool(self.filled[index].all())

    def store(self, index: torch.Tensor, hidden: torch.Tensor) -> None:
        hidden = hidden.detach().to("cpu", self.dtype)
        self._ensure(tuple(hidden.shape[1:]))
        self.data[index] = hidden
        self.filled[index] = True

    def gather(self, index: torch.Tensor, batch: Inputs) -> torch.Tensor:
        return self.data[index].float()

    def inputs_for(self, index: torch.Tensor, device: torch.device) -> Inputs:
        return self.shapes.stand_in(len(index), self.input_shape(), None, device)

    def advance_order(self) -> torch.Tensor:
        return self.filled.nonzero().flatten()

    def successor(self) -> FixedStates:
        """An empty store for the next level (its states have another shape); its file, if
        it spills, alternates with this one's so that this one can still be read."""
        path = self.path
        if path is not None and self.spilled == path:
            path = path.with_name(path.stem + "-next" + path.suffix)
        elif path is not None and path.stem.endswith("-next"):
            path = path.with_name(path.stem.removesuffix("-next") + path.suffix)
        return FixedStates(
            self.count, self.dtype, path, self.budget_mb, self.input_shape, self.shapes
        )

    def load(self, data: torch.Tensor, filled: torch.Tensor, level: int) -> None:
        if data.numel():
            self._ensure(tuple(data.shape[1:]))
            self.data.copy_(data)
        self.filled.copy_(filled)
        self.level = level

    def close(self) -> None:
        spilled, self.spilled = self.spilled, None
        self.data = torch.empty((0,), dtype=self.dtype)
        if spilled is not None:
            spilled.unlink(missing_ok=True)
