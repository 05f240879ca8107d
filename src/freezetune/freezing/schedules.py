"""freezetune's freezing schedules as pure decisions: "how many leading units are frozen now?".

Each answers from training progress (:class:`~freezetune.freezing.base.Progress`); their
``--freeze`` options and registration are in :mod:`freezetune.freezing.builtin`.
Algorithms and sources: ../shared/REFERENCE.md section 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from freezetune.freezing.base import Progress, Stateless, linear_warmup_decay, slanted_triangular

__all__ = ["AutoFreeze", "Gradual", "Progressive", "Static", "TwoPhase"]


@dataclass
class Static(Stateless):
    """A fixed prefix: ``frozen`` leading units, all the time (full, bottom:K, head, ...)."""

    frozen: int
    name: str = "static"

    def frozen_units(self, progress: Progress) -> int:
        return self.frozen


@dataclass
class TwoPhase(Stateless):
    """Keras' recipe / LP-FT (Kumar et al. 2022): train the head alone for ``head_steps``,
    then unfreeze down to ``unfreeze_to`` frozen units and fine-tune at ``scale`` x the LR.

    Each phase gets its own linear warmup and decay, so the body starts gently from a head
    that already fits the task.
    """

    num_blocks: int
    head_steps: int
    unfreeze_to: int = 0
    scale: float = 1.0
    warmup_ratio: float = 0.1
    head_lr_factor: float = 10.0  # phase 1's LR relative to the head's base LR
    name: str = "two-phase"

    def frozen_units(self, progress: Progress) -> int:
        return self.num_blocks + 1 if progress.step < self.head_steps else self.unfreeze_to

    def lr_factor(self, unit: int, progress: Progress) -> float | None:
        if progress.step < self.head_steps:
            factor = linear_warmup_decay(progress.step, self.head_steps, self.warmup_ratio)
            return self.head_lr_factor * factor
        step, total = progress.step - self.head_steps, progress.total - self.head_steps
        return self.scale * linear_warmup_decay(step, total, self.warmup_ratio)


@dataclass
class Gradual(Stateless):
    """ULMFiT's gradual unfreezing (Howard & Ruder 2018): only the top unit (the head) trains
    at first; one more unit thaws every ``interval`` steps, from the top down.

    >>> g = Gradual(num_blocks=2, interval=10)
    >>> [g.frozen_units(Progress(s, 100, 10)) for s in (0, 9, 10, 25, 35)]
    [3, 3, 2, 1, 0]
    """

    num_blocks: int
    interval: int
    stlr: bool = False  # slanted triangular LR instead of warmup + linear decay
    name: str = "gradual"

    def frozen_units(self, progress: Progress) -> int:
        return max(0, self.num_blocks + 1 - progress.step // max(1, self.interval))

    def lr_factor(self, unit: int, progress: Progress) -> float | None:
        return slanted_triangular(progress.step, progress.total) if self.stlr else None


@dataclass
class Progressive(Stateless):
    """Progressive freezing, bottom-up.

    ``mode="freezeout"`` (Brock et al. 2017): unit i of the L + 1 non-head units stops
    training at fraction ``t_i = s(t0 + (1 - t0) * i / L)`` (s cubic), with its own cosine LR
    ``(1 / t_i) * 0.5 * (1 + cos(pi * step / (t_i * T)))`` until then. The top block
    (``t_L = 1``) and the head never freeze.
    ``mode="linear"`` (Composer's LayerFreezing): the frozen fraction of the non-head units
    grows linearly from ``freeze_start`` to ``freeze_level`` of training.
    """

    num_blocks: int
    mode: str = "freezeout"
    t0: float = 0.8
    scale: str = "cubic"
    freeze_start: float = 0.5
    freeze_level: float = 1.0
    name: str = "progressive"

    def stop_fraction(self, unit: int) -> float:
        """FreezeOut's t_i for unit ``unit`` (0 = embeddings, L = top block).

        >>> Progressive(num_blocks=4).stop_fraction(0), Progressive(num_blocks=4).stop_fraction(4)
        (0.512, 1.0)
        """
        x = self.t0 + (1 - self.t0) * unit / max(1, self.num_blocks)
        return round(x**3 if self.scale == "cubic" else x, 12)

    def frozen_units(self, progress: Progress) -> int:
        f = progress.fraction
        if self.mode == "linear":
            if f < self.freeze_start:
                return 0
            share = (f - self.freeze_start) / max(1e-12, 1 - self.freeze_start)
            return min(self.num_blocks, math.floor(self.freeze_level * share * self.num_blocks))
        units = range(self.num_blocks + 1)
        return next((i for i in units if f < self.stop_fraction(i)), self.num_blocks)

    def lr_factor(self, unit: int, progress: Progress) -> float | None:
        if self.mode != "freezeout" or unit > self.num_blocks:
            return None  # the head keeps the run's default schedule
        t_i = self.stop_fraction(unit)
        span = t_i * progress.total
        if progress.step >= span:
            return 0.0
        return (1 / t_i) * 0.5 * (1 + math.cos(math.pi * progress.step / span))


@dataclass
class AutoFreeze:
    """AutoFreeze (Liu, Agarwal, Venkataraman 2021, arXiv 2102.01386), as in REFERENCE.md.

    Every ``interval`` steps the loop passes ``g[l]``, the L1 norm of block l's gradients
    accumulated since the last decision. The first decision only stores them. Later ones
    compute the relative change ``r[l] = |prev[l] - g[l]| / prev[l]`` of trainable blocks,
    take the ``percentile``-th percentile of those as the threshold, and freeze every block
    below the first one whose change is still >= the threshold. Freezing is monotone, the
    embeddings freeze with block 0, and the top block and head always train.
    """

    num_blocks: int
    interval: int
    percentile: float = 50.0
    name: str = "autofreeze"
    blocks_frozen: int = 0
    prev: list[float] | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def is_decision_step(self, step: int) -> bool:
        """True after optimizer step ``step`` (1-based count of finished steps) ends an interval."""
        return step > 0 and step % max(1, self.interval) == 0

    def frozen_units(self, progress: Progress) -> int:
        return self.blocks_frozen + 1 if self.blocks_frozen else 0

    def lr_factor(self, unit: int, progress: Progress) -> float | None:
        return None

    def decide(self, norms: list[float], step: int = 0) -> int:
        """Take a decision from per-block gradient L1 norms; return the blocks frozen now.

        >>> a = AutoFreeze(num_blocks=4, interval=10)
        >>> a.decide([1.0, 1.0, 1.0, 1.0])  # first decision: remember only
        0
        >>> a.decide([1.0, 0.5, 0.2, 0.1])  # r = [0, .5, .8, .9]; threshold .65 -> r[2]
        2
        """
        assert len(norms) == self.num_blocks, (len(norms), self.num_blocks)
        if self.prev is None:
            self.prev = list(norms)
            return self.blocks_frozen
        trainable = range(self.blocks_frozen, self.num_blocks)
        r = [0.0] * self.num_blocks
        for i in trainable:
            r[i] = abs(self.prev[i] - norms[i]) / self.prev[i] if self.prev[i] > 0 else 0.0
        threshold = float(np.percentile([r[i] for i in trainable], self.percentile))
        first_changing = next((i for i in trainable if r[i] >= threshold), self.blocks_frozen)
        # monotone (the reference code does not guarantee it); the top block always trains
        self.blocks_frozen = min(self.num_blocks - 1, max(self.blocks_frozen, first_changing))
        self.decisions.append(
            {"step": step, "ratios": r, "threshold": threshold, "blocks_frozen": self.blocks_frozen}
        )
        self.prev = list(norms)
        return self.blocks_frozen

    def state_dict(self) -> dict[str, Any]:
        return {"blocks_frozen": self.blocks_frozen, "prev": self.prev, "decisions": self.decisions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.blocks_frozen = int(state["blocks_frozen"])
        self.prev = state["prev"]
        self.decisions = list(state["decisions"])
