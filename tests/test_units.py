"""split_units: every supported family, as HF classifier and as freezetune-style wrapper."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedConfig,
)

from freezetune.errors import UserError
from freezetune.testing import tiny_config
from freezetune.units import (
    EMBEDDINGS,
    HEAD,
    Units,
    count_params,
    describe_units,
    split_units,
    trainable_line,
)

LAYERS = 3
HIDDEN = 32


def deberta_config() -> PreTrainedConfig:
    """Relative attention with normalised relative embeddings and the layer-0 conv."""
    return tiny_config("deberta-v2", norm_rel_ebd="layer_norm", conv_kernel_size=3)


FAMILIES = ("bert", "roberta", "distilbert", "electra", "albert", "gpt2", "llama")
CONFIGS: dict[str, Callable[[], PreTrainedConfig]] = {
    **{name: (lambda name=name: tiny_config(name)) for name in FAMILIES},
    "deberta-v2": deberta_config,
}

# blocks path relative to the base model, and a parameter prefix (relative to the base model)
# that must land in the embeddings unit
LAYOUT = {
    "bert": ("encoder.layer", "embeddings.word_embeddings"),
    "roberta": ("encoder.layer", "embeddings.word_embeddings"),
    "distilbert": ("transformer.layer", "embeddings.word_embeddings"),
    "electra": ("encoder.layer", "embeddings_project"),
    "deberta-v2": ("encoder.layer", "encoder.rel_embeddings"),
    "albert": ("encoder.albert_layer_groups", "encoder.embedding_hidden_mapping_in"),
    "gpt2": ("h", "wpe"),
    "llama": ("layers", "embed_tokens"),
}
BASE_ATTR = {
    "bert": "bert",
    "roberta": "roberta",
    "distilbert": "distilbert",
    "electra": "electra",
    "deberta-v2": "deberta",
    "albert": "albert",
    "gpt2": "transformer",
    "llama": "model",
}
HEAD_PARAM = {  # a classifier parameter of the *ForSequenceClassification model
    "bert": "classifier.weight",
    "roberta": "classifier.out_proj.weight",
    "distilbert": "classifier.weight",
    "electra": "classifier.out_proj.weight",
    "deberta-v2": "classifier.weight",
    "albert": "classifier.weight",
    "gpt2": "score.weight",
    "llama": "score.weight",
}


class Wrapper(nn.Module):
    """freezetune-style classifier: ``encoder`` is the HF base model."""

    def __init__(self, config: PreTrainedConfig) -> None:
        super().__init__()
        self.encoder = AutoModel.from_config(config)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(HIDDEN, 2)


def classifier(family: str) -> nn.Module:
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(CONFIGS[family]())


def wrapper(family: str) -> nn.Module:
    torch.manual_seed(0)
    return Wrapper(CONFIGS[family]())


def unit_of(units: Units) -> dict[str, str]:
    return {p: u.name for u in units.units for p in u.params}


def within(name: str, root: str) -> bool:
    return name == root or name.startswith(root + ".")


def assert_partition(model: nn.Module, units: Units) -> None:
    """Each parameter in exactly one unit; each unit's parameters under its modules."""
    names = [name for name, _ in model.named_parameters()]
    listed = [p for u in units.units for p in u.params]
    assert sorted(listed) == sorted(names)
    assert len(listed) == len(set(listed))
    all_modules = [m for u in units.units for m in u.modules]
    assert len(all_modules) == len(set(all_modules))
    for i, a in enumerate(all_modules):  # modules of different units never nest
        assert not any(within(a, b) for b in all_modules[:i] + all_modules[i + 1 :]), a
    for unit in units.units:
        for module in unit.modules:
            model.get_submodule(module)
        for param in unit.params:
            assert any(within(param, m) for m in unit.modules), (unit.name, param)


def assert_one_line_user_error(excinfo: pytest.ExceptionInfo[UserError]) -> str:
    message = str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- families

BUILDS = {"classifier": classifier, "wrapper": wrapper}
BASE_PREFIX = {"classifier": lambda f: BASE_ATTR[f] + ".", "wrapper": lambda f: "encoder."}


