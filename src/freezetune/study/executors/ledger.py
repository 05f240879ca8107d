"""The study process's side of running a grid, whichever executor trains the runs.

The :class:`Ledger` is the only writer of ``results.sqlite``: an executor tells it when a run
starts, where it executes, and how it ended (a :class:`~freezetune.study.worker.RunOutcome`),
and it records each in one transaction, applies ``--keep-models``, and shows one line for the
grid (done, failed, running and where). :func:`run_config` and :func:`next_ready` are the two
things every executor needs to start a run.

>>> from freezetune.study.spec import StudySpec
>>> full, student = StudySpec.from_dict({"name": "d", "strategies": [
...     "full", {"freeze": "full", "distill.student_layers": 1, "distill.teacher": "@full"}],
...     "base": {"model": {"name": "minilm-l6"}}}, preset_blocks=6).grid()
>>> queue = [full, student]
>>> next_ready(queue, []) is full, next_ready(queue, [full]), len(queue)
(True, None, 1)
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from freezetune.study.executors.keep import drop_weights, weights_to_drop
from freezetune.study.spec import PlannedRun
from freezetune.study.store import RunRow, fail_run, finish_run, pause_run, read_rows, start_run
from freezetune.study.worker import RunOutcome

__all__ = ["Ledger", "next_ready", "run_config"]


def run_config(
    run: PlannedRun, out: Path, progress: bool, *, save_every: int | None = None
) -> dict[str, Any]:
    """The run config ``run`` trains with in ``out``; ``save_every``: checkpoint every N steps
    when the study does not say (an executor that resumes runs asks for it)."""
    config = json.loads(json.dumps(run.config))
    config.update(out=str(out), overwrite=True)
    config["train"]["progress"] = progress
    config["train"]["report_to"] = run.report_to
    config["train"]["inference_cost"] = run.inference_cost
    config["train"]["save_every"] = run.save_every or save_every
    config["train"]["stop_at_step"] = run.stop_at_step
    if run.teacher is not None:  # "@full": the same cell's full run, in the same study folder
        config["distill"]["teacher"] = str(out.parent / run.teacher)
    return config


def next_ready(queue: list[PlannedRun], active: list[PlannedRun]) -> PlannedRun | None:
    """Take the first queued run whose teacher (if any) is neither queued nor training."""
    waiting = {run.run_id for run in queue} | {run.run_id for run in active}
    for i, run in enumerate(queue):
        if run.teacher is None or run.teacher not in waiting:
            return queue.pop(i)
    return None


class Ledger:
    """Records a grid's runs as they start and end; shows its progress line on stderr."""

    noun = "study"  # what the progress line calls the job

    def __init__(
        self,
        conn: sqlite3.Connection,
        folder: Path,
        name: str,
        planned: list[PlannedRun],
        todo: list[PlannedRun],
        *,
        progress: bool = True,
        keep: str = "all",
        executor: str = "local",
    ) -> None:
        self.conn, self.folder, self.name, self.progress = conn, folder.resolve(), name, progress
        self.planned, self.keep, self.executor = planned, keep, executor
        self.busy = {run.run_id for run in todo}  # not yet recorded in this call
        self.running: dict[str, str | None] = {}  # run_id -> where it executes (None: not yet)
        self.labels = {run.run_id: f"{run.strategy} s{run.seed}" for run in planned}
        ids = {run.run_id for run in planned}
        rows = [row for row in read_rows(conn) if row.run_id in ids and row.run_id not in self.busy]
        self.initial = len(rows)  # runs of the grid this call does not run
        self.failed = sum(row.status == "failed" for row in rows)
        self.ended = 0
        self.started = time.monotonic()
        self._shown: tuple[Any, ...] = ()

    def out(self, run: PlannedRun) -> Path:
        """The run's folder (absolute: an executor's processes may run elsewhere)."""
        return self.folder / "runs" / run.run_id

    def start(self, run: PlannedRun, *, placed: bool = True) -> None:
        """The run is handed to the executor: its row says ``running``. ``placed=False``: it
        waits for room on the cluster until :meth:`placed` says where it executes."""
        start_run(self.conn, run)
        self.running[run.run_id] = "" if placed else None
        self.show()

    def placed(self, run: PlannedRun, where: str) -> None:
        """The run executes on ``where`` (a node's address)."""
        if self.running.get(run.run_id) != where:
            self.running[run.run_id] = where
            self.show()

    def end(self, run: PlannedRun, outcome: RunOutcome) -> bool:
        """Record how the run ended; True if it succeeded (or paused where its
        ``stop_at_step`` said: its checkpoint is kept). Then apply ``--keep-models``."""
        if outcome.status == "paused" and outcome.paused_at != run.stop_at_step:
            why = f"paused at step {outcome.paused_at}, not at its stop step {run.stop_at_step}"
            outcome = RunOutcome.failed(why)  # e.g. a signal's checkpoint
        if outcome.status == "paused":
            pause_run(self.conn, run.run_id, outcome.curve)
        elif outcome.status == "succeeded" and outcome.result is not None:
            where = outcome.where or self.running.get(run.run_id) or None
            stamp = {"name": self.executor, "host": where or socket.gethostname()}
            result = {**outcome.result, "executor": {**stamp, "resumed_from": outcome.resumed_from}}
            finish_run(self.conn, run.run_id, result, outcome.timeline, outcome.curve)
            if run.save_every is None:  # checkpoints only the executor asked for
                shutil.rmtree(self.out(run) / "checkpoints", ignore_errors=True)
        else:
            error = outcome.error or "the run ended without a result"
            fail_run(self.conn, run.run_id, error, outcome.cause)
            self.failed += 1
        self.running.pop(run.run_id, None)
        self.busy.discard(run.run_id)
        self.ended += 1
        self.prune()
        self.show()
        return outcome.status in ("succeeded", "paused")

    def prune(self) -> None:
        """Drop the weights ``--keep-models`` no longer keeps (never a busy run's)."""
        if self.keep == "all":
            return
        rows: dict[str, RunRow] = {row.run_id: row for row in read_rows(self.conn)}
        for run_id in weights_to_drop(self.keep, self.planned, rows, self.busy):
            drop_weights(self.folder / "runs" / run_id)

    def close(self) -> None:
        """The grid is done: apply ``--keep-models`` to all of it (runs of earlier calls too)."""
        self.prune()

    def _state(self) -> tuple[list[str], int]:
        """Where the runs that execute now are, and how many others wait."""
        where = [
            self.labels.get(run_id, run_id) + (f" @{node}" if node else "")
            for run_id, node in self.running.items()
            if node is not None
        ]
        return where, len(self.busy) - len(where)

    def line(self) -> str:
        """The grid's progress: a bar over every run, failed, running (and where), queued."""
        where, queued = self._state()
        parts = [f"failed {self.failed}", f"running {len(where)}" + (": " if where else "")]
        postfix = ", ".join(parts) + ", ".join(where) + (f"; queued {queued}" if queued else "")
        return tqdm.format_meter(
            self.initial + self.ended,
            len(self.planned),
            time.monotonic() - self.started,
            prefix=f"{self.noun} {self.name}",
            unit="run",
            initial=self.initial,
            postfix=postfix,
        )

    def show(self) -> None:
        """Print :meth:`line` when what it says (not its clock) changed."""
        where, queued = self._state()
        state = (self.ended, self.failed, tuple(where), queued)
        if self.progress and state != self._shown:
            self._shown = state
            print(self.line(), file=sys.stderr, flush=True)
