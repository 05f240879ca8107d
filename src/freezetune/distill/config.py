"""The ``distill`` section of a run config: the student's depth and the teacher it learns from.

Knowledge distillation (Hinton et al. 2015, https://arxiv.org/abs/1503.02531) trains a small
student on a fine-tuned teacher's softened predictions as well as on the labels. The student
is ``--model`` (by default the same pretrained model the teacher started from), cut to
``--student-layers`` of its blocks when given; every ``--freeze`` spec applies to it as usual.
``--student-layers`` without ``--teacher`` is plain fine-tuning of the cut model, the
baseline distillation has to beat.

>>> DistillConfig(student_layers=3).student_pick
'even'
>>> DistillConfig(alpha=1.5)
Traceback (most recent call last):
...
freezetune.errors.UserError: distill.alpha must be in [0, 1], got 1.5 (flag --kd-alpha)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from freezetune.options import Range, option, validate_section

__all__ = ["STUDY_TEACHER", "DistillConfig"]

#: In a study, ``distill.teacher: "@full"`` means the same-seed ``full`` run of the same grid.
STUDY_TEACHER = "@full"


@dataclass(frozen=True)
class DistillConfig:
    """Distillation: a teacher run folder, the student's blocks and the loss's two knobs."""

    section: ClassVar[str] = "distill"
    only: ClassVar[str] = "text"  # every option here is for text models (``check_applies``)
    what: ClassVar[str] = "distillation"
    #: added after runs were stored: a run that does not distil (every option here at its
    #: default) leaves the section out of its identity, so those runs keep their run_ids
    absent_means_defaults: ClassVar[bool] = True
    teacher: str | None = option(
        None,
        "a finished freezetune run folder to distil from (its logits are the soft targets; in "
        f"a study {STUDY_TEACHER} = the same-seed full run)",
    )
    student_layers: int | None = option(
        None,
        "cut the model to this many of its blocks before training (with or without --teacher)",
        bounds=Range(1),
    )
    student_pick: str = option(
        "even",
        "which blocks the student keeps: even (evenly spaced, like DistilBERT) or first "
        "(drop the top ones, Sajjad et al. 2020)",
        choices=("even", "first"),
        needs="distill.student_layers",
    )
    temperature: float = option(
        2.0,
        "softmax temperature T of the soft targets (the KL term is scaled by T^2)",
        flag="kd-temperature",
        bounds=Range(0.0, open_low=True),
        needs="distill.teacher",
    )
    alpha: float = option(
        0.5,
        "weight of the teacher term; 1 - alpha weighs the labels' loss",
        flag="kd-alpha",
        bounds=Range(0.0, 1.0),
        needs="distill.teacher",
    )

    def __post_init__(self) -> None:
        validate_section(self)
