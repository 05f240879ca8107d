"""Policies that freeze a set of units, not a leading run (``freezing.base.UnitSelector``).

A toy policy, registered here as a plugin would register it, freezes block.0 and block.1 in
turns and never trains block.2: the freezer applies each set, names it in the timeline and
the log line, drops the optimizer state the policy resets, and a resumed run ends
bit-identical to an uninterrupted one, in freezetune's loop and under Trainer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification

from freezetune.errors import UserError
from freezetune.freezer import FreezeLog, Freezer
from freezetune.freezing import UnitSelector, frozen_now, frozen_parameters, parse_freeze
from freezetune.freezing.base import Progress, Stateless, leading_run
from freezetune.freezing.registry import POLICIES, RunShape, register_policy
from freezetune.integrations.transformers import FreezeCallback
from freezetune.state import LoopState
from freezetune.testing import tiny_run_config
from freezetune.training import resume, train
from freezetune.units import split_units
from test_resume import _stop_at
from test_trainer_callback import run_config, trainer_for


@dataclass(frozen=True)
class TurnsOptions:
    """``turns[:every=2]``."""

    every: int = field(default=2, metadata={"help": "steps between turns"})

    def __post_init__(self) -> None:
        if self.every < 1:
            raise UserError(f"every={self.every} must be >= 1")


@dataclass
class Turns(Stateless):
    """block.0 and block.1 (units 1, 2) freeze in turns every ``every`` steps; block.2
    (unit 3) never trains; the embeddings and the head always do. Both turning blocks start
    each turn with fresh optimizer state."""

    every: int
    name: str = "turns"
    reset_optimizer_state: frozenset[int] = frozenset({1, 2})

    def frozen_set(self, progress: Progress) -> frozenset[int]:
        return frozenset({1 + progress.step // self.every % 2, 3})

    def frozen_units(self, progress: Progress) -> int:
        return leading_run(self.frozen_set(progress))


def turns(options: TurnsOptions, run: RunShape) -> Turns:
    if run.num_blocks != 3:
        raise UserError(f"turns needs 3 blocks, the model has {run.num_blocks}")
    return Turns(options.every)


@pytest.fixture
def registered():
    register_policy("turns", turns, options=TurnsOptions, positional="every")
    yield "turns"
    POLICIES.unregister("turns")


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


def test_the_pure_helpers_tell_a_set_from_a_leading_run():
    policy = Turns(every=2)
    assert isinstance(policy, UnitSelector)
    assert frozen_now(policy, Progress(2, 10, 5)) == frozenset({2, 3})
    assert leading_run(frozenset({0, 1, 3})) == 2 and leading_run(frozenset()) == 0


def test_the_freezer_applies_a_set_names_it_and_drops_reset_state(bert, capsys):
    model, units = bert
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([1])).loss.backward()
    optimizer.step()  # every parameter has AdamW state now
    log = FreezeLog()
    freezer = Freezer(model, units, parse_freeze("full"), log, True, optimizer, Turns(2))
    model.train()
    record = freezer.update(frozenset({1, 3}), step=4)
    assert record is not None and record["frozen_units"] == 0
    assert record["frozen"] == ["block.0", "block.2"] and log.frozen_set == [1, 3]
    frozen = frozen_parameters(units, parse_freeze("full"), frozenset({1, 3}))
    assert frozen == {n for i in (1, 3) for n in units.units[i].params}
    for name, p in model.named_parameters():
        assert p.requires_grad == (name not in frozen) and (p.grad is None) == (name in frozen)
    modes = [model.get_submodule(u.modules[0]).training for u in units.units[:4]]
    assert modes == [True, False, True, False]  # frozen units in eval(), wherever they are
    # the policy resets units 1 and 2: their state is gone, the others' kept
    reset = {n for i in (1, 2) for n in units.units[i].params}
    for name, p in model.named_parameters():
        assert (p in optimizer.state) == (name not in reset), name
    assert freezer.update(frozenset({3, 1}), step=5) is None  # the same set: no change
    assert capsys.readouterr().err == (
        f"step 4: 2 units frozen (block.0, block.2); {record['trainable']}\n"
    )
    state = LoopState()  # a restored run: the set comes back from the checkpointed records
    state.load_state_dict({**LoopState().state_dict(), "frozen_units": 0, "frozen_set": [1, 3]})
    again = Freezer(model, units, parse_freeze("full"), state, False)
    model.train()
    again.reapply()
    assert [model.get_submodule(u.modules[0]).training for u in units.units[:4]] == modes


def test_a_leading_set_is_recorded_as_a_number(bert):
    model, units = bert
    log = FreezeLog()
    freezer = Freezer(model, units, parse_freeze("full"), log, False)
    record = freezer.update(frozenset({0, 1}), step=0)
    assert record is not None and "frozen" not in record
    assert (log.frozen_units, log.frozen_set) == (2, None)
    assert freezer.update(2, step=1) is None  # the same units, said as a number


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model.safetensors")


def test_a_set_policy_trains_and_resumes_bit_identically(registered, tiny_bert, tmp_path):
    train_opts = {"epochs": 2, "batch_size": 8, "save_every": 1, "keep_checkpoints": 100}
    cfg = tiny_run_config(
        tiny_bert, tmp_path / "out", "turns:2", train_samples=32, train=train_opts
    )
    out = Path(cfg.out)
    whole = train(cfg)
    assert whole.steps == 8
    sets = [(e["step"], e.get("frozen")) for e in whole.freeze_timeline]
    assert sets == [(s, ["block.0" if s % 4 == 0 else "block.1", "block.2"]) for s in (0, 2, 4, 6)]
    start = load_file(Path(tiny_bert) / "model.safetensors")
    end = _weights(out)
    never = [k for k in start if k.startswith("encoder.layer.2.")]
    assert never and all(torch.equal(end[f"encoder.{k}"], start[k]) for k in never)
    for trained in (
        "embeddings.word_embeddings.weight",
        "encoder.layer.0.attention.self.query.weight",
    ):
        assert not torch.equal(end[f"encoder.{trained}"], start[trained])
    # killed right after step 3's checkpoint: the set of steps 2-3 is restored, not asked again
    _stop_at(out, 3)
    again = resume(out)
    assert again.freeze_timeline == whole.freeze_timeline
    resumed = _weights(out)
    assert all(torch.equal(resumed[k], v) for k, v in end.items())
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "freeze" for e in lines) == 4  # no record repeated on resume


def test_the_trainer_callback_switches_the_same_sets(registered, tiny_bert, tmp_path):
    config = run_config(tiny_bert, tmp_path / "ft", "turns:3", epochs=2, batch=16)
    expected = train(config).freeze_timeline
    freeze = FreezeCallback("turns:3")
    other = run_config(tiny_bert, tmp_path / "other", "turns:3", epochs=2, batch=16)
    trainer, model = trainer_for(other, tmp_path / "hf", [freeze])
    units = split_units(model)
    params = dict(model.named_parameters())
    never = {n: params[n].detach().clone() for n in units.units[3].params}  # block.2
    trainer.train()
    assert freeze.changes == expected and len(expected) == 3
    assert all(torch.equal(params[n], v) for n, v in never.items())
    # steps 6-7 freeze block.0 (and block.2): Trainer's AdamW holds no state for them
    frozen = [params[n] for i in (1, 3) for n in units.units[i].params]
    assert frozen and all(p not in trainer.optimizer.state for p in frozen)
    assert all(p in trainer.optimizer.state for p in params.values() if p.requires_grad)


def test_a_timeline_of_equal_sized_sets_is_kept_as_a_change():
    from freezetune.report.plots import _changes
    from freezetune.study.worker import read_events

    turn = {"event": "freeze", "frozen_units": 0, "trainable_params": 10}
    events = [
        {**turn, "step": 0, "frozen": ["block.0"]},
        {**turn, "step": 5, "frozen": ["block.1"]},
    ]
    timeline, _ = read_events(events)
    assert timeline == events and _changes(timeline)
    assert read_events([events[0]])[0] == [] and not _changes([events[0], events[0]])
