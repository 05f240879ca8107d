"""``--keep-models none|best|all``: which finished runs keep their saved weights.

- ``all`` (the default): every run keeps its model folder as training wrote it.
- ``best``: per strategy (its label, e.g. ``bottom:3`` or ``head (lr=0.001)``, over every seed,
  learning rate and training size of the grid), only the succeeded run with the highest best
  dev score on the task's main metric keeps its weights (ties: the first in grid order). When a
  later run beats it, the earlier one's weights go.
- ``none``: no run keeps its weights once it is recorded.

"Weights" are the model files (``*.safetensors``, ``pytorch_model*.bin``) and ``checkpoints/``;
``result.json``, ``metrics.jsonl``, the configs and the processor stay, so the report is
unchanged. A run that is the teacher of a distilled run of the grid (``PlannedRun.teacher``)
keeps its weights until every such student still to run in this call has been recorded; a
student retried later whose teacher's weights are gone gets its teacher trained again first
(``runner``).

>>> from freezetune.study.spec import StudySpec
>>> from freezetune.study.store import RunRow
>>> a, b = StudySpec.from_dict({"name": "k", "strategies": ["full"], "seeds": [0, 1]}).grid()
>>> def done(run, score):
...     result = {"main_metric": "accuracy", "best": {"accuracy": score}}
...     return RunRow(run.run_id, run.strategy, run.freeze, run.seed, run.lr, None,
...                   "succeeded", result=result)
>>> rows = {a.run_id: done(a, 0.8), b.run_id: done(b, 0.9)}
>>> weights_to_drop("best", [a, b], rows, busy=set()) == [a.run_id]
True
>>> weights_to_drop("all", [a, b], rows, busy=set())
[]
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from freezetune.errors import UserError
from freezetune.study.spec import PlannedRun
from freezetune.study.store import RunRow

__all__ = ["KEEP_MODELS", "check_keep", "drop_weights", "has_weights", "weights_to_drop"]

KEEP_MODELS = ("all", "best", "none")

#: what a run folder's weights are (the rest of the folder stays)
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin*")


def check_keep(keep: str) -> str:
    if keep not in KEEP_MODELS:
        raise UserError(f"--keep-models must be one of {', '.join(KEEP_MODELS)}, got {keep!r}")
    return keep


def _score(row: RunRow) -> float:
    result = row.result or {}
    value = (result.get("best") or {}).get(result.get("main_metric"))
    return float(value) if isinstance(value, int | float) else -math.inf


def _best_per_strategy(planned: list[PlannedRun], rows: dict[str, RunRow]) -> set[str]:
    best: dict[str, tuple[float, str]] = {}
    for run in planned:
        row = rows.get(run.run_id)
        if row is None or row.status != "succeeded":
            continue
        score = _score(row)
        if run.strategy not in best or score > best[run.strategy][0]:
            best[run.strategy] = (score, run.run_id)
    return {run_id for _, run_id in best.values()}


def weights_to_drop(
    keep: str, planned: list[PlannedRun], rows: dict[str, RunRow], busy: set[str]
) -> list[str]:
    """The run_ids of ``planned`` whose weights go now (pure). ``busy``: runs of this call not
    yet recorded; they, and the teachers they still need, keep theirs."""
    if keep == "all":
        return []
    needed = {run.teacher for run in planned if run.teacher and run.run_id in busy}
    kept = _best_per_strategy(planned, rows) if keep == "best" else set()
    return [
        run.run_id
        for run in planned
        if run.run_id in rows
        and rows[run.run_id].status in ("succeeded", "failed")
        and run.run_id not in busy | needed | kept
    ]


def has_weights(out: Path) -> bool:
    return any(next(out.glob(pattern), None) for pattern in WEIGHT_PATTERNS)


def drop_weights(out: Path) -> bool:
    """Delete the weights in run folder ``out``; True if there were any."""
    found = [path for pattern in WEIGHT_PATTERNS for path in out.glob(pattern)]
    for path in found:
        path.unlink(missing_ok=True)
    checkpoints = out / "checkpoints"
    if checkpoints.is_dir():
        shutil.rmtree(checkpoints, ignore_errors=True)
        found.append(checkpoints)
    return bool(found)
