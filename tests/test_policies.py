"""Freezing schedules as pure decisions: exact values, monotonicity, AutoFreeze by hand."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freezetune.errors import UserError
from freezetune.freezing import parse_freeze
from freezetune.freezing.builtin import (
    AutoFreezeOptions,
    GradualOptions,
    ProgressiveOptions,
    TwoPhaseOptions,
)
from freezetune.freezing.policies import (
    AutoFreeze,
    GradientWatcher,
    Gradual,
    Progress,
    Progressive,
    Static,
    TwoPhase,
    linear_warmup_decay,
    make_policy,
    slanted_triangular,
)
from freezetune.freezing.registry import option_help, option_types


def at(step: int, total: int = 100, per_epoch: int = 10) -> Progress:
    return Progress(step, total, per_epoch)


def test_two_phase_trains_the_head_then_everything():
    p = TwoPhase(num_blocks=6, head_steps=10, scale=0.5, head_lr_factor=10)
    assert [p.frozen_units(at(s)) for s in (0, 9, 10, 99)] == [7, 7, 0, 0]
    assert p.lr_factor(7, at(0)) == pytest.approx(10 * linear_warmup_decay(0, 10, 0.1))
    assert p.lr_factor(3, at(10)) == pytest.approx(0.5 * linear_warmup_decay(0, 90, 0.1))
    assert TwoPhase(num_blocks=6, head_steps=10, unfreeze_to=3).frozen_units(at(50)) == 3


def test_gradual_thaws_one_unit_per_interval_from_the_top():
    g = Gradual(num_blocks=6, interval=10)
    assert [g.frozen_units(at(s)) for s in range(0, 100, 10)] == [7, 6, 5, 4, 3, 2, 1, 0, 0, 0]
    assert g.lr_factor(0, at(5)) is None
    assert Gradual(6, 10, stlr=True).lr_factor(0, at(10)) == pytest.approx(1.0)


def test_slanted_triangular_matches_ulmfit():
    # peak at cut = 10 steps, lr_max/ratio at both ends
    assert slanted_triangular(0, 100) == pytest.approx(1 / 32)
    assert slanted_triangular(10, 100) == pytest.approx(1.0)
    assert slanted_triangular(100, 100) == pytest.approx(1 / 32)


def test_freezeout_schedule_is_cubic_and_lrs_anneal_to_zero():
    p = Progressive(num_blocks=4)
    expected = [(0.8 + 0.2 * i / 4) ** 3 for i in range(5)]
    assert [p.stop_fraction(i) for i in range(5)] == pytest.approx(expected)
    frozen = [p.frozen_units(at(s)) for s in range(100)]
    assert frozen == sorted(frozen) and max(frozen) == 4  # top block + head never freeze
    assert frozen[51] == 0 and frozen[52] == 1  # t_0 = 0.512
    t0 = expected[0]
    assert p.lr_factor(0, at(0)) == pytest.approx(1 / t0)
    assert p.lr_factor(0, at(25)) == pytest.approx(
        (1 / t0) * 0.5 * (1 + math.cos(math.pi * 25 / (t0 * 100)))
    )
    assert p.lr_factor(0, at(60)) == 0.0
    assert p.lr_factor(5, at(60)) is None  # the head keeps the default schedule


def test_composer_linear_progressive_freezing():
    p = Progressive(num_blocks=4, mode="linear", freeze_start=0.5, freeze_level=1.0)
    assert [p.frozen_units(at(s)) for s in (0, 49, 50, 75, 99)] == [0, 0, 0, 2, 3]


def test_autofreeze_decisions_by_hand():
    a = AutoFreeze(num_blocks=4, interval=10)
    assert a.decide([10.0, 8.0, 6.0, 4.0]) == 0  # first decision only remembers
    # r = |prev - g| / prev = [0.1, 0.25, 0.5, 0.75]; median 0.375 -> first r >= is block 2
    assert a.decide([9.0, 6.0, 3.0, 1.0]) == 2
    assert a.frozen_units(at(0)) == 3  # embeddings freeze with the blocks
    # trainable blocks 2, 3: r = [0.0, 1.0] -> median 0.5 -> block 3 is the first still
    # changing, so blocks 0-2 freeze; block 3, the top one, keeps training
    assert a.decide([0.0, 0.0, 3.0, 0.0]) == 3


def test_autofreeze_is_monotone_and_never_freezes_the_top_block():
    a = AutoFreeze(num_blocks=4, interval=10)
    a.decide([1.0, 1.0, 1.0, 1.0])
    a.decide([1.0, 1.0, 0.1, 0.1])  # r = [0, 0, .9, .9] -> threshold .45 -> 2 frozen
    assert a.blocks_frozen == 2
    a.decide([1.0, 1.0, 0.1, 0.1])  # no change anywhere: r = 0 -> would say 0; stays 2
    assert a.blocks_frozen == 2


@given(st.lists(st.lists(st.floats(0.01, 100), min_size=5, max_size=5), min_size=2, max_size=8))
def test_autofreeze_property_monotone_bounded(history):
    a = AutoFreeze(num_blocks=5, interval=1)
    seen = []
    for norms in history:
        seen.append(a.decide(norms))
    assert seen == sorted(seen) and max(seen) <= 4


def test_autofreeze_state_round_trip_makes_the_same_decisions():
    history = [[5.0, 4.0, 3.0, 2.0], [4.0, 2.0, 1.0, 0.5], [4.0, 2.0, 0.9, 0.1], [4, 2, 1, 1]]
    whole = AutoFreeze(num_blocks=4, interval=10)
    decisions = [whole.decide(list(map(float, h))) for h in history]
    first = AutoFreeze(num_blocks=4, interval=10)
    for h in history[:2]:
        first.decide(list(map(float, h)))
    resumed = AutoFreeze(num_blocks=4, interval=10)
    resumed.load_state_dict(first.state_dict())
    assert [resumed.decide(list(map(float, h))) for h in history[2:]] == decisions[2:]


def test_make_policy_sizes_schedules_to_the_run():
    assert make_policy(parse_freeze("gradual"), 6, 100, 20, 0.1).interval == 20
    assert make_policy(parse_freeze("gradual:steps=7"), 6, 100, 20, 0.1).interval == 7
    assert make_policy(parse_freeze("two-phase:0.5"), 6, 100, 20, 0.1).head_steps == 10
    assert make_policy(parse_freeze("two-phase:to=2"), 6, 100, 20, 0.1).unfreeze_to == 3
    assert make_policy(parse_freeze("autofreeze:n=20"), 6, 100, 20, 0.1).interval == 5
    assert make_policy(parse_freeze("bottom:2"), 6, 100, 20, 0.1).frozen_units(at(0)) == 3
    with pytest.raises(UserError, match="leaves no steps"):
        make_policy(parse_freeze("two-phase:5"), 6, 100, 20, 0.1)
    with pytest.raises(UserError, match="mode must be"):
        make_policy(parse_freeze("progressive:cubic"), 6, 100, 20, 0.1)


def test_only_autofreeze_watches_gradients():
    # the loop keeps block gradient sums for GradientWatchers only (they cost memory)
    assert isinstance(AutoFreeze(num_blocks=4, interval=5), GradientWatcher)
    others = [Static(2), Gradual(4, 5), Progressive(4), TwoPhase(4, head_steps=5)]
    assert not any(isinstance(p, GradientWatcher) for p in others)


def test_the_options_dataclass_is_the_one_place_for_defaults():
    # the documented default head_scale=10 is what users got; the class agrees with it now
    two = make_policy(parse_freeze("two-phase"), 6, 100, 20, 0.1)
    assert two.head_lr_factor == TwoPhaseOptions().head_scale == 10.0
    assert TwoPhase(6, head_steps=5).head_lr_factor == 10.0
    assert list(option_types(TwoPhaseOptions)) == ["epochs", "steps", "to", "scale", "head_scale"]
    assert (
        option_help(AutoFreezeOptions)["p"] == "percentile of the change threshold (default 50.0)"
    )


def test_the_readme_table_states_the_dataclass_defaults():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    options = {
        "two-phase": TwoPhaseOptions,
        "gradual": GradualOptions,
        "progressive": ProgressiveOptions,
        "autofreeze": AutoFreezeOptions,
    }
    for name, kind in options.items():
        found = re.search(rf"`{name}\[:(.*?)\]`", readme)
        assert found, name
        for item in re.split(r",|\\\|", found.group(1)):
            key, _, value = item.partition("=")
            if value and value[0].isdigit():
                assert getattr(kind(), key) == float(value), (name, key)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("autofreeze:p=150", "--freeze autofreeze:p=150: p=150.0 must be in [0, 100]"),
        ("autofreeze:0", "n must be >= 1 decision intervals, got 0"),
        ("progressive:t0=0", "t0=0.0 must be in (0, 1]"),
        ("progressive:scale=cubc", "scale must be cubic or linear, got 'cubc'"),
        ("progressive:linear,level=2", "level=2.0 must be in [0, 1]"),
        ("two-phase:to=-1", "to=-1 must be >= 0"),
        ("two-phase:head_scale=0", "head_scale=0.0 must be > 0"),
        ("gradual:steps=0", "steps=0 must be >= 1"),
        ("gradual:epochs=-1", "epochs=-1.0 must be in (0, 1000000]"),
    ],
)
def test_bad_option_values_name_the_value_and_the_range(text, needle):
    with pytest.raises(UserError) as err:
        parse_freeze(text)
    assert needle in str(err.value)
