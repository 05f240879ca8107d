"""The training loop: one explicit pass over epochs and steps, with freezing hooks.

What is frozen is asked of the policy before every optimizer step and applied only when it
changes (``freezer.py``); a policy that watches gradients (``freezing.GradientWatcher``, e.g.
AutoFreeze) additionally sees accumulated block gradients at its decision points. Everything
the loop carries between steps is one :class:`~freezetune.state.LoopState`, which is what a
checkpoint saves of it. Its parts: records go through a ``Recorder``, the best evaluation is
kept by a ``BestTracker``, training time by a ``Stopwatch``, checkpoints by a
``Checkpointer``; what a run plugs in (caches, the loss, observers) comes as :class:`Seams`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from freezetune import checkpoint, distributed
from freezetune.backward import clip_and_step, nonfinite, weighted_backward
from freezetune.batching import set_epoch
from freezetune.best import BestTracker, snapshot
from freezetune.cache import PrefixCache
from freezetune.caching import Caches
from freezetune.checkpointer import Checkpointer, Interrupted
from freezetune.config import OptimConfig, TrainConfig
from freezetune.freezer import Freezer
from freezetune.freezing.base import frozen_now
from freezetune.objectives import Batch, Objective, TaskLoss
from freezetune.observers import Observer
from freezetune.plan import Plan
from freezetune.precision import autocast
from freezetune.recorder import Recorder, eval_record
from freezetune.state import LoopState
from freezetune.stopwatch import Stopwatch
from freezetune.units import Units
from freezetune.watch import watch_gradients

__all__ = ["Dev", "Evaluate", "Interrupted", "Loop", "Seams", "autocast", "forward"]

#: dev-set metrics with this many leading units frozen (the main metric among them)
Evaluate = Callable[[int], dict[str, Any]]


@dataclass(frozen=True)
class Dev:
    """The dev set: ``evaluate`` scores on it; the highest ``main_metric`` is the best."""

    evaluate: Evaluate
    main_metric: str


@dataclass(frozen=True)
class Seams:
    """What a run plugs into the loop: frozen-prefix caches (``caching.py``), the loss
    (``objectives.py``: the task's, or a distillation's) and live observers (``observers.py``;
    the main process's only)."""

    caches: Caches = field(default_factory=Caches)
    objective: Objective = field(default_factory=TaskLoss)
    observers: Sequence[Observer] = ()


NO_SEAMS = Seams()  # the task's loss, no caches, no observers


def forward(model: nn.Module, cache: PrefixCache | None, batch: Batch, frozen_units: int) -> Any:
    """The model's output for ``batch``; from cached frozen-prefix states when possible. The
    batch is left as it was (``index`` is read, not passed to the model)."""
    if cache is None:
        return model(**{k: v for k, v in batch.items() if k != "index"})
    return cache.forward(batch, frozen_units)


def cache_hit_rate(cache: PrefixCache | None) -> dict[str, float]:
    """The training cache's share of batches served from cached states, so far."""
    if cache is None or not cache.hits + cache.misses:
        return {}
    return {"cache_hit_rate": cache.hits / (cache.hits + cache.misses)}


def unit_lrs(optimizer: torch.optim.Optimizer, units: Units) -> dict[str, float]:
    """Each unit's learning rate now, by unit name (what observers plot)."""
    return {units.names[g["unit"]]: g["lr"] for g in optimizer.param_groups}


def _progress_bar(total: int, done: int, enabled: bool, desc: str) -> tqdm:
    bar = tqdm(
        total=total,
        desc=desc,
        disable=not enabled,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
        file=sys.stderr,
    )
    bar.update(done)  # a resumed run's steps so far
    return bar


class Loop:
    """One run's training; ``run`` is the loop itself, ``state`` what it has done so far;
    ``out`` is the run folder (``metrics.jsonl`` and ``checkpoints/`` go there)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        plan: Plan,
        dev: Dev,
        *,
        train: TrainConfig,
        optim: OptimConfig,
        out: Path,
        seams: Seams = NO_SEAMS,
    ):
        self.model, self.optimizer, self.plan, self.dev = model, optimizer, plan, dev
        self.units, self.spec, self.policy = plan.units, plan.spec, plan.policy
        self.train, self.max_grad_norm = train, optim.max_grad_norm
        self.caches, self.objective = seams.caches, seams.objective  # what each batch's loss is
        self.dist, self.runner = distributed.current(), model  # runner: model or DDP wrapper
        self.device = distributed.device(self.dist)
        self.state = LoopState()
        self.freezer = Freezer(  # it also drops the optimizer state that the policy resets
            model, plan.units, plan.spec, self.state, self.dist.is_main, optimizer, plan.policy
        )
        self.recorder = Recorder(out / "metrics.jsonl", seams.observers, self.dist.is_main)
        self.best = BestTracker(dev.main_metric, self.state)
        self.saver = Checkpointer.of_run(out, train, self.dist, plan.total_steps)
        self.clock = Stopwatch()  # training time: evaluation and saving left out
        self.watch = watch_gradients(plan.policy, model, plan.units, self.dist)

    def run(self, loader: DataLoader, start: checkpoint.Position | None = None) -> None:
        """Train from ``start``: the beginning, or where a checkpoint left off."""
        t, s = self.train, self.state
        start_epoch, start_batch = start or checkpoint.Position(0, 0)
        show = t.progress and self.dist.is_main
        bar = _progress_bar(self.plan.total_steps, s.step, show, f"train {self.spec.text}")
        s.train_time += self.objective.prepare()  # e.g. the teacher's one pass (not on resume)
        for epoch in range(start_epoch, t.epochs):
            set_epoch(loader, epoch)  # a new, reproducible order every epoch
            self.freezer.set_modes()  # the last evaluation put every unit in eval()
            skip, running = (start_batch if epoch == start_epoch else 0), 0.0
            self.clock.start()
            for i, batch in enumerate(loader):
                if i < skip:
                    continue  # resumed mid-epoch: the same order, minus what was done
                if i % t.grad_accum == 0:  # 1) what trains, and each unit's learning rate
                    self.refreeze()
                    self.plan.set_learning_rates(self.optimizer, self.state.step)
                last = not (i + 1) % t.grad_accum or i + 1 == len(loader)
                running += self._backward(batch, sync=last)  # 2) accumulate the gradient
                if not last:
                    continue
                self._optimizer_step()  # 3) step (and let a gradient watcher decide)
                self.recorder.step(s.step, running, unit_lrs(self.optimizer, self.units))
                bar.update(1)
                bar.set_postfix(loss=f"{running:.4f}", epoch=epoch + 1)
                running = 0.0
                if i + 1 == len(loader):
                    continue  # the epoch's end evaluates and checkpoints below
                if t.evaluates_at(s.step):  # 4) evaluate every N steps (or at given steps)
                    self._evaluate(epoch + (i + 1) / len(loader))
                    self.clock.start()
                self._maybe_checkpoint(checkpoint.Position(epoch, i + 1))
            self._evaluate(epoch + 1)
            main = self.dev.main_metric
            bar.set_postfix({main: f"{s.last[main]:.4f}", "epoch": epoch + 1})
            self._maybe_checkpoint(checkpoint.Position(epoch + 1, 0), epoch_end=True)
        bar.close()

    def refreeze(self) -> None:
        """Ask the policy what is frozen for the step about to run; apply and log a change."""
        frozen = frozen_now(self.policy, self.plan.progress(self.state.step))
        record = self.freezer.update(frozen, self.state.step)
        if record is not None:
            self._rewrap()
            self.recorder.log(record)

    def _rewrap(self) -> None:  # under DDP, a new wrapper over the new trainable set
        self.runner = distributed.wrap(self.model, self.dist)  # (same step on every rank)
        if self.caches.train is not None:
            self.caches.train.runner = self.runner

    def _backward(self, batch: dict[str, torch.Tensor], sync: bool = True) -> float:
        """Forward and backward one (micro-)batch; under DDP all-reduce only when ``sync``."""
        t, s = self.train, self.state
        batch = {k: v.to(self.device) for k, v in batch.items()}

        def run(b: Batch) -> Any:
            return forward(self.runner, self.caches.train, b, s.frozen_units or 0)

        def loss() -> torch.Tensor:
            with autocast(t.bf16, self.device):
                return self.objective.loss(run, batch)[0] / t.grad_accum

        value, examples, finite = weighted_backward(
            self.runner, loss, len(batch["labels"]), sync, self.dist
        )
        if not finite:  # stop, or skip the batch when asked
            self.recorder.log(nonfinite(value, s.step, t.skip_nonfinite))
            if self.dist.enabled:  # this window's gradients may never be all-reduced now:
                self.optimizer.zero_grad(set_to_none=True)  # every rank drops all of them
            return 0.0
        s.examples += examples
        return value.item()

    def _optimizer_step(self) -> None:
        if self.watch is not None:
            self.watch.accumulate()  # a gradient watcher sees the raw (unclipped) gradient
        clip_and_step(self.model, self.optimizer, self.max_grad_norm)
        self.state.step += 1
        if self.watch is not None:  # AutoFreeze decides after the step ending an interval
            self.watch.decide(self.state.step)

    def _evaluate(self, epoch: float) -> None:
        s = self.state
        s.train_time += self.clock.stop()  # evaluation is not training time
        started = time.perf_counter()
        metrics = self.dev.evaluate(s.frozen_units or 0)
        s.eval_time += time.perf_counter() - started
        self.freezer.set_modes()  # evaluation put every unit in eval()
        record = eval_record(s.step, epoch, metrics, s.train_time, s.eval_time)
        self.recorder.log(record, live=cache_hit_rate(self.caches.train))
        s.last = record
        # frozen tensors never change: the best weights are those that may ever train
        may_train = [n for g in self.optimizer.param_groups for n in g["names"]]
        self.best.offer(record, lambda: snapshot(self.model, may_train))

    def _maybe_checkpoint(self, position: checkpoint.Position, epoch_end: bool = False) -> None:
        """Checkpoint every N steps, at epoch ends when asked, and before stopping on a signal."""
        if self.saver.due(self.state.step, epoch_end):
            with self.clock.pause():  # saving is not training time
                self.saver.save(self.resumable(), position, self.state.step)

    def resumable(self) -> checkpoint.Resumable:
        """What a checkpoint of this loop saves and restores: exactly this, nothing else."""
        grads = self.watch.grads if self.watch else None
        return checkpoint.Resumable(
            *(self.model, self.optimizer, self.policy, self.objective, self.state, self.caches),
            *(grads, self.recorder.path, self.plan.steps_per_epoch),
        )

    def restore(self, folder: Path) -> checkpoint.Position:
        """Continue from the checkpoint in ``folder``; return where training picks up."""
        position = checkpoint.restore(self.resumable(), folder, self.dist)
        if self.state.frozen_units is not None:  # silently: the change was logged before
            self.freezer.reapply()
            self._rewrap()
        return position
