"""The local executor: each run in a process of its own on this machine, ``jobs`` at a time.

A run's process is forked from a server that imported torch once (``worker.launch``); the study
process waits on their sentinels and records each outcome as it ends. Kill the study (kill -9
included) and its runs die with it (``worker._die_with_parent``).
"""

from __future__ import annotations

import multiprocessing.connection
from dataclasses import dataclass
from typing import Any

from freezetune.study.executors.ledger import Ledger, next_ready, run_config
from freezetune.study.spec import PlannedRun
from freezetune.study.worker import launch, outcome_of

__all__ = ["LocalExecutor"]


@dataclass(frozen=True)
class LocalExecutor:
    """At most ``jobs`` runs at once, in processes of this machine."""

    jobs: int = 1
    name: str = "local"

    def run(self, todo: list[PlannedRun], ledger: Ledger) -> None:
        queue = list(todo)
        active: dict[Any, tuple[Any, PlannedRun]] = {}
        try:
            while queue or active:
                while queue and len(active) < self.jobs:
                    run = next_ready(queue, [run for _, run in active.values()])
                    if run is None:
                        break  # every queued run waits for a teacher still training
                    ledger.start(run)
                    process = launch(run_config(run, ledger.out(run), ledger.progress))
                    active[process.sentinel] = (process, run)
                for sentinel in multiprocessing.connection.wait(list(active)):
                    process, run = active.pop(sentinel)
                    process.join()
                    ledger.end(run, outcome_of(ledger.out(run), process.exitcode))
        finally:
            for process, _ in active.values():  # interrupted: stop what is still training
                process.kill()
                process.join()
