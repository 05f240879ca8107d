"""Typed configs, YAML files and key=value overrides."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freezetune.config import RunConfig, apply_overrides, load_yaml
from freezetune.errors import UserError

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
