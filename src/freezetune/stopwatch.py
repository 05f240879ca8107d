"""A :class:`Stopwatch` for training time: evaluation and checkpointing are left out.

The loop reports train examples/s and wall time; both must not count the seconds spent
evaluating or saving, which would make a run that checkpoints often look slower at training.

>>> ticks = iter([0.0, 2.0, 5.0, 6.0])
>>> clock = Stopwatch(lambda: next(ticks))
>>> clock.start()  # at 0
>>> with clock.pause():  # from 2 to 5: a checkpoint
...     pass
>>> clock.stop()  # at 6: 2 + 1 seconds
3.0
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Stopwatch"]


class Stopwatch:
    """Seconds from :meth:`start` to :meth:`stop`, minus those spent in :meth:`pause`."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._started: float | None = None  # when the current lap began; None when stopped
        self._lap = 0.0  # seconds counted so far before ``_started``

    @property
    def running(self) -> bool:
        return self._started is not None

    def start(self) -> None:
        """Start counting from zero."""
        self._started, self._lap = self._clock(), 0.0

    def stop(self) -> float:
        """Stop and return the seconds counted since :meth:`start` (0.0 when not running)."""
        if self._started is None:
            return 0.0
        elapsed = self._lap + self._clock() - self._started
        self._started, self._lap = None, 0.0
        return elapsed

    @contextmanager
    def pause(self) -> Iterator[None]:
        """Leave the seconds inside the ``with`` block out (a no-op when not running)."""
        if self._started is None:
            yield
            return
        self._lap += self._clock() - self._started
        try:
            yield
        finally:
            self._started = self._clock()
