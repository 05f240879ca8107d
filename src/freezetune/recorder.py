"""A :class:`Recorder`: where a run's records go (``metrics.jsonl``) and who sees them live.

Only the main process writes and tells observers (replicas under DDP would repeat it);
observers (TensorBoard, ``observers.py``) may also see live extras that the file leaves out.

>>> import json, tempfile
>>> from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "metrics.jsonl"
>>> Recorder(path).log({"event": "eval", "step": 3, "accuracy": 0.5}, live={"cache_hit_rate": 1})
>>> json.loads(path.read_text())
{'event': 'eval', 'step': 3, 'accuracy': 0.5}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from freezetune.observers import Observer
from freezetune.records import append_jsonl

__all__ = ["Recorder", "eval_record"]


class Recorder:
    """Appends records to ``path`` and tells ``observers``; does nothing unless ``main``."""

    def __init__(self, path: Path, observers: Sequence[Observer] = (), main: bool = True):
        self.path, self.observers, self.main = path, list(observers), main

    def log(self, record: dict[str, Any], live: dict[str, Any] | None = None) -> None:
        """Append ``record`` to the file; observers also see the ``live`` extras."""
        if self.main:
            append_jsonl(self.path, record)
            self.announce({**record, **(live or {})})

    def announce(self, record: dict[str, Any]) -> None:
        """Tell the observers only (e.g. the start record, which the run folder holds already)."""
        if self.main:
            for observer in self.observers:
                observer.on_record(record)

    def step(self, step: int, loss: float, lrs: dict[str, float]) -> None:
        """After optimizer step ``step``: its loss and each unit's learning rate, to observers."""
        if self.main:
            for observer in self.observers:
                observer.on_step(step, loss, lrs)

    def close(self) -> None:
        for observer in self.observers:
            observer.close()


def eval_record(
    step: int, epoch: float, metrics: dict[str, Any], train_time: float, eval_time: float
) -> dict[str, Any]:
    """The ``eval`` record of ``metrics`` after ``step`` steps (``epoch``: fractional).

    >>> eval_record(10, 0.5, {"accuracy": 0.75}, 12.34567, 1.0)["wall_time_s"]
    13.346
    """
    return {
        "event": "eval",
        "step": step,
        "epoch": round(epoch, 4),
        **metrics,
        "train_time_s": round(train_time, 3),
        "wall_time_s": round(train_time + eval_time, 3),
    }
