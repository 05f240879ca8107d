"""Advise's rows in the study store: every observation and rung decision, one table.

``results.sqlite`` of an advise folder holds the study's ``runs`` table (each arm is a run;
:mod:`freezetune.study.store`) and ``advise_rows``: the :class:`~.halving.Row` s successive
halving replays. One writer (the advise process), one transaction per batch of rows, so a
killed advise reads back every decision it took and takes the same next ones.

>>> import sqlite3
>>> conn = sqlite3.connect(":memory:"); ensure_table(conn)
>>> write_rows(conn, [Row("a", 0, 10, 0.7), Row("a", 0, 10, 0.7, "promoted")])
>>> [(r.arm, r.kind) for r in read_halving_rows(conn)]
[('a', 'observed'), ('a', 'promoted')]
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterable

from freezetune.advise.halving import Row

__all__ = [
    "ensure_table",
    "read_halving_rows",
    "read_picks",
    "start_call",
    "wall_seconds",
    "write_pick",
    "write_rows",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS advise_rows (
    arm   TEXT NOT NULL,     -- the arm's run id
    rung  INTEGER NOT NULL,  -- the rung it ran toward (observed) or was decided at
    step  INTEGER NOT NULL,  -- optimizer step of the observation / the rung step
    score REAL,              -- the main metric at that evaluation (NULL: failed)
    kind  TEXT NOT NULL,     -- observed | failed | promoted | stopped
    PRIMARY KEY (arm, kind, rung, step)
);
CREATE TABLE IF NOT EXISTS advise_picks (  -- pruned picks trained to their end, in order
    round INTEGER PRIMARY KEY,
    arm   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS advise_calls (  -- each invocation's wall-clock span
    started REAL NOT NULL,                 -- time.time() at its start
    ended   REAL NOT NULL                  -- at its last record
);
"""


def ensure_table(conn: sqlite3.Connection) -> None:
    with conn:
        conn.executescript(SCHEMA)


def write_rows(conn: sqlite3.Connection, rows: Iterable[Row]) -> None:
    """Store ``rows`` in one transaction (the same row again replaces itself)."""
    values = [
        (str(r.arm), r.rung, r.step, None if r.score is None else float(r.score), r.kind)
        for r in rows
    ]
    with conn:
        conn.executemany(
            "INSERT OR REPLACE INTO advise_rows (arm, rung, step, score, kind) "
            "VALUES (?, ?, ?, ?, ?)",
            values,
        )


def read_halving_rows(conn: sqlite3.Connection) -> list[Row]:
    """Every stored row, in the order written."""
    found = conn.execute("SELECT arm, rung, step, score, kind FROM advise_rows ORDER BY rowid")
    return [
        Row(arm, rung, step, math.nan if score is None and kind == "observed" else score, kind)
        for arm, rung, step, score, kind in found
    ]


def write_pick(conn: sqlite3.Connection, round_: int, arm: str) -> None:
    """Store that round ``round_`` trains the pruned pick ``arm`` (before it trains)."""
    with conn:
        conn.execute(
            "INSERT OR REPLACE INTO advise_picks (round, arm) VALUES (?, ?)", (round_, arm)
        )


def read_picks(conn: sqlite3.Connection) -> list[str]:
    """The pruned picks trained so far, in round order."""
    return [arm for (arm,) in conn.execute("SELECT arm FROM advise_picks ORDER BY round")]


def start_call(conn: sqlite3.Connection) -> Callable[[], None]:
    """Record this invocation's start; the returned function moves its end to now."""
    now = time.time()
    with conn:
        rowid = conn.execute("INSERT INTO advise_calls VALUES (?, ?)", (now, now)).lastrowid

    def touch() -> None:
        with conn:
            conn.execute("UPDATE advise_calls SET ended = ? WHERE rowid = ?", (time.time(), rowid))

    return touch


def wall_seconds(conn: sqlite3.Connection) -> float:
    """Advise's wall time over every invocation (a killed one: up to its last record)."""
    (total,) = conn.execute("SELECT COALESCE(SUM(ended - started), 0) FROM advise_calls").fetchone()
    return float(total)
