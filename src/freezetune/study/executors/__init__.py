"""Where a study's runs train: the executor seam.

An :class:`Executor` takes the runs still to do and a :class:`~.ledger.Ledger`, trains every run
(a distilled run only after its teacher ended) and tells the ledger as each starts and ends; the
ledger alone writes ``results.sqlite``. Planning, the store and the report stay in
:mod:`freezetune.study.runner`. Three executors:

- ``local`` (:class:`~.local.LocalExecutor`): each run in a process of its own on this machine,
  ``--jobs`` at a time (the default).
- ``ray`` (:class:`~.ray_cluster.RayExecutor`): each run a Ray task on a cluster, retried from
  its last checkpoint when its node dies (``pip install 'freezetune[ray]'``).
- under torchrun / accelerate launch, :class:`~.ddp.DdpExecutor`, chosen automatically: every
  run trains data-parallel in the launched processes.

>>> sorted(EXECUTORS)
['local', 'ray']
>>> make_executor("local", jobs=2)
LocalExecutor(jobs=2, name='local')
>>> make_executor("spark")
Traceback (most recent call last):
...
freezetune.errors.UserError: unknown --executor 'spark'; choose one of: local, ray
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from freezetune.errors import UserError
from freezetune.study.executors.ddp import DdpExecutor, follow
from freezetune.study.executors.ledger import Ledger
from freezetune.study.executors.local import LocalExecutor
from freezetune.study.executors.ray_cluster import RayExecutor, parse_resources
from freezetune.study.spec import PlannedRun

__all__ = [
    "EXECUTORS",
    "DdpExecutor",
    "Executor",
    "Ledger",
    "LocalExecutor",
    "RayExecutor",
    "follow",
    "make_executor",
]


class Executor(Protocol):
    """Trains a list of runs, reporting each start and end to the ledger."""

    @property
    def name(self) -> str:
        """Recorded with each result (``result["executor"]["name"]``)."""
        ...

    def run(self, todo: list[PlannedRun], ledger: Ledger) -> None:
        """Train every run of ``todo`` (teachers before their students), telling ``ledger``
        as each starts (``start``), where it executes (``placed``) and how it ended (``end``)."""
        ...


def _local(jobs: int, ray_address: str | None, run_resources: str | None) -> Executor:
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    if ray_address is not None or run_resources is not None:
        raise UserError("--ray-address and --run-resources are for --executor ray")
    return LocalExecutor(jobs)


def _ray(jobs: int, ray_address: str | None, run_resources: str | None) -> Executor:
    if jobs != 1:
        raise UserError(
            "--jobs is for --executor local; on Ray, --run-resources and the cluster's size "
            "decide how many runs train at once"
        )
    return RayExecutor(ray_address, parse_resources(run_resources))


#: name -> factory(jobs, ray_address, run_resources); under torchrun: DdpExecutor
EXECUTORS: dict[str, Callable[[int, str | None, str | None], Executor]] = {
    "local": _local,
    "ray": _ray,
}


def make_executor(
    name: str, *, jobs: int = 1, ray_address: str | None = None, run_resources: str | None = None
) -> Executor:
    """The executor ``--executor name`` means, its options checked (UserError on bad ones)."""
    if name not in EXECUTORS:
        raise UserError(f"unknown --executor {name!r}; choose one of: {', '.join(EXECUTORS)}")
    return EXECUTORS[name](jobs, ray_address, run_resources)
