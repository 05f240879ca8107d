"""The training loop: one explicit pass over epochs and steps, with freezing hooks.

What is frozen is asked of the policy before every optimizer step and applied only when it
changes; a policy that watches gradients (``freezing.GradientWatcher``, e.g. AutoFreeze)
additionally sees accumulated block gradients at its decision points. Everything the loop
carries between steps is one :class:`~freezetune.state.LoopState`, which is what a checkpoint
saves of it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from freezetune import checkpoint, distributed
from freezetune.batching import set_epoch
from freezetune.cache import PrefixCache
from freezetune.caching import Caches
from freezetune.config import OptimConfig, TrainConfig
from freezetune.errors import UserError
from freezetune.freezing import FreezeSpec, apply_frozen, frozen_parameters, set_train_modes
from freezetune.freezing.gradients import BlockGradients
from freezetune.freezing.policies import GradientWatcher, Policy, Progress, unit_lr_factor
from freezetune.objectives import Objective, TaskLoss
from freezetune.observers import Observer
from freezetune.records import append_jsonl
from freezetune.state import LoopState
from freezetune.units import Units, count_params, trainable_line

__all__ = ["Evaluate", "Interrupted", "Loop", "autocast", "forward"]

#: dev-set metrics with this many leading units frozen (the main metric among them)
Evaluate = Callable[[int], dict[str, Any]]


def autocast(enabled: bool, device: torch.device) -> torch.autocast:
    """bf16 autocast on ``device`` when ``enabled``; a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


class Interrupted(Exception):
    """Training stopped on a signal after writing a checkpoint."""

    def __init__(self, step: int, path: Path, out: Path):
        super().__init__(
            f"stopped at step {step} after saving {path}; resume with: "
            f"freezetune train --resume {out}"
        )


def forward(model: nn.Module, cache: PrefixCache | None, batch: dict, frozen_units: int) -> Any:
    """The model's output for ``batch``; from cached frozen-prefix states when possible."""
    if cache is None:
        batch.pop("index", None)
        return model(**batch)
    return cache.forward(batch, frozen_units)


def _progress_bar(total: int, enabled: bool, desc: str) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        disable=not enabled,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
        file=sys.stderr,
    )


