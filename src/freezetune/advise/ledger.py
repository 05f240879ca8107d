"""The advise process's ledger: a study ledger that also records what successive halving needs.

An executor (local processes, Ray: :mod:`freezetune.study.executors`) trains each arm up to
its rung step (``PlannedRun.stop_at_step``) and hands the outcome to the ledger, as in a study.
:class:`ArmLedger` records it as the study's ledger does (a paused run's row says ``paused``,
its checkpoint kept), and for every arm the rung rows of :mod:`~.store`: each evaluation as an ``observed`` row, a crash, a
non-finite score or an arm that did not reach its rung step as a ``failed`` row. All in the
one writer, so a killed advise reads them back intact.
"""

from __future__ import annotations

import math
from typing import Any

from freezetune.advise.halving import FAILED, OBSERVED, Row
from freezetune.advise.store import write_rows
from freezetune.errors import UserError
from freezetune.study.executors import Ledger
from freezetune.study.spec import PlannedRun
from freezetune.study.worker import RunOutcome, load_events

__all__ = ["ArmLedger", "observed_rows", "rung_rows"]


def observed_rows(
    arm: str, rung: int, curve: list[dict[str, Any]], metric: str, reached: int
) -> list[Row]:
    """The evaluations of ``curve`` up to step ``reached`` as rows (a missing or non-finite
    score: NaN, which halving ranks last).

    >>> observed_rows("a", 0, [{"step": 5, "accuracy": 0.6}, {"step": 9, "accuracy": 0.7}],
    ...               "accuracy", 5)
    [Row(arm='a', rung=0, step=5, score=0.6, kind='observed')]
    """
    rows = []
    for event in curve:
        step = int(event.get("step", 0))
        if 0 < step <= reached:
            value = event.get(metric)
            score = float(value) if isinstance(value, int | float) else math.nan
            rows.append(Row(arm, rung, step, score, OBSERVED))
    return rows


def rung_rows(
    arm: str, rung: int, curve: list[dict[str, Any]], metric: str, target: int | None
) -> list[Row]:
    """The rows of an arm that ran toward step ``target`` (None: it did not get there): its
    evaluations up to it, and a ``failed`` row unless it has a finite score at ``target``
    (halving never asks again for an arm with one; a score of 0 is a score).

    >>> [r.kind for r in rung_rows("a", 0, [{"step": 5, "f1": 0.0}], "f1", 5)]
    ['observed']
    >>> [r.kind for r in rung_rows("a", 0, [{"step": 4, "f1": 0.5}], "f1", 5)]
    ['observed', 'failed']
    """
    steps = [int(e.get("step", 0)) for e in curve]
    reached = target if target is not None else max(steps, default=0)
    rows = observed_rows(arm, rung, curve, metric, reached)
    last = next((r for r in reversed(rows) if r.step == target), None)
    if last is None or last.score is None or not math.isfinite(last.score):
        rows.append(Row(arm, rung, target or reached, None, FAILED))
    return rows


class ArmLedger(Ledger):
    """A :class:`~freezetune.study.executors.Ledger` for advise's arms (see the module): as
    the study's, plus each arm's rung rows; ``rungs`` says which rung each run ran toward."""

    noun = "advise"

    def __init__(
        self, *args: Any, rungs: dict[str, int], metric: str, budget: int, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.rungs, self.metric, self.budget = rungs, metric, budget

    def end(self, run: PlannedRun, outcome: RunOutcome) -> bool:
        """Record the outcome; True if the arm reached its rung step with a finite score."""
        ok = super().end(run, outcome)
        self._check_budget(run)
        target = run.stop_at_step or self.budget
        rung = self.rungs.get(run.run_id, 0)
        rows = rung_rows(run.run_id, rung, outcome.curve, self.metric, target if ok else None)
        write_rows(self.conn, rows)
        return rows[-1].kind == OBSERVED

    def _check_budget(self, run: PlannedRun) -> None:
        """The run's own step count must be the one advise planned its rungs with."""
        events = load_events(self.out(run) / "metrics.jsonl")
        total = next((e.get("total_steps") for e in events if e.get("event") == "start"), None)
        if total is not None and total != self.budget:
            raise UserError(
                f"advise planned {self.budget} steps per arm but {run.strategy} runs {total}; "
                "this is a bug in freezetune advise: report it with the command you ran"
            )
