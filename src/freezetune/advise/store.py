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
from collections.abc import Iterable

from freezetune.advise.halving import Row

__all__ = ["ensure_table", "read_halving_rows", "write_rows"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS advise_rows (
    arm   TEXT NOT NULL,     -- the arm's run id
    rung  INTEGER NOT NULL,  -- the rung it ran toward (observed) or was decided at
    step  INTEGER NOT NULL,  -- optimizer step of the observation / the rung step
    score REAL,              -- best-so-far main metric (NULL: failed)
    kind  TEXT NOT NULL,     -- observed | failed | promoted | stopped
    PRIMARY KEY (arm, kind, rung, step)
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
