"""freezetune's own schedules, registered exactly as a plugin registers one.

One options dataclass per schedule: its fields are the ``--freeze NAME:key=value`` options
(names, types, defaults, help) and ``__post_init__`` checks them. One build function per
schedule sizes the policy to the model and run (:class:`~.registry.RunShape`).

>>> from freezetune.freezing.registry import POLICIES
>>> POLICIES.names()[:4]
['two-phase', 'gradual', 'progressive', 'autofreeze']
>>> ProgressiveOptions(mode="cubic")
Traceback (most recent call last):
...
freezetune.errors.UserError: mode must be freezeout or linear, got 'cubic'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from freezetune.errors import UserError
from freezetune.freezing.registry import RunShape, check_range, register_policy
from freezetune.freezing.schedules import AutoFreeze, Gradual, Progressive, TwoPhase

__all__ = ["AutoFreezeOptions", "GradualOptions", "ProgressiveOptions", "TwoPhaseOptions"]

_MAX_EPOCHS = 1_000_000  # finite: the steps they make must be a number


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be {' or '.join(choices)}, got {value!r}")


def _phase_steps(epochs: float, steps: int | None, run: RunShape) -> int:
    """A phase's length: ``steps`` if given, else ``epochs`` of the run's epochs; >= 1."""
    return max(1, steps if steps is not None else round(epochs * run.steps_per_epoch))


@dataclass(frozen=True)
class TwoPhaseOptions:
    """``two-phase[:epochs=1,to=K,scale=1,head_scale=10]``."""

    epochs: float = field(default=1.0, metadata={"help": "length of the head-only phase"})
    steps: int | None = field(default=None, metadata={"help": "the same in steps (wins)"})
    to: int | None = field(default=None, metadata={"help": "then unfreeze down to bottom:K"})
    scale: float = field(default=1.0, metadata={"help": "LR multiplier of the second phase"})
    head_scale: float = field(default=10.0, metadata={"help": "LR multiplier of the head phase"})

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, 0, _MAX_EPOCHS, low_open=True)
        check_range("steps", self.steps if self.steps is not None else 1, 1, float("inf"))
        check_range("to", self.to if self.to is not None else 0, 0, float("inf"))
        check_range("scale", self.scale, 0, float("inf"), low_open=True)
        check_range("head_scale", self.head_scale, 0, float("inf"), low_open=True)


def two_phase(options: TwoPhaseOptions, run: RunShape) -> TwoPhase:
    """Keras' recipe / LP-FT (Kumar et al. 2022), sized to the run."""
    head_steps = _phase_steps(options.epochs, options.steps, run)
    if head_steps >= run.total_steps:
        raise UserError(
            f"the head phase ({head_steps} steps) leaves no steps to fine-tune (run has "
            f"{run.total_steps}); train more epochs or shorten the head phase"
        )
    to = options.to
    if to is not None and to > run.num_blocks:
        raise UserError(f"to={to} exceeds the {run.num_blocks} blocks")
    return TwoPhase(
        run.num_blocks,
        head_steps,
        unfreeze_to=0 if to is None else to + 1,
        scale=options.scale,
        warmup_ratio=run.warmup_ratio,
        head_lr_factor=options.head_scale,
    )


@dataclass(frozen=True)
class GradualOptions:
    """``gradual[:epochs=1|steps=N,stlr]``."""

    epochs: float = field(default=1.0, metadata={"help": "one more unit thaws every epochs"})
    steps: int | None = field(default=None, metadata={"help": "the same in steps (wins)"})
    stlr: bool = field(default=False, metadata={"help": "ULMFiT's slanted triangular LR"})

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, 0, _MAX_EPOCHS, low_open=True)
        check_range("steps", self.steps if self.steps is not None else 1, 1, float("inf"))


def gradual(options: GradualOptions, run: RunShape) -> Gradual:
    """ULMFiT's gradual unfreezing (Howard & Ruder 2018), sized to the run."""
    interval = _phase_steps(options.epochs, options.steps, run)
    return Gradual(run.num_blocks, interval, stlr=options.stlr)


@dataclass(frozen=True)
class ProgressiveOptions:
    """``progressive[:freezeout|linear,t0=0.8,start=0.5,level=1]``."""

    mode: str = field(default="freezeout", metadata={"help": "freezeout or linear"})
    t0: float = field(default=0.8, metadata={"help": "freezeout: when the embeddings stop"})
    scale: str = field(default="cubic", metadata={"help": "freezeout: cubic or linear"})
    start: float = field(default=0.5, metadata={"help": "linear: fraction when freezing starts"})
    level: float = field(default=1.0, metadata={"help": "linear: share frozen at the end"})

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, ("freezeout", "linear"))
        check_range("t0", self.t0, 0, 1, low_open=True)
        _check_choice("scale", self.scale, ("cubic", "linear"))
        check_range("start", self.start, 0, 1)
        check_range("level", self.level, 0, 1)


def progressive(options: ProgressiveOptions, run: RunShape) -> Progressive:
    """FreezeOut (Brock et al. 2017) or Composer's linear layer freezing."""
    return Progressive(
        run.num_blocks,
        mode=options.mode,
        t0=options.t0,
        scale=options.scale,
        freeze_start=options.start,
        freeze_level=options.level,
    )


@dataclass(frozen=True)
class AutoFreezeOptions:
    """``autofreeze[:n=10,p=50]``."""

    n: int = field(default=10, metadata={"help": "decisions over the run"})
    p: float = field(default=50.0, metadata={"help": "percentile of the change threshold"})

    def __post_init__(self) -> None:
        if self.n < 1:
            raise UserError(f"n must be >= 1 decision intervals, got {self.n}")
        check_range("p", self.p, 0, 100)


def autofreeze(options: AutoFreezeOptions, run: RunShape) -> AutoFreeze:
    """AutoFreeze (Liu, Agarwal, Venkataraman 2021): a decision every run / n steps."""
    return AutoFreeze(
        run.num_blocks, interval=max(1, run.total_steps // options.n), percentile=options.p
    )


register_policy("two-phase", two_phase, options=TwoPhaseOptions, positional="epochs")
register_policy("gradual", gradual, options=GradualOptions, positional="epochs")
register_policy("progressive", progressive, options=ProgressiveOptions, positional="mode")
register_policy("autofreeze", autofreeze, options=AutoFreezeOptions, positional="n")
