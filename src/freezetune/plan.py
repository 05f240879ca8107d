"""A run's :class:`Plan`: its units, what trains when, and how long it is.

The loop asks it two things before every optimizer step: how far training has got
(``progress``) and each unit's learning-rate factor (``lr_factor``).

>>> from freezetune.freezing import parse_freeze
>>> from freezetune.freezing.policies import make_policy
>>> spec = parse_freeze("gradual:steps=2")
>>> plan = Plan(None, spec, make_policy(spec, 3, 12, 6, 0.1), 12, 6, 0.1)  # units: lr only
>>> plan.progress(7).epoch, plan.policy.frozen_units(plan.progress(7))
(1, 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from freezetune.freezing import FreezeSpec
from freezetune.freezing.policies import Policy, Progress, unit_lr_factor
from freezetune.units import Units

__all__ = ["Plan"]


@dataclass(frozen=True)
class Plan:
    """What trains when: ``policy`` sized to ``total_steps`` optimizer steps over ``units``."""

    units: Units
    spec: FreezeSpec
    policy: Policy
    total_steps: int  # optimizer steps in the whole run
    steps_per_epoch: int  # optimizer steps per epoch
    warmup_ratio: float  # share of the steps with a linearly rising learning rate

    def progress(self, step: int) -> Progress:
        """Where training is after ``step`` optimizer steps."""
        return Progress(step, self.total_steps, self.steps_per_epoch)

    def lr_factor(self, unit: int, step: int) -> float:
        """Multiplier of unit ``unit``'s base LR: the policy's or warmup/decay, x llrd."""
        return self._factor(unit, self.progress(step))

    def _factor(self, unit: int, progress: Progress) -> float:
        blocks = self.units.num_blocks
        return unit_lr_factor(self.spec, self.policy, blocks, unit, progress, self.warmup_ratio)

    def set_learning_rates(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Every group's LR at ``step``: base x (policy's factor or warmup/decay) x
        llrd^(depth from top); groups carry ``base_lr`` and their ``unit``."""
        progress = self.progress(step)  # once, not per group
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * self._factor(group["unit"], progress)
