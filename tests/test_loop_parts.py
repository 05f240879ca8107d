"""The loop's pieces on their own: Freezer, Recorder, BestTracker, Stopwatch, Checkpointer,
the weighted backward and the gradient watch (the loop and the Trainer callback wire them)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from freezetune.backward import clip_and_step, nonfinite, weighted_backward
from freezetune.best import BestTracker, restore, snapshot
from freezetune.checkpointer import Checkpointer
from freezetune.distributed import Dist
from freezetune.errors import UserError
from freezetune.freezer import FreezeLog, Freezer
from freezetune.freezing import parse_freeze
from freezetune.freezing.policies import make_policy
from freezetune.plan import Plan
from freezetune.recorder import Recorder, eval_record
from freezetune.state import LoopState
from freezetune.stopwatch import Stopwatch
from freezetune.units import split_units, trainable_line
from freezetune.watch import GradientWatch, watch_gradients


@pytest.fixture
def bert():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=20,
        hidden_size=8,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=8,
    )
    model = BertForSequenceClassification(config)
    return model, split_units(model)


# ---------------------------------------------------------------- Freezer


def test_freezer_applies_records_and_prints_each_change_once(bert, capsys):
    model, units = bert
    log = FreezeLog()
    freezer = Freezer(model, units, parse_freeze("gradual"), log, main=True)
    model.train()
    first = freezer.update(3, step=0)
    assert freezer.update(3, step=1) is None  # no change: nothing applied, recorded or said
    second = freezer.update(1, step=2)
    assert [r["frozen_units"] for r in log.timeline] == [3, 1] and log.frozen_units == 1
    assert first is not None and second is not None
    assert first == {
        "event": "freeze",
        "step": 0,
        "frozen_units": 3,
        "trainable_params": first["trainable_params"],
        "trainable": first["trainable"],
    }
    assert log.trainable == trainable_line(model) == second["trainable"]
    frozen = {n for u in units.units[:1] for n in u.params}
    for name, p in model.named_parameters():
        assert p.requires_grad == (name not in frozen), name
    embeddings = model.get_submodule(units.units[0].modules[0])
    block = model.get_submodule(units.units[1].modules[0])
    assert not embeddings.training and block.training
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"step 0: 3 units frozen; {first['trainable']}",
        f"step 2: 1 units frozen; {second['trainable']}",
    ]


def test_freezer_is_quiet_off_the_main_process_and_apply_records_nothing(bert, capsys):
    model, units = bert
    state = LoopState()  # the loop's own records double as the freezer's
    freezer = Freezer(model, units, parse_freeze("gradual"), state, main=False)
    assert freezer.update(2, step=0) is not None and state.timeline[0]["frozen_units"] == 2
    freezer.apply(4)  # a restored run: applied, not recorded
    assert len(state.timeline) == 1 and capsys.readouterr().err == ""
    model.train()
    freezer.set_modes()  # back to what state says: 2 units in eval()
    assert not model.get_submodule(units.units[1].modules[0]).training
    assert model.get_submodule(units.units[2].modules[0]).training


# ---------------------------------------------------------------- Recorder


class Watcher:
    def __init__(self):
        self.records, self.steps, self.closed = [], [], False

    def on_step(self, step, loss, lrs):
        self.steps.append((step, loss, lrs))

    def on_record(self, record):
        self.records.append(record)

    def close(self):
        self.closed = True


def test_recorder_writes_the_file_and_tells_observers_the_live_extras(tmp_path):
    path, watcher = tmp_path / "metrics.jsonl", Watcher()
    recorder = Recorder(path, [watcher])
    recorder.log({"event": "eval", "step": 1}, live={"cache_hit_rate": 0.5})
    recorder.announce({"event": "start"})
    recorder.step(1, 0.25, {"head": 1e-3})
    recorder.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"event": "eval", "step": 1}
    ]
    assert watcher.records == [
        {"event": "eval", "step": 1, "cache_hit_rate": 0.5},
        {"event": "start"},
    ]
    assert watcher.steps == [(1, 0.25, {"head": 1e-3})] and watcher.closed


def test_recorder_off_the_main_process_writes_and_tells_nothing(tmp_path):
    path, watcher = tmp_path / "metrics.jsonl", Watcher()
    recorder = Recorder(path, [watcher], main=False)
    recorder.log({"event": "eval"})
    recorder.step(1, 0.0, {})
    assert not path.exists() and not watcher.records and not watcher.steps


def test_eval_record_rounds_the_clocks_and_keeps_the_metrics_in_place():
    record = eval_record(7, 1 / 3, {"accuracy": 0.5, "f1": 0.25}, 1.23456, 0.5)
    assert list(record) == [
        "event",
        "step",
        "epoch",
        "accuracy",
        "f1",
        "train_time_s",
        "wall_time_s",
    ]
    assert record["epoch"] == 0.3333 and record["train_time_s"] == 1.235
    assert record["wall_time_s"] == 1.735


# ---------------------------------------------------------------- best


def test_best_tracker_keeps_the_strictly_better_and_copies_weights_only_then():
    kept = LoopState()
    tracker, calls = BestTracker("accuracy", kept), []

    def weights():
        calls.append(1)
        return {"w": torch.tensor([float(len(calls))])}

    offers = [{"accuracy": a} for a in (0.5, 0.5, 0.7, float("nan"), 0.6)]
    assert [tracker.offer(r, weights) for r in offers] == [True, False, True, False, False]
    assert kept.best is offers[2] and len(calls) == 2 and kept.best_weights["w"].item() == 2.0


def test_snapshot_copies_what_may_train_and_every_buffer_and_restore_puts_it_back():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    copy = snapshot(model, ["1.weight"])
    assert set(copy) == {"1.weight", "1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert copy["1.weight"].data_ptr() != model[1].weight.data_ptr()  # a copy, not a view
    with torch.no_grad():
        model[1].weight.add_(1.0)
        model[1].running_mean.add_(1.0)
    restore(model, copy)
    assert torch.equal(model[1].weight, copy["1.weight"])
    assert torch.equal(model[1].running_mean, torch.zeros(2))


# ---------------------------------------------------------------- Stopwatch


def test_stopwatch_counts_laps_and_leaves_pauses_out():
    now = [0.0]
    clock = Stopwatch(lambda: now[0])
    assert clock.stop() == 0.0 and not clock.running
    with clock.pause():  # not running: nothing to leave out
        now[0] = 1.0
    clock.start()
    now[0] = 3.0
    with clock.pause():
        now[0] = 10.0
    now[0] = 11.0
    assert clock.running and clock.stop() == 3.0 and not clock.running
    clock.start()  # a new lap starts from zero
    now[0] = 12.0
    assert clock.stop() == 1.0


def test_stopwatch_pause_restarts_the_clock_when_the_block_raises():
    now = [0.0]
    clock = Stopwatch(lambda: now[0])
    clock.start()
    with pytest.raises(RuntimeError), clock.pause():
        now[0] = 5.0
        raise RuntimeError
    now[0] = 6.0
    assert clock.stop() == 1.0


# ---------------------------------------------------------------- Checkpointer


def test_checkpointer_is_due_on_schedule_at_epoch_ends_and_on_a_signal(tmp_path):
    never = Checkpointer(tmp_path, every=0, keep=1, dist=Dist())
    assert not never.due(10) and not never.due(10, epoch_end=True)
    never.stop_signal = 15  # SIGTERM: save now, whatever the schedule
    assert never.due(11)
    every = Checkpointer(tmp_path, every=5, keep=1, dist=Dist())
    assert [every.due(s) for s in (4, 5, 6, 10)] == [False, True, False, True]
    assert every.due(6, epoch_end=True)


# ---------------------------------------------------------------- backward and step


def test_weighted_backward_runs_backward_and_counts_the_examples():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    loss, examples, finite = weighted_backward(w, lambda: (w * w).sum(), 3, True, Dist())
    assert finite and examples == 3 and loss.item() == 5.0
    assert w.grad is not None and w.grad.tolist() == [2.0, 4.0]


def test_a_nonfinite_loss_runs_no_backward_and_stops_unless_skipping():
    w = torch.ones(2, requires_grad=True)
    loss, _, finite = weighted_backward(w, lambda: (w * float("inf")).sum(), 2, True, Dist())
    assert not finite and w.grad is None
    assert nonfinite(loss, 4, skip=True) == {"event": "skipped", "step": 4}
    with pytest.raises(UserError, match="loss became inf at step 4"):
        nonfinite(loss, 4, skip=False)


def test_clip_and_step_clips_steps_and_drops_the_gradients():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model.weight.grad = torch.tensor([[3.0, 4.0]])  # norm 5
    clip_and_step(model, optimizer, max_norm=1.0)
    assert torch.allclose(model.weight, torch.tensor([[-0.6, -0.8]]))
    assert model.weight.grad is None


# ---------------------------------------------------------------- Plan and GradientWatch


def test_plan_gives_the_policy_its_progress_and_each_unit_its_lr_factor(bert):
    _, units = bert
    spec = parse_freeze("gradual:steps=2+llrd:0.5")
    policy = make_policy(spec, units.num_blocks, 12, 6, 0.0)
    plan = Plan(units, spec, policy, 12, 6, 0.0)
    assert plan.progress(7).epoch == 1 and plan.progress(7).step == 7
    head, top = len(units.units) - 1, units.num_blocks  # the head and the top block
    assert plan.lr_factor(top, 11) == pytest.approx(0.5 * plan.lr_factor(head, 11))


def test_only_a_gradient_watching_policy_gets_a_watch(bert):
    model, units = bert
    static = make_policy(parse_freeze("bottom:1"), units.num_blocks, 10, 5, 0.0)
    assert watch_gradients(static, model, units, Dist()) is None
    auto = make_policy(parse_freeze("autofreeze:n=2"), units.num_blocks, 10, 5, 0.0)
    watch = watch_gradients(auto, model, units, Dist())
    assert isinstance(watch, GradientWatch)
    decided = []
    watch.watcher = SimpleNamespace(  # type: ignore[assignment]
        is_decision_step=lambda step: step % 2 == 0,
        decide=lambda norms, step: decided.append(step),
    )
    model(input_ids=torch.randint(20, (2, 5)), labels=torch.tensor([0, 1])).loss.backward()
    watch.accumulate()
    watch.decide(1)
    watch.decide(2)
    assert decided == [2]