@pytest.mark.parametrize("style", list(BUILDS))
@pytest.mark.parametrize("family", list(CONFIGS))
def test_family_splits(family: str, style: str) -> None:
    model = BUILDS[style](family)
    base = BASE_PREFIX[style](family)
    units = split_units(model)
    blocks_rel, emb_param = LAYOUT[family]

    expected_blocks = 1 if family == "albert" else LAYERS
    assert units.num_blocks == expected_blocks
    assert len(units.units) == expected_blocks + 2
    assert units.names[0] == EMBEDDINGS and units.names[-1] == HEAD
    assert units.names[1:-1] == tuple(f"block.{i}" for i in range(expected_blocks))
    assert units.family == family
    assert units.blocks_path == base + blocks_rel
    assert_partition(model, units)

    owner = unit_of(units)
    for i in range(expected_blocks):
        block = units.units[i + 1]
        assert block.params
        inside = [p for p in block.params if p.startswith(f"{units.blocks_path}.{i}.")]
        assert inside, block.name
        extras = set(block.params) - set(inside)
        assert all(".encoder.conv." in p for p in extras), extras  # only DeBERTa's conv
    assert [p for p in units.units[0].params if p.startswith(base + emb_param)]
    assert all(owner[p] == EMBEDDINGS for p in owner if p.startswith(base + emb_param))
    head_param = HEAD_PARAM[family] if style == "classifier" else "classifier.weight"
    assert owner[head_param] == HEAD


def test_bare_base_model() -> None:
    model = AutoModel.from_config(CONFIGS["bert"]())
    units = split_units(model)
    assert units.blocks_path == "encoder.layer"
    assert units.units[0].modules == ("embeddings",)
    assert units.units[-1].modules == ("pooler",)
    assert_partition(model, units)


def test_gpt2_final_norm_in_head_and_dropout_with_embeddings() -> None:
    units = split_units(classifier("gpt2"))
    assert units.units[0].modules == ("transformer.wte", "transformer.wpe", "transformer.drop")
    assert set(units.units[-1].params) == {
        "transformer.ln_f.weight",
        "transformer.ln_f.bias",
        "score.weight",
    }


def test_llama_final_norm_in_head() -> None:
    units = split_units(classifier("llama"))
    assert units.units[0].params == ("model.embed_tokens.weight",)
    assert "model.rotary_emb" in units.units[0].modules
    assert set(units.units[-1].params) == {"model.norm.weight", "score.weight"}


def test_tied_lm_head_counted_once() -> None:
    model = GPT2LMHeadModel(tiny_config("gpt2"))
    units = split_units(model)
    assert_partition(model, units)
    assert "transformer.wte.weight" in units.units[0].params
    assert "lm_head.weight" not in unit_of(units)  # tied to wte: named_parameters dedups


def test_deberta_shared_relative_embeddings_with_embeddings_and_conv_in_block_0() -> None:
    units = split_units(classifier("deberta-v2"))
    owner = unit_of(units)
    assert owner["deberta.encoder.rel_embeddings.weight"] == EMBEDDINGS
    assert owner["deberta.encoder.LayerNorm.weight"] == EMBEDDINGS
    assert owner["deberta.encoder.conv.conv.weight"] == "block.0"
    assert "deberta.encoder.conv" in units.units[1].modules
    assert "deberta.encoder.rel_embeddings" in units.note
    assert "embeddings unit" in units.note
    assert owner["pooler.dense.weight"] == HEAD


def test_electra_projection_with_embeddings() -> None:
    units = split_units(classifier("electra"))
    assert units.units[0].modules == ("electra.embeddings", "electra.embeddings_project")
    assert units.note == ""


def test_albert_shared_block() -> None:
    units = split_units(classifier("albert"))
    assert units.shared_blocks
    assert units.names == ("embeddings", "block.0", "head")
    assert units.units[1].modules == ("albert.encoder.albert_layer_groups.0",)
    assert units.note == (
        f"ALBERT applies one shared block {LAYERS} times; freezing block.0 freezes every layer"
    )
    owner = unit_of(units)
    assert owner["albert.pooler.weight"] == HEAD


