"""The executor under torchrun / accelerate launch: every run trains data-parallel in the
launched processes themselves, one after another.

Rank 0 plans, records and reports (:class:`DdpExecutor`) and tells the other ranks which run
comes next; they train it beside it (:func:`follow`) until it announces none. A run that fails
ends the job (its peers may be stuck mid-collective); it is recorded first.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from freezetune.study.executors.ledger import Ledger, run_config
from freezetune.study.spec import PlannedRun
from freezetune.study.worker import outcome_of, train_and_record

if TYPE_CHECKING:
    from freezetune.distributed import Dist

__all__ = ["DdpExecutor", "follow"]


@dataclass(frozen=True)
class DdpExecutor:
    """Rank 0 of a distributed job: each run trains here and in every other rank at once."""

    dist: Dist
    name: str = "ddp"

    def run(self, todo: list[PlannedRun], ledger: Ledger) -> None:
        from freezetune import distributed
        from freezetune.loop import Interrupted

        for run in todo:
            ledger.start(run)
            out = ledger.out(run)
            shutil.rmtree(out, ignore_errors=True)  # every rank starts the run afresh
            distributed.broadcast(run, self.dist)
            try:  # under DDP a failed run raises: its peers may be stuck mid-collective
                train_and_record(run_config(run, out, ledger.progress))
            except Exception as err:
                if not isinstance(err, Interrupted):  # interrupted: left to resume next time
                    ledger.end(run, outcome_of(out, 1))
                raise
            ledger.end(run, outcome_of(out, 0))
        distributed.broadcast(None, self.dist)  # no more runs


def follow(folder: Path, d: Dist) -> None:
    """Any other rank: train each run rank 0 announces, until it announces none."""
    from freezetune import distributed

    while (run := distributed.broadcast(None, d)) is not None:
        train_and_record(run_config(run, folder.resolve() / "runs" / run.run_id, False))
