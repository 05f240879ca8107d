"""Distillation's three hooks into a run: cut the student, check the teacher, build the loss.

``freezetune.training`` calls these and nothing else of distillation; a run without a
``distill`` section gets the uncut model and the task's own loss.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from freezetune.batching import rank_share_loader
from freezetune.config import RunConfig
from freezetune.distill.loss import Distillation
from freezetune.distill.student import cut_blocks, pick_blocks
from freezetune.distill.teacher import Teacher, load_teacher, teacher_logits
from freezetune.distributed import Dist
from freezetune.objectives import Objective, TaskLoss
from freezetune.tasks import TaskData
from freezetune.units import split_units

__all__ = ["check_teacher", "cut_student", "make_objective"]

#: training examples whose tokenization must match between teacher and student
TOKENIZER_PROBES = 16


def cut_student(config: RunConfig, model: nn.Module) -> list[int] | None:
    """Cut ``model`` to ``distill.student_layers`` blocks in place; the kept blocks' indices."""
    keep = config.distill.student_layers
    if keep is None:
        return None
    m = config.model
    units = split_units(model, blocks_path=m.blocks_path, embeddings_paths=m.embeddings_paths)
    kept = pick_blocks(units.num_blocks, keep, config.distill.student_pick)
    cut_blocks(model, units, kept)
    return kept


def check_teacher(config: RunConfig, data: TaskData, tokenizer: Any) -> Teacher | None:
    """The teacher run of ``distill.teacher``, checked against this run's task and tokenizer."""
    if config.distill.teacher is None:
        return None
    probes = [example.texts for example in data.train[:TOKENIZER_PROBES]]
    return load_teacher(config.distill.teacher, data.task, tokenizer, probes)


def make_objective(
    config: RunConfig,
    teacher: Teacher | None,
    data: TaskData,
    features: list[dict],
    collate: Callable[..., dict[str, Any]],
    device: torch.device,
    d: Dist,
) -> Objective:
    """The task's loss, or distillation from ``teacher`` over the tokenized training ``features``."""
    if teacher is None:
        return TaskLoss()
    t = config.train

    def compute() -> torch.Tensor:
        if d.is_main:
            print(
                f"teacher {teacher.folder}: logits of {len(features)} examples, once",
                file=sys.stderr,
            )
        loader = rank_share_loader(
            features, batch_size=t.eval_batch_size, collate=collate, rank=d.rank, world=d.world
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
                device=device,
                bf16=t.bf16,
                dist=d,
                progress=bar.update,
            )

    return Distillation(
        compute,
        teacher.about(),
        temperature=config.distill.temperature,
        alpha=config.distill.alpha,
        regression=data.task.is_regression,
    )
