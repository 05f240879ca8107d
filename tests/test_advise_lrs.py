"""Learning-rate grids per strategy family: classification, scaling, parsing, refusals."""

from __future__ import annotations

import subprocess
import sys

import pytest

from freezetune.advise.lrs import FAMILIES, family_of, lrs_for, parse_lrs, size_factor
from freezetune.errors import UserError
from freezetune.study.spec import StudySpec


@pytest.mark.parametrize(
    ("strategy", "family"),
    [
        ("full", "full"),
        ("bottom:3", "full"),
        ("top:2+llrd:0.9", "full"),
        ("autofreeze", "full"),
        ("two-phase", "full"),
        ("gradual:stlr", "full"),
        ("progressive", "full"),
        ("head", "head"),
        ("lora", "lora"),
        ("bottom:2+lora:r=4", "lora"),
        ("bitfit", "lora"),
        ("full (student=3)", "student"),
        ("full (student=3, teacher=@full)", "student"),
        ("head (lr=0.001)", "head"),
        ("pattern:attention", "full"),
    ],
)
def test_strategies_are_classified_by_parsing(strategy: str, family: str) -> None:
    assert family_of(strategy) == family


def test_every_label_a_study_writes_is_classified() -> None:
    spec = StudySpec.from_dict(
        {"name": "s", "preset": "speed", "strategies": ["head"]}, preset_blocks=6
    )
    families = {run.strategy: family_of(run.strategy) for run in spec.grid()}
    assert families == {
        "full": "full",
        "bottom:3": "full",
        "autofreeze": "full",
        "lora": "lora",
        "full (student=3)": "student",
        "full (student=3, teacher=@full)": "student",
        "head": "head",
    }


def test_auto_gives_three_rates_per_family_and_one_gives_the_middle() -> None:
    for family, strategy in [("full", "bottom:3"), ("head", "head"), ("lora", "lora")]:
        grid = lrs_for(strategy, "auto")
        assert grid == FAMILIES[family].grid and len(grid) == 3
        assert lrs_for(strategy, "one") == (grid[1],)
    assert lrs_for("full", "auto") == (2e-5, 5e-5, 1e-4)
    assert lrs_for("head", "auto")[1] == 1e-3
    assert lrs_for("full (student=3)", "auto") == (4e-5, 1e-4, 2e-4)


def test_grids_shrink_for_wider_models() -> None:
    small, base, large = (lrs_for("full", "auto", d) for d in (384, 768, 1024))
    assert all(s > b > g for s, b, g in zip(small, base, large, strict=True))
    assert large == (1.5e-05, 3.8e-05, 7.5e-05)
    assert size_factor(8) == 4.0 and size_factor(100_000) == 0.25
    with pytest.raises(UserError, match="hidden size"):
        size_factor(0)


def test_a_list_applies_to_every_strategy_but_an_own_lr_wins() -> None:
    assert lrs_for("lora", "1e-4,3e-5") == (1e-4, 3e-5)
    assert lrs_for("head", (1e-3,), hidden_size=384) == (1e-3,)
    assert lrs_for("head (lr=0.002)", "auto") == (2e-3,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a learning rate"),
        ("fast", "'fast' is not a learning rate"),
        ("1e-4,,3e-5", "'' is not a learning rate"),
        ("1e-4;3e-5", "is not a learning rate"),
        ("0", "'0' is not a learning rate"),
        ("-1e-4", "is not a learning rate"),
        ("1.5", "is not a learning rate"),
        ("nan", "is not a learning rate"),
        ("inf", "is not a learning rate"),
        ("1e-4,1e-4", "twice"),
    ],
)
def test_bad_lr_lists_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        parse_lrs(text)
    assert "\n" not in str(err.value) and "auto, one" in str(err.value)


def test_unknown_strategies_are_refused_whatever_the_choice() -> None:
    with pytest.raises(UserError, match="strategy 'bottom:x'"):
        lrs_for("bottom:x", "1e-4")
    with pytest.raises(UserError, match="no rate"):
        parse_lrs([])


def test_the_advise_building_blocks_import_without_torch() -> None:
    code = (
        "import sys, freezetune.advise.lrs, freezetune.advise.halving, freezetune.advise.curves; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
