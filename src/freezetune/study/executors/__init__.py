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

More come from plugins: :func:`register_executor` (code that is not a package) or the
``freezetune.executors`` entry points of installed packages, each naming a factory that takes
:class:`ExecutorOptions` and returns an :class:`Executor`.

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
from dataclasses import dataclass
from typing import Protocol

from freezetune.errors import UserError
from freezetune.plugins import Registry
from freezetune.study.executors.ddp import DdpExecutor, follow
from freezetune.study.executors.ledger import Ledger
from freezetune.study.executors.local import LocalExecutor
from freezetune.study.executors.ray_cluster import RayExecutor, parse_resources
from freezetune.study.spec import PlannedRun

__all__ = [
    "EXECUTORS",
    "DdpExecutor",
    "Executor",
    "ExecutorFactory",
    "ExecutorOptions",
    "Ledger",
    "LocalExecutor",
    "RayExecutor",
    "follow",
    "make_executor",
    "register_executor",
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


@dataclass(frozen=True)
class ExecutorOptions:
    """The study's executor flags, as every executor factory receives them (``--jobs``,
    ``--ray-address``, ``--run-resources``). A factory refuses the ones it cannot honour."""

    jobs: int = 1
    ray_address: str | None = None
    run_resources: str | None = None


#: what a plugin registers: ExecutorOptions -> Executor (UserError on options it refuses)
ExecutorFactory = Callable[[ExecutorOptions], Executor]


def _check(name: str, obj: object) -> str | None:
    if not callable(obj):
        return f"is a {type(obj).__name__}, not an executor factory; fix it or uninstall it"
    return None


#: name -> factory; plugins add theirs with ``freezetune.executors`` entry points.
#: Under torchrun the runner uses :class:`DdpExecutor` whatever the name.
EXECUTORS: Registry[ExecutorFactory] = Registry(
    "freezetune.executors", "executor", check=_check, flag="--executor"
)


def register_executor(name: str, factory: ExecutorFactory, *, source: str | None = None) -> None:
    """Make ``--executor name`` train a study's runs with ``factory(options)``; ``source`` is
    the package named in errors (default: ``factory``'s top package)."""
    module = getattr(factory, "__module__", None) or "__main__"
    EXECUTORS.register(name, factory, source=source or module.partition(".")[0], module=module)


def _local(options: ExecutorOptions) -> Executor:
    if options.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {options.jobs}")
    if options.ray_address is not None or options.run_resources is not None:
        raise UserError("--ray-address and --run-resources are for --executor ray")
    return LocalExecutor(options.jobs)


def _ray(options: ExecutorOptions) -> Executor:
    if options.jobs != 1:
        raise UserError(
            "--jobs is for --executor local; on Ray, --run-resources and the cluster's size "
            "decide how many runs train at once"
        )
    return RayExecutor(options.ray_address, parse_resources(options.run_resources))


register_executor("local", _local)
register_executor("ray", _ray)


def make_executor(
    name: str, *, jobs: int = 1, ray_address: str | None = None, run_resources: str | None = None
) -> Executor:
    """The executor ``--executor name`` means, its options checked (UserError on bad ones)."""
    return EXECUTORS.get(name)(ExecutorOptions(jobs, ray_address, run_resources))
