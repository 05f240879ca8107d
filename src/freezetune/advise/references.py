"""Finished runs' learning curves as references: the prior of
:func:`~freezetune.advise.curves.predict_final` (``references=``) and the zero-probe prior
baseline of ``advise --check``.

A :class:`Reference` is one finished run: its strategy, lr family (:func:`~.lrs.family_of`),
lr, task, model and modality, and its curve ``((x, y), ...)``: ``x`` the step over the run's
budget (``steps`` in result.json, else the curve's last step), ``y`` the best main metric so
far. Best-so-far is a step function, so a run whose last evaluation came before its budget
ends on ``(1.0, y_last)``: every curve reaches ``x = 1``, where ``y`` is its ``final``.

They come from study folders (:func:`from_folders`, the user's own ``results.sqlite``) or
from the package (:func:`shipped`: ``reference_curves.json``, built from this repository's
studies by ``python benchmarks/reference_curves.py``), each with its provenance.
:func:`pick` chooses the closest ones for an arm, :func:`prior_scores` predicts finals from
them alone.

>>> ref = Reference("full", "full", "full", 1e-4, "sst2", "minilm-l6", "text",
...                 ((0.5, 0.78), (1.0, 0.83)), 0.83, "study default")
>>> curves, note = pick([ref], task="sst2", model="minilm-l6", family="full")
>>> curves, note
([((0.5, 0.78), (1.0, 0.83))], '1 reference of family full on sst2 with minilm-l6')
>>> prior_scores([("bottom:3", "full", 5e-5)], [ref])
{'bottom:3': 0.83}
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from freezetune.advise.advice import ArmResult
from freezetune.advise.answer import best_so_far
from freezetune.advise.lrs import family_of
from freezetune.errors import UserError
from freezetune.study.store import RunRow, open_store, read_rows
from freezetune.vision.images import IMAGE_TASKS

__all__ = [
    "SHIPPED",
    "Picked",
    "Reference",
    "from_folders",
    "from_rows",
    "parse_shipped",
    "pick",
    "prior_scores",
    "shipped",
    "to_shipped",
    "without_lr",
]

#: the package data file :func:`shipped` reads (in ``freezetune.advise``)
SHIPPED = "reference_curves.json"

Curve = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Reference:
    """One finished run's curve. ``strategy``: the study's label (its own ``lr=`` included),
    ``freeze``: its spec, ``family``: its lr family, ``curve``: ``(x, best so far)`` up to
    ``x = 1``, ``final``: ``y`` at ``x = 1`` (the run's best), ``provenance``: where it comes
    from (a study folder, or the shipped file and the command that built it); ``metric``,
    ``run_id``, ``seed``, ``git`` (the commit that ran it, None: not stored) and ``train_size``
    (training examples; None: the whole split) as stored."""

    strategy: str
    freeze: str
    family: str
    lr: float
    task: str
    model: str
    modality: str
    curve: Curve
    final: float
    provenance: str
    metric: str = "accuracy"
    run_id: str = ""
    seed: int = 0
    git: str | None = None
    train_size: int | None = None


class Picked(NamedTuple):
    """What :func:`pick` answers: the chosen references' curves and a note saying which."""

    curves: list[Curve]
    note: str


def _family(label: str) -> str:
    """A label's lr family; a plugin's policy that is not installed here counts as ``full``
    (its family in :mod:`~.lrs`: plugins' policies are schedules)."""
    try:
        return family_of(label)
    except UserError:
        return "full"


def _task(config: dict[str, Any]) -> tuple[str, str]:
    """(task, modality) of a run's config: the task's name (a custom file's name otherwise);
    ``image`` for an image task or a ``--train`` folder, else ``text``."""
    data = config.get("data") or {}
    task = str(data.get("task") or Path(str(data.get("train_file") or "custom")).name)
    train = str(data.get("train_file") or "")
    image = task.lower() in IMAGE_TASKS or (bool(train) and not Path(train).suffix)
    return task, "image" if image else "text"


def _curve(row: RunRow, metric: str) -> Curve:
    """``(step / budget, best so far)``, ending at ``x = 1``; empty without evaluations."""
    evals = [e for e in row.curve if e.get("event", "eval") == "eval"]
    points = [(int(e["step"]), float(e[metric])) for e in evals
              if isinstance(e.get(metric), int | float) and math.isfinite(e[metric])
              and int(e.get("step") or 0) > 0]  # fmt: skip
    if not points:
        return ()
    budget = int((row.result or {}).get("steps") or max(step for step, _ in points))
    out = best_so_far(points, budget)
    if out[-1][0] < 1.0:
        out.append((1.0, out[-1][1]))
    return tuple(out)


def from_rows(rows: Iterable[RunRow], provenance: str) -> list[Reference]:
    """The references of a study's rows: its succeeded runs that have a curve.

    >>> row = RunRow("r1", "head (lr=0.001)", "head", 0, 1e-3, None, "succeeded",
    ...              config={"data": {"task": "sst2"}, "model": {"name": "minilm-l6"}},
    ...              result={"main_metric": "accuracy", "steps": 100},
    ...              curve=[{"event": "eval", "step": 50, "accuracy": 0.7},
    ...                     {"event": "eval", "step": 90, "accuracy": 0.65}])
    >>> ref = from_rows([row], "study x")[0]
    >>> ref.family, ref.curve, ref.final
    ('head', ((0.5, 0.7), (0.9, 0.7), (1.0, 0.7)), 0.7)
    """
    out = []
    for row in rows:
        metric = str((row.result or {}).get("main_metric") or "accuracy")
        curve = _curve(row, metric) if row.status == "succeeded" else ()
        if not curve:
            continue
        task, modality = _task(row.config)
        model = str((row.config.get("model") or {}).get("name") or "")
        out.append(Reference(
            row.strategy, row.freeze, _family(row.strategy), float(row.lr), task, model,
            modality, curve, curve[-1][1], provenance, metric, row.run_id, row.seed, row.git,
            row.train_size,
        ))  # fmt: skip
    return out


def from_folders(paths: Iterable[str | Path]) -> list[Reference]:
    """The references of study folders (each ``<folder>/results.sqlite``); a folder without
    one, or with an unreadable one, raises a one-line UserError naming it and the fix."""
    out: list[Reference] = []
    for path in map(Path, paths):
        db = path / "results.sqlite"
        if not db.is_file():
            raise UserError(
                f"reference study {path} holds no results.sqlite; pass a folder that "
                "`freezetune study` wrote, or leave it out of the references"
            )
        conn = open_store(db)  # a damaged file raises a UserError naming it
        try:
            rows = read_rows(conn)
        finally:
            conn.close()
        out += from_rows(rows, f"study {path.name} ({path})")
    return out


def shipped() -> list[Reference]:
    """The references shipped with the package (``reference_curves.json``), each with the
    study, config and command that produced it.

    >>> refs = shipped()
    >>> len(refs) > 0 and all(r.curve[-1][0] == 1.0 for r in refs)
    True
    """
    text = resources.files("freezetune.advise").joinpath(SHIPPED).read_text("utf-8")
    return parse_shipped(json.loads(text))


def parse_shipped(data: dict[str, Any]) -> list[Reference]:
    """References from the shipped file's data (see ``benchmarks/reference_curves.py``)."""
    out = []
    for item in data["references"]:
        study = data["studies"][item["study"]]
        provenance = (f"{SHIPPED}: study {item['study']} ({study['config']}), built by "
                      f"`{data['command']}`")  # fmt: skip
        fields = {k: v for k, v in item.items() if k != "study"}
        curve = tuple((float(x), float(y)) for x, y in item["curve"])
        out.append(Reference(**{**fields, "curve": curve, "provenance": provenance}))
    return out


def to_shipped(study: str, references: Sequence[Reference], digits: int = 4) -> list[dict]:
    """The shipped file's entries for ``references`` (provenance left to its ``studies``)."""
    out = []
    for ref in references:
        item = {k: v for k, v in asdict(ref).items() if k != "provenance"}
        item["curve"] = [[round(x, digits), round(y, digits)] for x, y in ref.curve]
        item["final"] = round(ref.final, digits)
        out.append({"study": study, **item})
    return out


def without_lr(label: str) -> str:
    """A strategy label without its ``lr=`` / ``optim.lr=`` setting.

    >>> without_lr("head (lr=0.001)"), without_lr("full (lr=1e-4, student=3)")
    ('head', 'full (student=3)')
    """
    spec, sep, rest = label.strip().rpartition(" (")
    items = [item.strip() for item in rest[:-1].split(",")] if sep else []
    if not sep or not rest.endswith(")") or not all("=" in item for item in items):
        return label.strip()
    kept = [i for i in items if i.partition("=")[0].strip() not in ("lr", "optim.lr")]
    return spec.strip() + (f" ({', '.join(kept)})" if kept else "")


def _levels(
    references: Sequence[Reference], task: str, model: str, family: str, strategy: str = ""
) -> tuple[str, list[Reference]]:
    """The closest non-empty level: (with ``strategy``: the same strategy on the same task
    and model;) the same family on the same task and model; on the same task; anywhere.
    ("", []) when no reference is of that family."""
    same = [r for r in references if r.family == family]
    here = [r for r in same if r.task == task and r.model == model]
    for level, found in (
        ("strategy", [r for r in here if strategy and without_lr(r.strategy) == strategy]),
        ("task+model", here),
        ("task", [r for r in same if r.task == task]),
        ("family", same),
    ):
        if found:
            return level, found
    return "", []


def pick(references: Sequence[Reference], *, task: str, model: str, family: str) -> Picked:
    """The curves to use as an arm's prior: those of its family on the same task with the
    same model, else on the same task, else on any task; and a note saying which.

    >>> a = Reference("lora", "lora", "lora", 3e-4, "mrpc", "bert", "text", ((1.0, 0.7),), 0.7, "")
    >>> pick([a], task="sst2", model="bert", family="lora").note
    '1 reference of family lora on other tasks (mrpc)'
    >>> pick([a], task="sst2", model="bert", family="head")
    Picked(curves=[], note='no reference of family head')
    """
    level, found = _levels(references, task, model, family)
    if not found:
        return Picked([], f"no reference of family {family}")
    many = "s" if len(found) > 1 else ""
    where = {"task+model": f"on {task} with {model}", "task": f"on {task} with other models"}
    tasks = ", ".join(sorted({r.task for r in found}))
    note = f"{len(found)} reference{many} of family {family} " + where.get(
        level, f"on other tasks ({tasks})"
    )
    return Picked([r.curve for r in found], note)


def _nearest_lr(found: Sequence[Reference], lr: float) -> list[Reference]:
    """The references whose lr is nearest ``lr`` in log space (all of those tied)."""
    gap = {id(r): abs(math.log(r.lr) - math.log(lr)) for r in found}
    least = min(gap.values())
    return [r for r in found if gap[id(r)] <= least + 1e-9]


def prior_scores(
    arms: Iterable[ArmResult | tuple[str, str, float]],
    references: Sequence[Reference],
    *,
    task: str = "",
    model: str = "",
) -> dict[str, float]:
    """The zero-probe prior: each arm's final predicted from references alone: the mean final
    of the references of its own strategy (label without lr) on the same task and model, else
    of its family at the closest level (as :func:`pick`), in both cases at the lr nearest its
    own in log space (ties averaged). NaN when no reference is of its family. Arms are
    :class:`~.advice.ArmResult` (keyed by ``id``) or ``(label, family, lr)`` (keyed by label).

    >>> refs = [Reference("full", "full", "full", lr, "sst2", "m", "text", ((1.0, y),), y, "")
    ...         for lr, y in [(1e-5, 0.6), (1e-4, 0.5), (1e-4, 0.75)]]
    >>> prior_scores([("full", "full", 2e-4), ("head", "head", 1e-3)], refs, task="sst2",
    ...              model="m")
    {'full': 0.625, 'head': nan}
    """
    out = {}
    for arm in arms:
        key, family, lr = (arm.id, arm.family, arm.lr) if isinstance(arm, ArmResult) else arm
        strategy = without_lr(arm.strategy if isinstance(arm, ArmResult) else arm[0])
        _, found = _levels(references, task, model, family, strategy)
        finals = [r.final for r in _nearest_lr(found, lr)] if found else []
        out[key] = statistics.fmean(finals) if finals else math.nan
    return out
