"""A few end-to-end checks on the real packaged all-MiniLM-L6-v2 and small slices of GLUE."""

from __future__ import annotations

import pytest

from freezetune import RunConfig, train
from freezetune.cli import main

pytestmark = pytest.mark.slow


def test_inspect_minilm(capsys):
    assert main(["inspect", "--model", "minilm-l6", "--freeze", "bottom:3"]) == 0
    out = capsys.readouterr().out
    assert "6 blocks" in out and "pooling mean" in out
    assert out.strip().endswith("trainable%: 23.5936")
    assert "trainable params: 5,324,162 || all params: 22,566,146" in out


def test_minilm_keeps_sdpa_attention():
    from freezetune.models import load_model

    model = load_model("minilm-l6", num_labels=2).model
    assert model.encoder.config._attn_implementation == "sdpa"


def test_head_only_on_mean_pooled_minilm_learns_sst2(tmp_path):
    # the body is frozen and cached, so epochs are cheap and only the 770-parameter head
    # learns: it must beat chance (0.51) clearly
    cfg = RunConfig.from_dict(
        {
            "data": {
                "task": "sst2",
                "max_train_samples": 512,
                "max_eval_samples": 256,
                "max_length": 64,
            },
            "train": {"epochs": 10, "batch_size": 32, "bf16": True, "progress": False},
            "optim": {"lr": 5e-3},
            "freeze": "head",
            "out": str(tmp_path / "out"),
        }
    )
    result = train(cfg).to_dict()
    assert result["trainable_params"] == 770
    assert result["best"]["accuracy"] > 0.7


def test_mrpc_pairs_report_accuracy_and_f1(tmp_path):
    cfg = RunConfig.from_dict(
        {
            "data": {
                "task": "mrpc",
                "max_train_samples": 64,
                "max_eval_samples": 64,
                "max_length": 64,
            },
            "train": {"epochs": 1, "batch_size": 16, "bf16": True, "progress": False},
            "freeze": "bottom:5",
            "out": str(tmp_path / "out"),
        }
    )
    result = train(cfg).to_dict()
    assert result["main_metric"] == "f1" and {"accuracy", "f1"} <= set(result["best"])
