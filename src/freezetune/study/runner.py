"""Run a study: resumable, one run at a time by default, each run in a process of its own.

Launched by torchrun / accelerate launch (several processes), every run instead trains
data-parallel in the launched processes themselves: rank 0 plans, records and reports, and
tells the other ranks which run comes next.

1) lock the study folder, 2) decide what is left to do from the stored rows (pure:
:func:`plan_todo`), 3) run it, writing each run's start and end to ``results.sqlite`` in one
transaction each, 4) write the report. Kill it at any moment and run the same command again: it
skips what succeeded and reruns what was in flight.

>>> from freezetune.study.spec import StudySpec
>>> spec = StudySpec.from_dict({"name": "demo", "strategies": ["full", "head"], "seeds": [0]})
>>> [run.strategy for run in plan_todo(spec.grid(), [], retry_failed=False, host="h")]
['full', 'head']
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from freezetune.observers import check_reporters
from freezetune.records import atomic_write_text
from freezetune.study.baseline import ensure_baselines
from freezetune.study.spec import PlannedRun, StudySpec, config_hash
from freezetune.study.store import (
    RunRow,
    fail_run,
    finish_run,
    open_store,
    read_rows,
    start_run,
    study_lock,
)
from freezetune.study.worker import (
    ERROR_FILE,
    load_events,
    read_events,
    train_and_record,
    train_in_child,
)

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
    """The runs still to do: never started, failed (only with ``retry_failed``), or left
    ``running`` by a study process on this host that died (the caller holds the study lock, so no
    live process here is still writing them). Rows from other hosts are left alone."""
    stored = {row.run_id: row for row in rows}
    return [run for run in planned if _unfinished(stored.get(run.run_id), retry_failed, host)]


def _unfinished(row: RunRow | None, retry_failed: bool, host: str) -> bool:
    if row is None:
        return True
    if row.status == "failed":
        return retry_failed
    return row.status == "running" and row.hostname == host


def _context() -> Any:
    # a fork server that imported torch once: each run forks from it in well under a second,
    # and since it never ran torch ops itself, forking it is safe (unlike forking this process)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["freezetune.training", "freezetune.study.worker"])
    return ctx


def _run_config(run: PlannedRun, out: Path, progress: bool) -> dict[str, Any]:
    config = json.loads(json.dumps(run.config))
    config.update(out=str(out), overwrite=True)
    config["train"]["progress"] = progress
    config["train"]["report_to"] = run.report_to
    if run.teacher is not None:  # "@full": the same cell's full run, in the same study folder
        config["distill"]["teacher"] = str(out.parent / run.teacher)
    return config


def _next_ready(queue: list[PlannedRun], active: list[PlannedRun]) -> PlannedRun | None:
    """Take the first queued run whose teacher (if any) is neither queued nor training."""
    waiting = {run.run_id for run in queue} | {run.run_id for run in active}
    for i, run in enumerate(queue):
        if run.teacher is None or run.teacher not in waiting:
            return queue.pop(i)
    return None


def _launch(ctx: Any, run: PlannedRun, out: Path, progress: bool) -> Any:
    shutil.rmtree(out, ignore_errors=True)  # a killed attempt leaves a partial folder
    config = _run_config(run, out, progress)
    process = ctx.Process(target=train_in_child, args=(config,), name=f"freezetune-{run.run_id}")
    process.start()
    return process


def _execute_ranked(
    conn: Any, todo: list[PlannedRun], folder: Path, progress: bool, d: Dist
) -> None:
    """Rank 0 of a distributed job: each run trains here and in every other rank at once."""
    from freezetune import distributed
    from freezetune.loop import Interrupted

    for n, run in enumerate(todo, 1):
        if progress:
            print(f"study run {n}/{len(todo)}: {run.strategy} seed {run.seed}", file=sys.stderr)
        start_run(conn, run)
        out = folder / "runs" / run.run_id
        shutil.rmtree(out, ignore_errors=True)
        distributed.broadcast(run, d)
        try:  # under DDP a failed run raises: its peers may be stuck mid-collective
            train_and_record(_run_config(run, out, progress))
        except Exception as err:
            if not isinstance(err, Interrupted):  # interrupted: left to resume next time
                _record(conn, run, 1, out)
            raise
        _record(conn, run, 0, out)
    distributed.broadcast(None, d)  # no more runs


def _follow(folder: Path, d: Dist) -> None:
    """Any other rank: train each run rank 0 announces, until it announces none."""
    from freezetune import distributed

    while (run := distributed.broadcast(None, d)) is not None:
        train_and_record(_run_config(run, folder / "runs" / run.run_id, False))


def _record(conn: Any, run: PlannedRun, exitcode: int | None, out: Path) -> bool:
    """Store the run's outcome from its exit code and files; True if it succeeded."""
    result_path = out / "result.json"
    if exitcode == 0 and result_path.is_file():
        result = json.loads(result_path.read_text(encoding="utf-8"))
        timeline, curve = read_events(load_events(out / "metrics.jsonl"))
        finish_run(conn, run.run_id, result, timeline, curve)
        return True
    if (out / ERROR_FILE).is_file():
        message = (out / ERROR_FILE).read_text(encoding="utf-8").strip()
    elif exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        message = f"the run's process was killed by {name}{hint}"
    else:
        message = f"the run's process exited with code {exitcode} without a result"
    fail_run(conn, run.run_id, message)
    return False


