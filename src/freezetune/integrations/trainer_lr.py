"""freezetune's optimizer and per-unit learning rates, in the shape Trainer's ``optimizers=`` takes.

Trainer's own optimizer has one group per "decay or not" and its scheduler one multiplier for
all of them, so it cannot give each unit its own rate (layer-wise decay, FreezeOut's per-layer
cosine, two-phase's head phase). freezetune's optimizer has one group per (unit, decay or not)
(``optim.build_optimizer``); :class:`UnitLR` sets every group's rate the way freezetune's loop
does (``Plan.set_learning_rates``), from a factor the :class:`FreezeCallback` supplies once
training has begun and the run's length is known.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from freezetune.config import OptimConfig
from freezetune.errors import UserError
from freezetune.freezing import FreezeSpec
from freezetune.freezing.policies import Policy, Progress, unit_lr_factor
from freezetune.optim import build_optimizer
from freezetune.units import Units

__all__ = ["UnitLR", "needs_unit_lrs", "trainer_optimizers", "unit_lr_factor"]

#: the factor of unit ``unit``'s base LR for optimizer step ``step`` (0-based)
Factor = Callable[[int, int], float]


class UnitLR(LRScheduler):
    """Each group's LR is ``base_lr x factor(unit, step)``: freezetune's loop, as a scheduler.

    Trainer calls ``step()`` after each optimizer step, so ``last_epoch`` is the number of
    finished steps, the same ``step`` freezetune's loop sets rates with. The factor comes from
    :meth:`attach` at train begin (the policy is sized to the run only then); until it does,
    groups keep their base LR.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.factor: Factor | None = None
        super().__init__(optimizer)

    def attach(self, factor: Factor) -> None:
        """Take rates from ``factor`` from now on, starting with the step about to run."""
        self.factor = factor
        lrs = self._lrs()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def get_lr(self) -> list[float | torch.Tensor]:
        return list(self._lrs())

    def _lrs(self) -> list[float]:
        groups = self.optimizer.param_groups
        if self.factor is None:
            if self.last_epoch > 0:  # stepping without its callback: the schedule would be lost
                raise UserError(
                    "freezetune's UnitLR scheduler runs without its FreezeCallback; pass the "
                    "callback whose optimizers() built it in Trainer(callbacks=[...])"
                )
            return [group["base_lr"] for group in groups]
        return [group["base_lr"] * self.factor(group["unit"], self.last_epoch) for group in groups]

    def state_dict(self) -> dict[str, Any]:
        # the factor is the callback's bound method: Trainer saves this dict with torch.save
        # and reads it back with weights_only=True, and the callback re-attaches it anyway
        state = super().state_dict()
        state.pop("factor", None)
        return state


def trainer_optimizers(
    model: torch.nn.Module, units: Units, spec: FreezeSpec, args: Any, head_lr: float | None
) -> tuple[torch.optim.Optimizer, UnitLR]:
    """freezetune's AdamW (per-unit groups) over ``model`` and a :class:`UnitLR` over it.

    ``args`` (TrainingArguments) gives the learning rate, weight decay and Adam's betas and
    epsilon; ``head_lr`` the new head's rate (default: the same).
    """
    kind = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    if kind != "linear":
        raise UserError(
            f"FreezeCallback({spec.text!r}).optimizers(): freezetune's scheduler is linear "
            f"warmup and decay (or the schedule's own), not {kind}; set "
            "lr_scheduler_type='linear' or leave optimizers= out"
        )
    optim = OptimConfig(
        lr=args.learning_rate,
        head_lr=head_lr,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        adam_beta1=args.adam_beta1,
        adam_beta2=args.adam_beta2,
        adam_eps=args.adam_epsilon,
    )
    optimizer = build_optimizer(model, units, spec, optim)
    return optimizer, UnitLR(optimizer)


def needs_unit_lrs(
    spec: FreezeSpec, policy: Policy, num_units: int, total: int, per_epoch: int
) -> bool:
    """Whether the spec sets per-unit rates: ``llrd``, or a policy with factors of its own.

    A few points of the run are probed: every policy with factors has them from step 0 on,
    and probing every step would cost steps x units calls.

    >>> from freezetune.freezing import parse_freeze
    >>> from freezetune.freezing.policies import Gradual
    >>> needs_unit_lrs(parse_freeze("gradual"), Gradual(2, 10), 4, 100, 10)
    False
    """
    if spec.llrd is not None:
        return True
    steps = {0, total // 4, total // 2, 3 * total // 4, max(0, total - 1)}
    return any(
        policy.lr_factor(unit, Progress(step, total, per_epoch)) is not None
        for step in steps
        for unit in range(num_units)
    )
