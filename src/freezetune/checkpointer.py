"""When the loop checkpoints, and how a signal stops it: :class:`Checkpointer`.

Every ``--save-every`` steps (and at epoch ends when saving at all), and whenever SIGINT or
SIGTERM asked to stop: the loop finishes its step, writes a checkpoint and raises
:class:`Interrupted`, so a killed job resumes where it stopped (``checkpoint.py`` writes it).
At ``--stop-at-step N`` it checkpoints step N and raises :class:`Paused`: a prefix of the
full-budget run (same warmup/decay horizon and freeze schedule) that ``--resume`` continues
exactly, as successive halving's rungs need (issue 26). No evaluation is added there, so a
paused and resumed run equals an uninterrupted one, down to which evaluation was best (advise
evaluates at its rung steps with ``train.eval_at``, part of the run's identity, so the study
that checks it evaluates there too).

>>> from freezetune.distributed import Dist
>>> saver = Checkpointer(Path("runs/x"), every=50, keep=2, dist=Dist())
>>> saver.due(100), saver.due(120), saver.due(120, epoch_end=True)
(True, False, True)
"""

from __future__ import annotations

import signal
from pathlib import Path

from freezetune import checkpoint, distributed
from freezetune.config import TrainConfig
from freezetune.distributed import Dist
from freezetune.errors import UserError

__all__ = ["Checkpointer", "Interrupted", "Paused", "check_stop_at", "checkpoint_step"]


class Interrupted(Exception):
    """Training stopped on a signal after writing a checkpoint."""

    def __init__(self, step: int, path: Path, out: Path):
        super().__init__(
            f"stopped at step {step} after saving {path}; resume with: "
            f"freezetune train --resume {out}"
        )


class Paused(Exception):
    """Training stopped at ``--stop-at-step`` after writing that step's checkpoint."""

    def __init__(self, step: int, total_steps: int, out: Path):
        self.step, self.total_steps, self.out = step, total_steps, out
        super().__init__(
            f"paused at step {step} of {total_steps}; continue with: "
            f"freezetune train --resume {out}"
        )


def checkpoint_step(folder: Path) -> int:
    """The optimizer step a checkpoint folder holds (``checkpoint.step_folder``'s name).

    >>> checkpoint_step(checkpoint.step_folder(Path("runs/x"), 12))
    12
    """
    return int(folder.name.removeprefix(checkpoint.PREFIX))


def check_stop_at(stop_at: int | None, total_steps: int, latest: Path | None) -> None:
    """Refuse a ``--stop-at-step`` at or past the run's end, or not after the checkpoint
    ``latest`` it resumes from (before anything is written).

    >>> check_stop_at(36, 36, None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    freezetune.errors.UserError: --stop-at-step 36 is not before the end of the run (36 steps)...
    """
    if stop_at is None:
        return
    if stop_at >= total_steps:
        raise UserError(
            f"--stop-at-step {stop_at} is not before the end of the run ({total_steps} steps): "
            f"that is the whole run; pass a step in 1..{total_steps - 1}, or drop --stop-at-step"
        )
    done = None if latest is None else checkpoint_step(latest)
    if done is not None and stop_at <= done:
        raise UserError(
            f"--stop-at-step {stop_at} is not after step {done}, where this run resumes from "
            f"{latest}; pass a step in {done + 1}..{total_steps - 1}, or drop it to finish "
            "the run"
        )


class Checkpointer:
    """Checkpoints into ``out`` every ``every`` steps (0: never, but on a signal or at
    ``stop_at``), keeping the newest ``keep``. ``stop_signal`` is set by a signal handler
    (``training.py``); ``stop_at`` (``--stop-at-step``) pauses the run of ``total_steps``."""

    def __init__(
        self,
        out: Path,
        every: int,
        keep: int,
        dist: Dist,
        stop_at: int | None = None,
        total_steps: int = 0,
    ):
        self.out, self.every, self.keep, self.dist = out, every, keep, dist
        self.stop_at, self.total_steps = stop_at, total_steps
        self.stop_signal: int | None = None  # set by SIGINT/SIGTERM: checkpoint, then stop

    @classmethod
    def of_run(cls, out: Path, train: TrainConfig, dist: Dist, total_steps: int) -> Checkpointer:
        """The checkpointer of a run with ``train``'s ``save_every``, ``keep_checkpoints`` and
        ``stop_at_step``."""
        every, keep = train.save_every or 0, train.keep_checkpoints
        return cls(out, every, keep, dist, stop_at=train.stop_at_step, total_steps=total_steps)

    def due(self, step: int, epoch_end: bool = False) -> bool:
        """Whether to checkpoint after ``step``: on schedule, to stop on a signal, or to pause."""
        due = bool(self.every) and (epoch_end or step % self.every == 0)
        if self.dist.enabled:  # a signal may reach one rank only: all stop at the same step
            stop = distributed.any_rank(bool(self.stop_signal), self.dist)
            self.stop_signal = self.stop_signal or (signal.SIGTERM if stop else None)
        return due or bool(self.stop_signal) or step == self.stop_at

    def save(
        self, resumable: checkpoint.Resumable, position: checkpoint.Position, step: int
    ) -> None:
        """Write the checkpoint of ``step`` (rank 0 for all); raise Interrupted if stopping on
        a signal, Paused at ``stop_at``."""
        path = checkpoint.step_folder(self.out, step)
        rngs = distributed.all_gather(checkpoint.rng_state(), self.dist)  # dropout differs
        if self.dist.is_main:  # replicas are identical: rank 0 writes for all of them
            path = checkpoint.save(
                resumable, self.out, position, keep=self.keep, dist=self.dist, rngs=rngs
            )
        distributed.barrier(self.dist)
        if self.stop_signal:
            raise Interrupted(step, path, self.out)
        if step == self.stop_at:
            raise Paused(step, self.total_steps, self.out)
