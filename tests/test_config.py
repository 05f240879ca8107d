"""Typed configs, YAML files and key=value overrides."""

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freezetune.config import (
    SECTIONS,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    load_yaml,
)
from freezetune.errors import UserError
from freezetune.flags import config_flags
from freezetune.freezing import SPEC_HELP

# run configs only; configs/studies/*.yaml are study specs (tests/test_study.py loads them)
CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_defaults_are_valid():
    cfg = RunConfig()
    assert cfg.model.name == "minilm-l6" and cfg.freeze == "full" and cfg.data.task == "sst2"


def test_from_dict_coerces_strings_from_overrides():
    data = apply_overrides(
        {},
        [
            "optim.lr=3e-4",
            "train.epochs=2",
            "train.bf16=true",
            "data.text_columns=a,b",
            "freeze=bottom:2",
        ],
    )
    cfg = RunConfig.from_dict(data)
    assert cfg.optim.lr == 3e-4 and cfg.train.epochs == 2 and cfg.train.bf16
    assert cfg.data.text_columns == ("a", "b") and cfg.freeze == "bottom:2"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"optim": {"lrr": 1}}, "unknown config key optim.lrr"),
        ({"bogus": 1}, "unknown config key bogus"),
        ({"optim": {"lr": -1}}, "optim.lr must be in"),
        ({"optim": {"lr": "fast"}}, "optim.lr must be a float"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"epochs": 1.5}}, "whole number"),
        ({"train": {"bf16": "maybe"}}, "true or false"),
        ({"optim": 3}, "must be a mapping"),
        ({"data": {"text_columns": ["a", "b", "c"]}}, "one or two"),
    ],
)
def test_bad_values_name_key_and_range(data, needle):
    with pytest.raises(UserError, match=needle):
        RunConfig.from_dict(data)


def test_yaml_must_be_a_mapping(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(UserError, match="must be a mapping"):
        load_yaml(tmp_path / "list.yaml")
    with pytest.raises(UserError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")


def test_yaml_is_parsed_safely(tmp_path):
    (tmp_path / "evil.yaml").write_text("freeze: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml(tmp_path / "evil.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    RunConfig.from_dict(load_yaml(path))


def test_bad_override_syntax():
    with pytest.raises(UserError, match=r"section\.key=value"):
        apply_overrides({}, ["lr"])


@given(
    st.dictionaries(
        st.sampled_from(["lr", "weight_decay", "warmup_ratio"]),
        st.floats(allow_nan=True, allow_infinity=True),
        max_size=3,
    )
)
def test_optim_values_validated_or_accepted(values):
    try:
        cfg = RunConfig.from_dict({"optim": values})
    except UserError as err:
        assert "\n" not in str(err)
    else:
        assert 0 < cfg.optim.lr < 1


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TrainConfig(epochs=0), "train.epochs must be in 1..1000, got 0 (flag --epochs)"),
        (lambda: OptimConfig(lr="1e-4"), "optim.lr must be a number, got '1e-4' (flag --lr)"),
        (lambda: OptimConfig(lr=float("inf")), "optim.lr must be in (0, 1), got inf (flag --lr)"),
        (lambda: OptimConfig(adam_eps=0.0), "optim.adam_eps must be > 0, got 0.0"),
        (lambda: TrainConfig(batch_size=2.5), "train.batch_size must be a whole number, got 2.5"),
        (lambda: TrainConfig(bf16="yes"), "train.bf16 must be true or false, got 'yes'"),
        (lambda: TrainConfig(seed=-1), "train.seed must be in 0..4294967295, got -1"),
        (lambda: TrainConfig(cache_dtype="int8"), "train.cache_dtype must be one of float32, "),
        (lambda: ModelConfig(pooling="max"), "model.pooling must be one of pooler, cls, mean, "),
        (lambda: ModelConfig(name=None), "model.name must be set, got None (flag --model)"),
        (lambda: DataConfig(max_length=4), "data.max_length must be in 8..100000, got 4"),
        (lambda: DataConfig(text_columns=["a"]), "data.text_columns must be a tuple of strings"),
        (lambda: RunConfig(optim={"lr": 1e-3}), "optim must be a config section (OptimConfig)"),
        (lambda: RunConfig(out=" "), "out must name an output folder"),
    ],
)
def test_each_section_validates_itself_in_one_line(build, message):
    with pytest.raises(UserError) as err:
        build()
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_message_names_the_flag_only_where_there_is_one():
    with pytest.raises(UserError) as err:
        OptimConfig(adam_beta1=1.0)
    assert str(err.value) == "optim.adam_beta1 must be in [0, 1), got 1.0"


@pytest.mark.parametrize("spec", ["botom:3", "bottom:x", "pattern:(", "gradual+autofreeze"])
def test_freeze_is_parsed_when_the_config_is_built(spec):
    with pytest.raises(UserError, match="--freeze") as err:
        RunConfig.from_dict({"freeze": spec})
    assert "\n" not in str(err.value)
    with pytest.raises(UserError):
        RunConfig(freeze=spec)


def test_a_freeze_typo_names_the_value_and_the_valid_forms():
    with pytest.raises(UserError) as err:
        RunConfig.from_dict({"freeze": "botom:3"})
    assert "'botom:3'" in str(err.value) and SPEC_HELP in str(err.value)


@pytest.mark.parametrize("spec", ["full", "head", "bottom:3+bitfit", "autofreeze+llrd:0.9", "lora"])
def test_valid_freeze_specs_build(spec):
    assert RunConfig.from_dict({"freeze": spec}).freeze == spec


def test_yaml_strings_are_still_coerced_by_from_dict():
    cfg = RunConfig.from_dict({"optim": {"lr": "1e-4"}, "train": {"epochs": "2", "bf16": "on"}})
    assert cfg.optim.lr == 1e-4 and cfg.train.epochs == 2 and cfg.train.bf16 is True


def test_every_option_is_declared_once_with_help():
    for cls in [*SECTIONS.values(), RunConfig]:
        for f in dataclasses.fields(cls):
            if f.name in SECTIONS and cls is RunConfig:
                continue
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
    names = [flag.name for flag in config_flags()]
    assert len(names) == len(set(names))
    keys = {flag.key for flag in config_flags()}
    assert {"data.train_file", "train.cache", "train.progress", "freeze"} <= keys
    assert "optim.adam_eps" not in keys  # no flag: set it with optim.adam_eps=...


def test_overrides_into_a_value_that_is_not_a_section():
    with pytest.raises(UserError, match="config section optim must be a mapping"):
        apply_overrides({"optim": 3}, ["optim.lr=1e-4"])
