"""What every freezing policy is: the protocols the loop calls and the LR shapes they share.

Units are ``[embeddings, block_0, ..., block_{L-1}, head]``. A policy answers an int from
training progress, plus an optional per-unit learning-rate factor. A policy that also decides
from gradient statistics (AutoFreeze) says so by being a :class:`GradientWatcher`: the loop
checks that protocol only, so a new adaptive policy needs changes in ``freezing/`` alone. A
policy that freezes units other than a leading run (LISA: the embeddings train, middle blocks
do not) says so by being a :class:`UnitSelector`; :func:`frozen_now` asks either kind.
No torch here: the loop applies the answer (``freezing.apply``).
Algorithms and sources: ../shared/REFERENCE.md section 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "GradientWatcher",
    "Policy",
    "Progress",
    "Stateless",
    "UnitSelector",
    "frozen_now",
    "leading_run",
    "linear_warmup_decay",
    "optimizer_resets",
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

    def state_dict(self) -> dict[str, Any]:
        """What exact resume needs: plain values (numbers, strings, lists, dicts), since
        checkpoints load with ``torch.load(weights_only=True)``."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class GradientWatcher(Protocol):
    """A policy that also decides from gradients (AutoFreeze).

    The loop then sums every block parameter's gradient between decisions
    (``freezing.gradients.BlockGradients``) and, after each optimizer step for which
    ``is_decision_step`` is true, calls ``decide`` with each block's L1 norm of that sum (the
    same on every rank). What the policy freezes next is still read from ``frozen_units``.

    >>> from freezetune.freezing.schedules import AutoFreeze, Gradual
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


@runtime_checkable
class UnitSelector(Protocol):
    """A policy that freezes any set of units, not only a leading run (LISA).

    The loop reads what is frozen from ``frozen_set`` instead of ``frozen_units`` (which such
    a policy answers with the :func:`leading_run` of its set: what a frozen-prefix cache may
    skip). A policy may also have a ``reset_optimizer_state`` attribute, a frozenset of units
    whose optimizer state (AdamW's moments) is dropped whenever what is frozen changes, as
    LMFlow's LISATrainer rebuilds its optimizer at every switch (:func:`optimizer_resets`).
    """

    def frozen_set(self, progress: Progress) -> frozenset[int]:
        """Indices of the units frozen for the step about to run (the head never freezes)."""
        ...


def frozen_now(policy: Policy, progress: Progress) -> int | frozenset[int]:
    """What ``policy`` freezes at ``progress``: a number of leading units, or a set of units.

    >>> from freezetune.freezing.schedules import Static
    >>> frozen_now(Static(2), Progress(0, 10, 5))
    2
    """
    if isinstance(policy, UnitSelector):
        return frozenset(policy.frozen_set(progress))
    return policy.frozen_units(progress)


def leading_run(frozen: int | frozenset[int]) -> int:
    """How many leading units ``frozen`` freezes without a gap (units 0, 1, ...).

    >>> leading_run(3), leading_run(frozenset({0, 1, 3})), leading_run(frozenset({2, 3}))
    (3, 2, 0)
    """
    if isinstance(frozen, int):
        return frozen
    run = 0
    while run in frozen:
        run += 1
    return run


def optimizer_resets(policy: object) -> frozenset[int]:
    """The units whose optimizer state ``policy`` drops at each change of what is frozen
    (its ``reset_optimizer_state`` attribute; none when it has none).

    >>> from freezetune.freezing.schedules import Static
    >>> optimizer_resets(Static(2))
    frozenset()
    """
    return frozenset(getattr(policy, "reset_optimizer_state", ()))


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


class Stateless:
    """Defaults for schedules that keep no state and use the run's LR schedule."""

    def lr_factor(self, unit: int, progress: Progress) -> float | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
