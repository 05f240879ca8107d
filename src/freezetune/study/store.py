"""A study's results: one SQLite file (``results.sqlite``, WAL mode), one row per run, plus the
lock that keeps two processes off the same study folder.

Every write is one transaction, so a process killed at any moment leaves either the old row or
the new one. Rows are keyed by ``run_id`` (the hash of the run's resolved config): re-running a
study can never duplicate a run.

>>> import tempfile, pathlib
>>> conn = open_store(pathlib.Path(tempfile.mkdtemp()) / "results.sqlite")
>>> read_rows(conn)
[]
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from freezetune.errors import UserError
from freezetune.records import current_names
from freezetune.study.spec import PlannedRun

__all__ = [
    "SCHEMA",
    "STATUSES",
    "RunRow",
    "fail_run",
    "finish_run",
    "open_store",
    "pause_run",
    "read_rows",
    "start_run",
    "study_lock",
]

STATUSES = ("succeeded", "failed", "running", "paused")  # paused: advise's rungs

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,      -- sha256(canonical resolved config)[:16]
    strategy    TEXT NOT NULL,         -- label: freeze spec (+ the strategy's own overrides)
    freeze      TEXT NOT NULL,         -- the --freeze spec
    seed        INTEGER NOT NULL,
    lr          REAL NOT NULL,
    train_size  INTEGER,               -- data.max_train_samples; NULL = whole training split
    config      TEXT NOT NULL,         -- JSON: the run's identity (options.identity)
    status      TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'paused')),
    error       TEXT,                  -- failed runs: the one-line message
    cause       TEXT,                  -- failed runs: inputs (before training) or run
    result      TEXT,                  -- JSON: everything train() returned
    timeline    TEXT NOT NULL DEFAULT '[]',  -- JSON: freeze events (empty for static specs)
    curve       TEXT NOT NULL DEFAULT '[]',  -- JSON: eval events (the learning curve)
    git         TEXT,
    versions    TEXT,                  -- JSON: package versions
    machine     TEXT,                  -- JSON: platform, processor, cpus
    started_at  TEXT,                  -- UTC ISO 8601
    finished_at TEXT,
    pid         INTEGER,               -- the study process that ran it
    hostname    TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0
);
"""

JSON_COLUMNS = ("config", "result", "timeline", "curve", "versions", "machine")


@dataclass(frozen=True)
class RunRow:
    """One stored run, JSON columns decoded. Reports are pure functions of these.

    The saved model's inference cost and a distilled run's teacher live in the ``result`` JSON
    (``inference``, ``distill``), so stores written before them read as they always did.
    """

    run_id: str
    strategy: str
    freeze: str
    seed: int
    lr: float
    train_size: int | None
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cause: str | None = None  # failed: "inputs" (retried once they load) or "run"
    result: dict[str, Any] | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)
    git: str | None = None
    versions: dict[str, Any] | None = None
    machine: dict[str, Any] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    pid: int | None = None
    hostname: str | None = None
    attempts: int = 0

    @property
    def inference(self) -> dict[str, Any] | None:
        """The saved model's measured cost (``result.json``'s ``inference``); None: unknown."""
        found = (self.result or {}).get("inference")
        return found if isinstance(found, dict) else None

    @property
    def distill(self) -> dict[str, Any] | None:
        """A distilled run's teacher and its times (``result.json``'s ``distill``), else None."""
        found = (self.result or {}).get("distill")
        return found if isinstance(found, dict) else None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _unreadable(path: str | Path, err: Exception) -> UserError:
    """The one-line error for a results file SQLite (or its JSON) can't read."""
    return UserError(
        f"{path} is not a readable study results file ({err}); move it aside and run "
        "`freezetune study` again to redo its runs, or restore it from a backup"
    )


def _corrupt(err: sqlite3.Error) -> bool:
    # "database is locked" and friends are not the file's fault: let them raise as they are
    return not isinstance(err, sqlite3.OperationalError) or "locked" not in str(err)


def open_store(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) a study's results file in WAL mode. A file that is not a
    SQLite database, or a damaged one, raises UserError naming it and the fix."""
    conn = sqlite3.connect(str(path), timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        with conn:
            conn.executescript(SCHEMA)
            _add_columns(conn)
    except sqlite3.DatabaseError as err:
        conn.close()
        if not _corrupt(err):
            raise
        raise _unreadable(path, err) from None
    return conn


def _add_columns(conn: sqlite3.Connection) -> None:
    """Columns added after a store was first written (``cause``): added to older files."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    if "cause" not in have:
        conn.execute("ALTER TABLE runs ADD COLUMN cause TEXT")


