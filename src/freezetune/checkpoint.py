"""Crash-safe checkpoints and exact resume.

A checkpoint is a folder ``<out>/checkpoints/step-NNNNNNN`` holding the weights
(safetensors), the optimizer, RNG, data position, freezing-policy and loop state
(``state.pt``, read back with ``weights_only=True``), the best weights so far, AutoFreeze's
gradient sums, the activation caches, and a ``manifest.json`` with every file's size and
SHA-256, written last. It is built in a temporary folder, fsynced and renamed into place, so a
crash leaves the previous checkpoint intact; a truncated or corrupt one is skipped on resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from freezetune.errors import UserError

__all__ = ["find_latest", "restore", "rng_state", "save", "step_folder"]

PREFIX = "step-"


def _tensors(named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in named.items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def rng_state() -> dict[str, Any]:
    numpy_state: Any = np.random.get_state()
    kind, keys, pos, has_gauss, gauss = numpy_state
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_files(loop: Any, folder: Path, epoch: int, batch: int, rngs: list | None) -> None:
    params = dict(loop.model.named_parameters())
    save_file(_tensors(params), folder / "model.safetensors")
    save_file(_tensors(loop.best_weights), folder / "best.safetensors")
    if loop.grads is not None:
        names = {id(p): n for n, p in params.items()}
        save_file(
            _tensors({names[k]: v for k, v in loop.grads.sums.items()}),
            folder / "grads.safetensors",
        )
    caches = {}
    for name, cache in (("train", loop.cache), ("validation", loop.eval_cache)):
        if cache is not None and not loop.dist.enabled:  # under DDP each rank's is its own
            store = cache.store
            save_file(
                {"data": store.data.contiguous(), "filled": store.filled.to(torch.uint8)},
                folder / f"cache-{name}.safetensors",
            )
            caches[name] = store.level
    state = {
        "epoch": epoch,
        "batch": batch,
        "step": loop.step,
        "frozen_prefix": loop.frozen_prefix,
        "loop": {
            k: getattr(loop, k)
            for k in (
                "trainable",
                "timeline",
                "best",
                "last",
                "train_time",
                "eval_time",
                "examples",
            )
        },
        "policy": loop.policy.state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "rngs": rngs or [rng_state()],  # one per rank: each resumes its own stream
        "metrics_bytes": Path(loop.metrics_path).stat().st_size,
        "world": loop.dist.world,
        "steps_per_epoch": loop.steps_per_epoch,
        "caches": caches,
    }
    torch.save(state, folder / "state.pt")


def step_folder(loop: Any) -> Path:
    """Where the checkpoint of ``loop``'s current step goes."""
    return Path(loop.metrics_path).parent / "checkpoints" / f"{PREFIX}{loop.step:09d}"


def save(loop: Any, epoch: int, batch: int, keep: int, rngs: list | None = None) -> Path:
    """Write a checkpoint atomically; keep the newest ``keep``; return its folder.

    ``(epoch, batch)`` is where training continues: the next batch index of that epoch;
    ``rngs`` holds each rank's RNG state (``rng_state()``); alone, this process's is taken.
    """
    final = step_folder(loop)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{PREFIX}{loop.step:09d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        _write_files(loop, tmp, epoch, batch, rngs)
        manifest = {
            p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        dir_fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(
            f"cannot write a checkpoint in {root} ({err.strerror or err}); free disk space or "
            "pass another --out; the previous checkpoint is intact"
        ) from None
    for old in sorted(root.glob(f"{PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _valid(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        return all(
            (folder / name).stat().st_size == meta["bytes"]
            and _sha256(folder / name) == meta["sha256"]
            for name, meta in manifest.items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def find_latest(out: Path) -> Path | None:
    """The newest intact checkpoint under ``out``; corrupt ones are skipped with a warning."""
    for folder in sorted((out / "checkpoints").glob(f"{PREFIX}*"), reverse=True):
        if _valid(folder):
            return folder
        print(f"warning: skipping corrupt or incomplete checkpoint {folder}", file=sys.stderr)
    return None


def restore(loop: Any, folder: Path) -> tuple[int, int]:
    """Load a checkpoint into ``loop``; return (epoch, batch) to continue from."""
    try:  # weights_only: a checkpoint can never run code
        state = torch.load(folder / "state.pt", weights_only=True)
    except Exception as err:
        raise UserError(
            f"checkpoint {folder} cannot be loaded safely ({type(err).__name__}); delete it "
            "to resume from an older one"
        ) from None
    params = dict(loop.model.named_parameters())
    with torch.no_grad():
        for name, value in load_file(folder / "model.safetensors").items():
            params[name].copy_(value)
    loop.best_weights = load_file(folder / "best.safetensors")
    if loop.grads is not None and (folder / "grads.safetensors").exists():
        sums = load_file(folder / "grads.safetensors")
        loop.grads.sums = {id(params[n]): v for n, v in sums.items()}
    for name, level in state["caches"].items():
        cache = loop.cache if name == "train" else loop.eval_cache
        if cache is not None:
            tensors = load_file(folder / f"cache-{name}.safetensors")
            cache.store.data.copy_(tensors["data"])
            cache.store.filled.copy_(tensors["filled"].bool())
            cache.store.level = level
    loop.policy.load_state_dict(state["policy"])
    loop.apply_freezing(state["frozen_prefix"])
    loop.optimizer.load_state_dict(state["optimizer"])
    for key, value in state["loop"].items():
        setattr(loop, key, value)
    loop.step = state["step"]
    if loop.dist.is_main:
        with open(loop.metrics_path, "r+b") as f:  # drop what the killed run logged after it
            f.truncate(state["metrics_bytes"])
    written, spe = state.get("world", 1), state.get("steps_per_epoch", loop.steps_per_epoch)
    if loop.dist.is_main and (written != loop.dist.world or spe != loop.steps_per_epoch):
        print(
            f"note: {folder.name} was written by {written} process(es) and resumes on "
            f"{loop.dist.world}; steps per epoch {spe} -> {loop.steps_per_epoch}; with prefix "
            "caching each process owns a shard, so the rest of this epoch's order differs",
            file=sys.stderr,
        )
    rngs = state.get("rngs") or [state["rng"]]  # "rng": written before per-rank states
    # on another number of processes every rank continues rank 0's stream
    _set_rng_state(rngs[loop.dist.rank] if len(rngs) == loop.dist.world else rngs[0])
    return state["epoch"], state["batch"]
