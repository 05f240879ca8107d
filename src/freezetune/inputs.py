"""A run's inputs: loaded and checked before anything is written.

:func:`check_inputs` loads the data (or reaches its hub copy), the model and its processor
(tokenizer or image processor), cuts a student, checks a teacher, resolves the freeze spec
against the model's depth and checks that every option set applies to this model and task. :func:`prepare` adds
the output folder's check; ``freezetune.training`` trains what it returns, and a study's
preflight (``freezetune.study.preflight``) calls :func:`check_inputs` before any run starts.
A failure in :func:`prepare` is an :class:`~freezetune.errors.InputsError`, which a study tells
apart from a failure in training.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from freezetune.config import RunConfig
from freezetune.distill.run import check_teacher, cut_student
from freezetune.distill.teacher import Teacher
from freezetune.errors import InputsError, UserError, first_line
from freezetune.freezing import FreezeSpec, frozen_parameters, parse_freeze
from freezetune.freezing.apply import check_spec
from freezetune.freezing.lora import add_lora
from freezetune.modality import TEXT, Loaded, Modality, checked_modality
from freezetune.objectives import check_objective
from freezetune.observers import check_reporters
from freezetune.rundir import check_out_dir
from freezetune.tasks import TaskData
from freezetune.units import Units, split_units

__all__ = ["Setup", "check_inputs", "prepare", "set_seed"]


@dataclass
class Setup:
    """Everything a run needs, built and checked before anything is written."""

    config: RunConfig
    spec: FreezeSpec
    data: TaskData
    loaded: Loaded
    model: nn.Module  # loaded.model, or its LoRA-wrapped version
    units: Units
    out: Path
    teacher: Teacher | None = None  # distillation's finished run, checked
    modality: Modality = TEXT  # what it reads: text, images, a plugin's modality

    @property
    def frozen(self) -> frozenset[str]:
        """What the spec freezes at the start of training."""
        return frozen_parameters(
            self.units, self.spec, self.spec.frozen_units(self.units.num_blocks)
        )


def set_seed(seed: int) -> None:
    """Seed every generator the run draws from (Python, NumPy, torch)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare(config: RunConfig, resume: bool = False) -> Setup:
    """Load data and model and resolve the freeze spec; raise UserError on any bad input."""
    parse_freeze(config.freeze)  # a bad spec is named before the output folder
    out = check_out_dir(config, resume)
    try:
        setup = check_inputs(config)
    except (UserError, OSError) as err:  # told apart from failures in training: a study
        raise InputsError(first_line(err)) from err  # retries these once its inputs load
    return dataclasses.replace(setup, out=out)


def check_inputs(config: RunConfig) -> Setup:
    """Everything :func:`prepare` checks but the output folder: the data loads, the model and
    its processor load, the spec resolves against the model's depth and every flag applies to
    this model and task. Writes nothing (a study's preflight calls it before any run)."""
    spec = parse_freeze(config.freeze)
    out = Path(config.out)
    check_reporters((config.train.report_to,))
    modality = checked_modality(config)  # text or images, and every option set applies to it
    data = modality.load_data(config)
    set_seed(config.train.seed)  # the head's initialisation depends on it
    loaded = modality.load_model(config, data.task)
    cut_student(config, loaded.model)  # --student-layers: before LoRA and the unit split
    teacher = check_teacher(config, data, loaded.processor)
    check_objective(config)  # registered, its options parse, the teacher it needs is there
    model: nn.Module = loaded.model
    if spec.lora is not None:
        model = add_lora(loaded.model, dict(spec.lora))
    units = split_units(
        model, blocks_path=config.model.blocks_path, embeddings_paths=config.model.embeddings_paths
    )
    check_spec(spec, units)  # bottom:K / top:K within its depth, train-bn needs BatchNorm
    return Setup(config, spec, data, loaded, model, units, out, teacher, modality)
