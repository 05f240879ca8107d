"""FreezeCallback: freezetune specs and schedules inside a transformers Trainer, on tiny models.

The Trainer runs are compared with ``freezetune train`` on the same model, data order and
learning rates: the same changes at the same steps, and (deterministic setup: fp32, no dropout)
the same AutoFreeze decisions, bit for bit.
"""

from __future__ import annotations

import json
import re
import textwrap
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import freezetune.integrations.transformers as integration
from freezetune.batching import Collator, make_loader, set_epoch, tokenize
from freezetune.errors import UserError
from freezetune.freezing import parse_freeze
from freezetune.integrations.trainer_checks import check_args
from freezetune.integrations.trainer_grads import GRADS_FILE
from freezetune.integrations.transformers import FreezeCallback, UnitLR
from freezetune.testing import EPS32, save_tiny_model, tiny_config, tiny_run_config
from freezetune.training import prepare, train

EXACT = {"max_grad_norm": 0.0, "weight_decay": 0.01, "warmup_ratio": 0.1, "lr": 1e-3}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> str:
    """A tiny random BERT without dropout: two runs on the same data then do the same math."""
    path = save_tiny_model(tmp_path_factory.mktemp("tiny-bert-nodrop"))
    config = json.loads((path / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


def hf_tiny_bert():
    """A plain Hugging Face classifier (3 blocks, dropout 0.1): what a Trainer script has."""
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_config("bert", num_labels=2))


def random_data(n: int = 32):
    generator = torch.Generator().manual_seed(0)
    return [
        {"input_ids": torch.randint(1, 64, (10,), generator=generator), "labels": i % 2}
        for i in range(n)
    ]


def tiny_args(out: Path, **overrides) -> TrainingArguments:
    """Quiet CPU TrainingArguments: nothing saved or logged unless a test asks."""
    defaults = {
        "max_steps": 3,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-2,
        "weight_decay": 0.1,
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
    }
    return TrainingArguments(str(out), **{**defaults, **overrides})


def run_config(path: str, out: Path, freeze: str, epochs: int, batch: int, **optim):
    """A ``freezetune train`` config on 64 SST-2 examples whose math a Trainer can repeat."""
    return tiny_run_config(
        path,
        out,
        freeze,
        train_samples=64,
        train={"epochs": epochs, "batch_size": batch, "cache": False, "inference_cost": False},
        optim={**EXACT, **optim},
        model_options={"classifier_dropout": 0.0},
    )


class LoaderTrainer(Trainer):
    """Trainer over a given DataLoader: freezetune's, so both loops see the same batches."""

    def __init__(self, *args, loader, **kwargs):
        self.loader = loader
        super().__init__(*args, **kwargs)

    def get_train_dataloader(self):
        return self.loader


def trainer_for(config, out: Path, callbacks, *, freeze_optimizers=None, **overrides):
    """A Trainer over ``config``'s model (same seeded init as ``train(config)``) and batches."""
    setup = prepare(config)
    t, tokenizer = config.train, setup.loaded.processor
    features = tokenize(setup.data.train, tokenizer, max_length=config.data.max_length)
    loader = make_loader(
        features,
        batch_size=t.batch_size,
        shuffle=True,
        seed=t.seed,
        collate=Collator.for_task(tokenizer, setup.data.task),
    )
    loader.set_epoch = partial(set_epoch, loader)  # Trainer calls it on the loader itself
    o = config.optim
    args = tiny_args(
        out,
        max_steps=-1,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        learning_rate=o.lr,
        weight_decay=o.weight_decay,
        warmup_steps=o.warmup_ratio,
        max_grad_norm=o.max_grad_norm,
        **overrides,
    )
    model = setup.model
    optimizers = freeze_optimizers.optimizers(model, args) if freeze_optimizers else (None, None)
    trainer = LoaderTrainer(
        model=model, args=args, loader=loader, callbacks=callbacks, optimizers=optimizers
    )
    return trainer, model


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message
    return message


# ------------------------------------------------------------------ static specs


@pytest.mark.parametrize("added", ["init", "add_callback"])
def test_static_spec_leaves_frozen_weights_bit_identical(tmp_path, added, capsys):
    model = hf_tiny_bert()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    freeze = FreezeCallback("bottom:1")
    callbacks = [freeze] if added == "init" else []
    trainer = Trainer(
        model=model,
        args=tiny_args(tmp_path, gradient_accumulation_steps=2),
        train_dataset=random_data(),
        callbacks=callbacks,
    )
    if added == "add_callback":
        trainer.add_callback(freeze)
    modes: dict[str, list[bool]] = {"embeddings": [], "block.0": [], "block.1": []}
    layers = model.bert.encoder.layer
    dropouts = {
        "embeddings": model.bert.embeddings.dropout,
        "block.0": layers[0].output.dropout,
        "block.1": layers[1].output.dropout,
    }
    for name, module in dropouts.items():
        module.register_forward_hook(lambda m, i, o, name=name: modes[name].append(m.training))
    trainer.train()

    frozen = [n for n in before if n.startswith(("bert.embeddings", "bert.encoder.layer.0."))]
    params = dict(model.named_parameters())
    assert frozen and all(torch.equal(params[n], before[n]) for n in frozen)
    assert all(params[n].grad is None and not params[n].requires_grad for n in frozen)
    assert not torch.equal(params["classifier.weight"], before["classifier.weight"])
    assert not torch.equal(
        params["bert.encoder.layer.1.output.dense.weight"],
        before["bert.encoder.layer.1.output.dense.weight"],
    )
    # every micro-batch (two per step) ran the frozen units in eval(), the others in train()
    assert modes["embeddings"] == modes["block.0"] == [False] * 6
    assert modes["block.1"] == [True] * 6
    held = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    # at init the frozen units never enter the optimizer (as in freezetune's own); added later,
    # they are in it with grad None, and AdamW's weight decay (0.1 here) skips them
    assert (id(params[frozen[0]]) in held) == (added == "add_callback")
    assert "step 0: 2 units frozen; trainable params: " in capsys.readouterr().err
    assert freeze.changes[0]["trainable"] == freeze.changes[-1]["trainable"]


def test_lora_on_a_wrapped_model_trains_adapters_and_head(tmp_path):
    import peft

    model = peft.get_peft_model(hf_tiny_bert(), peft.LoraConfig(target_modules=["query"]))
    Trainer(
        model=model, args=tiny_args(tmp_path), train_dataset=random_data(),
        callbacks=[FreezeCallback("lora")],
    )  # fmt: skip
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n or "pooler" in n for n in trainable)


