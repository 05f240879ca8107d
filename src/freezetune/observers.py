"""Who watches a run live: the seam for loggers such as TensorBoard (``--report-to``).

The loop tells every observer about each optimizer step (loss and learning rates) and each
record it writes to ``metrics.jsonl`` (start, freeze, eval, skipped), on the main process only.
Observers never change training; ``metrics.jsonl`` and ``result.json`` stay the record of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["REPORTERS", "Observer", "check_reporters", "make_observers"]


class Observer(Protocol):
    """Receives a run's events as they happen."""

    def on_step(self, step: int, loss: float, lrs: dict[str, float]) -> None:
        """After optimizer step ``step``: its training loss and each unit's learning rate."""
        ...

    def on_record(self, record: dict[str, Any]) -> None:
        """A record the loop logged (``record["event"]``: start, freeze, eval or skipped)."""
        ...

    def close(self) -> None: ...


def _tensorboard(out: Any, config: dict[str, Any]) -> Observer:
    from freezetune.tensorboard import TensorBoardObserver

    return TensorBoardObserver(out, config)


def _tensorboard_ready() -> None:
    from freezetune.tensorboard import require

    require()  # one UserError line naming the extra to install


#: ``--report-to`` names and how each observer is made from the run folder and its config.
REPORTERS: dict[str, Callable[[Any, dict[str, Any]], Observer]] = {"tensorboard": _tensorboard}
#: how each reporter checks, before anything is written, that what it needs is installed
READY: dict[str, Callable[[], None]] = {"tensorboard": _tensorboard_ready}


def check_reporters(names: tuple[str, ...]) -> None:
    """Fail now, in one line, if a ``--report-to`` logger cannot run here."""
    for name in names:
        if name != "none":
            READY[name]()


def make_observers(names: tuple[str, ...], out: Any, config: dict[str, Any]) -> list[Observer]:
    """One observer per ``--report-to`` name (``none`` or an empty list: no observer)."""
    return [REPORTERS[name](out, config) for name in names if name != "none"]
