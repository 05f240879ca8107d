"""When the loop checkpoints, and how a signal stops it: :class:`Checkpointer`.

Every ``--save-every`` steps (and at epoch ends when saving at all), and whenever SIGINT or
SIGTERM asked to stop: the loop finishes its step, writes a checkpoint and raises
:class:`Interrupted`, so a killed job resumes where it stopped (``checkpoint.py`` writes it).

>>> from freezetune.distributed import Dist
>>> saver = Checkpointer(Path("runs/x"), every=50, keep=2, dist=Dist())
>>> saver.due(100), saver.due(120), saver.due(120, epoch_end=True)
(True, False, True)
"""

from __future__ import annotations

import signal
from pathlib import Path

from freezetune import checkpoint, distributed
from freezetune.distributed import Dist

__all__ = ["Checkpointer", "Interrupted"]


class Interrupted(Exception):
    """Training stopped on a signal after writing a checkpoint."""

    def __init__(self, step: int, path: Path, out: Path):
        super().__init__(
            f"stopped at step {step} after saving {path}; resume with: "
            f"freezetune train --resume {out}"
        )


class Checkpointer:
    """Checkpoints into ``out`` every ``every`` steps (0: never, but on a signal), keeping the
    newest ``keep``. ``stop_signal`` is set by a signal handler (``training.py``)."""

    def __init__(self, out: Path, every: int, keep: int, dist: Dist):
        self.out, self.every, self.keep, self.dist = out, every, keep, dist
        self.stop_signal: int | None = None  # set by SIGINT/SIGTERM: checkpoint, then stop

    def due(self, step: int, epoch_end: bool = False) -> bool:
        """Whether to checkpoint after ``step``: on schedule, or to stop on a signal."""
        due = bool(self.every) and (epoch_end or step % self.every == 0)
        if self.dist.enabled:  # a signal may reach one rank only: all stop at the same step
            stop = distributed.any_rank(bool(self.stop_signal), self.dist)
            self.stop_signal = self.stop_signal or (signal.SIGTERM if stop else None)
        return due or bool(self.stop_signal)

    def save(
        self, resumable: checkpoint.Resumable, position: checkpoint.Position, step: int
    ) -> None:
        """Write the checkpoint of ``step`` (rank 0 for all); raise Interrupted if stopping."""
        path = checkpoint.step_folder(self.out, step)
        rngs = distributed.all_gather(checkpoint.rng_state(), self.dist)  # dropout differs
        if self.dist.is_main:  # replicas are identical: rank 0 writes for all of them
            path = checkpoint.save(
                resumable, self.out, position, keep=self.keep, dist=self.dist, rngs=rngs
            )
        distributed.barrier(self.dist)
        if self.stop_signal:
            raise Interrupted(step, path, self.out)