# ------------------------------------------------------------------ schedules vs freezetune train


@pytest.mark.parametrize("spec", ["gradual", "progressive", "two-phase:epochs=1+llrd:0.8"])
def test_schedule_changes_at_the_same_steps_as_freezetune_train(tiny_path, tmp_path, spec):
    config = run_config(tiny_path, tmp_path / "ft", spec, epochs=3, batch=16)
    expected = train(config).freeze_timeline
    freeze = FreezeCallback(spec)
    ours = freeze if spec != "gradual" else None  # gradual runs on Trainer's own optimizer
    trainer, model = trainer_for(
        run_config(tiny_path, tmp_path / "other", spec, epochs=3, batch=16),
        tmp_path / "hf",
        [freeze],
        freeze_optimizers=ours,
    )
    embeddings = model.encoder.embeddings.word_embeddings.weight.detach().clone()
    trainer.train()
    assert freeze.changes == expected  # steps, units frozen and trainable lines
    assert len(expected) > 1
    if spec == "gradual":  # frozen all along, in Trainer's AdamW with weight decay 0.01
        assert torch.equal(model.encoder.embeddings.word_embeddings.weight, embeddings)


# ------------------------------------------------------------------ AutoFreeze vs freezetune train


class GradNorms(TrainerCallback):
    """The global gradient norm Trainer's optimizer step sees (after its clipping)."""

    def __init__(self):
        self.norms: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
        self.norms.append(float(torch.stack(grads).norm()))


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.2])
def test_autofreeze_decides_as_freezetune_loop(tiny_path, tmp_path, max_grad_norm):
    spec = "autofreeze:n=4"
    config = run_config(tiny_path, tmp_path / "ft", spec, 2, 8, max_grad_norm=max_grad_norm)
    result = train(config)
    freeze, seen = FreezeCallback(spec), GradNorms()
    other = run_config(tiny_path, tmp_path / "other", spec, 2, 8, max_grad_norm=max_grad_norm)
    trainer, _ = trainer_for(other, tmp_path / "hf", [freeze, seen], freeze_optimizers=freeze)
    trainer.train()
    if max_grad_norm:  # Trainer did clip: its hooks after backward only see clipped gradients
        # clip_grad_norm_ scales by max / (norm + 1e-6): the clipped norm is short of max by at
        # most 1e-6; recomputing it is a cascade sum of ~1e6 squares, about 20 roundings deep
        near = 1e-6 + 32 * EPS32 * max_grad_norm
        assert sum(abs(n - max_grad_norm) <= near for n in seen.norms) >= 4
    # the callback sums unclipped copies, as freezetune's loop sums the gradients before it
    # clips them: the same ratios and thresholds, to the last bit
    assert freeze.policy is not None
    assert freeze.policy.state_dict() == result.policy_state
    assert len(result.policy_state["decisions"]) == 3
    assert freeze.changes == result.freeze_timeline
    assert result.policy_state["blocks_frozen"] > 0  # the comparison covers a freeze


