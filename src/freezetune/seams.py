"""What a run plugs into its loop, built from its checked inputs, and how its model is saved.

``freezetune.training`` asks this module for a run's :class:`~freezetune.loop.Seams` and
knows nothing of what fills them: frozen-prefix caches (``caching.py``), the objective from
the objectives registry (``objectives.py``: the task's loss, distillation, a plugin's) and
observers (``observers.py``). Saving merges LoRA adapters into the weights they adapt, so a
saved model loads as a plain one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from freezetune.caching import caches_prefix, make_caches
from freezetune.distributed import Dist
from freezetune.freezing.lora import merge_lora
from freezetune.loop import Seams
from freezetune.objectives import ObjectiveContext, make_objective
from freezetune.observers import make_observers

if TYPE_CHECKING:
    from freezetune.inputs import Setup

__all__ = ["fixed_shards", "make_seams", "save_model"]


def fixed_shards(setup: Setup, model: nn.Module, d: Dist) -> bool:
    """Whether each DDP rank must keep one fixed shard of the training set (its caches hold
    that shard's frozen-prefix states)."""
    return d.enabled and caches_prefix(model, setup.units, setup.spec, setup.config.train)


def make_seams(
    setup: Setup,
    model: nn.Module,
    splits: dict[str, list[dict]],
    collate: Callable[..., dict[str, Any]],
    device: torch.device,
    d: Dist,
) -> Seams:
    """The caches of ``splits`` (``train``, ``validation``; frozen prefixes run once and
    their outputs are kept per example, in RAM or a file), the objective and, on the main
    process, the observers."""
    config, t = setup.config, setup.config.train
    caches = make_caches(model, setup.units, setup.spec, t, setup.out, splits, setup.modality)
    context = ObjectiveContext(
        *(config, setup.data.task, model, setup.units, splits["train"], collate, device, d),
        teacher=setup.teacher,
    )
    observers = make_observers((t.report_to,), setup.out, config.to_dict()) if d.is_main else ()
    return Seams(caches, make_objective(context), observers)


def save_model(setup: Setup, model: nn.Module) -> None:
    """Save the trained model and its processor in Hugging Face format into the run folder."""
    saved: Any = merge_lora(model) if setup.spec.lora is not None else model
    saved.save_pretrained(setup.out)
    setup.loaded.processor.save_pretrained(setup.out)
