"""The contrast report over an image study and a text study, on fabricated stores: every
percentage, interval, wall-time ratio and verdict is checked against hand-chosen numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats

from freezetune.cli import main
from freezetune.errors import UserError
from freezetune.report.contrast import CLAIM, FILES, contrast
from freezetune.study.baseline import write_baselines
from freezetune.study.store import RunRow
from freezetune.testing import assert_one_line_error
from test_report import floors, write_study

# full fine-tuning scores the same at every seed here: scipy's t-test warns about that
pytestmark = pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")

TOTAL = 10_000
T2 = float(stats.t.ppf(0.975, 2))  # Student's t, 3 seeds
JOINT2 = float(stats.t.ppf(1 - 0.05 / 4, 2))  # Bonferroni-simultaneous over 2 strategies
IMAGE = ("fashion-mnist", "effnet-lite0")
TEXT = ("sst2", "minilm-l6")


def run(task_model, strategy, seed, value, wall, *, n_train, trainable, timeline=()):
    """A succeeded run as the store keeps it: ``trainable`` of TOTAL parameters train."""
    task, model = task_model
    freeze = strategy.split(" ")[0]
    config = {
        "model": {"name": model},
        "data": {"task": task, "max_train_samples": n_train, "max_eval_samples": 200},
        "optim": {"lr": 1e-4},
        "train": {"epochs": 1, "seed": seed},
        "freeze": freeze,
    }
    result = {"main_metric": "accuracy", "best": {"accuracy": value}, "wall_time_s": wall,
              "trainable_params": trainable, "total_params": TOTAL}  # fmt: skip
    return RunRow(f"{task}-{strategy}-{seed}-{n_train}", strategy, freeze, seed, 1e-4, n_train,
                  "succeeded", config=config, result=result, timeline=list(timeline))  # fmt: skip


def grid(task_model, n_train, full, walls, others, seeds=3):
    """Full fine-tuning scoring ``full`` in ``walls[seed]`` s, and each other strategy
    ``(trainable, pcts of full, walls)`` per seed."""
    rows = [run(task_model, "full", s, full, walls[s], n_train=n_train, trainable=TOTAL)
            for s in range(seeds)]  # fmt: skip
    for strategy, (trainable, pcts, times, *timeline) in others.items():
        rows += [run(task_model, strategy, s, full * pcts[s] / 100, times[s], n_train=n_train,
                     trainable=trainable, timeline=timeline) for s in range(seeds)]  # fmt: skip
    return rows


def study(folder: Path, rows: list[RunRow], baseline: float) -> Path:
    folder.mkdir(parents=True)
    write_study(folder, rows)
    write_baselines(folder, floors(rows, baseline, predicts="class '0'"))
    return folder


WALLS = [100.0, 100.0, 100.0]
IMAGES = [
    *grid(IMAGE, 500, 0.80, WALLS, {"bottom:5": (2000, [104, 105, 106], [50, 60, 70]),
                                    "head": (100, [90, 91, 92], [10, 10, 10])}),
    *grid(IMAGE, 2000, 0.85, WALLS, {"bottom:5": (2000, [98, 100, 102], [50, 50, 50]),
                                     "head": (100, [95, 96, 97], [20, 20, 20])}),
]  # fmt: skip
SCHEDULE = {"event": "freeze", "step": 5, "frozen_units": 3, "trainable_params": 5000}
TEXTS = grid(TEXT, 2000, 0.90, [40.0, 50.0, 60.0], {
    "bottom:2": (6000, [94, 95, 96], [20, 25, 30]),
    "bottom:4": (3000, [90, 91, 92], [12, 15, 18]),
    "autofreeze": (5000, [95, 95, 95], [40, 50, 60], SCHEDULE),
})  # fmt: skip


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    return study(tmp_path / "fashion", IMAGES, 0.10), study(tmp_path / "sst2", TEXTS, 0.51)


def point(side, strategy):
    return next(p for p in side.points if p.strategy == strategy)


def test_points_are_paired_by_seed_with_student_t_intervals(pair, tmp_path):
    found = contrast(pair, tmp_path / "out")
    small, large, text = found.sides
    assert (small.label, small.modality, small.train_size) == ("fashion-mnist / effnet-lite0",
                                                               "image", 500)  # fmt: skip
    assert large.train_size == 2000 and large.best is point(large, "bottom:5")
    assert (text.label, text.modality, text.train_size) == ("sst2 / minilm-l6", "text", 2000)
    full = small.points[0]
    assert (full.strategy, full.frozen, full.quality.mean, full.wall.mean) == ("full", 0, 100, 1)
    best = point(small, "bottom:5")
    assert best is small.best and best.frozen == pytest.approx(0.8) and best.quality.n == 3
    half = T2 / math.sqrt(3)  # std 1 (points of %) and 0.1 (wall ratio) over 3 seeds
    assert best.quality.mean == pytest.approx(105)
    assert (best.quality.low, best.quality.high) == pytest.approx((105 - half, 105 + half))
    wide = JOINT2 / math.sqrt(3)  # the side picks from 2 frozen strategies: Bonferroni
    assert (best.joint.low, best.joint.high) == pytest.approx((105 - wide, 105 + wide))
    assert best.joint.mean == best.quality.mean and full.joint == full.quality
    assert best.wall.mean == pytest.approx(0.6)
    assert (best.wall.low, best.wall.high) == pytest.approx((0.6 - 0.1 * half, 0.6 + 0.1 * half))
    assert point(small, "head").frozen == pytest.approx(0.99)
    assert [p.strategy for p in text.points] == ["full", "bottom:2", "autofreeze", "bottom:4"]
    assert point(text, "bottom:2").wall.mean == pytest.approx(0.5)  # 20/40, 25/50, 30/60
    schedule = point(text, "autofreeze")
    assert schedule.schedule and schedule.frozen == pytest.approx(0.5)
    assert (schedule.quality.low, schedule.quality.high) == pytest.approx((95, 95))


def test_each_side_gets_its_verdict_and_the_closing_line_weighs_them(pair, tmp_path):
    found = contrast(pair, tmp_path / "out")
    assert [s.verdict for s in found.sides] == ["helps", "costs nothing measurable", "hurts"]
    assert [s.best.strategy for s in found.sides if s.best] == ["bottom:5", "bottom:5", "bottom:2"]
    assert found.sides[0].sentence == (
        "Images (fashion-mnist / effnet-lite0, 500 training examples): the best frozen strategy, "
        "bottom:5 (80% of parameters frozen), reaches 105.0% of full fine-tuning (95% CI "
        "101.4-108.6, simultaneous over 2 frozen strategies; 3 seeds) in 0.60x its wall time: "
        "freezing helps here."
    )
    assert found.sides[2].sentence.endswith(
        "bottom:2 (40% of parameters frozen), reaches 95.0% of full fine-tuning (95% CI "
        "90.6-99.4, simultaneous over 3 frozen strategies; 3 seeds) in 0.50x its wall time: "
        "freezing hurts here."
    )
    assert found.claim == "cannot tell"
    assert found.closing == (
        f'On the claim "{CLAIM}": the data cannot tell (on images (fashion-mnist / effnet-lite0, '
        "2,000 training examples) freezing costs nothing measurable, where the folklore says it "
        "helps)."
    )
    assert found.sentence.endswith(found.closing)


def test_the_folklore_holds_or_not_as_the_data_says(tmp_path):
    small = [r for r in IMAGES if r.train_size == 500]
    texts = study(tmp_path / "sst2", TEXTS, 0.51)
    holds = contrast([study(tmp_path / "small", small, 0.10), texts], tmp_path / "a")
    assert holds.claim == "holds" and "the folklore holds here" in holds.closing
    helped = grid(TEXT, 2000, 0.90, WALLS, {"bottom:2": (6000, [103, 104, 105], WALLS)})
    against = contrast([tmp_path / "small", study(tmp_path / "t2", helped, 0.51)], tmp_path / "b")
    assert against.claim == "does not hold"
    assert against.closing.endswith(
        "does not hold here (freezing helps on text (sst2 / minilm-l6, 2,000 training examples))."
    )


def test_a_noisy_mean_does_not_hide_a_strategy_that_clearly_helps(tmp_path):
    # head has the higher mean (105 vs 104) but a CI across 100; bottom:3's lies above 100
    noisy = grid(IMAGE, 500, 0.80, WALLS, {"bottom:3": (9950, [103, 104, 105], [90, 90, 90]),
                                           "head": (100, [90, 100, 125], [10, 10, 10])})  # fmt: skip
    found = contrast(
        [study(tmp_path / "noisy", noisy, 0.10), study(tmp_path / "sst2", TEXTS, 0.51)],
        tmp_path / "out",
    )
    side = found.sides[0]
    assert side.verdict == "helps" and side.best is point(side, "bottom:3")
    head = point(side, "head").quality
    half = T2 * float(stats.tstd([90, 100, 125])) / math.sqrt(3)
    assert (head.mean, head.low, head.high) == pytest.approx((105, 105 - half, 105 + half))
    joint, wide = point(side, "head").joint, half * JOINT2 / T2  # simultaneous over 2
    assert (joint.low, joint.high) == pytest.approx((105 - wide, 105 + wide))
    assert side.sentence == (
        "Images (fashion-mnist / effnet-lite0, 500 training examples): the best frozen strategy, "
        "bottom:3 (0.5% of parameters frozen), reaches 104.0% of full fine-tuning (95% CI "
        "100.4-107.6, simultaneous over 2 frozen strategies; 3 seeds) in 0.90x its wall time: "
        "freezing helps here; the deepest freeze not measurably below full is head (99.0% of "
        "parameters frozen, 105.0%, 95% CI 40.4-169.6, simultaneous over 2 frozen strategies)."
    )


def test_a_side_whose_full_fine_tuning_does_not_beat_its_baseline_cannot_answer(tmp_path):
    flat = grid(IMAGE, 500, 0.10, WALLS, {"bottom:5": (2000, [104, 105, 106], WALLS)})
    found = contrast(
        [study(tmp_path / "flat", flat, 0.10), study(tmp_path / "sst2", TEXTS, 0.51)],
        tmp_path / "out",
    )
    side = found.sides[0]
    assert side.verdict == "no signal" and side.signal is not None and not side.signal.clear
    assert side.sentence == (
        "Images (fashion-mnist / effnet-lite0, 500 training examples): this side cannot "
        "answer: the trivial baseline (always predicting the majority class ('0')) scores 10.0 "
        "and full fine-tuning does not beat it (full fine-tuning: accuracy 10.0)."
    )
    assert found.claim == "cannot tell" and "no image study here can answer" in found.closing


def test_one_seed_gives_no_interval_and_no_verdict(tmp_path):
    one = grid(TEXT, 2000, 0.90, WALLS, {"bottom:2": (6000, [96], [20])}, seeds=1)
    found = contrast(
        [study(tmp_path / "small", IMAGES[:9], 0.10), study(tmp_path / "one", one, 0.51)],
        tmp_path / "out",
    )
    side = found.sides[1]
    assert side.verdict == "one seed" and side.best is not None
    assert math.isnan(side.best.quality.low) and side.best.quality.mean == pytest.approx(96)
    assert "reaches 96.0% of full fine-tuning with one seed: no CI can be given" in side.sentence
    assert found.claim == "cannot tell" and "no text study here can answer" in found.closing


def test_files_are_written_and_self_contained(pair, tmp_path):
    out = tmp_path / "out"
    found = contrast(pair, out)
    assert found.files == tuple(out / name for name in FILES)
    md = (out / "contrast.md").read_text()
    assert found.closing in md and "## Images: fashion-mnist / effnet-lite0 (study fashion)" in md
    assert ("| 500 | bottom:5 | 80.0% | 3 | 84.0 | 105.0% | [102.5, 107.5] | [101.4, 108.6] "
            "| 0.60x |") in md  # fmt: skip
    assert "| 2,000 | autofreeze | 50.0% (end) | 3 |" in md
    page = (out / "contrast.html").read_text()
    assert 'src="data:image/png;base64,' in page and "http" not in page and "<link" not in page
    assert (out / "contrast.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    numbers = json.loads((out / "contrast.json").read_text(), parse_constant=pytest.fail)
    assert numbers["verdict"] == "cannot tell" and len(numbers["sides"]) == 3
    assert numbers["sides"][0]["best"]["quality"]["mean"] == pytest.approx(105)


def test_bad_input_is_refused_naming_the_fix(pair, tmp_path):
    with pytest.raises(UserError, match="at least two study folders"):
        contrast(pair[:1], tmp_path / "out")
    with pytest.raises(UserError, match=r"is not a study folder \(no results\.sqlite\)"):
        contrast([pair[0], tmp_path], tmp_path / "out")
    nofull = study(tmp_path / "nofull", [r for r in TEXTS if r.freeze != "full"], 0.51)
    with pytest.raises(UserError, match=r"no succeeded full fine-tuning run.*add full"):
        contrast([pair[0], nofull], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def one_line_error(capsys, *argv: str) -> str:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert not captured.out, captured
    return assert_one_line_error(code, captured.err, alone=False)


def test_cli_writes_the_contrast_next_to_the_first_study(pair, tmp_path, capsys):
    assert main(["report", *map(str, pair)]) == 0
    out = tmp_path / "contrast-fashion-sst2"
    printed = capsys.readouterr().out
    assert all(str(out / name) in printed for name in FILES)
    assert "freezing helps here" in printed and CLAIM in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert not (pair[0] / "report.html").exists()  # the studies' own reports are left alone


def test_cli_refuses_a_non_empty_out_unless_overwrite(pair, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    error = one_line_error(capsys, "report", *map(str, pair), "--out", str(out))
    assert "already exists and is not empty; pass --overwrite" in error
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert main(["report", *map(str, pair), "--out", str(out), "--overwrite"]) == 0
    assert (out / "contrast.md").is_file() and (out / "notes.txt").read_text() == "keep"


def test_cli_refusals_exit_2_with_one_line_and_write_nothing(pair, tmp_path, capsys):
    out = tmp_path / "out"
    error = one_line_error(capsys, "report", str(pair[0]), str(tmp_path / "nowhere"),
                           "--out", str(out))  # fmt: skip
    assert "nowhere is not a study folder" in error and not out.exists()
    error = one_line_error(capsys, "report", str(pair[0]), "--out", str(out))
    assert "--out and --overwrite are for a contrast report" in error and not out.exists()
    assert not (pair[0] / "report.html").exists()