def test_albert_several_groups() -> None:
    config = tiny_config("albert", num_hidden_layers=4)
    config.num_hidden_groups = 2
    model = AutoModelForSequenceClassification.from_config(config)
    units = split_units(model)
    assert units.names == ("embeddings", "block.0", "block.1", "head")
    assert "2 shared blocks over 4 layers" in units.note
    assert_partition(model, units)


def test_non_albert_blocks_are_not_shared() -> None:
    units = split_units(classifier("bert"))
    assert not units.shared_blocks
    assert units.note == ""


def test_peft_lora_params_land_in_their_block() -> None:
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(
        classifier("bert"),
        peft.LoraConfig(task_type="SEQ_CLS", target_modules=["query", "value"], r=2),
    )
    units = split_units(model)
    assert units.blocks_path == "base_model.model.bert.encoder.layer"
    assert units.family == "bert"
    assert units.num_blocks == LAYERS
    assert_partition(model, units)
    owner = unit_of(units)
    lora = [p for p in owner if "lora_" in p]
    assert lora
    for name in lora:
        index = name.split("encoder.layer.")[1].split(".")[0]
        assert owner[name] == f"block.{index}"
    assert owner["base_model.model.classifier.modules_to_save.default.weight"] == HEAD


# --------------------------------------------------------------------------- overrides


class Toy(nn.Module):
    """An unknown architecture: blocks in ``stack``, a raw positional parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.pos = nn.Parameter(torch.zeros(4, 8))
        self.stack = nn.ModuleList([nn.Linear(8, 8) for _ in range(2)])
        self.out = nn.Linear(8, 2)


def test_unknown_model_error_lists_candidates() -> None:
    with pytest.raises(UserError) as excinfo:
        split_units(Toy())
    message = assert_one_line_user_error(excinfo)
    assert message.startswith("cannot find the transformer blocks of Toy;")
    assert "--blocks-path" in message and "candidates: stack" in message


def test_model_without_module_list() -> None:
    with pytest.raises(UserError, match=r"has no nn\.ModuleList"):
        split_units(nn.Sequential(nn.Linear(2, 2)))


def test_blocks_path_override_on_unknown_model() -> None:
    model = Toy()
    units = split_units(model, blocks_path="stack")
    assert units.family == "custom"
    assert units.names == ("embeddings", "block.0", "block.1", "head")
    assert units.units[0].params == ("embed.weight",)  # guessed: the nn.Embedding
    assert units.units[1].params == ("stack.0.weight", "stack.0.bias")
    assert set(units.units[-1].params) == {"pos", "out.weight", "out.bias"}
    assert units.units[-1].modules == ("out",)


def test_embeddings_paths_override_accepts_parameters() -> None:
    model = Toy()
    units = split_units(model, blocks_path="stack", embeddings_paths=["embed", "pos"])
    assert set(units.units[0].params) == {"embed.weight", "pos"}
    assert units.units[0].modules == ("embed",)
    assert_partition_params_only(model, units)


def assert_partition_params_only(model: nn.Module, units: Units) -> None:
    listed = sorted(p for u in units.units for p in u.params)
    assert listed == sorted(name for name, _ in model.named_parameters())


def test_blocks_path_override_matches_detection() -> None:
    model = classifier("bert")
    assert split_units(model, blocks_path="bert.encoder.layer") == split_units(model)


def test_empty_embeddings_paths_means_no_embeddings() -> None:
    model = classifier("bert")
    units = split_units(model, embeddings_paths=[])
    assert units.units[0].params == ()
    assert "bert.embeddings.word_embeddings.weight" in units.units[-1].params
    assert_partition_params_only(model, units)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("bert.encoder.layers", "has no such module"),
        ("bert.encoder", "is a BertEncoder, not an nn.ModuleList"),
        ("", "not an nn.ModuleList"),
    ],
)
def test_bad_blocks_path(path: str, expected: str) -> None:
    with pytest.raises(UserError) as excinfo:
        split_units(classifier("bert"), blocks_path=path)
    message = assert_one_line_user_error(excinfo)
    assert expected in message
    assert "candidates: bert.encoder.layer" in message


def test_empty_module_list_blocks_path() -> None:
    model = Toy()
    model.stack = nn.ModuleList()
    with pytest.raises(UserError, match=r"empty nn\.ModuleList"):
        split_units(model, blocks_path="stack")


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["nope"], "has no such module or parameter"),
        (["bert.encoder.layer.0"], "overlaps the block"),
        (["bert"], "overlaps the block"),
    ],
)
def test_bad_embeddings_paths(paths: list[str], expected: str) -> None:
    with pytest.raises(UserError) as excinfo:
        split_units(classifier("bert"), embeddings_paths=paths)
    assert expected in assert_one_line_user_error(excinfo)


# --------------------------------------------------------------------------- several matches


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])


class Nested(nn.Module):
    """``layers`` whose blocks each hold another ``layers`` list."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(10, 4)
        self.layers = nn.ModuleList([Block(), Block()])
        self.norm = nn.LayerNorm(4)


