"""Freezing schedules as pure decisions: "how many leading units are frozen now?".

Units are ``[embeddings, block_0, ..., block_{L-1}, head]``. A policy answers an int from
training progress, plus an optional per-unit learning-rate factor. A policy that also decides
from gradient statistics (AutoFreeze) says so by being a :class:`GradientWatcher`: the loop
checks that protocol only, so a new adaptive policy needs changes in ``freezing/`` alone.
No torch here: the loop applies the answer (``freezing.apply``).
Algorithms and sources: ../shared/REFERENCE.md section 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from freezetune.errors import UserError
from freezetune.freezing.spec import FreezeSpec

__all__ = [
    "AutoFreeze",
    "GradientWatcher",
    "Gradual",
    "Policy",
    "Progress",
    "Progressive",
    "Static",
    "TwoPhase",
    "linear_warmup_decay",
    "make_policy",
    "slanted_triangular",
]


@dataclass(frozen=True)
class Progress:
    """Where training is: optimizer ``step`` (0-based, the step about to run) of ``total``."""

    step: int
    total: int
    steps_per_epoch: int

    @property
    def fraction(self) -> float:
        return self.step / max(1, self.total)

    @property
    def epoch(self) -> int:
        return self.step // max(1, self.steps_per_epoch)


class Policy(Protocol):
    """What every schedule offers the training loop."""

    name: str

    def frozen_units(self, progress: Progress) -> int:
        """Number of leading units frozen for the step about to run."""
        ...

    def lr_factor(self, unit: int, progress: Progress) -> float | None:
        """Multiplier of unit ``unit``'s base LR, or None to use the default warmup/decay."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class GradientWatcher(Protocol):
    """A policy that also decides from gradients (AutoFreeze).

    The loop then sums every block parameter's gradient between decisions
    (``freezing.gradients.BlockGradients``) and, after each optimizer step for which
    ``is_decision_step`` is true, calls ``decide`` with each block's L1 norm of that sum (the
    same on every rank). What the policy freezes next is still read from ``frozen_units``.

    >>> isinstance(AutoFreeze(num_blocks=4, interval=10), GradientWatcher)
    True
    >>> isinstance(Gradual(num_blocks=4, interval=10), GradientWatcher)
    False
    """

    def is_decision_step(self, step: int) -> bool:
        """Whether ``decide`` is due after optimizer step ``step`` (1-based, finished steps)."""
        ...

    def decide(self, norms: list[float], step: int = 0) -> int:
        """Take a decision from per-block gradient L1 norms; return the blocks frozen now."""
        ...


def linear_warmup_decay(step: int, total: int, warmup_ratio: float) -> float:
    """LR multiplier: linear warmup over ``warmup_ratio`` of the steps, then linear decay to 0.

    >>> [round(linear_warmup_decay(s, 10, 0.2), 2) for s in (0, 1, 2, 6, 9)]
    [0.33, 0.67, 1.0, 0.5, 0.12]
    """
    warmup = int(total * warmup_ratio)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def slanted_triangular(step: int, total: int, cut_frac: float = 0.1, ratio: float = 32) -> float:
    """ULMFiT's slanted triangular LR (Howard & Ruder 2018, eq. 3), as a multiplier of lr_max.

    >>> round(slanted_triangular(10, 100), 3), round(slanted_triangular(0, 100), 3)
    (1.0, 0.031)
    """
    cut = max(1, math.floor(total * cut_frac))
    p = step / cut if step < cut else 1 - (step - cut) / max(1, cut * (1 / cut_frac - 1))
    return (1 + p * (ratio - 1)) / ratio


class _Stateless:
    """Defaults for schedules that keep no state and use the run's LR schedule."""

    def lr_factor(self, unit: int, progress: Progress) -> float | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class Static(_Stateless):
    """A fixed prefix: ``frozen`` leading units, all the time (full, bottom:K, head, ...)."""

    frozen: int
    name: str = "static"

    def frozen_units(self, progress: Progress) -> int:
        return self.frozen


