"""Distillation's two checks before a run: cut the student, check the teacher.

``freezetune.inputs`` calls these; the loss is an objective (``distill/objective.py``,
registered like any other). A run without a ``distill`` section gets the uncut model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from freezetune.config import RunConfig
from freezetune.distill.student import cut_blocks, pick_blocks
from freezetune.distill.teacher import Teacher, load_teacher
from freezetune.tasks import TaskData
from freezetune.units import split_units

__all__ = ["check_teacher", "cut_student"]

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
