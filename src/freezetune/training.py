"""``train(config) -> RunResult``: fine-tune with a chosen, possibly changing, set of frozen units.

1) check every input before writing anything, 2) build an optimizer over everything that may
train (``optim.py``), 3) let the policy freeze and thaw units as training goes (``loop.py``),
4) evaluate each epoch (and every N steps) and keep the best (``scoring.py``), 5) save the best
model in Hugging Face format plus metrics and a provenance-stamped result. ``resume(out)``
continues a run that was stopped, from its newest intact checkpoint; ``train.stop_at_step``
pauses a run there (checkpoint, ``checkpointer.Paused``, no result) for a later resume.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from freezetune import distributed
from freezetune.batching import make_loader, rank_share_loader
from freezetune.best import restore as restore_best
from freezetune.checkpointer import Paused
from freezetune.config import RunConfig
from freezetune.distributed import Dist
from freezetune.errors import UserError
from freezetune.freezing.policies import make_policy
from freezetune.inference import measure_inference
from freezetune.inputs import Setup, check_inputs, prepare
from freezetune.loop import Dev, Loop, Seams
from freezetune.modality import Collate
from freezetune.optim import build_optimizer
from freezetune.plan import Plan
from freezetune.records import RunResult, atomic_write_json, peak_rss_mb, provenance
from freezetune.rundir import resume_config, start_outputs, start_record
from freezetune.scoring import evaluate_model
from freezetune.seams import fixed_shards, make_seams, save_model
from freezetune.units import count_params

__all__ = [
    "RunResult",
    "Setup",
    "check_inputs",
    "prepare",
    "resume",
    "resume_config",
    "train",
    "train_or_resume",
]

#: single examples timed for the batch-1 latency of a saved model
LATENCY_SAMPLES = 100


def _on_signals(loop: Loop) -> Any:
    """SIGINT/SIGTERM finish the current step, checkpoint and stop (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def request_stop(signum: int, _frame: Any) -> None:
        loop.saver.stop_signal = signum
        print(
            f"\n{signal.Signals(signum).name}: finishing this step, then checkpointing",
            file=sys.stderr,
        )

    return {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}


def train(run: RunConfig | Setup) -> RunResult:
    """Fine-tune as the config says and return the result (also written to ``result.json``).

    ``run`` is a :class:`RunConfig`, or the :class:`Setup` that ``prepare(config)`` returned
    to a caller that looks at the model before or after training. With ``train.stop_at_step``
    it checkpoints that step and raises ``checkpointer.Paused`` instead (``resume`` goes on).

    >>> from freezetune.config import RunConfig
    >>> result = train(RunConfig.from_dict({"freeze": "bottom:3", "out": "runs/x"}))  # doctest: +SKIP
    >>> result.best_score, result.steps  # doctest: +SKIP
    (0.88, 6315)
    """
    return _run(run if isinstance(run, Setup) else prepare(run), resume=False)


def resume(
    out: str | Path, *, progress: bool | None = None, stop_at_step: int | None = None
) -> RunResult:
    """Continue the unfinished run in ``out`` from its newest intact checkpoint.

    It runs with the config it was started with (``run_config.json``); only the progress bar
    may change, and where it stops: at the end, or paused again at ``stop_at_step`` (raising
    ``checkpointer.Paused``; a ``stop_at_step`` stored with the run is not reused). The result
    is the same as if the run had never stopped.
    """
    config = resume_config(out)
    train = dataclasses.replace(config.train, stop_at_step=stop_at_step)
    if progress is not None:
        train = dataclasses.replace(train, progress=progress)
    return _run(prepare(dataclasses.replace(config, train=train), resume=True), resume=True)


@dataclass(frozen=True)
class _Batches:
    """The tokenized splits and their loaders (this rank's share of them under DDP)."""

    train: list[dict]
    validation: list[dict]
    train_loader: DataLoader
    eval_loader: DataLoader
    collate: Collate  # the dev set's (no augmentation): also the teacher's and inference's


def _batches(setup: Setup, model: nn.Module, d: Dist) -> _Batches:
    """Featurize once (tokens; images stay uint8 and are resized per batch by the collator).
    Under DDP each rank takes its slice of every global batch (a fixed shard when it caches)
    and of the dev set."""
    config, t, m, loaded = setup.config, setup.config.train, setup.modality, setup.loaded
    task = setup.data.task
    collate = m.collator(loaded, task, config, train=False)
    train_features = m.features(loaded, config, setup.data.train)
    eval_features = m.features(loaded, config, setup.data.validation)
    train_loader = make_loader(
        train_features,
        batch_size=t.batch_size,
        shuffle=True,
        seed=t.seed,
        collate=m.collator(loaded, task, config, train=True),
        group_by_length=config.data.group_by_length,
        rank=d.rank,
        world=d.world,
        fixed_shards=fixed_shards(setup, model, d),
    )
    eval_loader = rank_share_loader(
        eval_features, batch_size=t.eval_batch_size, collate=collate, rank=d.rank, world=d.world
    )
    return _Batches(train_features, eval_features, train_loader, eval_loader, collate)


def _run(setup: Setup, resume: bool) -> RunResult:
    """Train a prepared run from the start or (``resume``) from its newest checkpoint."""
    config, t, d = setup.config, setup.config.train, distributed.current()  # d: this rank
    if d.enabled and t.batch_size % d.world:
        raise UserError(
            f"--batch-size {t.batch_size} (the global batch) does not split over {d.world} "
            f"processes; pass a multiple of {d.world}"
        )
    if t.threads:
        torch.set_num_threads(t.threads)
    device = distributed.device(d)
    model = distributed.sync_batchnorm(setup.model.to(device), device, d)
    data = _batches(setup, model, d)
    # the optimizer holds every parameter that may ever train; the policy decides when
    optimizer = build_optimizer(model, setup.units, setup.spec, config.optim)
    steps_per_epoch = math.ceil(len(data.train_loader) / t.grad_accum)
    total_steps = steps_per_epoch * t.epochs
    policy = make_policy(
        setup.spec,
        setup.units.num_blocks,
        total_steps,
        steps_per_epoch,
        config.optim.warmup_ratio,
        seed=t.seed,
    )
    plan = Plan(
        setup.units,
        setup.spec,
        policy,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        warmup_ratio=config.optim.warmup_ratio,
    )
    latest = start_outputs(setup.out, config, resume, total_steps, d)
    splits = {"train": data.train, "validation": data.validation}
    seams = make_seams(setup, model, splits, data.collate, device, d)
    loop = _make_loop(setup, model, optimizer, plan, data, seams, device)
    return _train(setup, loop, latest, data)


def _make_loop(
    setup: Setup,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    plan: Plan,
    data: _Batches,
    seams: Seams,
    device: torch.device,
) -> Loop:
    """The loop over ``data``: it evaluates on the dev loader, from the dev cache if any."""
    t, task = setup.config.train, setup.data.task

    def evaluate(frozen_units: int) -> dict[str, Any]:
        return evaluate_model(
            model,
            data.eval_loader,
            task,
            device,
            bf16=t.bf16,
            cache=seams.caches.validation,
            frozen_units=frozen_units,
        )

    return Loop(
        model,
        optimizer,
        plan,
        Dev(evaluate, task.main_metric),
        train=t,
        optim=setup.config.optim,
        out=setup.out,
        seams=seams,
    )


def _train(setup: Setup, loop: Loop, latest: Path | None, data: _Batches) -> RunResult:
    """Resume ``loop`` from ``latest`` if given, run it (signals stop it cleanly), finish."""
    d, position = loop.dist, None
    if latest is not None:
        position = loop.restore(latest)
        if d.is_main:
            print(f"resumed from {latest} (step {loop.state.step})", file=sys.stderr)
    distributed.barrier(d)  # rank 0 has set the folder up (or trimmed it for resuming)
    if latest is None:  # a fresh start: observers see the record metrics.jsonl starts with
        loop.recorder.announce(start_record(setup.config, loop.plan.total_steps))
    previous = _on_signals(loop)
    try:
        loop.run(data.train_loader, position)
    except Paused:  # a caller may go on in this process (advise): free a spilled cache now
        loop.caches.close()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        loop.recorder.close()
    return _finish(setup, loop, data)


def _inference_cost(setup: Setup, data: _Batches) -> dict[str, Any] | None:
    """The saved model's speed on the dev set, timed in this process (rank 0), or None."""
    t = setup.config.train
    if not t.inference_cost:
        return None
    features = data.validation
    return measure_inference(
        setup.out,
        features,
        data.collate,
        batch_size=t.eval_batch_size,
        bf16=t.bf16,
        latency_samples=min(LATENCY_SAMPLES, len(features)),
    )


def _finish(setup: Setup, loop: Loop, data: _Batches) -> RunResult:
    """Restore the best weights, save the model, time it and write ``result.json``."""
    model, s = loop.model, loop.state
    restore_best(model, s.best_weights)
    trainable, total = count_params(model)
    policy_state = loop.policy.state_dict()
    main = loop.dist.is_main  # replicas are identical: rank 0 writes for all of them
    inference = None
    if main:
        save_model(setup, model)
        inference = _inference_cost(setup, data)
    result = RunResult(
        status="succeeded",
        task=setup.data.task.name,
        main_metric=setup.data.task.main_metric,
        freeze=setup.config.freeze,
        frozen_units=s.frozen_units,
        num_blocks=setup.units.num_blocks,
        final=s.last,
        best=s.best,
        steps=s.step,
        train_examples=len(data.train),
        wall_time_s=round(s.train_time + s.eval_time, 3),
        train_time_s=round(s.train_time, 3),
        eval_time_s=round(s.eval_time, 3),
        train_examples_per_s=round(s.examples / max(s.train_time, 1e-9), 2),
        peak_rss_mb=round(peak_rss_mb(), 1),
        trainable_params=trainable,
        total_params=total,
        trainable=s.trainable,
        freeze_timeline=s.timeline,
        policy_state=policy_state,
        cache=loop.caches.stats(),
        inference=inference,
        distill=loop.objective.summary(),
        model_path=setup.loaded.path,
        config=setup.config.to_dict(),
        processes=loop.dist.world,
        provenance=provenance(),
    )
    if main:
        atomic_write_json(setup.out / "result.json", result.to_dict())
    loop.caches.close()  # a spilled cache's file can be gigabytes: the run is done with it
    return result


def train_or_resume(config: RunConfig) -> RunResult:
    """Finish the run ``config`` describes, however far earlier attempts got (``--resume auto``).

    In ``config.out``: a finished run is returned as its ``result.json`` says, and nothing is
    written; an unfinished one resumes from its newest intact checkpoint (the result is the
    same as if it had never stopped); one without any (none yet, or killed before its first)
    starts from scratch, replacing what the earlier attempt left, as ``overwrite`` would. A
    folder holding a run of another config raises UserError naming the first differing key
    (the options declared ``identity=False`` may differ: ``out``, ``overwrite``,
    ``train.progress``, ``train.report_to``, ``train.inference_cost``, ``train.save_every``,
    ``train.stop_at_step``); with ``overwrite`` it is replaced instead. Anything else ``train``
    refuses (a folder holding a model) is refused. SIGINT/SIGTERM checkpoint and raise
    ``loop.Interrupted``, as in ``train``; ``train.stop_at_step`` pauses it there (raising
    ``checkpointer.Paused``), and a later call continues it. So a requeued
    job, or an executor retrying a run, repeats the same call:

    >>> cfg = RunConfig.from_dict({"freeze": "bottom:3", "train": {"save_every": 50},
    ...                            "out": "runs/x"})
    >>> result = train_or_resume(cfg)  # doctest: +SKIP
    >>> again = train_or_resume(cfg)  # finished: read back, nothing runs  # doctest: +SKIP
    >>> again.best == result.best  # doctest: +SKIP
    True

    ``freezetune.rundir.auto_action(config)`` says beforehand what it will do (it only reads).
    """
    from freezetune.rundir import NoIntactCheckpoint, auto_action, read_result

    action = auto_action(config)
    if action == "finished":
        return read_result(config.out)
    if action == "resume":
        try:
            return _run(prepare(config, resume=True), resume=True)
        except NoIntactCheckpoint:
            action = "restart"  # every checkpoint is corrupt (each was named): start over
    if action == "start":
        return _run(prepare(config), resume=False)
    # the earlier attempt's files may be replaced (as --overwrite would); the config stays as given
    setup = prepare(dataclasses.replace(config, overwrite=True))
    return _run(dataclasses.replace(setup, config=config), resume=False)
