"""freeze(model, spec): fastai's freeze_to for people who keep their own training loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

import freezetune
from freezetune.errors import UserError
from freezetune.freezing import freeze, frozen_parameters, parse_freeze, set_train_modes
from freezetune.testing import tiny_config
from freezetune.units import split_units


def bert() -> nn.Module:
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_config("bert")).train()


def frozen_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def modes(model: nn.Module, names: tuple[str, ...]) -> list[bool]:
    return [model.get_submodule(name).training for name in names]


def test_freeze_sets_requires_grad_and_eval_modes_like_the_spec() -> None:
    model = bert()
    units = freeze(model, "bottom:2")  # embeddings, block.0, block.1
    assert units == split_units(model)
    assert frozen_names(model) == frozen_parameters(units, parse_freeze("bottom:2"))
    assert frozen_names(model) == {p for u in units.units[:3] for p in u.params}
    for unit in units.units[:3]:
        assert not any(modes(model, unit.modules)), unit.name
    for unit in units.units[3:]:
        assert all(modes(model, unit.modules)), unit.name
    assert model.training  # the model itself keeps its mode


def test_frozen_units_get_no_gradient() -> None:
    model = bert()
    units = freeze(model, "bottom:1")
    ids = torch.randint(3, 60, (2, 5))
    model(input_ids=ids, labels=torch.tensor([0, 1])).loss.backward()
    for unit in units.units:
        grads = [model.get_parameter(name).grad for name in unit.params]
        if unit.name in ("embeddings", "block.0"):
            assert all(g is None for g in grads), unit.name
        else:
            assert all(g is not None for g in grads), unit.name


def test_a_second_call_thaws_and_a_spec_object_is_accepted() -> None:
    model = bert()
    head = freeze(model, "head").units[-1]
    assert frozen_names(model) == {n for n, _ in model.named_parameters()} - set(head.params)
    units = freeze(model, parse_freeze("full"))
    assert frozen_names(model) == set()
    assert all(m.training for m in model.modules())
    set_train_modes(model, units, 0, False)  # the documented way back to a mode
    assert not any(m.training for m in model.modules())


def test_eval_model_stays_in_eval_and_bitfit_keeps_biases() -> None:
    model = bert().eval()
    units = freeze(model, "bitfit")
    assert not any(m.training for m in model.modules())
    head = set(units.units[-1].params)
    for name, param in model.named_parameters():
        assert param.requires_grad == (name.endswith("bias") or name in head), name


def test_freeze_works_on_decoders_and_is_exported() -> None:
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config("qwen3", pad_token_id=0))
    units = freezetune.freeze(model, "top:1")
    assert units.family == "qwen3" and units.num_blocks == 3
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {p for u in units.units[3:] for p in u.params}


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("progressive", "with a static spec (e.g. bottom:K)"),
        ("gradual", "or use train()"),
        ("bottom:1+lora", "drop lora from the spec"),
        ("bottom:1+llrd:0.9", "drop llrd from the spec"),
        ("botom:1", "botom"),
    ],
)
def test_what_freeze_cannot_do_is_refused_in_one_line(spec: str, needle: str) -> None:
    model = bert()
    with pytest.raises(UserError) as excinfo:
        freeze(model, spec)
    message = str(excinfo.value)
    assert "\n" not in message and needle in message
    assert frozen_names(model) == set()  # nothing was touched
