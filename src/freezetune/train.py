"""``train(config) -> result``: fine-tune with a chosen, possibly changing, set of frozen units.

1) check every input before writing anything, 2) build an optimizer over everything that may
train, 3) let the policy freeze and thaw units as training goes (``loop.py``), 4) evaluate each
epoch (and every N steps) and keep the best, 5) save the best model in Hugging Face format plus
metrics and a provenance-stamped result.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from freezetune import checkpoint, distributed
from freezetune.batching import Collator, make_loader, tokenize
from freezetune.cache import PrefixCache, check_cacheable
from freezetune.config import RunConfig
from freezetune.errors import UserError
from freezetune.evaluate import compute_metrics
from freezetune.freezing import FreezeSpec, frozen_parameters, parse_freeze
from freezetune.freezing.lora import add_lora, merge_lora
from freezetune.freezing.policies import make_policy
from freezetune.loop import Loop, autocast, forward
from freezetune.models import LoadedModel, load_model
from freezetune.records import append_jsonl, atomic_write_json, peak_rss_mb, provenance
from freezetune.tasks import TaskData, load_task
from freezetune.units import Units, count_params, split_units

__all__ = ["Setup", "build_optimizer", "evaluate_model", "prepare", "resume_config", "train"]

RESULT_FILES = ("result.json", "model.safetensors")


@dataclass
class Setup:
    """Everything a run needs, built and checked before anything is written."""

    config: RunConfig
    spec: FreezeSpec
    data: TaskData
    loaded: LoadedModel
    model: nn.Module  # loaded.model, or its LoRA-wrapped version
    units: Units
    out: Path

    @property
    def frozen(self) -> frozenset[str]:
        """What the spec freezes at the start of training."""
        return frozen_parameters(
            self.units, self.spec, self.spec.frozen_prefix(self.units.num_blocks)
        )


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_out_dir(config: RunConfig, resume: bool = False) -> Path:
    """Refuse to replace a finished run unless asked (before any work is done)."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} is a file; pass --out with a folder")
    if resume and (out / "result.json").exists():
        raise UserError(f"{out} already finished (result.json exists); nothing to resume")
    if not (config.overwrite or resume) and any((out / n).exists() for n in RESULT_FILES):
        raise UserError(
            f"output folder {out} already holds a result; pass --overwrite to replace it "
            "or choose another --out"
        )
    if not (config.overwrite or resume) and any((out / "checkpoints").glob("step-*")):
        raise UserError(
            f"output folder {out} holds an unfinished run; continue it with --resume {out} "
            "or start over with --overwrite"
        )
    return out


