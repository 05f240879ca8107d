"""Whether and where a run caches frozen-prefix states (``cache.py`` is how a cache works).

A run has at most two caches, one per split; they are built before training, saved in
checkpoints, and closed (their spilled files deleted) when the run is done.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from freezetune import distributed
from freezetune.cache import PrefixCache, check_cacheable
from freezetune.cache_store import Shapes
from freezetune.config import TrainConfig
from freezetune.freezing import FreezeSpec
from freezetune.units import Units

__all__ = ["Caches", "caches_prefix", "make_caches"]


@dataclass(frozen=True)
class Caches:
    """A run's activation caches: ``train`` and ``validation``, each None when not cached."""

    train: PrefixCache | None = None
    validation: PrefixCache | None = None

    def items(self) -> Iterator[tuple[str, PrefixCache]]:
        """(split, cache) for each cache that exists, train first (the checkpoint's file names)."""
        for name, cache in (("train", self.train), ("validation", self.validation)):
            if cache is not None:
                yield name, cache

    def get(self, name: str) -> PrefixCache | None:
        """The cache of split ``name`` ("train" or "validation")."""
        return self.train if name == "train" else self.validation

    def stats(self) -> dict[str, dict[str, Any]] | None:
        """Each cache's numbers for ``result.json``, or None when nothing was cached."""
        return {name: cache.stats() for name, cache in self.items()} or None

    def close(self) -> None:
        """Free them: a spilled cache's file can be gigabytes and the run is done with it."""
        for _, cache in self.items():
            cache.close()


def _folder(train: TrainConfig, out: Path) -> Path:
    if not train.cache_dir:
        return out / "cache"
    # a cache_dir may be shared (a study's base config): one subfolder per run
    digest = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]
    return Path(train.cache_dir) / f"{out.name}-{digest}"


def _why_not(model: nn.Module, units: Units, spec: FreezeSpec, train: TrainConfig) -> str | None:
    """None when this run can cache frozen-prefix states, else the reason it cannot."""
    if not train.cache:
        return "turned off"
    if spec.train_bn and units.norms:
        return "train-bn keeps the BatchNorm of frozen units training, so they are not fixed"
    return check_cacheable(model, units)


def make_caches(
    model: nn.Module,
    units: Units,
    spec: FreezeSpec,
    train: TrainConfig,
    out: Path,
    splits: dict[str, list[dict]],
    modality: Shapes,
) -> Caches:
    """One cache per split ("train", "validation") of features, or none when caching is off
    or not exact for this run (then the reason is printed once). ``modality`` (the run's
    ``modality.Modality``) says how its examples' states are shaped."""
    d = distributed.current()
    reason = _why_not(model, units, spec, train)
    if reason is not None:
        if train.cache and d.is_main:
            print(f"caching off: {reason}", file=sys.stderr)
        return Caches()
    folder, rank = _folder(train, out), f"-rank{d.rank}" if d.enabled else ""
    built = {
        name: PrefixCache(
            model,
            units,
            modality.lengths(features),
            train.cache_dtype,
            spill=folder / f"{name}{rank}.npy",  # each rank caches its own shard
            budget_mb=train.cache_budget_mb * d.world,  # a rank fills only its share of it
            shapes=modality,
            count=len(features),
        )
        for name, features in splits.items()
    }
    return Caches(built.get("train"), built.get("validation"))


def caches_prefix(model: nn.Module, units: Units, spec: FreezeSpec, train: TrainConfig) -> bool:
    """Whether this run will cache frozen-prefix states (at least 2 units frozen some time)."""
    if _why_not(model, units, spec, train) is not None:
        return False
    return spec.schedule is not None or spec.frozen_units(units.num_blocks) >= 2
