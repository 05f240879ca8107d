"""Frozen-prefix activation caching: frozen units run once, later epochs start above them.

When the first ``frozen_units`` units (embeddings + ``frozen_units - 1`` blocks) are frozen,
they are a fixed function (eval mode, no gradient), so the hidden state entering the first
trainable block is stored per example, unpadded, the first time a batch computes it. Once every example of a batch
is stored, the model runs from that block on: the frozen blocks are swapped out of the block
list for a stand-in that returns the stored states, and the model's own code still builds the
attention mask, positions and final norm, so nothing architecture-specific is re-implemented.
When more units freeze the cache is *advanced* (only the newly frozen blocks run on the stored
states); when units thaw it is dropped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from freezetune.cache_store import FixedStates, Shapes, States, TokenStates
from freezetune.errors import UserError
from freezetune.families import get_family, hidden_size
from freezetune.units import Units

__all__ = ["PrefixCache", "check_cacheable"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_cacheable(model: nn.Module, units: Units) -> str | None:
    """None when frozen-prefix caching is exact for this model, else the reason it is not."""
    if units.shared_blocks:
        return f"{units.family} shares weights across layers, so a frozen prefix is not a prefix"
    family = get_family(units.family)
    if family is None or not family.cacheable:  # Family.cacheable: checked in test_cache.py
        return f"caching is not verified for {units.family} models"
    after = units.units[1].modules[1:]  # Layout.first_block: what runs right after block 0
    if after:  # (DeBERTa-v2's encoder.conv)
        return f"{', '.join(after)} runs after block 0, so a cache cannot start above it"
    return None


class _Given(nn.Module):
    """Stands in for the frozen blocks: returns the stored states, whatever it is passed."""

    def __init__(self, hidden: torch.Tensor, as_tuple: bool):
        super().__init__()
        self.hidden, self.as_tuple = hidden, as_tuple

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return (self.hidden, None) if self.as_tuple else self.hidden


class _Captured(Exception):
    def __init__(self, hidden: torch.Tensor):
        self.hidden = hidden


class PrefixCache:
    """Runs a model's forward from cached frozen-prefix states when it can (see module doc).

    ``lengths`` are the examples' token counts (text); ``lengths=None`` with ``count``
    examples stores fixed-shape states instead (images: a feature map or a ViT's tokens per
    example, shaped at the first store). Either spills to ``spill`` beyond ``budget_mb``.
    ``shapes`` is the run's modality (``Modality.lengths`` gives ``lengths``): it measures
    batches and builds the stand-in inputs that advancing the cache runs on.

    >>> cache = PrefixCache(model, units, [12, 7, 30], shapes=TEXT)  # doctest: +SKIP
    >>> out = cache.forward(batch, frozen_units=3)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        units: Units,
        lengths: list[int] | None,
        dtype: str = "float32",
        spill: Path | None = None,
        budget_mb: float = 4096,
        *,
        shapes: Shapes,
        count: int = 0,
    ):
        self.model, self.units, self.shapes = model, units, shapes
        self.runner: Any = model  # what training calls: the model, or its DDP wrapper
        self.blocks: nn.ModuleList = model.get_submodule(units.blocks_path)  # type: ignore[assignment]
        parent, _, attr = units.blocks_path.rpartition(".")
        self.parent, self.attr = model.get_submodule(parent), attr
        self.input_shape: tuple[int, ...] = ()  # one example's inputs, as the last batch had
        self.store: States = self._states(lengths, DTYPES[dtype], spill, budget_mb, count)
        self.advance_time = self.store_time = 0.0  # seconds spent building the cache
        family = get_family(units.family)
        self.as_tuple = family is not None and family.block_output == "tuple"
        self.hits = self.misses = 0

    @property
    def path(self) -> Path | None:
        """The file the states spilled to, or None while they are in RAM."""
        return self.store.spilled

    def _states(
        self,
        lengths: list[int] | None,
        dtype: torch.dtype,
        spill: Path | None,
        budget_mb: float,
        count: int,
    ) -> States:
        if lengths is None:
            return FixedStates(
                count, dtype, spill, budget_mb, lambda: self.input_shape, self.shapes
            )
        hidden = self._hidden_size()
        size_mb = sum(lengths) * hidden * dtype.itemsize / 2**20
        path = spill if spill is not None and size_mb > budget_mb else None
        return TokenStates(lengths, hidden, dtype, path, self.shapes)

    def _hidden_size(self) -> int:
        config: Any = getattr(self.model, "config", None)
        size = hidden_size(getattr(config, "encoder", config))
        if size is None:
            raise UserError("cannot tell the model's hidden size for caching; pass --no-cache")
        return size

    # 1) where the state is read: the input of the first trainable block, or (head only)
    #    the output of the last block
    def _hook(self, frozen_units: int, sink: Any) -> Any:
        first_trainable = frozen_units - 1
        if first_trainable < len(self.blocks):

            def pre(_module: nn.Module, args: tuple, kwargs: dict) -> None:
                sink(args[0] if args else kwargs["hidden_states"])

            return self.blocks[first_trainable].register_forward_pre_hook(pre, with_kwargs=True)

        def post(_module: nn.Module, _args: tuple, output: Any) -> None:
            sink(output[0] if isinstance(output, tuple) else output)

        return self.blocks[-1].register_forward_hook(post)

    # 2) where it is written back: blocks[:frozen_units-1] replaced by a stand-in
    @contextlib.contextmanager
    def _start_at(
        self, frozen_units: int, hidden: torch.Tensor, upto: int | None = None
    ) -> Iterator[None]:
        kept = list(self.blocks)[frozen_units - 1 : upto]
        setattr(self.parent, self.attr, nn.ModuleList([_Given(hidden, self.as_tuple), *kept]))
        try:
            yield
        finally:
            setattr(self.parent, self.attr, self.blocks)

    def set_level(self, frozen_units: int) -> None:
        """Frozen units changed: advance stored states to ``frozen_units``, or drop them."""
        if frozen_units == self.store.level:
            return
        if frozen_units < 2 or frozen_units < self.store.level or not self.store.filled.any():
            self.store.reset(frozen_units)
            return
        self._advance(frozen_units)

    def close(self) -> None:
        """Free the stored states; delete the spilled file (and its folder, once empty)."""
        path = self.path
        self.store.close()  # deletes its file
        if path is not None:
            with contextlib.suppress(OSError):
                path.parent.rmdir()

    def stats(self) -> dict[str, Any]:
        return {
            "bytes": self.store.nbytes,
            "file": str(self.path) if self.path else None,
            "hits": self.hits,
            "misses": self.misses,
            "level": self.store.level,
            "store_time_s": round(self.store_time, 3),
            "advance_time_s": round(self.advance_time, 3),
        }

    @torch.no_grad()
    def _advance(self, frozen_units: int, batch_size: int = 64) -> None:
        started = time.perf_counter()
        old, order, target = self.store.level, self.store.advance_order(), self.store.successor()
        modes = {m: m.training for m in self.model.modules()}  # frozen units stay in eval()
        self.model.eval()
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            inputs = self.store.inputs_for(index, self._device())
            hidden = self.store.gather(index, inputs).to(self._device())
            target.store(index, self._run_to(old, frozen_units, hidden, inputs))
        if target is not self.store:
            self.store.close()
            self.store = target
        self.store.level = frozen_units
        for module, training in modes.items():
            module.train(training)
        self.advance_time += time.perf_counter() - started

    def _run_to(
        self, old: int, frozen_units: int, hidden: torch.Tensor, inputs: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        def stop(state: torch.Tensor) -> None:
            raise _Captured(state)

        with self._start_at(old, hidden):
            handle = self._hook(frozen_units, stop)  # hooks sit on the block objects themselves
            try:
                self.model(**inputs)
            except _Captured as done:
                return done.hidden
            finally:
                handle.remove()
        raise AssertionError("the capture hook did not fire")

    def _store(self, index: torch.Tensor, hidden: torch.Tensor) -> None:
        started = time.perf_counter()
        self.store.store(index, hidden)
        self.store_time += time.perf_counter() - started

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward(self, batch: Mapping[str, torch.Tensor], frozen_units: int) -> Any:
        """The model's output for ``batch`` with ``frozen_units`` leading units frozen, read
        from the cache when it can."""
        index = batch["index"].cpu()  # the cache lives in host memory
        batch = {k: v for k, v in batch.items() if k != "index"}  # the caller's stays whole
        self.input_shape = self.shapes.input_shape(batch)
        self.set_level(frozen_units)
        if frozen_units < 2:
            return self.runner(**batch)
        if self.store.has(index):
            self.hits += 1
            hidden = self.store.gather(index, batch).to(self._device())
            with self._start_at(frozen_units, hidden):
                return self.runner(**batch)
        self.misses += 1
        handle = self._hook(frozen_units, lambda h: self._store(index, h))
        try:
            return self.runner(**batch)
        finally:
            handle.remove()