# ------------------------------------------------------------------ resume through Trainer


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def find_freeze(trainer: Trainer) -> FreezeCallback:
    return next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, FreezeCallback))


@pytest.mark.parametrize("restore_flag", [False, True])
def test_resume_from_checkpoint_keeps_the_schedule_state(tiny_path, tmp_path, restore_flag):
    # 16 steps, decisions every 5: the checkpoint at step 8 holds 3 steps of gradient sums
    spec, save = "autofreeze:n=3", {"save_strategy": "steps", "save_steps": 8}
    flag = {"restore_callback_states_from_checkpoint": restore_flag}
    config = run_config(tiny_path, tmp_path / "cfg", spec, epochs=2, batch=8)
    whole = FreezeCallback(spec)
    trainer, model = trainer_for(config, tmp_path / "whole", [whole], freeze_optimizers=whole)
    trainer.train()
    end = {n: p.detach().clone() for n, p in model.named_parameters()}

    first = FreezeCallback(spec)
    trainer, _ = trainer_for(
        config, tmp_path / "cut", [first, StopAt(8)], freeze_optimizers=first, **save, **flag
    )
    trainer.train()
    assert (tmp_path / "cut" / "checkpoint-8" / GRADS_FILE).is_file()
    assert first.policy is not None and first.policy.state_dict() != whole.policy.state_dict()

    again = FreezeCallback(spec)
    trainer, model = trainer_for(
        config, tmp_path / "cut", [again], freeze_optimizers=again, **save, **flag
    )
    trainer.train(resume_from_checkpoint=str(tmp_path / "cut" / "checkpoint-8"))
    resumed = find_freeze(trainer)
    assert (resumed is again) != restore_flag  # with the flag, Trainer swaps in a copy
    assert resumed.policy is not None and whole.policy is not None
    assert resumed.policy.state_dict() == whole.policy.state_dict()
    assert resumed.changes == whole.changes
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in end.items())
    if not restore_flag:  # (with the flag Trainer rebuilds the callback from the saved spec)
        other = FreezeCallback("autofreeze:n=4")
        trainer, _ = trainer_for(config, tmp_path / "cut", [other], freeze_optimizers=other)
        with pytest.raises(UserError) as err:
            trainer.train(resume_from_checkpoint=str(tmp_path / "cut" / "checkpoint-8"))
        assert "was trained with 'autofreeze:n=3'" in one_line(err)


# ------------------------------------------------------------------ refusals, one line each


