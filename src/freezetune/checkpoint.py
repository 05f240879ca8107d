"""Crash-safe checkpoints and exact resume.

A checkpoint is a folder ``<out>/checkpoints/step-NNNNNNNNN`` holding the weights
(safetensors), the optimizer, RNG, data position, freezing-policy and loop state
(``state.pt``, read back with ``weights_only=True``), the best weights so far, a gradient
watcher's sums (AutoFreeze), the activation caches, an objective's tensors (a distillation's
teacher logits), and a ``manifest.json`` with every file's
size and SHA-256, written last. It is built in a temporary folder, fsynced and renamed into
place, so a crash leaves the previous checkpoint intact; a truncated or corrupt one is skipped
on resume.

What it holds is :class:`Resumable`, and nothing else: the loop's own counters are one
:class:`~freezetune.state.LoopState`. ``state.pt`` carries ``format`` (:data:`FORMAT`);
older formats (2, and 1 from before the number existed) are converted on reading, and any other
layout is refused with one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from freezetune.caching import Caches
from freezetune.distributed import Dist
from freezetune.errors import UserError
from freezetune.freezing.gradients import BlockGradients
from freezetune.freezing.policies import Policy
from freezetune.objectives import Objective
from freezetune.records import current_names
from freezetune.state import LoopState

__all__ = [
    "FORMAT",
    "Position",
    "Resumable",
    "find_latest",
    "restore",
    "rng_state",
    "save",
    "step_folder",
]

PREFIX = "step-"
#: layout of ``state.pt``: 3 names the frozen-unit count of the timeline's records
#: ``frozen_units`` (``units_frozen`` before); 2 added this number and moved ``step`` and that
#: count into ``loop`` (a LoopState); 1 is what came before. 1 and 2 are still read.
FORMAT = 3
#: what ``state.pt`` must hold besides ``format``
STATE_KEYS = (
    "epoch",
    "batch",
    "loop",
    "policy",
    "optimizer",
    "rngs",
    "metrics_bytes",
    "world",
    "steps_per_epoch",
    "caches",
)


class Position(NamedTuple):
    """Where training continues: the next batch index ``batch`` of epoch ``epoch``."""

    epoch: int
    batch: int


@dataclass(frozen=True)
class Resumable:
    """Everything of a run that a checkpoint saves and restores: this is the format's contents.

    ``state``, the optimizer, the policy, the objective (a distillation's teacher logits), the
    caches and ``grads`` are restored in place;
    ``metrics_path`` is cut back to what was logged when the checkpoint was written.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    policy: Policy
    objective: Objective
    state: LoopState
    caches: Caches
    grads: BlockGradients | None
    metrics_path: Path
    steps_per_epoch: int


def _tensors(named: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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


def _write_files(
    parts: Resumable, folder: Path, position: Position, rngs: list | None, dist: Dist
) -> None:
    params = dict(parts.model.named_parameters())
    # buffers too: BatchNorm's running statistics change in every trainable unit
    model_state = {**params, **dict(parts.model.named_buffers())}
    save_file(_tensors(model_state), folder / "model.safetensors")
    save_file(_tensors(parts.state.best_weights), folder / "best.safetensors")
    if parts.grads is not None:
        names = {id(p): n for n, p in params.items()}
        save_file(
            _tensors({names[k]: v for k, v in parts.grads.sums.items()}),
            folder / "grads.safetensors",
        )
    objective = parts.objective.state_dict()
    if objective:
        save_file(_tensors(objective), folder / "objective.safetensors")
    caches = {}
    for name, cache in parts.caches.items():
        if not dist.enabled:  # under DDP each rank's is its own
            store = cache.store
            save_file(
                {"data": store.data.contiguous(), "filled": store.filled.to(torch.uint8)},
                folder / f"cache-{name}.safetensors",
            )
            caches[name] = store.level
    state = {
        "format": FORMAT,
        "epoch": position.epoch,
        "batch": position.batch,
        "loop": parts.state.state_dict(),
        "policy": parts.policy.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "rngs": rngs or [rng_state()],  # one per rank: each resumes its own stream
        "metrics_bytes": parts.metrics_path.stat().st_size,
        "world": dist.world,
        "steps_per_epoch": parts.steps_per_epoch,
        "caches": caches,
    }
    torch.save(state, folder / "state.pt")


def step_folder(out: Path, step: int) -> Path:
    """Where the checkpoint of optimizer step ``step`` of the run in ``out`` goes."""
    return out / "checkpoints" / f"{PREFIX}{step:09d}"


def save(
    parts: Resumable,
    out: Path,
    position: Position,
    *,
    keep: int,
    dist: Dist,
    rngs: list | None = None,
) -> Path:
    """Write a checkpoint of the run in ``out`` atomically; keep the newest ``keep``.

    Returns its folder. ``rngs`` holds each rank's RNG state (``rng_state()``); alone, this
    process's is taken.
    """
    final = step_folder(out, parts.state.step)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        _write_files(parts, tmp, position, rngs, dist)
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


def _load_state(folder: Path) -> Any:
    try:  # weights_only: a checkpoint can never run code
        return torch.load(folder / "state.pt", weights_only=True)
    except Exception as err:
        raise UserError(
            f"checkpoint {folder} cannot be loaded safely ({type(err).__name__}); delete it "
            "to resume from an older one"
        ) from None


def _from_format_1(state: dict[str, Any], steps_per_epoch: int) -> dict[str, Any]:
    """Format 1 (no ``format`` key) kept ``step`` and ``frozen_prefix`` beside ``loop``."""
    loop = {**state["loop"], "step": state["step"], "frozen_units": state["frozen_prefix"]}
    return {
        **state,
        "format": 2,
        "loop": loop,
        "rngs": state.get("rngs") or [state["rng"]],  # "rng": before per-rank states
        "world": state.get("world", 1),
        "steps_per_epoch": state.get("steps_per_epoch", steps_per_epoch),
    }


def _from_format_2(state: dict[str, Any]) -> dict[str, Any]:
    """Format 2 named the count in the timeline's records ``units_frozen``."""
    loop = {**state["loop"], "timeline": [current_names(e) for e in state["loop"]["timeline"]]}
    return {**state, "format": FORMAT, "loop": loop}


def _unreadable(folder: Path, why: str) -> UserError:
    return UserError(
        f"checkpoint {folder} has a layout this freezetune cannot read ({why}; it reads formats "
        f"1 to {FORMAT}); resume it with the freezetune that wrote it, or start the run again"
    )


def _read_state(folder: Path, steps_per_epoch: int) -> dict[str, Any]:
    """``state.pt`` in the current format; an unknown layout raises one clear UserError."""
    state = _load_state(folder)
    if not isinstance(state, dict):
        raise _unreadable(folder, f"state.pt holds a {type(state).__name__}")
    version = state.get("format", 1)
    if version not in (1, 2, FORMAT):
        raise _unreadable(folder, f"format {version!r}")
    try:
        if version == 1:
            state = _from_format_1(state, steps_per_epoch)
        if version in (1, 2):
            state = _from_format_2(state)
        missing = [k for k in STATE_KEYS if k not in state]
        missing += [k for k in LoopState().state_dict() if k not in state.get("loop", {})]
    except (KeyError, TypeError, AttributeError) as err:
        missing = [str(err)]
    if missing:
        raise _unreadable(folder, f"format {version}, missing {', '.join(missing)}")
    return state


def restore(parts: Resumable, folder: Path, dist: Dist) -> Position:
    """Load the checkpoint in ``folder`` into ``parts``; return where training continues."""
    state = _read_state(folder, parts.steps_per_epoch)
    params = dict(parts.model.named_parameters())
    tensors = {**params, **dict(parts.model.named_buffers())}
    with torch.no_grad():
        for name, value in load_file(folder / "model.safetensors").items():
            tensors[name].copy_(value)
    parts.state.best_weights = load_file(folder / "best.safetensors")
    if parts.grads is not None and (folder / "grads.safetensors").exists():
        sums = load_file(folder / "grads.safetensors")
        parts.grads.sums = {id(params[n]): v for n, v in sums.items()}
    if (folder / "objective.safetensors").exists():
        parts.objective.load_state_dict(load_file(folder / "objective.safetensors"))
    for name, level in state["caches"].items():
        cache = parts.caches.get(name)
        if cache is not None:
            tensors = load_file(folder / f"cache-{name}.safetensors")
            cache.store.load(tensors["data"], tensors["filled"].bool(), level)
    parts.policy.load_state_dict(state["policy"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.state.load_state_dict(state["loop"])
    if dist.is_main:
        with open(parts.metrics_path, "r+b") as f:  # drop what the killed run logged after it
            f.truncate(state["metrics_bytes"])
    written, spe = state["world"], state["steps_per_epoch"]
    if dist.is_main and (written != dist.world or spe != parts.steps_per_epoch):
        print(
            f"note: {folder.name} was written by {written} process(es) and resumes on "
            f"{dist.world}; steps per epoch {spe} -> {parts.steps_per_epoch}; with prefix "
            "caching each process owns a shard, so the rest of this epoch's order differs",
            file=sys.stderr,
        )
    rngs = state["rngs"]
    # on another number of processes every rank continues rank 0's stream
    _set_rng_state(rngs[dist.rank] if len(rngs) == dist.world else rngs[0])
    return Position(state["epoch"], state["batch"])
