"""The child side of a study run: train one config in a process of its own, then read its files.

Each run gets a fresh process (forked from a server that has already imported torch, so it starts
in well under a second): its peak memory is its own, no torch state leaks from one run into the
next, and a crash (segfault, out-of-memory kill) fails that run only.

>>> read_events([{"event": "freeze", "step": 0, "units_frozen": 1},
...              {"event": "eval", "step": 5, "accuracy": 0.8}])
([], [{'event': 'eval', 'step': 5, 'accuracy': 0.8}])
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

__all__ = [
    "ERROR_FILE",
    "error_line",
    "load_events",
    "read_events",
    "train_and_record",
    "train_in_child",
]

ERROR_FILE = "error.txt"
TRACEBACK_FILE = "traceback.txt"


def _die_with_parent() -> None:
    # if the study process dies (kill -9 included), so does this run, so that a killed study
    # never leaves a training behind that still writes into its run folder; the parent's
    # sentinel becomes readable exactly when the parent is gone
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


def train_and_record(config: dict[str, Any]) -> bool:
    """Train ``config``; on any error write it to ``<out>/error.txt`` (rank 0) and say False."""
    from freezetune import distributed
    from freezetune.config import RunConfig
    from freezetune.loop import Interrupted
    from freezetune.training import train

    out, d = Path(config["out"]), distributed.current()
    try:
        train(RunConfig.from_dict(config))
        return True
    except Interrupted:
        raise  # Ctrl-C / SIGTERM: the study stops here (and resumes this run later)
    except Exception as err:
        if d.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / TRACEBACK_FILE).write_text(traceback.format_exc(), encoding="utf-8")
            (out / ERROR_FILE).write_text(error_line(err) + "\n", encoding="utf-8")
            print(f"freezetune: run failed: {error_line(err)}", file=sys.stderr)
        if d.enabled:  # the other ranks may be mid-collective: end the job, not just the run
            raise
        return False


def train_in_child(config: dict[str, Any]) -> None:
    """Process entry point: train ``config``, exit 1 if it failed (see ``train_and_record``)."""
    _die_with_parent()
    if not train_and_record(config):
        sys.exit(1)


def read_events(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split ``metrics.jsonl`` records into (freezing timeline, learning curve).

    The timeline is the ``freeze`` events, or empty when what trains never changed (a static
    spec logs its one state at step 0).
    """
    timeline = [e for e in events if e.get("event") == "freeze"]
    curve = [e for e in events if e.get("event") == "eval"]
    states = {(e.get("units_frozen"), e.get("trainable_params")) for e in timeline}
    return (timeline if len(states) > 1 else []), curve


def load_events(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file; a torn last line (killed writer) is skipped."""
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            events.append(json.loads(line))
    return events
