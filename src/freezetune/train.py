"""``train(config) -> result``: fine-tune with a chosen set of frozen parameters.

The loop reads top to bottom: 1) check every input before writing anything, 2) freeze,
3) optimise only what trains, 4) evaluate each epoch (and every N steps), keep the best,
5) save the best model in Hugging Face format plus metrics and a provenance-stamped result.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from freezetune.config import RunConfig
from freezetune.data import Collator, TaskData, load_task, make_loader, tokenize
from freezetune.errors import UserError
from freezetune.evaluate import compute_metrics
from freezetune.freezing import apply_frozen, frozen_parameters, parse_freeze, set_train_modes
from freezetune.models import LoadedModel, load_model
from freezetune.records import append_jsonl, atomic_write_json, peak_rss_mb, provenance
from freezetune.units import Units, split_units, trainable_line

__all__ = ["Setup", "prepare", "train"]

RESULT_FILES = ("result.json", "model.safetensors")


@dataclass
class Setup:
    """Everything a run needs, built and checked before anything is written."""

    config: RunConfig
    data: TaskData
    loaded: LoadedModel
    units: Units
    frozen: frozenset[str]
    frozen_prefix: int
    out: Path


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_out_dir(config: RunConfig) -> Path:
    """Refuse to replace a finished run unless asked (before any work is done)."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} is a file; pass --out with a folder")
    if not config.overwrite and any((out / name).exists() for name in RESULT_FILES):
        raise UserError(
            f"output folder {out} already holds a result; pass --overwrite to replace it "
            "or choose another --out"
        )
    return out


def prepare(config: RunConfig) -> Setup:
    """Load data and model and resolve the freeze spec; raise UserError on any bad input."""
    spec = parse_freeze(config.freeze)
    out = check_out_dir(config)
    d = config.data
    data = load_task(
        d.task,
        data_dir=d.data_dir,
        train_file=d.train_file,
        validation_file=d.validation_file,
        text_columns=d.text_columns,
        label_column=d.label_column,
        regression=d.regression,
        max_train_samples=d.max_train_samples,
        max_eval_samples=d.max_eval_samples,
        seed=config.train.seed,
    )
    set_seed(config.train.seed)  # the head's initialisation depends on it
    loaded = load_model(
        config.model.name,
        num_labels=data.task.num_labels,
        labels=data.task.labels,
        pooling=config.model.pooling,
        classifier_dropout=config.model.classifier_dropout,
        trust_remote_code=config.model.trust_remote_code,
    )
    units = split_units(
        loaded.model,
        blocks_path=config.model.blocks_path,
        embeddings_paths=config.model.embeddings_paths,
    )
    frozen = frozen_parameters(units, spec)
    prefix = spec.frozen_prefix(units.num_blocks)
    return Setup(config, data, loaded, units, frozen, prefix, out)


def _is_no_decay(name: str, param: nn.Parameter) -> bool:
    # biases and norm gains are scale parameters: decaying them towards 0 only hurts
    return param.ndim < 2 or "norm" in name.lower()


