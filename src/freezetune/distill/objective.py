"""Distillation as an objective: the built-in ``distill`` entry of the objectives registry.

It registers through :func:`freezetune.objectives.register_objective`, as a plugin would.
:func:`teacher_pass` runs the checked ``--teacher`` once over the training set (what the
teacher's logits or features are, row i = example i) and is public, so that objectives from
other packages (patient distillation, say) read the teacher the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from freezetune.batching import rank_share_loader
from freezetune.distill.loss import Distillation
from freezetune.distill.teacher import logits_of, teacher_logits
from freezetune.objectives import ObjectiveContext, register_objective
from freezetune.plugin_options import NoOptions

__all__ = ["teacher_pass"]

Read = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]


def teacher_pass(context: ObjectiveContext, read: Read = logits_of) -> torch.Tensor:
    """``read(teacher, inputs)`` for every training example of ``context``, row i = example i
    (fp32, CPU; gathered over DDP ranks), with a progress bar when the run shows progress."""
    teacher, features, t, d = context.teacher, context.features, context.config.train, context.dist
    if teacher is None:
        raise RuntimeError("teacher_pass needs a run with a --teacher")
    if d.is_main:
        print(
            f"teacher {teacher.folder}: a pass over {len(features)} examples, once", file=sys.stderr
        )
    loader = rank_share_loader(
        features, batch_size=t.eval_batch_size, collate=context.collate, rank=d.rank, world=d.world
    )
    bar = tqdm(
        total=len(features[d.rank :: d.world]),
        desc="teacher",
        disable=not (t.progress and d.is_main),
        file=sys.stderr,
    )
    with bar:
        return teacher_logits(
            teacher.load(),
            loader,
            len(features),
            device=context.device,
            bf16=t.bf16,
            dist=d,
            progress=bar.update,
            read=read,
        )


def _distill(options: NoOptions, context: ObjectiveContext) -> Distillation:
    """Hinton's KD from ``--teacher`` with ``--kd-temperature`` and ``--kd-alpha``."""
    assert context.teacher is not None  # the registry's teacher=True guarantees one
    d = context.config.distill
    return Distillation(
        lambda: teacher_pass(context),
        context.teacher.about(),
        temperature=d.temperature,
        alpha=d.alpha,
        regression=context.task.is_regression,
    )


register_objective("distill", _distill, teacher=True)