def _bar_line(name: str, done: int, total: int, started: float, initial: int) -> str:
    return tqdm.format_meter(
        done, total, time.monotonic() - started, prefix=f"study {name}", unit="run", initial=initial
    )


def _execute(
    conn: Any, spec: StudySpec, todo: list[PlannedRun], folder: Path, opts: dict[str, Any]
) -> None:
    """Run ``todo``, at most ``opts['jobs']`` at once, recording each outcome as it ends."""
    ctx, jobs, progress = _context(), opts["jobs"], opts["progress"]
    total, initial = opts["total"], opts["total"] - len(todo)
    queue, done = list(todo), initial
    active: dict[Any, tuple[Any, PlannedRun, Path]] = {}
    started = time.monotonic()
    try:
        while queue or active:
            while queue and len(active) < jobs:
                ready = _next_ready(queue, [run for _, run, _ in active.values()])
                if ready is None:
                    break  # every queued run waits for a teacher still training
                run = ready
                if progress:
                    line = _bar_line(spec.name, done, total, started, initial)
                    print(f"{line}  next: {run.strategy} seed {run.seed}", file=sys.stderr)
                start_run(conn, run)
                out = folder / "runs" / run.run_id
                process = _launch(ctx, run, out, progress)
                active[process.sentinel] = (process, run, out)
            for sentinel in multiprocessing.connection.wait(list(active)):
                process, run, out = active.pop(sentinel)
                process.join()
                _record(conn, run, process.exitcode, out)
                done += 1
    finally:
        for process, _, _ in active.values():  # interrupted: stop what is still training
            process.kill()
            process.join()
    if progress:
        print(_bar_line(spec.name, done, total, started, initial), file=sys.stderr)


def _save_spec(folder: Path, spec: StudySpec) -> None:
    # study.yaml is the latest spec; specs/ keeps every spec this folder has run (runs of an
    # earlier spec stay in results.sqlite and in the report)
    text = spec.to_yaml()
    (folder / "specs").mkdir(exist_ok=True)
    atomic_write_text(folder / "specs" / f"{config_hash(spec.to_dict())}.yaml", text)
    atomic_write_text(folder / "study.yaml", text)


def _check_jobs(jobs: int, distributed_job: bool) -> None:
    from freezetune.errors import UserError

    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    if distributed_job and jobs > 1:
        raise UserError("under torchrun every run uses all processes; drop --jobs")


def _run_grid(
    folder: Path, spec: StudySpec, planned: list[PlannedRun], d: Dist, opts: dict[str, Any]
) -> tuple[list[PlannedRun], dict[str, RunRow]]:
    """Run what is left of ``planned``; the runs it ran, and every stored row after."""
    conn = open_store(folder / "results.sqlite")
    try:
        rows = read_rows(conn)
        host = socket.gethostname()
        todo = plan_todo(planned, rows, retry_failed=opts["retry_failed"], host=host)
        if d.enabled:
            _execute_ranked(conn, todo, folder, opts["progress"], d)
        elif todo:
            _execute(conn, spec, todo, folder, opts)
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
    retry_failed: bool = False,
    progress: bool = True,
    report: bool = True,
) -> StudyOutcome:
    """Run every unfinished run of ``spec`` into ``out_root/<name>/``, then write the report.

    The trivial baseline of each context's dev examples is computed first, once, into
    ``baseline.json`` (:mod:`freezetune.study.baseline`), for the report to compare with.

    >>> spec = StudySpec.from_dict({"name": "d", "strategies": ["full", "bottom:2"]})
    >>> outcome = run_study(spec, "runs")  # doctest: +SKIP
    >>> outcome.folder / "report.html"  # doctest: +SKIP
    PosixPath('runs/d/report.html')
    """
    from freezetune import distributed

    d = distributed.current()
    _check_jobs(jobs, d.enabled)
    folder = study_folder(out_root, spec.name)
    if not d.is_main:
        _follow(folder, d)
        return StudyOutcome(folder, len(spec.grid()), 0, 0, 0, 0, "", None)
    check_reporters(tuple({run.report_to for run in spec.grid()}))  # once, not run by run
    folder.mkdir(parents=True, exist_ok=True)
    with study_lock(folder, spec.name):
        _save_spec(folder, spec)
        planned = spec.grid()
        ensure_baselines(folder, [run.config for run in planned])
        opts = {"jobs": jobs, "progress": progress, "total": len(planned)}
        todo, rows = _run_grid(folder, spec, planned, d, {**opts, "retry_failed": retry_failed})
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