def build_optimizer(setup: Setup, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters only: frozen ones never get an update."""
    o = setup.config.optim
    head = set(setup.units.units[-1].params)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((name in head, _is_no_decay(name, param)), []).append(param)
    param_groups = [
        {
            "params": params,
            "lr": (o.head_lr or o.lr) if is_head else o.lr,
            "weight_decay": 0.0 if no_decay else o.weight_decay,
        }
        for (is_head, no_decay), params in sorted(groups.items())
    ]
    return torch.optim.AdamW(
        param_groups, lr=o.lr, betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_eps
    )


def linear_warmup_decay(total_steps: int, warmup_ratio: float):
    """LR multiplier: 0 -> 1 over the warmup steps, then linearly back to 0 at the end."""
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def _autocast(config: RunConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.train.bf16)


@torch.no_grad()
def evaluate_model(setup: Setup, model: nn.Module, loader: Any, device: torch.device) -> dict:
    """Dev-set metrics for the task, plus the mean loss."""
    model.eval()
    logits, labels, losses = [], [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with _autocast(setup.config, device):
            out = model(**batch)
        logits.append(out.logits.float().cpu())
        labels.append(batch["labels"].cpu())
        losses.append(out.loss.item() * len(batch["labels"]))
    preds, gold = torch.cat(logits).numpy(), torch.cat(labels).numpy()
    metrics = compute_metrics(setup.data.task, preds, gold)
    metrics["loss"] = float(sum(losses) / len(gold))
    return metrics


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    # only trainable tensors change, so they are all a best checkpoint needs in memory
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _progress(total: int, enabled: bool, desc: str) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        disable=not enabled,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
        file=sys.stderr,
    )


def train(config: RunConfig, setup: Setup | None = None) -> dict[str, Any]:
    """Fine-tune as ``config`` says and return the result (also written to ``result.json``).

    >>> from freezetune.config import RunConfig
    >>> result = train(RunConfig.from_dict({"freeze": "bottom:3", "out": "runs/x"}))  # doctest: +SKIP
    >>> result["best"]["accuracy"]  # doctest: +SKIP
    0.88
    """
    setup = setup or prepare(config)
    t = config.train
    if t.threads:
        torch.set_num_threads(t.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model: Any = setup.loaded.model.to(device)  # type: ignore[arg-type]
    tokenizer, task = setup.loaded.tokenizer, setup.data.task

    # 1) tokenize once; dynamic padding per batch happens in the collator
    collate = Collator.for_task(tokenizer, task)
    train_features = tokenize(setup.data.train, tokenizer, max_length=config.data.max_length)
    eval_features = tokenize(setup.data.validation, tokenizer, max_length=config.data.max_length)
    train_loader = make_loader(
        train_features,
        batch_size=t.batch_size,
        shuffle=True,
        seed=t.seed,
        collate=collate,
        group_by_length=config.data.group_by_length,
    )
    eval_loader = make_loader(
        eval_features, batch_size=t.eval_batch_size, shuffle=False, seed=t.seed, collate=collate
    )

    # 2) freeze: requires_grad off (no backward through the frozen prefix) + eval() mode
    apply_frozen(model, setup.frozen)
    line = trainable_line(model)
    print(f"freeze {config.freeze}: {line}", file=sys.stderr)

    # 3) only trainable parameters enter the optimizer
    optimizer = build_optimizer(setup, model)
    steps_per_epoch = math.ceil(len(train_loader) / t.grad_accum)
    total_steps = steps_per_epoch * t.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_warmup_decay(total_steps, config.optim.warmup_ratio)
    )

    # 4) outputs: only now, after every check passed, does anything get written
    out = setup.out  # --overwrite replaces our files in place; nothing else there is touched
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    append_jsonl(
        metrics_path,
        {
            "event": "start",
            "step": 0,
            "freeze": config.freeze,
            "units_frozen": setup.frozen_prefix,
            "trainable": line,
        },
    )

    state = _Loop(setup, model, optimizer, scheduler, device, eval_loader, metrics_path)
    state.run(train_loader, total_steps, steps_per_epoch)
    return _finish(setup, state, line, len(train_features))


class _Loop:
    """The training loop's state; ``run`` is the loop itself."""

    def __init__(self, setup, model, optimizer, scheduler, device, eval_loader, metrics_path):
        self.setup, self.model, self.optimizer, self.scheduler = setup, model, optimizer, scheduler
        self.device, self.eval_loader, self.metrics_path = device, eval_loader, metrics_path
        self.main = setup.data.task.main_metric
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.best_weights: dict[str, torch.Tensor] = {}
        self.last: dict[str, Any] = {}
        self.train_time = 0.0
        self.eval_time = 0.0
        self.examples = 0

    def run(self, loader: Any, total_steps: int, steps_per_epoch: int) -> None:
        cfg = self.setup.config
        t = cfg.train
        bar = _progress(total_steps, t.progress, f"train {cfg.freeze}")
        for epoch in range(t.epochs):
            loader.sampler.set_epoch(epoch)  # a new, reproducible order every epoch
            set_train_modes(self.model, self.setup.units, self.setup.frozen_prefix, True)
            started = time.perf_counter()
            running = 0.0
            for i, batch in enumerate(loader):
                batch = {k: v.to(self.device) for k, v in batch.items()}
                with _autocast(cfg, self.device):
                    loss = self.model(**batch).loss / t.grad_accum
                if not torch.isfinite(loss):
                    raise UserError(
                        f"loss became {loss.item()} at step {self.step}; lower --lr or turn off --bf16"
                    )
                loss.backward()
                running += loss.item()
                self.examples += len(batch["labels"])
                if (i + 1) % t.grad_accum and i + 1 != len(loader):
                    continue
                self._optimizer_step()
                bar.update(1)
                bar.set_postfix(loss=f"{running:.4f}", epoch=epoch + 1)
                running = 0.0
                if t.eval_every and self.step % t.eval_every == 0 and self.step % steps_per_epoch:
                    self.train_time += time.perf_counter() - started
                    self._evaluate(epoch + (i + 1) / len(loader))
                    set_train_modes(self.model, self.setup.units, self.setup.frozen_prefix, True)
                    started = time.perf_counter()
            self.train_time += time.perf_counter() - started
            self._evaluate(epoch + 1)
            bar.set_postfix({self.main: f"{self.last[self.main]:.4f}", "epoch": epoch + 1})
        bar.close()

    def _optimizer_step(self) -> None:
        max_norm = self.setup.config.optim.max_grad_norm
        if max_norm > 0:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def _evaluate(self, epoch: float) -> None:
        started = time.perf_counter()
        metrics = evaluate_model(self.setup, self.model, self.eval_loader, self.device)
        self.eval_time += time.perf_counter() - started
        record = {
            "event": "eval",
            "step": self.step,
            "epoch": round(epoch, 4),
            **metrics,
            "train_time_s": round(self.train_time, 3),
        }
        append_jsonl(self.metrics_path, record)
        self.last = record
        if self.best is None or metrics[self.main] > self.best[self.main]:
            self.best = record
            self.best_weights = _snapshot(self.model)


def _finish(setup: Setup, state: _Loop, line: str, n_train: int) -> dict[str, Any]:
    """Restore the best weights, save the model and write ``result.json``."""
    model, out = state.model, setup.out
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in state.best_weights.items():
            params[name].copy_(value)
    model.save_pretrained(out)
    setup.loaded.tokenizer.save_pretrained(out)
    trainable, total = (
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        sum(p.numel() for p in model.parameters()),
    )
    result = {
        "status": "succeeded",
        "task": setup.data.task.name,
        "main_metric": setup.data.task.main_metric,
        "freeze": setup.config.freeze,
        "units_frozen": setup.frozen_prefix,
        "num_blocks": setup.units.num_blocks,
        "final": state.last,
        "best": state.best,
        "steps": state.step,
        "train_examples": n_train,
        "wall_time_s": round(state.train_time + state.eval_time, 3),
        "train_time_s": round(state.train_time, 3),
        "eval_time_s": round(state.eval_time, 3),
        "train_examples_per_s": round(state.examples / max(state.train_time, 1e-9), 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "trainable_params": trainable,
        "total_params": total,
        "trainable": line,
        "model_path": setup.loaded.path,
        "config": setup.config.to_dict(),
        **provenance(),
    }
    atomic_write_json(out / "result.json", result)
    return result
