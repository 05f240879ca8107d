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
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n 2: a core per worker, and per process
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # it starts (a CLI run, a study's runs)
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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


# ---------------------------------------------------------------- images (test_vision.py)


def write_fashion_mnist(folder: Path, n_train: int = 64, n_test: int = 32) -> Path:
    """Fashion-MNIST look-alike IDX files: 28x28 noise with a bright square whose corner is the
    class (labels 0..3), so a tiny CNN learns it in a few steps."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 4
        pics = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels.tolist()):
            r, c = divmod(label, 2)
            pics[i, r * 14 + 2 : r * 14 + 12, c * 14 + 2 : c * 14 + 12] = 250
        for kind, array, magic in (("images-idx3", pics, 2051), ("labels-idx1", labels, 2049)):
            dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            data = magic.to_bytes(4, "big") + dims + array.tobytes()
            (folder / f"{prefix}-{kind}-ubyte").write_bytes(data)
    return folder


@pytest.fixture(scope="session")
def tiny_fashion_mnist(tmp_path_factory) -> str:
    return str(write_fashion_mnist(tmp_path_factory.mktemp("fashion-mnist")))


@pytest.fixture(scope="session")
def tiny_image_folders(tmp_path_factory) -> tuple[str, str]:
    """(train, validation) class-per-folder PNGs, 16x16 RGB: 'dark' and 'light', 8 + 4 each."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("image-folders")
    rng = np.random.default_rng(1)
    for split, n in (("train", 8), ("val", 4)):
        for name, base in (("dark", 20), ("light", 200)):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = (base + rng.integers(0, 40, (16, 16, 3))).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return str(root / "train"), str(root / "val")


@pytest.fixture(scope="session")
def tiny_effnet(tmp_path_factory) -> str:
    """A tiny random EfficientNet-Lite (8 blocks, widths 8-16) with its preprocessor config."""
    import torch

    from freezetune.vision.effnet import EfficientNetLiteModel, tiny_config
    from freezetune.vision.models import ImageProcessor

    path = tmp_path_factory.mktemp("tiny-effnet")
    torch.manual_seed(0)
    EfficientNetLiteModel(
        tiny_config(drop_connect_rate=0.0, batch_norm_momentum=0.1)
    ).save_pretrained(path)
    ImageProcessor(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).save_pretrained(path)
    return str(path)


def write_tiny_vit(path: Path, layers: int = 2) -> str:
    """A tiny random ViT (32 px, patches of 8, hidden 16, ``layers`` layers) saved in ``path``."""
    import torch
    from transformers import AutoModel, ViTConfig

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        num_channels=3,
    )
    AutoModel.from_config(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> str:
    """A tiny random ViT with 2 layers."""
    return write_tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


@pytest.fixture(scope="session")
def nan_bert(tiny_bert, tmp_path_factory) -> str:
    """The tiny BERT with one NaN in its last block: it loads (so a study's preflight passes),
    and its first training loss is NaN (so the run fails on its own, in training)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    path = tmp_path_factory.mktemp("nan-bert")
    for item in Path(tiny_bert).iterdir():
        shutil.copy(item, path / item.name)
    weights = load_file(path / "model.safetensors")
    name = next(k for k in sorted(weights) if "layer.2." in k and k.endswith("dense.weight"))
    weights[name] = weights[name].clone()
    weights[name][0, 0] = torch.nan
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    return str(path)