def test_llrd_without_freezetune_optimizers_is_refused(tmp_path):
    trainer = Trainer(
        model=hf_tiny_bert(),
        args=tiny_args(tmp_path),
        train_dataset=random_data(),
        callbacks=[FreezeCallback("bottom:1+llrd:0.9")],
    )
    with pytest.raises(UserError) as err:
        trainer.train()
    assert "optimizers=callback.optimizers(model, args)" in one_line(err)


def test_lora_needs_a_wrapped_model(tmp_path):
    with pytest.raises(UserError) as err:
        Trainer(
            model=hf_tiny_bert(),
            args=tiny_args(tmp_path),
            train_dataset=random_data(),
            callbacks=[FreezeCallback("lora:r=4")],
        )
    assert "peft.get_peft_model" in one_line(err)


def test_parameters_missing_from_the_optimizer_are_refused(tmp_path):
    model = hf_tiny_bert()
    model.bert.embeddings.requires_grad_(False)  # frozen by hand, then a schedule thaws them
    trainer = Trainer(model=model, args=tiny_args(tmp_path), train_dataset=random_data())
    trainer.add_callback(FreezeCallback("gradual:steps=1"))
    with pytest.raises(UserError) as err:
        trainer.train()
    assert "not in Trainer's optimizer" in one_line(err)


def test_freezetune_optimizers_need_a_linear_schedule(tmp_path):
    args = tiny_args(tmp_path, lr_scheduler_type="cosine")
    with pytest.raises(UserError) as err:
        FreezeCallback("llrd:0.9").optimizers(hf_tiny_bert(), args)
    assert "lr_scheduler_type='linear'" in one_line(err)


def test_unit_lr_without_its_callback_is_refused(tmp_path):
    model = hf_tiny_bert()
    trainer = Trainer(
        model=model,
        args=tiny_args(tmp_path),
        train_dataset=random_data(),
        optimizers=FreezeCallback("llrd:0.9").optimizers(model, tiny_args(tmp_path)),
    )
    assert isinstance(trainer.lr_scheduler, UnitLR)
    with pytest.raises(UserError) as err:
        trainer.train()
    assert "Trainer(callbacks=[...])" in one_line(err)


def fake_args(**overrides) -> SimpleNamespace:
    defaults = {
        "deepspeed": None,
        "fsdp": None,
        "fp16": False,
        "world_size": 1,
        "ddp_find_unused_parameters": None,
    }
    return SimpleNamespace(**{**defaults, **overrides})


@pytest.mark.parametrize(
    ("spec", "overrides", "watcher", "words"),
    [
        ("bottom:2", {"deepspeed": "ds.json"}, False, "DeepSpeed and FSDP"),
        ("gradual", {"fsdp": True}, False, "DeepSpeed and FSDP"),
        ("autofreeze", {"fp16": True}, True, "bf16=True"),
        ("autofreeze", {"world_size": 2}, True, "one process only"),
        ("gradual", {"world_size": 2}, False, "ddp_find_unused_parameters=True"),
    ],
)
def test_setups_trainer_cannot_freeze_under_are_refused(spec, overrides, watcher, words):
    with pytest.raises(UserError) as err:
        check_args(fake_args(**overrides), parse_freeze(spec), watcher=watcher, frozen_early=True)
    assert words in one_line(err)
    # a static spec frozen before DDP wraps the model needs nothing more
    check_args(fake_args(world_size=2), parse_freeze("bottom:2"), watcher=False, frozen_early=True)


def test_unknown_spec_is_refused():
    with pytest.raises(UserError) as err:
        FreezeCallback("bottom:x")
    assert "bottom:3" in one_line(err)


# ------------------------------------------------------------------ the documented example


def test_module_docstring_example_runs(tmp_path, monkeypatch, capsys):
    doc = integration.__doc__ or ""
    code = re.search(r"\.\. code-block:: python\n\n(.*?)\n\n\S", doc, re.S)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    exec(textwrap.dedent(code.group(1)), {})
    assert "[(0, 4), (2, 3), (4, 2), (6, 1)]" in capsys.readouterr().out
