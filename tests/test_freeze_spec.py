"""The --freeze grammar: pure parsing, no model needed."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freezetune.errors import UserError
from freezetune.freezing import parse_freeze


@pytest.mark.parametrize(
    ("text", "blocks", "prefix"),
    [
        ("full", 6, 0),
        ("embeddings", 6, 1),
        ("bottom:0", 6, 1),
        ("bottom:3", 6, 4),
        ("bottom:6", 6, 7),
        ("top:2", 6, 5),
        ("top:6", 6, 1),
        ("top:0", 6, 7),
        ("head", 6, 7),
        ("head", 2, 3),
        ("bitfit", 6, 0),
        ("embeddings+bottom:2", 6, 3),
    ],
)
def test_prefix_counts_units(text, blocks, prefix):
    assert parse_freeze(text).frozen_units(blocks) == prefix


def test_combinations_keep_every_part():
    spec = parse_freeze("bottom:2+bitfit+pattern:attention\\.(self|output)+x")
    assert spec.prefix == 3 and spec.bitfit
    assert spec.patterns == ("attention\\.(self|output)+x",)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("bottom", "unknown"),
        ("bottom:x", "whole number"),
        ("bottom:-1", "whole number"),
        ("lorax", "unknown"),
        ("gradual+autofreeze", "one schedule"),
        ("bottom:2+gradual", "decides the frozen prefix"),
        ("gradual:bogus=1", "unknown option"),
        ("autofreeze:n=x", "must be a int"),
        ("llrd:1.5", "DECAY must be in"),
        ("pattern:", "regular expression"),
        ("pattern:(", "not a valid regular expression"),
        ("pattern:a+bottom:2x", None),  # regex swallows the rest: valid
    ],
)
def test_bad_specs_name_the_problem(text, needle):
    if needle is None:
        assert parse_freeze(text).patterns == ("a+bottom:2x",)
        return
    with pytest.raises(UserError, match=needle):
        parse_freeze(text)


@pytest.mark.parametrize("text", ["bottom:7", "top:7"])
def test_more_blocks_than_the_model_has(text):
    with pytest.raises(UserError, match="more blocks than the model has"):
        parse_freeze(text).frozen_units(6)


@given(k=st.integers(0, 50), blocks=st.integers(0, 50))
def test_bottom_k_is_monotone_and_bounded(k, blocks):
    spec = parse_freeze(f"bottom:{k}")
    if k > blocks:
        with pytest.raises(UserError):
            spec.frozen_units(blocks)
    else:
        assert spec.frozen_units(blocks) == k + 1 <= blocks + 1


@given(st.text(max_size=30))
def test_parser_never_crashes_on_junk(text):
    try:
        spec = parse_freeze(text)
    except UserError as err:
        assert "\n" not in str(err)
    else:
        assert spec.text == text.strip()
