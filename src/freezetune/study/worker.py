"""The run side of a study: train one config in a process of its own, then read its folder.

Each run gets a fresh process (forked from a server that has already imported torch, so it starts
in well under a second): its peak memory is its own, no torch state leaks from one run into the
next, and a crash (segfault, out-of-memory kill) fails that run only. Every executor ends a run
the same way: :func:`outcome_of` turns the run's folder and exit code into a :class:`RunOutcome`,
plain data that the study process records (it alone writes ``results.sqlite``). The local
executor does this in the study process; a Ray task does it on its node (:func:`run_in_child`)
and returns the outcome.

A run continues what an earlier attempt left in its folder (``training.train_or_resume``): a
finished one is read back, an unfinished one resumes from its newest intact checkpoint, anything
else starts over. One process at a time trains in a run folder (a lock in ``runs/.locks/``), so
an attempt never overlaps an orphan of a killed study process.

>>> read_events([{"event": "freeze", "step": 0, "frozen_units": 1},
...              {"event": "eval", "step": 5, "accuracy": 0.8}])
([], [{'event': 'eval', 'step': 5, 'accuracy': 0.8}])
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from freezetune.records import current_names

__all__ = [
    "CAUSE_FILE",
    "ERROR_FILE",
    "RunOutcome",
    "error_line",
    "launch",
    "load_events",
    "outcome_of",
    "read_events",
    "run_in_child",
    "train_and_record",
    "train_in_child",
    "unfinished_step",
]

ERROR_FILE = "error.txt"
TRACEBACK_FILE = "traceback.txt"
#: says ``inputs`` when the run failed before training (its data, model or flags; see
#: :class:`freezetune.errors.InputsError`), which a study retries once its preflight passes
CAUSE_FILE = "cause.txt"
#: how long an attempt waits for an earlier attempt still training in the same run folder
LOCK_WAIT_S = 120.0


@dataclass(frozen=True)
class RunOutcome:
    """How one run ended, as data (what ``store.finish_run`` / ``store.fail_run`` take).

    ``where`` is the machine it ran on (a node's IP under Ray) and ``resumed_from`` the step of
    the checkpoint the attempt found, if it continued one.
    """

    status: str  # "succeeded", "paused" (at train.stop_at_step, checkpointed) or "failed"
    result: dict[str, Any] | None = None  # result.json
    timeline: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # failed: the one-line message
    where: str | None = None
    resumed_from: int | None = None
    cause: str = "run"  # failed: "inputs" (before training, see CAUSE_FILE) or "run"
    paused_at: int | None = None  # paused: the step of its checkpoint

    @classmethod
    def failed(cls, error: str, cause: str = "run") -> RunOutcome:
        return cls("failed", error=error, cause=cause)


def _die_with_parent() -> None:
    # if the process that started this run dies (kill -9 included), so does this run, so that a
    # killed study never leaves a training behind that still writes into its run folder; the
    # parent's sentinel becomes readable exactly when the parent is gone
    parent = multiprocessing.parent_process()

    def watch() -> None:
        if parent is not None:
            parent.join()
            os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="freezetune-watch-parent", daemon=True).start()


def error_line(err: BaseException) -> str:
    """One line for the results table: a UserError's own message, else ``Type: message``.

    >>> error_line(ValueError("bad\\nthing"))
    'ValueError: bad thing'
    """
    from freezetune.errors import UserError

    text = " ".join(str(err).split())
    return text if isinstance(err, UserError) else f"{type(err).__name__}: {text}"


def train_and_record(config: dict[str, Any], *, continue_folder: bool = False) -> bool:
    """Train ``config``; on any error write it to ``<out>/error.txt`` (rank 0) and say False.

    ``continue_folder``: finish what an earlier attempt left in ``out`` (read back a result,
    resume a checkpoint) instead of starting from scratch.
    """
    from freezetune import distributed
    from freezetune.checkpointer import Paused
    from freezetune.config import RunConfig
    from freezetune.errors import InputsError
    from freezetune.loop import Interrupted
    from freezetune.training import train, train_or_resume

    out, d = Path(config["out"]), distributed.current()
    if d.is_main:
        for name in (ERROR_FILE, TRACEBACK_FILE, CAUSE_FILE):  # an earlier attempt's
            (out / name).unlink(missing_ok=True)
    try:
        run = RunConfig.from_dict(config)
        train_or_resume(run) if continue_folder else train(run)
        return True
    except Paused:  # train.stop_at_step (advise's rungs): a checkpoint to go on from
        return True
    except Interrupted:
        raise  # Ctrl-C / SIGTERM: the study stops here (and resumes this run later)
    except Exception as err:
        if d.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / TRACEBACK_FILE).write_text(traceback.format_exc(), encoding="utf-8")
            (out / ERROR_FILE).write_text(error_line(err) + "\n", encoding="utf-8")
            if isinstance(err, InputsError):
                (out / CAUSE_FILE).write_text("inputs\n", encoding="utf-8")
            print(f"freezetune: run failed: {error_line(err)}", file=sys.stderr)
        if d.enabled:  # the other ranks may be mid-collective: end the job, not just the run
            raise
        return False


class FolderBusy(RuntimeError):
    """Another process still trains in the run's folder."""


@contextlib.contextmanager
def _only_writer(out: Path) -> Iterator[None]:
    """Hold ``runs/.locks/<run>`` while training: an attempt waits for (or, after
    :data:`LOCK_WAIT_S`, gives up on) an earlier one that still trains in the same folder."""
    locks = out.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / out.name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FolderBusy(
                        f"another process still trains in {out} (an earlier attempt's?); "
                        "stop it and run the study again"
                    ) from None
                time.sleep(1.0)
        yield
    finally:
        os.close(fd)  # releases the lock


def train_in_child(config: dict[str, Any], plugins: tuple[str, ...] = ()) -> None:
    """Process entry point: finish ``config``'s run, exit 1 if it failed (``train_and_record``).
    ``plugins``: modules that registered policies, objectives... by code in the study process
    (``plugins.code_modules``), imported first so that their names mean the same here."""
    _die_with_parent()
    out = Path(config["out"])
    from freezetune.errors import UserError
    from freezetune.plugins import import_plugins

    try:
        import_plugins(plugins)
        with _only_writer(out):
            ok = train_and_record(config, continue_folder=True)
    except (FolderBusy, UserError) as err:
        out.mkdir(parents=True, exist_ok=True)
        (out / ERROR_FILE).write_text(f"{err}\n", encoding="utf-8")
        print(f"freezetune: run failed: {err}", file=sys.stderr)
        ok = False
    if not ok:
        sys.exit(1)


def _context() -> Any:
    # a fork server that imported torch once: each run forks from it in well under a second,
    # and since it never ran torch ops itself, forking it is safe (unlike forking this process)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["freezetune.training", "freezetune.study.worker"])
    return ctx


def launch(config: dict[str, Any], plugins: tuple[str, ...] | None = None) -> Any:
    """Start ``config``'s run in a process of its own; returns the started process. It
    imports ``plugins`` first (default: this process's ``plugins.code_modules()``)."""
    from freezetune.plugins import code_modules

    modules = tuple(code_modules()) if plugins is None else plugins
    process = _context().Process(
        target=train_in_child,
        args=(config, modules),
        name=f"freezetune-{Path(config['out']).name}",
    )
    process.start()
    return process


def run_in_child(config: dict[str, Any], plugins: tuple[str, ...] | None = None) -> RunOutcome:
    """Run ``config`` in a process of its own, wait for it, and say how it ended."""
    process = launch(config, plugins)
    try:
        process.join()
    finally:
        if process.exitcode is None:  # interrupted while waiting: stop the run
            process.kill()
            process.join()
    return outcome_of(Path(config["out"]), process.exitcode)


def outcome_of(out: Path, exitcode: int | None) -> RunOutcome:
    """How the run in ``out`` ended, from its process's exit code and its files."""
    result_path = out / "result.json"
    if exitcode == 0 and result_path.is_file():
        result = current_names(json.loads(result_path.read_text(encoding="utf-8")))
        timeline, curve = read_events(load_events(out / "metrics.jsonl"))
        return RunOutcome("succeeded", result, timeline, curve)
    if exitcode == 0 and (paused := unfinished_step(out)) is not None:
        timeline, curve = read_events(load_events(out / "metrics.jsonl"))
        return RunOutcome("paused", None, timeline, curve, paused_at=paused)
    if (out / ERROR_FILE).is_file():
        message = (out / ERROR_FILE).read_text(encoding="utf-8").strip()
        cause = out / CAUSE_FILE
        return RunOutcome.failed(message, cause.read_text().strip() if cause.is_file() else "run")
    elif exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        message = f"the run's process was killed by {name}{hint}"
    else:
        message = f"the run's process exited with code {exitcode} without a result"
    return RunOutcome.failed(message)


def unfinished_step(out: Path) -> int | None:
    """The step of the newest intact checkpoint of a run that has no result yet (where it
    paused at ``train.stop_at_step``, or where a new attempt resumes), else None."""
    from freezetune.checkpoint import find_latest
    from freezetune.checkpointer import checkpoint_step

    if (out / "result.json").is_file():
        return None
    latest = find_latest(out)
    return None if latest is None else checkpoint_step(latest)


def read_events(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split ``metrics.jsonl`` records into (freezing timeline, learning curve).

    The timeline is the ``freeze`` events, or empty when what trains never changed (a static
    spec logs its one state at step 0).
    """
    timeline = [e for e in events if e.get("event") == "freeze"]
    curve = [e for e in events if e.get("event") == "eval"]
    from freezetune.records import freeze_state

    changed = len({freeze_state(e) for e in timeline}) > 1
    return (timeline if changed else []), curve


def load_events(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, in today's names (a resumed run's file can hold
    lines an older freezetune wrote); a torn last line (killed writer) is skipped."""
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            events.append(current_names(json.loads(line)))
    return events
