"""The student: the pretrained model cut to K of its L blocks, before anything trains.

Which blocks to keep matters more than how many: DistilBERT initialises its 6-layer student
from teacher layers [0, 2, 4, 7, 9, 11] ("good initialization ... is crucial"), and Sajjad et
al. 2020 (https://arxiv.org/abs/2004.03844) find that dropping the top layers keeps ~98% with 6
of 12. ``even`` reproduces DistilBERT's choice; ``first`` keeps the bottom K.

>>> pick_blocks(12, 6, "even")
[0, 2, 4, 7, 9, 11]
>>> pick_blocks(6, 3, "even"), pick_blocks(6, 3, "first"), pick_blocks(6, 1, "even")
([0, 3, 5], [0, 1, 2], [0])
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from freezetune.errors import UserError
from freezetune.units import Units

__all__ = ["LAYER_COUNT_KEYS", "cut_blocks", "pick_blocks"]

#: config attributes that hold the number of blocks, across families
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layers", "n_layer", "num_layers")
#: per-layer config lists that must shrink with the blocks (e.g. Gemma 2's attention types)
PER_LAYER_KEYS = ("layer_types",)


def pick_blocks(num_blocks: int, keep: int, how: str) -> list[int]:
    """Indices of the ``keep`` blocks a student of a ``num_blocks`` model keeps.

    ``even`` spreads them from the first block to the last (rounding half up); with one block
    it keeps the first, since the lower layers matter most.
    """
    if not 1 <= keep <= num_blocks:
        raise UserError(
            f"--student-layers {keep} does not fit the model's {num_blocks} blocks; "
            f"pass 1..{num_blocks}"
        )
    if how == "first" or keep == 1:
        return list(range(keep))
    if how != "even":
        raise UserError(f"unknown --student-pick {how!r}; choose even or first")
    step = (num_blocks - 1) / (keep - 1)
    return [math.floor(i * step + 0.5) for i in range(keep)]


def _configs(model: nn.Module) -> list[Any]:
    """Every distinct config object a saved model writes (wrapper, encoder, submodules)."""
    found: list[Any] = []
    for module in model.modules():
        for cfg in (
            getattr(module, "config", None),
            getattr(getattr(module, "config", None), "encoder", None),
        ):
            if cfg is not None and not isinstance(cfg, dict) and all(cfg is not f for f in found):
                found.append(cfg)
    return found


def _set_layer_count(configs: list[Any], old: int, kept: list[int]) -> None:
    for cfg in configs:
        for key in LAYER_COUNT_KEYS:
            if getattr(cfg, key, None) == old:
                setattr(cfg, key, len(kept))
        for key in PER_LAYER_KEYS:
            values = getattr(cfg, key, None)
            if isinstance(values, list) and len(values) == old:
                setattr(cfg, key, [values[i] for i in kept])


def cut_blocks(model: nn.Module, units: Units, kept: list[int]) -> None:
    """Keep only blocks ``kept`` of ``model`` (in order), in place, and say so in its config,
    so that the saved student reloads as a ``len(kept)``-block model."""
    if units.shared_blocks:
        raise UserError(
            f"{units.family} shares one block across its layers, so there are no blocks to cut; "
            "drop --student-layers or pick another student model"
        )
    parent_path, _, attr = units.blocks_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    blocks = getattr(parent, attr)
    old = len(blocks)
    setattr(parent, attr, nn.ModuleList([blocks[i] for i in kept]))
    for new_index, block in enumerate(getattr(parent, attr)):
        for module in block.modules():  # decoders index their KV cache by layer_idx
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    configs = _configs(model)
    if not any(getattr(cfg, key, None) == old for cfg in configs for key in LAYER_COUNT_KEYS):
        raise UserError(
            f"cannot tell where {units.family}'s config counts its {old} blocks; "
            "a cut student would not reload: drop --student-layers"
        )
    _set_layer_count(configs, old, kept)
