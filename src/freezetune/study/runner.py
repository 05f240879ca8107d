"""Run a study: resumable, one run at a time by default, each run in a process of its own.

1) lock the study folder, 2) decide what is left to do from the stored rows (pure:
:func:`plan_todo`), 3) hand it to an executor (:mod:`freezetune.study.executors`: local
processes, a Ray cluster, or, launched by torchrun / accelerate launch, the launched processes
themselves), which reports each run's start and end to the ledger, the one writer of
``results.sqlite`` (one transaction each), 4) write the report. Kill it at any moment and run
the same command again: it skips what succeeded and reruns what was in flight, continuing from
its checkpoints where it has some.

>>> from freezetune.study.spec import StudySpec
>>> spec = StudySpec.from_dict({"name": "demo", "strategies": ["full", "head"], "seeds": [0]})
>>> [run.strategy for run in plan_todo(spec.grid(), [], retry_failed=False, host="h")]
['full', 'head']
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from freezetune.errors import UserError
from freezetune.observers import check_reporters
from freezetune.records import atomic_write_text
from freezetune.study.baseline import ensure_baselines
from freezetune.study.executors import DdpExecutor, Executor, Ledger, follow, make_executor
from freezetune.study.executors.keep import check_keep, has_weights
from freezetune.study.preflight import preflight
from freezetune.study.spec import PlannedRun, StudySpec, config_hash
from freezetune.study.store import RunRow, open_store, read_rows, study_lock

if TYPE_CHECKING:
    from freezetune.distributed import Dist

__all__ = ["StudyOutcome", "plan_todo", "run_study", "study_folder"]


@dataclass(frozen=True)
class StudyOutcome:
    """What a call to :func:`run_study` did and where the results are."""

    folder: Path
    planned: int  # runs in this spec's grid
    skipped: int  # already succeeded (or failed, without --retry-failed), or running elsewhere
    ran: int
    succeeded: int  # of the grid, after this call
    failed: int
    headline: str
    report: Path | None


def study_folder(out_root: str | Path, name: str) -> Path:
    return Path(out_root) / name


def plan_todo(
    planned: list[PlannedRun], rows: list[RunRow], *, retry_failed: bool, host: str
) -> list[PlannedRun]:
    """The runs still to do: never started, failed (on their own config: only with
    ``retry_failed``; because their inputs did not load: always, as the caller's preflight has
    just loaded them), or left ``running`` by a study process on this host that died (the
    caller holds the study lock, so no live process here is still writing them). Rows from
    other hosts are left alone."""
    stored = {row.run_id: row for row in rows}
    return [run for run in planned if _unfinished(stored.get(run.run_id), retry_failed, host)]


def _unfinished(row: RunRow | None, retry_failed: bool, host: str) -> bool:
    if row is None:
        return True
    if row.status == "failed":  # its inputs failed to load (data, model, hub): they do now
        return retry_failed or row.cause == "inputs"
    return row.status == "running" and row.hostname == host


def _save_spec(folder: Path, spec: StudySpec) -> None:
    # study.yaml is the latest spec; specs/ keeps every spec this folder has run (runs of an
    # earlier spec stay in results.sqlite and in the report)
    text = spec.to_yaml()
    (folder / "specs").mkdir(exist_ok=True)
    atomic_write_text(folder / "specs" / f"{config_hash(spec.to_dict())}.yaml", text)
    atomic_write_text(folder / "study.yaml", text)


def _choose(executor: str | Executor, jobs: int, d: Dist) -> Executor:
    """The executor of this call: under torchrun always the launched processes."""
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    if d.enabled:
        if jobs > 1:
            raise UserError("under torchrun every run uses all processes; drop --jobs")
        if executor != "local":
            raise UserError(
                "under torchrun every run trains in the launched processes; drop --executor"
            )
        return DdpExecutor(d)
    if isinstance(executor, str):
        return make_executor(executor, jobs=jobs)
    if jobs != 1:
        raise UserError("jobs is the local executor's option; give it to the executor you pass")
    return executor


def _with_teachers(
    todo: list[PlannedRun], planned: list[PlannedRun], rows: list[RunRow], folder: Path
) -> list[PlannedRun]:
    """Put back, first, the finished teachers that students of ``todo`` need and whose weights
    ``--keep-models`` dropped (their folders are cleared, so they train again)."""
    succeeded = {row.run_id for row in rows if row.status == "succeeded"}
    by_id, ids = {run.run_id: run for run in planned}, {run.run_id for run in todo}
    again: list[PlannedRun] = []
    for run in todo:
        teacher = by_id.get(run.teacher or "")
        if teacher is None or teacher.run_id in ids or teacher.run_id not in succeeded:
            continue
        if not has_weights(folder / "runs" / teacher.run_id):
            shutil.rmtree(folder / "runs" / teacher.run_id, ignore_errors=True)
            again.append(teacher)
            ids.add(teacher.run_id)
    return again + todo


def _execute(executor: Executor, todo: list[PlannedRun], ledger: Ledger) -> None:
    """Hand ``todo`` to the executor; under torchrun even when it is empty (that ends the
    other ranks)."""
    executor.run(todo, ledger)


def _run_grid(
    folder: Path,
    spec: StudySpec,
    planned: list[PlannedRun],
    executor: Executor,
    opts: dict[str, Any],
) -> tuple[list[PlannedRun], dict[str, RunRow]]:
    """Run what is left of ``planned``; the runs it ran, and every stored row after."""
    conn = open_store(folder / "results.sqlite")
    try:
        rows = read_rows(conn)
        host = socket.gethostname()
        todo = plan_todo(planned, rows, retry_failed=opts["retry_failed"], host=host)
        todo = _with_teachers(todo, planned, rows, folder)
        ledger = Ledger(
            conn,
            folder,
            spec.name,
            planned,
            todo,
            progress=opts["progress"],
            keep=opts["keep_models"],
            executor=executor.name,
        )
        _execute(executor, todo, ledger)
        ledger.close()
        return todo, {row.run_id: row for row in read_rows(conn)}
    finally:
        conn.close()


def _report(folder: Path) -> tuple[str, Path]:
    from freezetune.report import write_report

    written = write_report(folder)
    return written.headline, written.html


def run_study(
    spec: StudySpec,
    out_root: str | Path = "runs",
    *,
    jobs: int = 1,
    executor: str | Executor = "local",
    retry_failed: bool = False,
    progress: bool = True,
    report: bool = True,
    keep_models: str = "all",
) -> StudyOutcome:
    """Run every unfinished run of ``spec`` into ``out_root/<name>/``, then write the report.

    First, before any folder or row exists, every distinct config's inputs are checked
    (:mod:`freezetune.study.preflight`): a study that cannot succeed raises UserError at once.

    ``executor``: ``"local"`` (``jobs`` at a time), ``"ray"`` (the cluster of ``RAY_ADDRESS``,
    else a local one), or an :class:`~freezetune.study.executors.Executor` such as
    ``RayExecutor("HOST:6379", {"cpu": 2, "gpu": 1})``. ``keep_models``: ``all``, ``best`` or
    ``none`` (:mod:`freezetune.study.executors.keep`). The trivial baseline of each context's
    dev examples is computed first, once, into ``baseline.json``
    (:mod:`freezetune.study.baseline`), for the report to compare with.

    >>> spec = StudySpec.from_dict({"name": "d", "strategies": ["full", "bottom:2"]})
    >>> outcome = run_study(spec, "runs")  # doctest: +SKIP
    >>> outcome.folder / "report.html"  # doctest: +SKIP
    PosixPath('runs/d/report.html')
    """
    from freezetune import distributed

    d = distributed.current()
    chosen = _choose(executor, jobs, d)
    check_keep(keep_models)
    folder = study_folder(out_root, spec.name)
    planned = spec.grid()
    preflight(planned)  # on every rank: all of them stop with the same line
    if not d.is_main:
        follow(folder, d)
        return StudyOutcome(folder, len(planned), 0, 0, 0, 0, "", None)
    check_reporters(tuple({run.report_to for run in planned}))  # once, not run by run
    folder.mkdir(parents=True, exist_ok=True)
    with study_lock(folder, spec.name):
        _save_spec(folder, spec)
        ensure_baselines(folder, [run.config for run in planned])
        opts = {"progress": progress, "retry_failed": retry_failed, "keep_models": keep_models}
        todo, rows = _run_grid(folder, spec, planned, chosen, opts)
        headline, path = _report(folder) if report else ("", None)
    status = [rows[r.run_id].status for r in planned if r.run_id in rows]
    return StudyOutcome(
        folder=folder,
        planned=len(planned),
        skipped=len(planned) - len(todo),
        ran=len(todo),
        succeeded=status.count("succeeded"),
        failed=status.count("failed"),
        headline=headline,
        report=path,
    )
