"""The optimizer of a run: AdamW over every parameter that may ever train, grouped by unit.

One group per (unit, decay or not) lets the loop set each unit's learning rate on its own
(schedules, layer-wise decay) without rebuilding the optimizer when freezing changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from freezetune.config import OptimConfig
from freezetune.freezing import FreezeSpec
from freezetune.freezing.apply import never_trains
from freezetune.units import Units

__all__ = ["build_optimizer", "is_no_decay"]


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    """Whether ``param`` is exempt from weight decay: biases and norm gains.

    They are scale parameters, so decaying them towards 0 only hurts.

    >>> is_no_decay("encoder.LayerNorm.weight", nn.Parameter(torch.ones(2, 2)))
    True
    >>> is_no_decay("encoder.dense.weight", nn.Parameter(torch.ones(2, 2)))
    False
    """
    return param.ndim < 2 or "norm" in name.lower()


def build_optimizer(
    model: nn.Module, units: Units, spec: FreezeSpec, optim: OptimConfig
) -> torch.optim.Optimizer:
    """AdamW with one group per (unit, decay or not) over every parameter that may train.

    Parameters a schedule freezes stay in the optimizer with ``grad=None``, which AdamW skips
    entirely (no momentum, no weight decay), so they thaw with their LR already in place.
    Statically excluded ones (bitfit, patterns, LoRA's frozen base) never enter it. Each group
    records its ``unit``, its ``base_lr`` and its parameters' ``names``.
    """
    o = optim
    excluded = never_trains(spec, units)  # a static spec's frozen prefix never thaws
    unit_of = {name: i for i, unit in enumerate(units.units) for name in unit.params}
    head = len(units.units) - 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if name in excluded:
            continue
        unit, no_decay = unit_of[name], is_no_decay(name, param)
        group = groups.setdefault(
            (unit, no_decay),
            {
                "params": [],
                "names": [],
                "unit": unit,
                "base_lr": (o.head_lr or o.lr) if unit == head else o.lr,
                "weight_decay": 0.0 if no_decay else o.weight_decay,
            },
        )
        group["params"].append(param)
        group["names"].append(name)
    params, betas = [groups[k] for k in sorted(groups)], (o.adam_beta1, o.adam_beta2)
    try:  # one fused kernel over all tensors (CPU too since torch 2.4): what Trainer uses
        return torch.optim.AdamW(params, lr=o.lr, betas=betas, eps=o.adam_eps, fused=True)
    except (RuntimeError, TypeError):  # an older torch or an unsupported device
        return torch.optim.AdamW(params, lr=o.lr, betas=betas, eps=o.adam_eps)
