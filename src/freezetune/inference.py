"""What a saved model costs to use: dev-set throughput, single-example latency, size.

:func:`measure_inference` loads the model a run saved (its Hugging Face folder, whatever its
kind: freezetune's classifier, a native ``*ForSequenceClassification``, a merged LoRA, a
distilled student) and times it in this process: 1) warm up, 2) one pass over the dev features
at the eval batch size (examples/s), 3) the first ``latency_samples`` features one at a time
(median and p90 latency). Everything runs in ``eval()`` under ``torch.inference_mode()`` (and
bf16 autocast when asked), with the thread count recorded. Batches are padded before the clock
starts, so the numbers are the model's forward passes alone.

The numbers compare rows of one study measured alike (same machine, threads, batch size); they
are not a claim about any other machine.

>>> result = measure_inference(out, features, collate, batch_size=64, bf16=True)  # doctest: +SKIP
>>> sorted(result)[:3]  # doctest: +SKIP
['batch_size', 'bf16', 'device']
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from freezetune.modality import model_modality

__all__ = [
    "WEIGHT_SUFFIXES",
    "count_model_params",
    "load_saved",
    "measure_inference",
    "weight_bytes",
]

#: the files that hold a saved model's weights (sharded or not)
WEIGHT_SUFFIXES = (".safetensors", ".bin")

Batch = dict[str, torch.Tensor]


def weight_bytes(folder: str | Path) -> int:
    """Bytes of the weight files (``*.safetensors``, ``*.bin``) directly in ``folder``.

    Checkpoints and caches live in subfolders and are not counted.
    """
    return sum(
        p.stat().st_size
        for p in Path(folder).iterdir()
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
    )


def count_model_params(model: nn.Module) -> int:
    """Parameters of ``model``, each shared (tied) tensor once."""
    return sum(p.numel() for p in model.parameters())


def load_saved(folder: str | Path, device: torch.device) -> nn.Module:
    """The model saved in ``folder``, in fp32 and ``eval()`` on ``device``.

    The modality that owns its config (``modality.model_modality``) loads it.
    """
    config = SimpleNamespace(**json.loads(Path(folder, "config.json").read_text()))
    model = model_modality(config).load_saved(str(folder))
    return model.to(device).eval()


def _inputs(batch: Batch, device: torch.device) -> Batch:
    """What the model reads: the padded batch without the labels and cache indices."""
    return {k: v.to(device) for k, v in batch.items() if k not in ("labels", "index")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(
    model: nn.Module, batches: Sequence[Batch], device: torch.device, bf16: bool
) -> list[float]:
    """Seconds of each forward pass over ``batches``, in order (the device idle in between)."""
    seconds = []
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        for batch in batches:
            _sync(device)
            start = time.perf_counter()
            model(**batch)
            _sync(device)
            seconds.append(time.perf_counter() - start)
    return seconds


def _check(features: Sequence[Any], batch_size: int, latency_samples: int, warmup: int) -> None:
    if not features:
        raise ValueError("measure_inference needs at least one feature to run the model on")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
    if latency_samples < 1:
        raise ValueError(f"latency_samples must be at least 1 (got {latency_samples})")
    if warmup < 0:
        raise ValueError(f"warmup must be 0 or more (got {warmup})")


def measure_inference(
    folder: Path,
    features: list[dict],
    collate: Callable,
    *,
    batch_size: int,
    bf16: bool,
    latency_samples: int = 100,
    warmup: int = 3,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Time the model saved in ``folder`` on ``features`` (``batching.tokenize``'s output).

    ``collate`` pads a list of features into a batch (``batching.Collator.for_task``). The
    throughput pass runs every feature once, in order, in batches of ``batch_size``; latency
    runs the first ``latency_samples`` features (all of them if fewer) one at a time, after
    ``warmup`` passes at both shapes. ``device`` defaults to the GPU when there is one, else
    the CPU (where training ran). The result is plain JSON:

    - ``examples_per_s``: features / seconds of the throughput pass's forward passes;
    - ``latency_ms_p50``, ``latency_ms_p90``: median and 90th percentile (linear
      interpolation) of the single-example forward passes, milliseconds;
    - ``params``: the saved model's parameters; ``disk_bytes``/``disk_mb``: its weight files;
    - ``batch_size``, ``examples``, ``latency_samples``, ``warmup``, ``threads`` (torch's
      intra-op threads during the measurement), ``bf16``, ``device``, ``seconds`` (all of it,
      loading included).
    """
    _check(features, batch_size, latency_samples, warmup)
    began = time.perf_counter()
    where = torch.device(device) if device is not None else _default_device()
    model = load_saved(folder, where)
    batches = [
        _inputs(collate(features[i : i + batch_size]), where)
        for i in range(0, len(features), batch_size)
    ]
    singles = [_inputs(collate([f]), where) for f in features[:latency_samples]]
    _timed(model, [batches[0]] * warmup + [singles[0]] * warmup, where, bf16)
    throughput = sum(_timed(model, batches, where, bf16))
    latency = np.array(_timed(model, singles, where, bf16)) * 1000.0
    return {
        "examples_per_s": round(len(features) / max(throughput, 1e-12), 2),
        "latency_ms_p50": round(float(statistics.median(latency)), 4),
        "latency_ms_p90": round(float(np.percentile(latency, 90)), 4),
        "batch_size": batch_size,
        "examples": len(features),
        "latency_samples": len(singles),
        "warmup": warmup,
        "params": count_model_params(model),
        "disk_bytes": weight_bytes(folder),
        "disk_mb": round(weight_bytes(folder) / 2**20, 3),
        "threads": torch.get_num_threads(),
        "bf16": bf16,
        "device": str(where),
        "seconds": round(time.perf_counter() - began, 3),
    }


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
