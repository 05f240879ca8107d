"""Shared fixtures: a tiny random BERT saved like a hub checkpoint, and the shared GLUE data."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from freezetune.testing import TINY_RUN_ARGS, save_tiny_model

__all__ = ["TINY_RUN_ARGS", "save_tiny_model", "wait_for_step"]

GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
os.environ.setdefault("FREEZETUNE_GLUE_DIR", str(GLUE_DIR))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def wait_for_step(out: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until ``proc`` (still running) has written the checkpoint of ``step`` or later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(int(p.name[5:]) >= step for p in (out / "checkpoints").glob("step-*")):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint for step {step} in time")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def glue_dir() -> str:
    return str(GLUE_DIR)
