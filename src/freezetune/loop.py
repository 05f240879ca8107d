"""The training loop: one explicit pass over epochs and steps, with freezing hooks.

What is frozen is asked of the policy before every optimizer step and applied only when it
changes; AutoFreeze additionally sees accumulated block gradients at its decision points.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from freezetune import checkpoint, distributed
from freezetune.batching import set_epoch
from freezetune.cache import PrefixCache
from freezetune.errors import UserError
from freezetune.freezing import apply_frozen, frozen_parameters, set_train_modes
from freezetune.freezing.policies import AutoFreeze, Policy, Progress, linear_warmup_decay
from freezetune.freezing.gradients import BlockGradients
from freezetune.records import append_jsonl
from freezetune.units import count_params, trainable_line

__all__ = ["Interrupted", "Loop", "autocast", "forward"]


def autocast(enabled: bool, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


class Interrupted(Exception):
    """Training stopped on a signal after writing a checkpoint."""

    def __init__(self, step: int, path: Path, out: Path):
        super().__init__(
            f"stopped at step {step} after saving {path}; resume with: "
            f"freezetune train --resume {out}"
        )


def forward(model: nn.Module, cache: PrefixCache | None, batch: dict, level: int) -> Any:
    """The model's output for ``batch``; from cached frozen-prefix states when possible."""
    if cache is None:
        batch.pop("index", None)
        return model(**batch)
    return cache.forward(batch, level)


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
    """State of one run's training; ``run`` is the loop itself."""

    def __init__(
        self,
        setup: Any,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        policy: Policy,
        device: torch.device,
        evaluate: Any,
        metrics_path: Any,
        total_steps: int,
        steps_per_epoch: int,
        cache: PrefixCache | None = None,
        eval_cache: PrefixCache | None = None,
    ):
        self.cache, self.eval_cache = cache, eval_cache
        self.dist = distributed.current()
        self.runner: nn.Module = model  # what training calls: the model or its DDP wrapper
        self.stop_signal: int | None = None  # set by SIGINT/SIGTERM: checkpoint, then stop
        self.setup, self.model, self.optimizer, self.policy = setup, model, optimizer, policy
        self.device, self.evaluate, self.metrics_path = device, evaluate, metrics_path
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        self.main = setup.data.task.main_metric
        self.step = 0
        self.frozen_prefix: int | None = None
        self.trainable = ""
        self.timeline: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.best_weights: dict[str, torch.Tensor] = {}
        self.last: dict[str, Any] = {}
        self.train_time = self.eval_time = 0.0
        self.examples = 0
        num_blocks = setup.units.num_blocks
        self.depth = {i: num_blocks + 1 - i for i in range(num_blocks + 2)}  # head: 0
        self.grads = BlockGradients(model, setup.units) if isinstance(policy, AutoFreeze) else None

    # 1) what trains, decided before each optimizer step and applied only on change
    def refreeze(self) -> None:
        progress = Progress(self.step, self.total_steps, self.steps_per_epoch)
        n = self.policy.frozen_units(progress)
        if n == self.frozen_prefix:
            return
        self.apply_freezing(n)
        record = {
            "event": "freeze",
            "step": self.step,
            "units_frozen": n,
            "trainable_params": count_params(self.model)[0],
            "trainable": self.trainable,
        }
        self.timeline.append(record)
        self.log(record)
        if self.dist.is_main:
            print(f"step {self.step}: {n} units frozen; {self.trainable}", file=sys.stderr)

    def log(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            append_jsonl(self.metrics_path, record)

    def apply_freezing(self, n: int | None) -> None:
        """Make the first ``n`` units frozen (requires_grad, eval mode); no logging."""
        self.frozen_prefix = n
        if n is None:
            return
        apply_frozen(self.model, frozen_parameters(self.setup.units, self.setup.spec, n))
        set_train_modes(self.model, self.setup.units, n, True)
        self.trainable = trainable_line(self.model)
        # under DDP, a new wrapper over the new trainable set (same step on every rank)
        self.runner = distributed.wrap(self.model, self.dist)
        if self.cache is not None:
            self.cache.runner = self.runner

    # 2) every group's LR: base x (policy's factor or warmup/decay) x llrd^(depth from top)
    def set_learning_rates(self) -> None:
        progress = Progress(self.step, self.total_steps, self.steps_per_epoch)
        spec, warmup = self.setup.spec, self.setup.config.optim.warmup_ratio
        default = linear_warmup_decay(self.step, self.total_steps, warmup)
        for group in self.optimizer.param_groups:
            unit = group["unit"]
            factor = self.policy.lr_factor(unit, progress)
            factor = default if factor is None else factor
            if spec.llrd is not None:
                factor *= spec.llrd ** self.depth[unit]
            group["lr"] = group["base_lr"] * factor

    def run(self, loader: Any, start_epoch: int = 0, start_batch: int = 0) -> None:
        """Train from (start_epoch, start_batch): (0, 0), or where a checkpoint left off."""
        t = self.setup.config.train
        show = t.progress and self.dist.is_main
        bar = _progress_bar(self.total_steps, show, f"train {self.setup.config.freeze}")
        bar.update(self.step)
        for epoch in range(start_epoch, t.epochs):
            set_epoch(loader, epoch)  # a new, reproducible order every epoch
            set_train_modes(self.model, self.setup.units, self.frozen_prefix or 0, True)
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
                bar.update(1)
                bar.set_postfix(loss=f"{running:.4f}", epoch=epoch + 1)
                running = 0.0
                if t.eval_every and self.step % t.eval_every == 0 and i + 1 != len(loader):
                    self.train_time += time.perf_counter() - started
                    self._evaluate(epoch + (i + 1) / len(loader))
                    started = time.perf_counter()
                if i + 1 != len(loader):
                    self._maybe_checkpoint(epoch, i + 1, started)
            self.train_time += time.perf_counter() - started
            self._evaluate(epoch + 1)
            bar.set_postfix({self.main: f"{self.last[self.main]:.4f}", "epoch": epoch + 1})
            self._maybe_checkpoint(epoch + 1, 0, None, epoch_end=True)
        bar.close()

    def _maybe_checkpoint(
        self, epoch: int, batch: int, started: float | None, epoch_end: bool = False
    ) -> None:
        """Checkpoint every N steps, at epoch ends when asked, and before stopping on a signal."""
        t = self.setup.config.train
        due = bool(t.save_every) and (epoch_end or self.step % t.save_every == 0)
        if self.dist.enabled:  # a signal may reach one rank only: all stop at the same step
            stop = distributed.any_rank(bool(self.stop_signal), self.dist)
            self.stop_signal = self.stop_signal or (signal.SIGTERM if stop else None)
        if not (due or self.stop_signal):
            return
        paused = time.perf_counter()
        path = checkpoint.step_folder(self)
        rngs = distributed.all_gather(checkpoint.rng_state(), self.dist)  # dropout differs
        if self.dist.is_main:  # replicas are identical: rank 0 writes for all of them
            path = checkpoint.save(self, epoch, batch, t.keep_checkpoints, rngs)
        distributed.barrier(self.dist)
        if started is not None:  # the epoch's clock is running: leave the save out of it
            self.train_time -= time.perf_counter() - paused
        if self.stop_signal:
            raise Interrupted(self.step, path, self.setup.out)

    def _backward(self, batch: dict[str, torch.Tensor], sync: bool = True) -> float:
        """Forward and backward one (micro-)batch; under DDP all-reduce only when ``sync``."""
        cfg = self.setup.config
        batch = {k: v.to(self.device) for k, v in batch.items()}
        n = len(batch["labels"])
        quiet: Any = contextlib.nullcontext()
        if not sync and isinstance(self.runner, DistributedDataParallel):
            quiet = self.runner.no_sync()  # accumulate locally; all-reduce on the last one
        with quiet:
            with autocast(cfg.train.bf16, self.device):
                out = forward(self.runner, self.cache, batch, self.frozen_prefix or 0)
                loss = out.loss / cfg.train.grad_accum
            bad, total = int(not torch.isfinite(loss)), n
            if self.dist.enabled:  # one collective: the global batch size, and any bad loss
                total, bad = distributed.sum_ints([n, bad], self.dist)
            if bad:
                if not cfg.train.skip_nonfinite:
                    value = loss.item() if not torch.isfinite(loss) else "non-finite elsewhere"
                    raise UserError(
                        f"loss became {value} at step {self.step}; the last checkpoint "
                        "(if any) is kept; lower --lr, turn off --bf16, or pass --skip-nonfinite"
                    )
                self.log({"event": "skipped", "step": self.step})
                if self.dist.enabled:  # this window's gradients may never be all-reduced now:
                    self.optimizer.zero_grad(set_to_none=True)  # every rank drops all of them
                return 0.0
            # DDP averages over ranks: weigh each rank's mean loss by its share of the global
            # batch, so that an uneven last batch counts every example once, as one process does
            scale = self.dist.world * n / total
            (loss * scale).backward() if scale != 1.0 else loss.backward()
        self.examples += total
        return loss.item()

    def _optimizer_step(self) -> None:
        max_norm = self.setup.config.optim.max_grad_norm
        if self.grads is not None:
            self.grads.accumulate()  # AutoFreeze sees the raw (unclipped) gradient
        if max_norm > 0:
            params = [p for p in self.model.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        policy = self.policy
        decide = isinstance(policy, AutoFreeze) and policy.is_decision_step(self.step)
        if decide and self.grads is not None:
            # the gradients are DDP-averaged already; rank 0's norms make the decision certain
            norms = distributed.broadcast(self.grads.norms(), self.dist)
            policy.decide(norms, step=self.step)  # type: ignore[attr-defined]

    def _evaluate(self, epoch: float) -> None:
        started = time.perf_counter()
        metrics = self.evaluate(self.frozen_prefix or 0)
        self.eval_time += time.perf_counter() - started
        set_train_modes(self.model, self.setup.units, self.frozen_prefix or 0, True)
        record = {
            "event": "eval",
            "step": self.step,
            "epoch": round(epoch, 4),
            **metrics,
            "train_time_s": round(self.train_time, 3),
            "wall_time_s": round(self.train_time + self.eval_time, 3),
        }
        self.log(record)
        self.last = record
        if self.best is None or metrics[self.main] > self.best[self.main]:
            self.best = record
            self.best_weights = self.snapshot()

    def snapshot(self) -> dict[str, torch.Tensor]:
        # frozen tensors never change, so the trainable ones are all a best checkpoint needs;
        # under a schedule "trainable" varies, so keep every parameter that ever could train
        params = {n for g in self.optimizer.param_groups for n in g["names"]}
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if n in params}
