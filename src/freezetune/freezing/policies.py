"""Freezing policies, as the training loop uses them: build one from a spec, scale its LRs.

A policy answers "how many leading units are frozen now?" (:mod:`~.base` has the protocols,
:mod:`~.schedules` freezetune's schedules). Every schedule, freezetune's own included, is
found by name in the policy registry (:mod:`~.registry`): :func:`make_policy` looks the spec's
name up and builds the policy from its options dataclass. No torch here.
Algorithms and sources: ../shared/REFERENCE.md section 3.
"""

from __future__ import annotations

from freezetune.errors import UserError
from freezetune.freezing.base import (
    GradientWatcher,
    Policy,
    Progress,
    UnitSelector,
    frozen_now,
    linear_warmup_decay,
    slanted_triangular,
)
from freezetune.freezing.registry import POLICIES, RunShape, register_policy
from freezetune.freezing.schedules import AutoFreeze, Gradual, Progressive, Static, TwoPhase
from freezetune.freezing.spec import FreezeSpec, policy_options

__all__ = [
    "AutoFreeze",
    "GradientWatcher",
    "Gradual",
    "Policy",
    "Progress",
    "Progressive",
    "RunShape",
    "Static",
    "TwoPhase",
    "UnitSelector",
    "frozen_now",
    "linear_warmup_decay",
    "make_policy",
    "register_policy",
    "slanted_triangular",
    "unit_lr_factor",
]


def unit_lr_factor(
    spec: FreezeSpec,
    policy: Policy,
    num_blocks: int,
    unit: int,
    progress: Progress,
    warmup_ratio: float,
) -> float:
    """Multiplier of unit ``unit``'s base LR: the policy's factor, else linear warmup and
    decay, times ``llrd ** (depth below the head)``. ``Plan.set_learning_rates`` and the
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
    spec: FreezeSpec,
    num_blocks: int,
    total_steps: int,
    steps_per_epoch: int,
    warmup_ratio: float,
    seed: int = 0,
) -> Policy:
    """The policy a parsed spec asks for, sized to this model and run: a :class:`Static`
    prefix, or the registered schedule built from its options. ``seed`` is the run's (for
    policies that sample, such as LISA).

    >>> from freezetune.freezing.spec import parse_freeze
    >>> make_policy(parse_freeze("autofreeze:n=5"), 6, 100, 20, 0.1).interval
    20
    """
    if spec.schedule is None:
        return Static(spec.frozen_units(num_blocks))
    options = policy_options(spec.schedule, spec.schedule_options, spec.text)
    run = RunShape(num_blocks, total_steps, steps_per_epoch, warmup_ratio, seed)
    try:
        return POLICIES.get(spec.schedule).build(options, run)
    except UserError as err:
        raise UserError(f"--freeze {spec.text}: {err}") from None
