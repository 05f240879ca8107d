"""Training with frozen parts, checked by its effects on a tiny random BERT."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from freezetune import RunConfig, train
from freezetune.optim import build_optimizer
from freezetune.records import RunResult
from freezetune.training import prepare


def config(tiny_bert, tmp_path, freeze="full", **train_kw):
    return RunConfig.from_dict(
        {
            "model": {"name": tiny_bert},
            "data": {
                "task": "sst2",
                "max_train_samples": 96,
                "max_eval_samples": 32,
                "max_length": 32,
            },
            "train": {"epochs": 2, "batch_size": 16, "progress": False, **train_kw},
            "optim": {"lr": 1e-3},
            "freeze": freeze,
            "out": str(tmp_path / "out"),
        }
    )


def run_with_weights(cfg):
    setup = prepare(cfg)
    before = {n: p.detach().clone() for n, p in setup.loaded.model.named_parameters()}
    result = train(setup)
    after = dict(setup.loaded.model.named_parameters())
    return setup, before, after, result


@pytest.mark.parametrize("freeze", ["bottom:2", "head", "bitfit", "embeddings+pattern:attention"])
def test_frozen_weights_are_bit_identical_and_the_rest_trains(tiny_bert, tmp_path, freeze):
    setup, before, after, _ = run_with_weights(config(tiny_bert, tmp_path, freeze))
    assert setup.frozen, "spec froze nothing"
    for name, value in before.items():
        changed = not torch.equal(value, after[name].detach())
        if name in setup.frozen:
            assert not changed, f"{name} is frozen but changed"
            assert after[name].grad is None and not after[name].requires_grad
        elif name.startswith("classifier"):
            assert changed, f"{name} trains but did not change"
    trained = [n for n in before if n not in setup.frozen]
    assert any(not torch.equal(before[n], after[n].detach()) for n in trained)


def test_frozen_parameters_never_reach_the_optimizer(tiny_bert, tmp_path):
    setup = prepare(config(tiny_bert, tmp_path, "bottom:2"))
    model = setup.loaded.model
    from freezetune.freezing import apply_frozen

    apply_frozen(model, setup.frozen)
    optimizer = build_optimizer(model, setup.units, setup.spec, setup.config.optim)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        assert (id(param) in in_optimizer) == (name not in setup.frozen)
    no_decay = [g for g in optimizer.param_groups if g["weight_decay"] == 0.0]
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(
        names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)]
        for g in no_decay
        for p in g["params"]
    )


def test_adamw_skips_params_without_grad_even_with_weight_decay():
    # schedules keep frozen params in the optimizer: grad=None must mean "no update at all"
    frozen, trained = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([frozen, trained], lr=0.1, weight_decay=0.5)
    trained.grad = torch.ones(3)
    opt.step()
    assert torch.equal(frozen.detach(), torch.ones(3)) and frozen not in opt.state
    assert not torch.equal(trained.detach(), torch.ones(3))


def test_same_seed_same_metrics_and_weights(tiny_bert, tmp_path):
    a = train(config(tiny_bert, tmp_path / "a", "bottom:1"))
    b = train(config(tiny_bert, tmp_path / "b", "bottom:1"))
    untimed = lambda r: {k: v for k, v in r.final.items() if not k.endswith("time_s")}  # noqa: E731
    assert untimed(a) == untimed(b)
    assert a.best_score == b.best_score
    wa = load_file(str(tmp_path / "a" / "out" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "out" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_outputs_result_metrics_and_a_loadable_model(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification, pipeline

    cfg = config(tiny_bert, tmp_path, "bottom:1", eval_every=3)
    result = train(cfg)
    out = tmp_path / "out"
    saved = json.loads((out / "result.json").read_text())
    for key in (
        "final",
        "best",
        "wall_time_s",
        "train_examples_per_s",
        "peak_rss_mb",
        "trainable_params",
        "total_params",
        "config",
        "git",
        "versions",
        "machine",
    ):
        assert key in saved, key
    assert saved == json.loads(json.dumps(result.to_dict()))  # result.json is the RunResult
    assert RunResult.from_dict(saved).to_dict() == saved and result.out == out
    assert saved["best"] == result.best and saved["config"]["freeze"] == "bottom:1"
    assert 0 < saved["trainable_params"] < saved["total_params"]
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "start"
    assert events[1]["event"] == "freeze" and events[1]["frozen_units"] == 2
    assert events[1]["trainable"].startswith("trainable params:")
    evals = [e for e in events if e["event"] == "eval"]
    assert len(evals) >= 3 and evals[-1]["epoch"] == 2  # every 3 steps + each epoch end
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert model.config.pooling == "pooler"
    predictions = pipeline("text-classification", model=str(out))(["a fine film", "dull"])
    assert {p["label"] for p in predictions} <= {"0", "1"}


def test_gradient_accumulation_and_bf16_run(tiny_bert, tmp_path):
    result = train(config(tiny_bert, tmp_path, "bottom:1", grad_accum=2, bf16=True))
    assert result.steps == 2 * 3  # 96 / 16 = 6 micro-batches -> 3 steps per epoch


def test_regression_task_trains_with_mse(tiny_bert, tmp_path):
    cfg = RunConfig.from_dict(
        {
            "model": {"name": tiny_bert, "pooling": "mean"},
            "data": {"task": "stsb", "max_train_samples": 48, "max_eval_samples": 24},
            "train": {"epochs": 1, "batch_size": 16, "progress": False},
            "freeze": "bottom:1",
            "out": str(tmp_path / "out"),
        }
    )
    result = train(cfg)
    assert result.main_metric == "pearson" and result.best and "spearman" in result.best