class Loop:
    """One run's training; ``run`` is the loop itself, ``state`` what it has done so far.

    ``out`` is the run folder (``metrics.jsonl`` and ``checkpoints/`` go there);
    ``total_steps`` and ``steps_per_epoch`` count optimizer steps.
    """

    def __init__(
        self,
        model: nn.Module,
        units: Units,
        spec: FreezeSpec,
        policy: Policy,
        optimizer: torch.optim.Optimizer,
        evaluate: Evaluate,
        *,
        train: TrainConfig,
        optim: OptimConfig,
        main_metric: str,
        total_steps: int,
        steps_per_epoch: int,
        out: Path,
        device: torch.device,
        caches: Caches | None = None,
        objective: Objective | None = None,
        observers: Sequence[Observer] = (),
    ):
        self.model, self.units, self.spec, self.policy = model, units, spec, policy
        self.optimizer, self.evaluate, self.train, self.optim = optimizer, evaluate, train, optim
        self.main, self.total_steps, self.steps_per_epoch = (
            main_metric,
            total_steps,
            steps_per_epoch,
        )
        self.out, self.metrics_path, self.device = out, out / "metrics.jsonl", device
        self.caches = caches or Caches()
        self.objective = objective or TaskLoss()  # what each batch's loss is
        self.observers = list(observers)  # live loggers (TensorBoard); main process only
        self.dist = distributed.current()
        self.runner: nn.Module = model  # what training calls: the model or its DDP wrapper
        self.stop_signal: int | None = None  # set by SIGINT/SIGTERM: checkpoint, then stop
        self.state = LoopState()
        self.watcher = policy if isinstance(policy, GradientWatcher) else None
        self.grads = BlockGradients(model, units) if self.watcher is not None else None

    @property
    def frozen_units(self) -> int:
        """Leading units frozen now (0 before the first step)."""
        return self.state.frozen_units or 0

    # 1) what trains, decided before each optimizer step and applied only on change
    def refreeze(self) -> None:
        s = self.state
        frozen_units = self.policy.frozen_units(
            Progress(s.step, self.total_steps, self.steps_per_epoch)
        )
        if frozen_units == s.frozen_units:
            return
        s.frozen_units = frozen_units
        self.apply_freezing(frozen_units)
        s.trainable = trainable_line(self.model)
        record = {
            "event": "freeze",
            "step": s.step,
            "units_frozen": frozen_units,
            "trainable_params": count_params(self.model)[0],
            "trainable": s.trainable,
        }
        s.timeline.append(record)
        self.log(record)
        if self.dist.is_main:
            print(f"step {s.step}: {frozen_units} units frozen; {s.trainable}", file=sys.stderr)

    def log(self, record: dict[str, Any], live: dict[str, Any] | None = None) -> None:
        """Append ``record`` to metrics.jsonl; observers also see the ``live`` extras."""
        if self.dist.is_main:
            append_jsonl(self.metrics_path, record)
            for observer in self.observers:
                observer.on_record({**record, **(live or {})})

    def cache_hit_rate(self) -> dict[str, float]:
        """The training cache's share of batches served from cached states, so far."""
        cache = self.caches.train
        if cache is None or not cache.hits + cache.misses:
            return {}
        return {"cache_hit_rate": cache.hits / (cache.hits + cache.misses)}

    def observe_step(self, loss: float) -> None:
        """Tell the observers about the optimizer step just taken (loss, each unit's LR)."""
        if not (self.observers and self.dist.is_main):
            return
        names = self.units.names
        lrs = {names[g["unit"]]: g["lr"] for g in self.optimizer.param_groups}
        for observer in self.observers:
            observer.on_step(self.state.step, loss, lrs)

    def apply_freezing(self, frozen_units: int | None) -> None:
        """Make the first ``frozen_units`` units frozen (requires_grad, eval mode); no logging."""
        if frozen_units is None:
            return
        apply_frozen(self.model, frozen_parameters(self.units, self.spec, frozen_units))
        set_train_modes(self.model, self.units, frozen_units, True, self.spec.train_bn)
        # under DDP, a new wrapper over the new trainable set (same step on every rank)
        self.runner = distributed.wrap(self.model, self.dist)
        if self.caches.train is not None:
            self.caches.train.runner = self.runner

    # 2) every group's LR: base x (policy's factor or warmup/decay) x llrd^(depth from top)
    def set_learning_rates(self) -> None:
        progress = Progress(self.state.step, self.total_steps, self.steps_per_epoch)
        blocks, warmup = self.units.num_blocks, self.optim.warmup_ratio
        for group in self.optimizer.param_groups:
            factor = unit_lr_factor(self.spec, self.policy, blocks, group["unit"], progress, warmup)
            group["lr"] = group["base_lr"] * factor

    # 3) checkpoints: exactly what ``resumable`` names, nothing else
    def resumable(self) -> checkpoint.Resumable:
        """What a checkpoint of this loop saves and restores."""
        return checkpoint.Resumable(
            model=self.model,
            optimizer=self.optimizer,
            policy=self.policy,
            objective=self.objective,
            state=self.state,
            caches=self.caches,
            grads=self.grads,
            metrics_path=self.metrics_path,
            steps_per_epoch=self.steps_per_epoch,
        )

    def restore(self, folder: Path) -> checkpoint.Position:
        """Continue from the checkpoint in ``folder``; return where training picks up."""
        position = checkpoint.restore(self.resumable(), folder, self.dist)
        self.apply_freezing(self.state.frozen_units)
        return position

    def run(self, loader: DataLoader, start: checkpoint.Position | None = None) -> None:
        """Train from ``start``: the beginning, or where a checkpoint left off."""
        t, s = self.train, self.state
        start_epoch, start_batch = start or checkpoint.Position(0, 0)
        bar = _progress_bar(
            self.total_steps, t.progress and self.dist.is_main, f"train {self.spec.text}"
        )
        bar.update(s.step)
        s.train_time += self.objective.prepare()  # e.g. the teacher's one pass (not on resume)
        for epoch in range(start_epoch, t.epochs):
            set_epoch(loader, epoch)  # a new, reproducible order every epoch
            set_train_modes(self.model, self.units, self.frozen_units, True, self.spec.train_bn)
            skip = start_batch if epoch == start_epoch else 0
            started, running = time.perf_counter(), 0.0
            for i, batch in enumerate(loader):
                if i < skip:
                    continue  # resumed mid-epoch: the same order, minus what was done
                if i % t.grad_accum == 0:
                    self.refreeze()
                    self.set_learning_rates()
                last = not (i + 1) % t.grad_accum or i + 1 == len(loader)
                running += self._backward(batch, sync=last)
                if not last:
                    continue
                self._optimizer_step()
                self.observe_step(running)
                bar.update(1)
                bar.set_postfix(loss=f"{running:.4f}", epoch=epoch + 1)
                running = 0.0
                if t.eval_every and s.step % t.eval_every == 0 and i + 1 != len(loader):
                    s.train_time += time.perf_counter() - started
                    self._evaluate(epoch + (i + 1) / len(loader))
                    started = time.perf_counter()
                if i + 1 != len(loader):
                    self._maybe_checkpoint(checkpoint.Position(epoch, i + 1), started)
            s.train_time += time.perf_counter() - started
            self._evaluate(epoch + 1)
            bar.set_postfix({self.main: f"{s.last[self.main]:.4f}", "epoch": epoch + 1})
            self._maybe_checkpoint(checkpoint.Position(epoch + 1, 0), None, epoch_end=True)
        bar.close()

    def _maybe_checkpoint(
        self, position: checkpoint.Position, started: float | None, epoch_end: bool = False
    ) -> None:
        """Checkpoint every N steps, at epoch ends when asked, and before stopping on a signal."""
        t, step, every = self.train, self.state.step, self.train.save_every or 0
        due = bool(every) and (epoch_end or step % every == 0)
        if self.dist.enabled:  # a signal may reach one rank only: all stop at the same step
            stop = distributed.any_rank(bool(self.stop_signal), self.dist)
            self.stop_signal = self.stop_signal or (signal.SIGTERM if stop else None)
        if not (due or self.stop_signal):
            return
        paused = time.perf_counter()
        path = checkpoint.step_folder(self.out, step)
        rngs = distributed.all_gather(checkpoint.rng_state(), self.dist)  # dropout differs
        if self.dist.is_main:  # replicas are identical: rank 0 writes for all of them
            path = checkpoint.save(
                self.resumable(),
                self.out,
                position,
                keep=t.keep_checkpoints,
                dist=self.dist,
                rngs=rngs,
            )
        distributed.barrier(self.dist)
        if started is not None:  # the epoch's clock is running: leave the save out of it
            self.state.train_time -= time.perf_counter() - paused
        if self.stop_signal:
            raise Interrupted(step, path, self.out)

    def _backward(self, batch: dict[str, torch.Tensor], sync: bool = True) -> float:
        """Forward and backward one (micro-)batch; under DDP all-reduce only when ``sync``."""
        t = self.train
        batch = {k: v.to(self.device) for k, v in batch.items()}
        n = len(batch["labels"])
        quiet: Any = contextlib.nullcontext()
        if not sync and isinstance(self.runner, DistributedDataParallel):
            quiet = self.runner.no_sync()  # accumulate locally; all-reduce on the last one
        with quiet:
            index, labels = batch.get("index"), batch["labels"]
            with autocast(t.bf16, self.device):
                out = forward(self.runner, self.caches.train, batch, self.frozen_units)
                loss = self.objective.loss(out, labels, index) / t.grad_accum
            bad, total = int(not torch.isfinite(loss)), n
            if self.dist.enabled:  # one collective: the global batch size, and any bad loss
                total, bad = distributed.sum_ints([n, bad], self.dist)
            if bad:
                self._skip_or_stop(loss)
                return 0.0
            # DDP averages over ranks: weigh each rank's mean loss by its share of the global
            # batch, so that an uneven last batch counts every example once, as one process does
            scale = self.dist.world * n / total
            (loss * scale).backward() if scale != 1.0 else loss.backward()
        self.state.examples += total
        return loss.item()

    def _skip_or_stop(self, loss: torch.Tensor) -> None:
        """A non-finite loss (here or on another rank): stop, or skip the batch when asked."""
        if not self.train.skip_nonfinite:
            value = loss.item() if not torch.isfinite(loss) else "non-finite elsewhere"
            raise UserError(
                f"loss became {value} at step {self.state.step}; the last checkpoint "
                "(if any) is kept; lower --lr, turn off --bf16, or pass --skip-nonfinite"
            )
        self.log({"event": "skipped", "step": self.state.step})
        if self.dist.enabled:  # this window's gradients may never be all-reduced now:
            self.optimizer.zero_grad(set_to_none=True)  # every rank drops all of them

    def _optimizer_step(self) -> None:
        max_norm = self.optim.max_grad_norm
        if self.grads is not None:
            self.grads.accumulate()  # a gradient watcher sees the raw (unclipped) gradient
        if max_norm > 0:
            params = [p for p in self.model.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        step, watcher = self.state.step, self.watcher
        if watcher is not None and self.grads is not None and watcher.is_decision_step(step):
            # the gradients are DDP-averaged already; rank 0's norms make the decision certain
            norms = distributed.broadcast(self.grads.norms(), self.dist)
            watcher.decide(norms, step=step)

    def _evaluate(self, epoch: float) -> None:
        s, started = self.state, time.perf_counter()
        metrics = self.evaluate(self.frozen_units)
        s.eval_time += time.perf_counter() - started
        set_train_modes(self.model, self.units, self.frozen_units, True, self.spec.train_bn)
        record = {
            "event": "eval",
            "step": s.step,
            "epoch": round(epoch, 4),
            **metrics,
            "train_time_s": round(s.train_time, 3),
            "wall_time_s": round(s.train_time + s.eval_time, 3),
        }
        self.log(record, live=self.cache_hit_rate())
        s.last = record
        if s.best is None or metrics[self.main] > s.best[self.main]:
            s.best = record
            s.best_weights = self.snapshot()

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of every parameter that may train and of every buffer (what the best
        checkpoint needs).

        Frozen tensors never change, so the trainable ones are all a best checkpoint needs;
        under a schedule "trainable" varies, so keep every parameter that ever could train.
        Buffers (BatchNorm's running statistics) change in trainable units without a gradient.
        """
        params = {n for g in self.optimizer.param_groups for n in g["names"]}
        kept = {n: p.detach().clone() for n, p in self.model.named_parameters() if n in params}
        return {**kept, **{n: b.detach().clone() for n, b in self.model.named_buffers()}}