def _load_data(config: RunConfig) -> TaskData:
    d = config.data
    return load_task(
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


def prepare(config: RunConfig, resume: bool = False) -> Setup:
    """Load data and model and resolve the freeze spec; raise UserError on any bad input."""
    spec = parse_freeze(config.freeze)
    out = check_out_dir(config, resume)
    data = _load_data(config)
    set_seed(config.train.seed)  # the head's initialisation depends on it
    loaded = load_model(
        config.model.name,
        num_labels=data.task.num_labels,
        labels=data.task.labels,
        pooling=config.model.pooling,
        classifier_dropout=config.model.classifier_dropout,
        trust_remote_code=config.model.trust_remote_code,
    )
    model: nn.Module = loaded.model
    if spec.lora is not None:
        model = add_lora(loaded.model, dict(spec.lora))
    units = split_units(
        model, blocks_path=config.model.blocks_path, embeddings_paths=config.model.embeddings_paths
    )
    spec.frozen_prefix(units.num_blocks)  # validates bottom:K / top:K against the model
    return Setup(config, spec, data, loaded, model, units, out)


def _is_no_decay(name: str, param: nn.Parameter) -> bool:
    # biases and norm gains are scale parameters: decaying them towards 0 only hurts
    return param.ndim < 2 or "norm" in name.lower()


def build_optimizer(setup: Setup, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW with one group per (unit, decay or not) over every parameter that may train.

    Parameters a schedule freezes stay in the optimizer with ``grad=None``, which AdamW skips
    entirely (no momentum, no weight decay), so they thaw with their LR already in place.
    Statically excluded ones (bitfit, patterns, LoRA's frozen base) never enter it.
    """
    o = setup.config.optim
    # a static spec's frozen prefix never thaws: keep it out; a schedule may thaw any unit
    static = setup.spec.schedule is None
    excluded = setup.frozen if static else frozen_parameters(setup.units, setup.spec, prefix=0)
    unit_of = {name: i for i, unit in enumerate(setup.units.units) for name in unit.params}
    head = len(setup.units.units) - 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if name in excluded:
            continue
        unit, no_decay = unit_of[name], _is_no_decay(name, param)
        group = groups.setdefault(
            (unit, no_decay),
            {
                "params": [],
                "names": [],
                "unit": unit,
                "base_lr": (o.head_lr or o.lr) if unit == head else o.lr,
                "weight_decay": 0.0 if no_decay else o.weight_decay,
            },
        )
        group["params"].append(param)
        group["names"].append(name)
    params, betas = [groups[k] for k in sorted(groups)], (o.adam_beta1, o.adam_beta2)
    try:  # one fused kernel over all tensors (CPU too since torch 2.4): what Trainer uses
        return torch.optim.AdamW(params, lr=o.lr, betas=betas, eps=o.adam_eps, fused=True)
    except (RuntimeError, TypeError):  # an older torch or an unsupported device
        return torch.optim.AdamW(params, lr=o.lr, betas=betas, eps=o.adam_eps)


@torch.no_grad()
def evaluate_model(
    setup: Setup,
    model: nn.Module,
    loader: Any,
    device: torch.device,
    cache: PrefixCache | None = None,
    level: int = 0,
) -> dict:
    """Dev-set metrics for the task, plus the mean loss (from cached states when it can)."""
    model.eval()
    logits, labels, losses = [], [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(setup.config.train.bf16, device):
            out = forward(model, cache, batch, level)
        logits.append(out.logits.float().cpu())
        labels.append(batch["labels"].cpu())
        losses.append(out.loss.item() * len(batch["labels"]))
    # under DDP each rank scored its shard of the dev set (maybe none): pool them in rank
    # order, so that every rank computes the same metrics
    shards = distributed.all_gather((logits, labels, sum(losses)), distributed.current())
    preds = torch.cat([t for s in shards for t in s[0]]).numpy()
    gold = torch.cat([t for s in shards for t in s[1]]).numpy()
    metrics = compute_metrics(setup.data.task, preds, gold)
    metrics["loss"] = float(sum(s[2] for s in shards) / len(gold))
    return metrics


def make_caches(
    setup: Setup, model: nn.Module, splits: dict[str, list[dict]]
) -> dict[str, PrefixCache | None]:
    """One activation cache per split, or none when caching is off or not exact here."""
    t, d = setup.config.train, distributed.current()
    reason = check_cacheable(model, setup.units) if t.cache else "turned off"
    if reason is not None:
        if t.cache and d.is_main:
            print(f"caching off: {reason}", file=sys.stderr)
        return dict.fromkeys(splits)
    folder = setup.out / "cache"
    if t.cache_dir:  # may be shared (a study's base config): one subfolder per run
        digest = hashlib.sha256(str(setup.out.resolve()).encode()).hexdigest()[:12]
        folder = Path(t.cache_dir) / f"{setup.out.name}-{digest}"
    rank = f"-rank{d.rank}" if d.enabled else ""  # each rank caches its own shard
    return {
        name: PrefixCache(
            model,
            setup.units,
            [len(f["input_ids"]) for f in features],
            t.cache_dtype,
            spill=folder / f"{name}{rank}.npy",
            budget_mb=t.cache_budget_mb * d.world,  # a rank fills only its share of it
        )
        for name, features in splits.items()
    }


def _caches_prefix(setup: Setup, model: nn.Module) -> bool:
    """Whether this run will cache frozen-prefix states (at least 2 units frozen some time)."""
    if not setup.config.train.cache or check_cacheable(model, setup.units) is not None:
        return False
    return setup.spec.schedule is not None or setup.spec.frozen_prefix(setup.units.num_blocks) >= 2


def _on_signals(loop: Loop) -> Any:
    """SIGINT/SIGTERM finish the current step, checkpoint and stop (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def request_stop(signum: int, _frame: Any) -> None:
        loop.stop_signal = signum
        print(
            f"\n{signal.Signals(signum).name}: finishing this step, then checkpointing",
            file=sys.stderr,
        )

    return {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}


def resume_config(out: str | Path) -> RunConfig:
    """The config a run in ``out`` was started with (for ``--resume``)."""
    path = Path(out) / "run_config.json"
    if (Path(out) / "result.json").exists():
        raise UserError(f"{out} already finished (result.json exists); nothing to resume")
    if not path.is_file():
        raise UserError(f"{out} holds no run to resume (no run_config.json); check the folder")
    try:
        data = json.loads(path.read_text())
        return RunConfig.from_dict({**data, "out": str(out)})  # the folder may have moved
    except ValueError as err:
        raise UserError(f"{path} is not a valid run config ({err})") from None


def train(config: RunConfig, setup: Setup | None = None, resume: bool = False) -> dict[str, Any]:
    """Fine-tune as ``config`` says and return the result (also written to ``result.json``).

    >>> from freezetune.config import RunConfig
    >>> result = train(RunConfig.from_dict({"freeze": "bottom:3", "out": "runs/x"}))  # doctest: +SKIP
    >>> result["best"]["accuracy"]  # doctest: +SKIP
    0.88
    """
    setup = setup or prepare(config, resume)
    t, d = config.train, distributed.current()  # d: this process's rank under torchrun
    if d.enabled and t.batch_size % d.world:
        raise UserError(
            f"--batch-size {t.batch_size} (the global batch) does not split over {d.world} "
            f"processes; pass a multiple of {d.world}"
        )
    if t.threads:
        torch.set_num_threads(t.threads)
    device = distributed.device(d)
    model: Any = setup.model.to(device)
    tokenizer = setup.loaded.tokenizer

    # 1) tokenize once; dynamic padding per batch happens in the collator. Under DDP each rank
    #    takes its slice of every global batch (a fixed shard when it caches) and of the dev set
    collate = Collator.for_task(tokenizer, setup.data.task)
    train_features = tokenize(setup.data.train, tokenizer, max_length=config.data.max_length)
    eval_features = tokenize(setup.data.validation, tokenizer, max_length=config.data.max_length)
    train_loader = make_loader(
        train_features,
        batch_size=t.batch_size,
        shuffle=True,
        seed=t.seed,
        collate=collate,
        group_by_length=config.data.group_by_length,
        rank=d.rank,
        world=d.world,
        fixed_shards=d.enabled and _caches_prefix(setup, model),
    )
    eval_loader = make_loader(
        eval_features[d.rank :: d.world],
        batch_size=t.eval_batch_size,
        shuffle=False,
        seed=t.seed,
        collate=collate,
    )

    # 2) the optimizer holds every parameter that may ever train; the policy decides when
    optimizer = build_optimizer(setup, model)
    steps_per_epoch = math.ceil(len(train_loader) / t.grad_accum)
    total_steps = steps_per_epoch * t.epochs
    policy = make_policy(
        setup.spec, setup.units.num_blocks, total_steps, steps_per_epoch, config.optim.warmup_ratio
    )

    # 3) outputs: only now, after every check passed, does anything get written
    out = setup.out  # --overwrite replaces our files in place; nothing else there is touched
    metrics_path = out / "metrics.jsonl"
    latest = checkpoint.find_latest(out) if resume else None
    if resume and latest is None:
        raise UserError(f"no intact checkpoint in {out}/checkpoints; start the run again")
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
    if latest is None and d.is_main:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # --overwrite: start over
        atomic_write_json(out / "run_config.json", config.to_dict())  # config.json is the model's
        metrics_path.unlink(missing_ok=True)
        start = {"event": "start", "step": 0, "freeze": config.freeze, "total_steps": total_steps}
        append_jsonl(metrics_path, start)

    # 4) frozen prefixes run once: their outputs are cached per example (RAM or a file)
    caches = make_caches(setup, model, {"train": train_features, "validation": eval_features})

    # 5) train; evaluate each epoch (and every N steps); keep the best weights
    loop = Loop(
        setup,
        model,
        optimizer,
        policy,
        device,
        lambda level: evaluate_model(
            setup, model, eval_loader, device, caches["validation"], level
        ),
        metrics_path,
        total_steps,
        steps_per_epoch,
        cache=caches["train"],
        eval_cache=caches["validation"],
    )
    position = (0, 0)
    if latest is not None:
        position = checkpoint.restore(loop, latest)
        if d.is_main:
            print(f"resumed from {latest} (step {loop.step})", file=sys.stderr)
    distributed.barrier(d)  # rank 0 has set the folder up (or trimmed it for resuming)
    previous = _on_signals(loop)
    try:
        loop.run(train_loader, *position)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return _finish(setup, loop, len(train_features), caches)


def _finish(
    setup: Setup, loop: Loop, n_train: int, caches: dict[str, PrefixCache | None]
) -> dict[str, Any]:
    """Restore the best weights, save the model and write ``result.json``."""
    model, out = loop.model, setup.out
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in loop.best_weights.items():
            params[name].copy_(value)
    trainable, total = count_params(model)
    policy_state = loop.policy.state_dict()
    main = loop.dist.is_main  # replicas are identical: rank 0 writes for all of them
    if main:
        saved: Any = merge_lora(model) if setup.spec.lora is not None else model
        saved.save_pretrained(out)
        setup.loaded.tokenizer.save_pretrained(out)
    result = {
        "status": "succeeded",
        "task": setup.data.task.name,
        "main_metric": setup.data.task.main_metric,
        "freeze": setup.config.freeze,
        "units_frozen": loop.frozen_prefix,
        "num_blocks": setup.units.num_blocks,
        "final": loop.last,
        "best": loop.best,
        "steps": loop.step,
        "train_examples": n_train,
        "wall_time_s": round(loop.train_time + loop.eval_time, 3),
        "train_time_s": round(loop.train_time, 3),
        "eval_time_s": round(loop.eval_time, 3),
        "train_examples_per_s": round(loop.examples / max(loop.train_time, 1e-9), 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "trainable_params": trainable,
        "total_params": total,
        "trainable": loop.trainable,
        "freeze_timeline": loop.timeline,
        "policy_state": policy_state,
        "cache": {k: c.stats() for k, c in caches.items() if c is not None} or None,
        "model_path": setup.loaded.path,
        "config": setup.config.to_dict(),
        "processes": loop.dist.world,
        **provenance(),
    }
    if main:
        atomic_write_json(out / "result.json", result)
    for cache in caches.values():
        if cache is not None:
            cache.close()  # a spilled cache's file can be gigabytes: the run is done with it
    return result