def test_nested_matches_take_the_outermost_list() -> None:
    model = Nested()
    units = split_units(model)
    assert units.blocks_path == "layers"
    assert units.family == "custom"
    assert units.names == ("embeddings", "block.0", "block.1", "head")
    assert units.units[0].modules == ("embed_tokens",)
    assert units.units[-1].modules == ("norm",)
    assert_partition(model, units)


class TwoTowers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left = Nested()
        self.right = Nested()


def test_two_unknown_towers_are_ambiguous() -> None:
    with pytest.raises(UserError) as excinfo:
        split_units(TwoTowers())
    message = assert_one_line_user_error(excinfo)
    assert "left.layers, right.layers" in message and "--blocks-path" in message
    units = split_units(TwoTowers(), blocks_path="right.layers")
    assert units.units[0].modules == ("right.embed_tokens",)


class WrapperWithMlpHead(Wrapper):
    def __init__(self, config: PreTrainedConfig) -> None:
        super().__init__(config)
        self.layers = nn.ModuleList([nn.Linear(HIDDEN, HIDDEN)])


def test_known_family_wins_over_unknown_list() -> None:
    model = WrapperWithMlpHead(CONFIGS["bert"]())
    units = split_units(model)
    assert units.blocks_path == "encoder.encoder.layer"
    assert unit_of(units)["layers.0.weight"] == HEAD
    assert_partition(model, units)


# --------------------------------------------------------------------------- counting


def test_trainable_line_format() -> None:
    model = nn.Linear(1000, 1000)
    model.weight.requires_grad_(False)
    assert count_params(model) == (1000, 1_001_000)
    expected = "trainable params: 1,000 || all params: 1,001,000 || trainable%: 0.0999"
    assert trainable_line(model) == expected
    empty = "trainable params: 0 || all params: 0 || trainable%: 0.0000"
    assert trainable_line(nn.ReLU()) == empty


def test_trainable_line_matches_peft(capsys: pytest.CaptureFixture[str]) -> None:
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(
        classifier("bert"),
        peft.LoraConfig(task_type="SEQ_CLS", target_modules=["query", "value"], r=2),
    )
    model.print_trainable_parameters()
    assert capsys.readouterr().out.strip() == trainable_line(model)
    assert count_params(model) == tuple(model.get_nb_trainable_parameters())


def test_describe_units_counts_each_units_parameters() -> None:
    model = classifier("bert")
    units = split_units(model)
    for name in units.units[0].params:
        model.get_parameter(name).requires_grad_(False)
    rows = describe_units(model, units)
    assert [row[0] for row in rows] == list(units.names)
    sizes = {name: p.numel() for name, p in model.named_parameters()}
    assert [row[1] for row in rows] == [sum(sizes[n] for n in u.params) for u in units.units]
    assert rows[0][2] == 0 and rows[0][1] > 0
    assert all(total == train for _, total, train in rows[1:])
    trainable, total = count_params(model)
    assert sum(r[1] for r in rows) == total and sum(r[2] for r in rows) == trainable

    preview = describe_units(model, units, trainable=lambda name: name.startswith("classifier"))
    assert [r[2] for r in preview[:-1]] == [0] * (len(rows) - 1)
    assert preview[-1][2] == HIDDEN * 2 + 2
