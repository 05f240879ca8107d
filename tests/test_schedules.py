"""Schedules in the real loop on a tiny BERT: freezing and thawing checked by their effects."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field

import pytest
import torch

from freezetune import RunConfig, train
from freezetune.freezing import GradientWatcher, Progress
from freezetune.freezing.policies import linear_warmup_decay
from freezetune.loop import Loop
from freezetune.testing import assert_relatively_close, reordering_tolerance
from freezetune.training import prepare


def config(tiny_bert, tmp_path, freeze, epochs=3, **train_kw):
    return RunConfig.from_dict(
        {
            "model": {"name": tiny_bert},
            "data": {
                "task": "sst2",
                "max_train_samples": 64,
                "max_eval_samples": 16,
                "max_length": 24,
            },
            "train": {"epochs": epochs, "batch_size": 16, "progress": False, **train_kw},
            "optim": {"lr": 1e-3},
            "freeze": freeze,
            "out": str(tmp_path / "out"),
        }
    )


@pytest.fixture
def watch(monkeypatch):
    """Record every parameter, the modes and the optimizer state at each change of freezing."""
    changes: list[dict] = []
    original = Loop.refreeze

    def refreeze(self):
        before = self.state.frozen_units
        original(self)
        if self.state.frozen_units != before:
            self.plan.set_learning_rates(self.optimizer, self.state.step)  # idempotent, as the loop
            changes.append(
                {
                    "step": self.state.step,
                    "n": self.state.frozen_units,
                    "params": {k: v.detach().clone() for k, v in self.model.named_parameters()},
                    "training": {
                        u.name: [self.model.get_submodule(m).training for m in u.modules]
                        for u in self.units.units
                    },
                    "state": {
                        n
                        for g in self.optimizer.param_groups
                        for n, p in zip(g["names"], g["params"], strict=True)
                        if p in self.optimizer.state
                    },
                    "lrs": {g["unit"]: g["lr"] for g in self.optimizer.param_groups},
                    "loop": self,
                }
            )

    original_run = Loop.run

    def run(self, loader, *position):
        original_run(self, loader, *position)
        # the weights as training left them (the run then restores its best checkpoint)
        changes.append(
            {
                "end": {k: v.detach().clone() for k, v in self.model.named_parameters()},
                "grads": {k: v.grad for k, v in self.model.named_parameters()},
            }
        )

    monkeypatch.setattr(Loop, "refreeze", refreeze)
    monkeypatch.setattr(Loop, "run", run)
    return changes


def split(watch):
    """(changes of freezing, weights at the end of training, grads at the end)."""
    return watch[:-1], watch[-1]["end"], watch[-1]["grads"]


def unit_params(setup, upto):
    return [n for u in setup.units.units[:upto] for n in u.params]


def test_gradual_thaws_units_that_then_train_with_fresh_state(tiny_bert, tmp_path, watch):
    cfg = config(tiny_bert, tmp_path, "gradual:steps=2")
    setup = prepare(cfg)
    train(setup)
    watch, final, _ = split(watch)
    # 3 blocks: units [embeddings, block.0-2, head]; only the head trains at first
    assert [c["n"] for c in watch] == [4, 3, 2, 1, 0]
    first = watch[0]
    # block.2 (unit 3) was frozen at step 0 and thawed at step 2: untouched until then,
    # no optimizer state before, trained after
    thaw = next(c for c in watch if c["n"] == 3)
    assert thaw["step"] == 2
    block2 = setup.units.units[3].params
    assert all(torch.equal(first["params"][n], thaw["params"][n]) for n in block2)
    assert not any(n in thaw["state"] for n in block2)
    assert any(not torch.equal(thaw["params"][n], final[n]) for n in block2)
    assert thaw["training"]["block.2"] == [True] and thaw["training"]["block.1"] == [False]
    # its LR is what the default schedule says at that step (not a stale 0 or a no-op):
    # 12 steps, 10% warmup -> warmup of 1 step; at step 2 the factor is (12 - 2) / 11
    assert thaw["lrs"][3] == pytest.approx(1e-3 * linear_warmup_decay(2, 12, 0.1))


def test_progressive_freezes_bottom_up_and_frozen_units_stop_changing(tiny_bert, tmp_path, watch):
    cfg = config(tiny_bert, tmp_path, "progressive", epochs=4)
    setup = prepare(cfg)
    result = train(setup)
    watch, final, grads = split(watch)
    ns = [c["n"] for c in watch]
    assert ns == sorted(ns) and ns[-1] == setup.units.num_blocks  # top block never freezes
    for change in watch[1:]:
        for name in unit_params(setup, change["n"]):
            assert torch.equal(change["params"][name], final[name]), name
            assert grads[name] is None
        frozen_units = [u.name for u in setup.units.units[: change["n"]]]
        assert all(not any(change["training"][u]) for u in frozen_units)
    timeline = result.freeze_timeline
    assert [e["frozen_units"] for e in timeline] == ns
    events = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [e["frozen_units"] for e in events if e["event"] == "freeze"] == ns


def test_autofreeze_decides_from_gradients_and_freezes_monotonically(tiny_bert, tmp_path, watch):
    cfg = config(tiny_bert, tmp_path, "autofreeze:n=6", epochs=3)
    setup = prepare(cfg)
    result = train(setup)
    watch, final, _ = split(watch)
    decisions = result.policy_state["decisions"]
    assert len(decisions) == 5  # 12 steps / interval 2 -> 6 decision points, the first stores
    frozen = [d["blocks_frozen"] for d in decisions]
    assert frozen == sorted(frozen) and max(frozen) <= setup.units.num_blocks - 1
    for change in watch[1:]:
        for name in unit_params(setup, change["n"]):
            assert torch.equal(change["params"][name], final[name]), name


@dataclass
class Watcher:
    """A new adaptive policy, written in tests only: the loop must feed it like AutoFreeze."""

    num_blocks: int
    name: str = "watcher"
    seen: list = field(default_factory=list)

    def is_decision_step(self, step: int) -> bool:
        return step % 3 == 0

    def decide(self, norms: list[float], step: int = 0) -> int:
        self.seen.append((step, norms))
        return 0

    def frozen_units(self, progress: Progress) -> int:
        return 0

    def lr_factor(self, unit: int, progress: Progress) -> float | None:
        return None

    def state_dict(self) -> dict:
        return {"seen": len(self.seen)}

    def load_state_dict(self, state: dict) -> None:
        pass


def test_any_gradient_watcher_gets_block_norms_at_its_decision_steps(
    tiny_bert, tmp_path, monkeypatch
):
    module = importlib.import_module("freezetune.training")

    watcher = Watcher(num_blocks=3)
    assert isinstance(watcher, GradientWatcher)
    monkeypatch.setattr(module, "make_policy", lambda *args, **kwargs: watcher)
    result = train(config(tiny_bert, tmp_path, "full", epochs=3))  # 12 steps
    assert [step for step, _ in watcher.seen] == [3, 6, 9, 12]
    assert all(len(norms) == 3 and min(norms) > 0 for _, norms in watcher.seen)
    assert result.policy_state == {"seen": 4}


def test_two_phase_head_first_then_all(tiny_bert, tmp_path, watch):
    cfg = config(tiny_bert, tmp_path, "two-phase:steps=4", epochs=2)
    setup = prepare(cfg)
    before = {k: v.detach().clone() for k, v in setup.model.named_parameters()}
    train(setup)
    watch, final, _ = split(watch)
    assert [(c["step"], c["n"]) for c in watch] == [(0, 4), (4, 0)]
    head_phase_end = watch[1]["params"]
    body = unit_params(setup, 4)
    assert all(torch.equal(before[n], head_phase_end[n]) for n in body)
    assert not all(torch.equal(before[n], head_phase_end[n]) for n in setup.units.units[-1].params)
    assert any(not torch.equal(before[n], final[n]) for n in body)


def test_llrd_scales_each_unit_by_depth(tiny_bert, tmp_path, watch):
    cfg = config(tiny_bert, tmp_path, "full+llrd:0.5", epochs=1)
    train(cfg)
    lrs = watch[0]["loop"].optimizer.param_groups
    by_unit = {g["unit"]: g["lr"] for g in lrs}
    head = max(by_unit)
    for unit, lr in by_unit.items():
        assert lr == pytest.approx(by_unit[head] * 0.5 ** (head - unit))


def test_lora_trains_adapters_only_and_saves_a_plain_model(tiny_bert, tmp_path, watch):
    from transformers import AutoModelForSequenceClassification

    cfg = config(tiny_bert, tmp_path, "lora:r=4", epochs=1)
    setup = prepare(cfg)
    before = {k: v.detach().clone() for k, v in setup.model.named_parameters()}
    result = train(setup)
    _, after, _ = split(watch)
    head = set(setup.units.units[-1].params)  # pooler + classifier: the head always trains
    for name, value in before.items():
        changed = not torch.equal(value, after[name])
        if "lora_B" in name or name in head:
            assert changed, name
        elif "lora_A" not in name:
            assert not changed, name  # every base weight stays as pretrained
    assert result.trainable_params < result.total_params // 10
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    assert not any("lora" in n for n, _ in saved.named_parameters())
    merged = setup.loaded.model.eval()  # the adapters were folded into it before saving
    batch = setup.loaded.processor(["a fine film"], return_tensors="pt")
    with torch.no_grad():
        got, expected = saved(**batch).logits, merged(**batch).logits
    # the same weights, so the same sums, at most reordered (testing.reordering_tolerance): 8 in
    # sequence a block (Q, K, V, scores, weighted sum, output, up, down) and 2 for the head, each
    # of at most 37 terms (the MLP's width): 1.2e-4 of the logits' norm
    assert_relatively_close(got, expected, reordering_tolerance(37, 8 * 3 + 2), "logits")
