"""How much wall time a study lost to runs that shared the CPU with other work.

    python benchmarks/study_contention.py runs/advise-sst2-study 0 23:04 23:13

Each run of ``SEED`` that started between ``FROM`` and ``TO`` (UTC, HH:MM) is compared with the
mean start-to-end wall time of the same strategy's other seeds; the excess is summed, and the
study's wall time (first start to last end) is shown with and without it.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import statistics
import sys


def main(folder: str, seed: int, start: str, end: str) -> None:
    conn = sqlite3.connect(f"{folder}/results.sqlite")
    rows = conn.execute("SELECT strategy, seed, started_at, finished_at FROM runs").fetchall()
    at = {(s, k): (dt.datetime.fromisoformat(a), dt.datetime.fromisoformat(b))
          for s, k, a, b in rows}  # fmt: skip
    wall = {key: (b - a).total_seconds() for key, (a, b) in at.items()}
    hit = [s for (s, k), (a, _) in at.items() if k == seed and start <= f"{a:%H:%M}" <= end]
    others = {s: [w for (t, k), w in wall.items() if t == s and k != seed] for s in hit}
    excess = sum(wall[(s, seed)] - statistics.fmean(others[s]) for s in hit)
    total = (max(b for _, b in at.values()) - min(a for a, _ in at.values())).total_seconds()
    print(
        f"{len(hit)} runs of seed {seed} started {start}-{end}: {excess:.0f} s over their "
        f"other seeds' mean; study {total:.0f} s, {total - excess:.0f} s without it"
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