@dataclass
class TwoPhase(_Stateless):
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
    head_lr_factor: float = 1.0  # phase 1's LR relative to the head's base LR
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
class Gradual(_Stateless):
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
class Progressive(_Stateless):
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


def _steps(spec: FreezeSpec, steps_per_epoch: int, default_epochs: float) -> int:
    steps = spec.option("steps", None)
    if steps is None:
        steps = round(float(spec.option("epochs", default_epochs)) * steps_per_epoch)  # type: ignore[arg-type]
    return max(1, int(steps))  # type: ignore[call-overload]


def unit_lr_factor(
    spec: FreezeSpec,
    policy: Policy,
    num_blocks: int,
    unit: int,
    progress: Progress,
    warmup_ratio: float,
) -> float:
    """Multiplier of unit ``unit``'s base LR: the policy's factor, else linear warmup and
    decay, times ``llrd ** (depth below the head)``. ``Loop.set_learning_rates`` and the
    Trainer callback's scheduler both use it, so their rates are bit-identical.

    >>> from freezetune.freezing import parse_freeze
    >>> from freezetune.freezing.policies import Static
    >>> unit_lr_factor(parse_freeze("llrd:0.5"), Static(0), 2, 1, Progress(5, 10, 10), 0.0)
    0.125
    """
    default = linear_warmup_decay(progress.step, progress.total, warmup_ratio)
    factor = policy.lr_factor(unit, progress)
    factor = default if factor is None else factor
    if spec.llrd is not None:
        factor *= spec.llrd ** (num_blocks + 1 - unit)  # the head is unit num_blocks + 1
    return factor


def make_policy(
    spec: FreezeSpec, num_blocks: int, total_steps: int, steps_per_epoch: int, warmup_ratio: float
) -> Policy:
    """The policy a parsed spec asks for, sized to this model and run.

    >>> from freezetune.freezing.spec import parse_freeze
    >>> make_policy(parse_freeze("autofreeze:n=5"), 6, 100, 20, 0.1).interval
    20
    """
    name = spec.schedule
    if name is None:
        return Static(spec.frozen_units(num_blocks))
    if name == "two-phase":
        head_steps = _steps(spec, steps_per_epoch, 1.0)
        if head_steps >= total_steps:
            raise UserError(
                f"--freeze {spec.text}: the head phase ({head_steps} steps) leaves no steps to "
                f"fine-tune (run has {total_steps}); train more epochs or shorten the head phase"
            )
        to = spec.option("to", None)
        if to is not None and int(to) > num_blocks:  # type: ignore[call-overload]
            raise UserError(f"--freeze {spec.text}: to={to} exceeds the {num_blocks} blocks")
        return TwoPhase(
            num_blocks,
            head_steps,
            unfreeze_to=0 if to is None else int(to) + 1,  # type: ignore[call-overload]
            scale=float(spec.option("scale", 1.0)),  # type: ignore[arg-type]
            warmup_ratio=warmup_ratio,
            head_lr_factor=float(spec.option("head_scale", 10.0)),  # type: ignore[arg-type]
        )
    if name == "gradual":
        interval = _steps(spec, steps_per_epoch, 1.0)
        return Gradual(num_blocks, interval, stlr=bool(spec.option("stlr", False)))
    if name == "progressive":
        mode = str(spec.option("mode", "freezeout"))
        if mode not in ("freezeout", "linear"):
            raise UserError(f"--freeze {spec.text}: mode must be freezeout or linear")
        return Progressive(
            num_blocks,
            mode=mode,
            t0=float(spec.option("t0", 0.8)),  # type: ignore[arg-type]
            scale=str(spec.option("scale", "cubic")),
            freeze_start=float(spec.option("start", 0.5)),  # type: ignore[arg-type]
            freeze_level=float(spec.option("level", 1.0)),  # type: ignore[arg-type]
        )
    n = int(spec.option("n", 10))  # type: ignore[call-overload]
    if n < 1:
        raise UserError(f"--freeze {spec.text}: n must be >= 1 decision intervals")
    return AutoFreeze(
        num_blocks,
        interval=max(1, total_steps // n),
        percentile=float(spec.option("p", 50.0)),  # type: ignore[arg-type]
    )