def _decode(row: sqlite3.Row) -> RunRow:
    data = dict(row)
    for key in JSON_COLUMNS:
        data[key] = json.loads(data[key]) if data[key] is not None else None
    # rows an older freezetune wrote name some keys otherwise: read them in today's names
    data["result"] = current_names(data["result"])
    data["timeline"] = [current_names(e) for e in data["timeline"] or []]
    data["curve"] = [current_names(e) for e in data["curve"] or []]
    data["config"] = data["config"] or {}
    return RunRow(**data)


def _path_of(conn: sqlite3.Connection) -> str:
    try:
        found = [r[2] for r in conn.execute("PRAGMA database_list") if r[1] == "main"]
    except sqlite3.Error:
        found = []
    return found[0] if found and found[0] else "results.sqlite"


def read_rows(conn: sqlite3.Connection) -> list[RunRow]:
    """All runs, in the order they were first started; a damaged file raises UserError."""
    try:
        return [_decode(row) for row in conn.execute("SELECT * FROM runs ORDER BY rowid")]
    except sqlite3.DatabaseError as err:
        if not _corrupt(err):
            raise
        raise _unreadable(_path_of(conn), err) from None
    except (ValueError, TypeError) as err:  # a row's JSON or columns are damaged
        raise _unreadable(_path_of(conn), err) from None


def start_run(conn: sqlite3.Connection, run: PlannedRun) -> None:
    """Insert the run as ``running`` (or reset a failed/stale row), stamped with pid + host."""
    values = {
        "run_id": run.run_id,
        "strategy": run.strategy,
        "freeze": run.freeze,
        "seed": run.seed,
        "lr": run.lr,
        "train_size": run.train_size,
        "config": json.dumps(run.config, sort_keys=True),
        "started_at": _now(),
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
    }
    columns = ", ".join(values)
    updates = ", ".join(f"{k} = excluded.{k}" for k in values if k != "run_id")
    with conn:
        conn.execute(
            f"INSERT INTO runs ({columns}, status, attempts) "
            f"VALUES ({', '.join(':' + k for k in values)}, 'running', 1) "
            f"ON CONFLICT(run_id) DO UPDATE SET {updates}, status = 'running', error = NULL, "
            "cause = NULL, result = NULL, timeline = '[]', curve = '[]', finished_at = NULL, "
            "attempts = attempts + 1",
            values,
        )


def finish_run(
    conn: sqlite3.Connection,
    run_id: str,
    result: dict[str, Any],
    timeline: list[dict[str, Any]],
    curve: list[dict[str, Any]],
) -> None:
    """Mark a run succeeded with everything ``train`` returned and its events."""
    with conn:
        conn.execute(
            "UPDATE runs SET status = 'succeeded', error = NULL, result = ?, timeline = ?, "
            "curve = ?, git = ?, versions = ?, machine = ?, finished_at = ? WHERE run_id = ?",
            (
                json.dumps(result, default=str),
                json.dumps(timeline),
                json.dumps(curve),
                result.get("git"),
                json.dumps(result.get("versions")),
                json.dumps(result.get("machine")),
                _now(),
                run_id,
            ),
        )


def fail_run(conn: sqlite3.Connection, run_id: str, error: str, cause: str = "run") -> None:
    """Mark a run failed with its (one-line) message and its cause: ``inputs`` (its data,
    model or flags failed to load, before training) or ``run``."""
    with conn:
        conn.execute(
            "UPDATE runs SET status = 'failed', error = ?, cause = ?, finished_at = ? "
            "WHERE run_id = ?",
            (error, cause, _now(), run_id),
        )


@contextlib.contextmanager
def study_lock(folder: str | Path, name: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder/.lock`` for the block, or refuse at once.

    The kernel drops the lock when the process dies, however it dies, so a killed study never
    leaves a stale lock behind.
    """
    path = Path(folder) / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(
                f"study {name} is already running (pid {holder}) in {folder}; wait for it to "
                "finish or stop it, or choose another --name"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def pause_run(conn: sqlite3.Connection, run_id: str, curve: list[dict[str, Any]]) -> None:
    """Mark a run ``paused`` at ``train.stop_at_step`` (advise's rungs), with its curve so far:
    its checkpoint is there to go on from."""
    with conn:
        conn.execute(
            "UPDATE runs SET status = 'paused', error = NULL, curve = ?, finished_at = ? "
            "WHERE run_id = ?",
            (json.dumps(curve), _now(), run_id),
        )
