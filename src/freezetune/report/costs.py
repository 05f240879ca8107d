"""What a strategy costs beyond its training time, from the stored rows: the saved model's
inference speed and size (``result.json``'s ``inference``), and, for a distilled student, the
training time of its teacher (``result.json``'s ``distill``). Pure functions of the rows.

A run's *student* is read from its config's ``distill`` section (absent in runs from before
distillation, and in runs that do not distil): the model cut to ``student_layers`` blocks,
kept ``student_pick``-wise, trained with a teacher or without one. The same student with and
without a teacher is the comparison that says whether distillation helped; it is found by
these settings, never by a strategy's label.

Runs that are *the same model at inference* (every frozen variant of one architecture, LoRA
merged into it, a student with or without a teacher) share one inference figure: their
measurements are pooled (:func:`pool`), grouped by :func:`model_key`, and no inference winner
is named among them.

>>> student_of({"model": {"name": "m"}, "distill": {"teacher": "@full", "student_layers": 3}})
Student(model='m', layers=3, pick='even', distilled=True)
>>> student_of({"model": {"name": "m"}}).plain
True
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from freezetune.study.store import RunRow

__all__ = [
    "Cost",
    "Student",
    "cost_of",
    "model_key",
    "pool",
    "student_of",
    "training_wall",
    "training_walls",
]

NAN = float("nan")


@dataclass(frozen=True)
class Student:
    """Which model a run trains, as far as distillation is concerned."""

    model: str | None  # model.name
    layers: int | None  # the model cut to this many blocks; None: all of them
    pick: str | None  # which blocks a cut keeps ("even" or "first"); None when not cut
    distilled: bool  # trained against a teacher

    @property
    def plain(self) -> bool:
        """The whole model, no teacher: what every run was before distillation existed."""
        return self.layers is None and not self.distilled

    @property
    def twin(self) -> tuple[str | None, int | None, str | None]:
        """What the same student with or without a teacher shares."""
        return self.model, self.layers, self.pick

    @property
    def kind(self) -> str:
        """The model it leaves for inference, in two words: "whole model", "3-block student"."""
        return "whole model" if self.layers is None else f"{self.layers}-block student"

    def describe(self) -> str:
        """E.g. "the 3-block student of minilm-l6 (evenly spaced blocks kept)"."""
        if self.layers is None:
            return f"the whole {self.model or 'model'}"
        model = f" of {self.model}" if self.model else ""
        kept = {"even": "evenly spaced blocks kept", "first": "its first blocks kept"}
        how = kept.get(self.pick or "", f"blocks picked {self.pick}")
        return f"the {self.layers}-block student{model} ({how})"


def student_of(config: dict[str, Any]) -> Student:
    """The student a run config trains (``distill`` missing: the whole model, no teacher)."""
    distill = config.get("distill") or {}
    layers = distill.get("student_layers")
    model = (config.get("model") or {}).get("name")
    pick = (distill.get("student_pick") or "even") if layers is not None else None
    return Student(model, layers, pick, distill.get("teacher") is not None)


def _floats(records: Sequence[dict[str, Any] | None], key: str) -> tuple[float, ...]:
    values = [(r or {}).get(key) for r in records]
    return tuple(float(v) for v in values if isinstance(v, int | float) and math.isfinite(v))


def _mean(values: tuple[float, ...]) -> float:
    return statistics.fmean(values) if values else NAN


@dataclass(frozen=True)
class Cost:
    """One line's inference cost and teacher time, per succeeded seed that recorded them."""

    examples_per_s: tuple[float, ...] = ()  # dev-set throughput at the eval batch size
    latency_p50: tuple[float, ...] = ()  # batch-1 median latency, ms
    latency_p90: tuple[float, ...] = ()
    params: int | None = None  # the saved model's parameters
    disk_mb: float | None = None  # its weight files
    settings: tuple[tuple[Any, ...], ...] = ()  # distinct (threads, batch size, bf16, device)
    teacher_walls: tuple[float, ...] = ()  # a distilled student's teacher wall time per seed
    walls_with_teacher: tuple[float, ...] = ()  # the student's wall time + its teacher's

    @property
    def measured(self) -> bool:
        return bool(self.examples_per_s)

    @property
    def speed(self) -> float:
        """Mean inference examples/s over the seeds (NaN: not measured)."""
        return _mean(self.examples_per_s)

    @property
    def latency(self) -> float:
        """Mean over the seeds of the batch-1 median latency, ms (NaN: not measured)."""
        return _mean(self.latency_p50)

    @property
    def latency_tail(self) -> float:
        return _mean(self.latency_p90)

    @property
    def wall_with_teacher(self) -> float:
        """Mean of the student's wall time + its teacher's (NaN: no teacher time recorded)."""
        return _mean(self.walls_with_teacher)


def cost_of(rows: Sequence[RunRow]) -> Cost:
    """The cost of the succeeded ``rows`` of one line (rows without the data add nothing)."""
    measured = [row.inference for row in rows if row.inference]
    setting = ("threads", "batch_size", "bf16", "device")
    with_teacher = []
    for row in rows:
        wall = _floats([row.result], "wall_time_s")
        teacher = _floats([row.distill], "teacher_wall_time_s")
        if wall and teacher:
            with_teacher.append(wall[0] + teacher[0])
    params = [m["params"] for m in measured if isinstance(m.get("params"), int)]
    disk = _floats(measured, "disk_mb")
    return Cost(
        examples_per_s=_floats(measured, "examples_per_s"),
        latency_p50=_floats(measured, "latency_ms_p50"),
        latency_p90=_floats(measured, "latency_ms_p90"),
        params=params[0] if params else None,
        disk_mb=disk[0] if disk else None,
        settings=tuple(dict.fromkeys(tuple(m.get(k) for k in setting) for m in measured)),
        teacher_walls=_floats([row.distill for row in rows], "teacher_wall_time_s"),
        walls_with_teacher=tuple(with_teacher),
    )


def training_wall(wall: float, student: Student, cost: Cost) -> float:
    """What training cost: a distilled student's wall time counts its teacher's when known."""
    if student.distilled and cost.walls_with_teacher:
        return cost.wall_with_teacher
    return wall


def training_walls(walls: tuple[float, ...], student: Student, cost: Cost) -> tuple[float, ...]:
    """Each seed's training cost (the samples :func:`training_wall` averages)."""
    if student.distilled and cost.walls_with_teacher:
        return cost.walls_with_teacher
    return walls


def model_key(student: Student, cost: Cost) -> tuple[Any, ...]:
    """What makes two measured lines the same model at inference, measured alike: the model
    and its cut (a teacher changes no weight's shape), the saved model's parameter count
    (LoRA is saved merged) and the measurement settings."""
    return student.twin, cost.params, cost.settings


def pool(costs: Sequence[Cost]) -> Cost:
    """The inference measurements of ``costs`` (one model's) as one: every run's, pooled."""
    first = costs[0]
    return Cost(
        examples_per_s=tuple(x for c in costs for x in c.examples_per_s),
        latency_p50=tuple(x for c in costs for x in c.latency_p50),
        latency_p90=tuple(x for c in costs for x in c.latency_p90),
        params=first.params,
        disk_mb=first.disk_mb,
        settings=first.settings,
    )
