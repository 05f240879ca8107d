"""Read what each arm did from its run folder: the facts :func:`~.answer.answer` takes.

An arm's folder (``<advise>/runs/<run id>``) holds its ``metrics.jsonl`` (every evaluation,
with the training seconds so far) and, once it ran to its end, ``result.json`` (its best score
and the saved model's inference cost). The finalists' other seeds are runs of their own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from freezetune.advise.answer import ArmFacts, Curves, best_so_far
from freezetune.advise.context import Context
from freezetune.advise.costs import time_points
from freezetune.advise.halving import Decision
from freezetune.advise.lrs import family_label, family_of
from freezetune.advise.references import without_lr
from freezetune.study.spec import PlannedRun
from freezetune.study.worker import load_events

__all__ = ["architecture", "arm_facts", "own_curves", "references_for"]


def architecture(config: dict[str, Any]) -> str:
    """The model a run leaves at inference: frozen or not, LoRA merged, the same network;
    a cut student is another.

    >>> architecture({"model": {"name": "minilm-l6"}, "distill": {"student_layers": 3}})
    'minilm-l6 cut to 3 blocks'
    """
    name = (config.get("model") or {}).get("name", "model")
    student = (config.get("distill") or {}).get("student_layers")
    return f"{name} cut to {student} blocks" if student else str(name)


def _result(folder: Path) -> dict[str, Any] | None:
    path = folder / "result.json"
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return data


def _best(result: dict[str, Any] | None, metric: str) -> float | None:
    value = ((result or {}).get("best") or {}).get(metric)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _inference(runs: Path, planned: Sequence[PlannedRun]) -> dict[str, float]:
    """Seconds per example of each architecture, over its runs that measured it."""
    found: dict[str, list[float]] = {}
    for run in planned:
        measured = ((_result(runs / run.run_id) or {}).get("inference") or {}).get("examples_per_s")
        if isinstance(measured, int | float) and measured > 0:
            found.setdefault(architecture(run.config), []).append(1 / measured)
    return {arch: sum(v) / len(v) for arch, v in found.items()}


def _status(arm: str, decision: Decision, finished: bool, failed: bool) -> tuple[str, int]:
    """finalist (ran through the halving to its end), trained (stopped at a rung, then
    trained to its end as a pick), stopped at a rung, or failed."""
    stopped = dict(decision.stopped)
    if failed:
        return "failed", stopped.get(arm, 0)
    if finished:
        return (
            ("finalist", decision.rung) if arm in decision.finalists else ("trained", stopped[arm])
        )
    return "stopped", stopped.get(arm, 0)


def arm_facts(
    folder: Path,
    arms: Sequence[PlannedRun],
    extra: Sequence[PlannedRun],
    decision: Decision,
    context: Context,
    failed: frozenset[str] = frozenset(),
) -> list[ArmFacts]:
    """One :class:`ArmFacts` per arm, in the arms' order (``extra``: finalists' other seeds;
    ``failed``: the arms halving recorded as failed)."""
    runs, metric = folder / "runs", context.metric
    speeds = _inference(runs, [*arms, *extra])
    out = []
    for arm in arms:
        events = [e for e in load_events(runs / arm.run_id / "metrics.jsonl")
                  if e.get("event") == "eval"]  # fmt: skip
        curve = tuple(
            (
                int(e["step"]),
                float(e[metric]) if isinstance(e.get(metric), int | float) else math.nan,
            )
            for e in events
        )
        results = [(arm.seed, _best(_result(runs / arm.run_id), metric))]
        results += [(r.seed, _best(_result(runs / r.run_id), metric)) for r in extra
                    if r.strategy == arm.strategy and r.seed != arm.seed]  # fmt: skip
        seeds = tuple((s, v) for s, v in results if v is not None)
        finished = results[0][1] is not None
        error_path = runs / arm.run_id / "error.txt"
        broke = arm.run_id in failed or error_path.is_file()
        status, rung = _status(arm.run_id, decision, finished, broke)
        out.append(ArmFacts(
            arm.run_id, arm.strategy, _strategy(arm), arm.freeze, family_of(_family_label(arm)),
            arm.lr, context.budget, context.per_epoch, status, rung, curve,
            tuple(time_points(events)), seeds if finished else (), architecture(arm.config),
            speeds.get(architecture(arm.config)),
            error_path.read_text("utf-8").strip() if error_path.is_file() else None,
        ))  # fmt: skip
    return out


def _strategy(arm: PlannedRun) -> str:
    """The arm's label without its lr: ``"bottom:3 (lr=0.0001)"`` -> ``"bottom:3"``."""
    return without_lr(arm.strategy)


def _family_label(arm: PlannedRun) -> str:
    return family_label(arm.freeze, (arm.config.get("distill") or {}).get("student_layers"))


def own_curves(
    folder: Path, runs: Sequence[PlannedRun], metric: str, budget: int
) -> list[tuple[str, list[tuple[float, float]]]]:
    """(lr family, best-so-far curve over the fraction of the run) of each of ``runs`` that
    ran to its end: an advise's own finished runs are reference curves for its pruned arms."""
    out = []
    for run in runs:
        folder_of = folder / "runs" / run.run_id
        if _best(_result(folder_of), metric) is None:
            continue
        events = load_events(folder_of / "metrics.jsonl")
        points = [(int(e["step"]), float(e[metric])) for e in events
                  if e.get("event") == "eval" and isinstance(e.get(metric), int | float)]  # fmt: skip
        curve = best_so_far(points, budget)
        if curve and curve[-1][0] == 1.0:
            out.append((family_of(_family_label(run)), curve))
    return out


def references_for(sources: Sequence[str | Path], context: Context) -> Callable[[str], Curves]:
    """Reference curves per lr family: the user's study folders, then those shipped with
    freezetune (:mod:`~.references`)."""
    from freezetune.advise import references

    found = references.from_folders([Path(s) for s in sources]) + references.shipped()

    def for_family(family: str) -> Curves:
        curves, _ = references.pick(found, task=context.task, model=context.model, family=family)
        return curves

    return for_family
