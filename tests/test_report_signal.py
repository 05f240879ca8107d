"""The answer against the trivial baseline, over fabricated rows: it ranks only with signal, the
gain drives its thresholds, disagreements and rows below the baseline are said out loud."""

from __future__ import annotations

import csv
import io

import pytest

from freezetune.report.answer import answer_study
from freezetune.report.cells import BELOW, strategies_csv, table_cells
from freezetune.report.markdown import render_markdown
from freezetune.report.plots import _baselines, render_plots
from freezetune.report.tables import summarize
from test_report import STUDY, floors, line, row


def study(full, b2, b4, head, **kw):
    """full, bottom:2, bottom:4 and head (own lr), three seeds each, with these values."""
    return [
        *(row("full", s, v, 100.0, **kw) for s, v in enumerate(full)),
        *(row("bottom:2", s, v, 60.0, **kw) for s, v in enumerate(b2)),
        *(row("bottom:4", s, v, 40.0, **kw) for s, v in enumerate(b4)),
        *(row("head (lr=0.001)", s, v, 5.0, freeze="head", **kw) for s, v in enumerate(head)),
    ]


def text(answer):
    return " ".join(answer.sentences)


def test_clear_signal_ranks_with_the_gain():
    summary = summarize(STUDY, floors(STUDY, 0.10))
    (answer,) = answer_study(summary)
    assert answer.signal is True and answer.indistinguishable == ("bottom:2",)
    # bottom:4 keeps (0.86 - 0.10) / (0.91 - 0.10) = 93.8% of the gain, but its CI reaches 89.7%
    assert answer.deepest == "bottom:2" and answer.deepest_point == "bottom:4"
    b4 = line(summary, "bottom:4")
    assert b4.gain == pytest.approx(0.76 / 0.81) and b4.baseline == pytest.approx(0.10)
    assert b4.gain_ci[0] < 0.9 < b4.gain < b4.gain_ci[1] < 1.0
    assert line(summary, "bottom:2").gain_ci[0] > 0.9
    assert (
        "By its point estimate, bottom:4 keeps >= 90% of full fine-tuning's accuracy gain over "
        "the trivial baseline (93.8% of full's gain, 95% CI 89.7% to 98.1%), but the data cannot "
        "confirm it: its interval reaches below 90%. The deepest freeze whose 95% CI clears 90% "
        "is bottom:2 (embeddings + 2 of 6 blocks frozen): 99.8% of full's gain (95% CI 96.0% to "
        "103.7%), 99.8% of full, -0.2 points."
    ) in answer.headline
    assert "gains 81.0 points over it" in text(answer)
    assert answer.disagree == () and "disagree" not in text(answer)
    assert answer.below == ()


def test_full_within_noise_of_the_baseline_ranks_nothing_and_says_why():
    rows = study([0.824, 0.830, 0.836], [0.820, 0.825, 0.830], [0.815, 0.82, 0.825],
                 [0.805, 0.810, 0.815], metric="f1", task="mrpc")  # fmt: skip
    (answer,) = answer_study(summarize(rows, floors(rows, 0.812, metric="f1")))
    assert answer.signal is False
    assert (answer.indistinguishable, answer.cheapest, answer.deepest) == ((), None, None)
    assert answer.spearman is None
    assert answer.headline.startswith("This study cannot tell strategies apart: the trivial "
                                      "baseline (always predicting the majority class ('1'))")  # fmt: skip
    assert "95% CI clears it by only 0.3 points, under the 2.0 points required" in answer.headline
    said = text(answer)
    assert "more training data" in said and "more epochs" in said and "stronger model" in said
    assert "Strategies are ranked only when" in said
    assert "indistinguishable" not in said and "deepest" not in said and "Spearman" not in said
    assert answer.below == ("head (lr=0.001)",)
    assert "The strategy head (lr=0.001) scores below always predicting the majority" in said


def test_a_ci_that_reaches_the_baseline_is_no_signal_either():
    rows = study([0.80, 0.83, 0.86], [0.8, 0.82, 0.84], [0.8, 0.81, 0.82], [0.8, 0.8, 0.81])
    (answer,) = answer_study(summarize(rows, floors(rows, 0.812)))
    assert answer.signal is False and "95% CI reaches down to it" in answer.headline


def test_high_floor_both_readings_shown_the_gain_drives_the_answer():
    summary = summarize(STUDY, floors(STUDY, 0.70))  # full 0.91: only 21 points to keep
    (answer,) = answer_study(summary)
    assert answer.signal is True
    b4 = line(summary, "bottom:4")
    assert b4.relative == pytest.approx(0.86 / 0.91) and b4.gain == pytest.approx(0.16 / 0.21)
    # bottom:2 keeps 99% of the gain, but 21 points leave its CI wide; bottom:4: 94.5% raw, 76%
    assert answer.deepest is None and answer.deepest_point == "bottom:2"
    assert "No freeze's 95% CI clears 90%." in answer.headline
    assert set(answer.disagree) == {"bottom:4", "head (lr=0.001)"}
    said = [s for s in answer.sentences if "disagree" in s]
    assert len(said) == 1
    assert "bottom:4 (94.5% vs 76.2%)" in said[0] and "the 90% threshold uses the gain" in said[0]
    assert "by raw % the deepest freeze keeping 90% would be bottom:4" in said[0]
    headers, cells, _ = table_cells(summary)
    row_b4 = cells[[c[0] for c in cells].index("bottom:4")]
    assert row_b4[headers.index("% of full")] == "94.5%"
    assert row_b4[headers.index("% of full's gain")] == "76.2%"


def test_regression_against_the_constant_mean():
    rows = study([0.80, 0.82, 0.84], [0.79, 0.81, 0.83], [0.75, 0.76, 0.77], [-0.02, 0.0, -0.01],
                 metric="pearson", task="stsb")  # fmt: skip
    found = floors(rows, 0.0, metric="pearson", kind="mean", predicts="2.364", mse=2.25)
    summary = summarize(rows, found)
    (answer,) = answer_study(summary)
    assert summary.metric == "pearson" and answer.signal is True
    b4 = line(summary, "bottom:4")
    assert b4.gain == pytest.approx(b4.relative)  # a floor of 0: both readings agree
    assert answer.deepest_point == "bottom:4" and answer.disagree == ()
    assert answer.deepest == "bottom:2"  # bottom:4's 92.7% of the gain has a CI below 90%
    assert answer.below == ("head (lr=0.001)",)
    assert (
        "head (lr=0.001) scores below always predicting the mean (2.364): pearson -1.0 "
        "against 0.0." in text(answer)
    )
    assert summary.baselines[0].metrics == {"pearson": 0.0, "mse": 2.25}


def test_rows_below_the_baseline_are_called_out_everywhere():
    summary = summarize(STUDY, floors(STUDY, 0.75))
    (answer,) = answer_study(summary)
    assert answer.below == ("head (lr=0.001)",)
    assert ("The strategy head (lr=0.001) scores below always predicting the majority class "
            "('1'): accuracy 71.0 against 75.0.") in answer.sentences  # fmt: skip
    headers, cells, classes = table_cells(summary)
    assert cells[-1][0] == "head (lr=0.001)" + BELOW and classes[-1] == "below"
    assert cells[0][0].startswith("trivial baseline") and classes[:2] == ["baseline", "ref"]
    assert cells[-1][headers.index("% of full's gain")] == "-25.0%"
    records = list(csv.DictReader(io.StringIO(strategies_csv(summary))))
    assert records[0]["is_baseline"] == "True" and float(records[0]["mean"]) == 0.75
    assert records[-1]["below_baseline"] == "True"
    md = render_markdown("s", summary, [answer], {})
    assert "head (lr=0.001) (below baseline)" in md


def test_unknown_baseline_keeps_the_old_answer():
    (answer,) = answer_study(summarize(STUDY))
    assert answer.signal is None and answer.deepest == "bottom:4"  # raw: 94.5% of full
    assert "The trivial baseline is unknown" in text(answer)


def test_several_rows_below_the_baseline_are_listed_in_one_sentence():
    summary = summarize(STUDY, floors(STUDY, 0.88))
    (answer,) = answer_study(summary)
    assert answer.below == ("bottom:4", "head (lr=0.001)")
    assert ("The strategies bottom:4 and head (lr=0.001) score below always predicting the "
            "majority class ('1') (accuracy 88.0): bottom:4 86.0, head (lr=0.001) 71.0."
            ) in answer.sentences  # fmt: skip


def test_one_seed_ranks_but_says_its_noise_is_unknown():
    rows = [row("full", 0, 0.9, 10.0), row("bottom:2", 0, 0.88, 6.0), row("bottom:4", 0, 0.8, 4.0)]
    (answer,) = answer_study(summarize(rows, floors(rows, 0.5)))
    assert answer.signal is True and answer.deepest_point == "bottom:2"  # 95% of the gain
    assert answer.deepest is None  # with one seed, no interval confirms it
    assert "with one seed its noise is unknown" in text(answer)


def test_a_little_gain_is_said_to_be_little():
    rows = study([0.137, 0.14, 0.143], [0.13, 0.135, 0.14], [0.12, 0.125, 0.13], [0.0, 0.01, 0.02],
                 metric="mcc", task="cola")  # fmt: skip
    (answer,) = answer_study(summarize(rows, floors(rows, 0.0, metric="mcc")))
    assert answer.signal is True and "That is little to keep" in text(answer)


def test_each_context_has_its_baseline_and_the_plots_draw_it():
    rows = [
        *(row("full", s, 0.80 + s / 100, 10.0, n_train=500) for s in range(3)),
        *(row("bottom:2", s, 0.78 + s / 100, 6.0, n_train=500) for s in range(3)),
        *(row("full", s, 0.90 + s / 100, 40.0, n_train=2000) for s in range(3)),
        *(row("bottom:2", s, 0.89 + s / 100, 24.0, n_train=2000) for s in range(3)),
    ]
    summary = summarize(rows, floors(rows, 0.5))
    assert [b.label for b in summary.baselines] == ["trivial baseline n_train=500",
                                                    "trivial baseline n_train=2000"]  # fmt: skip
    assert [a.signal for a in answer_study(summary)] == [True, True]
    assert line(summary, "bottom:2 n_train=500").gain == pytest.approx(0.29 / 0.31)
    drawn = []

    class Axes:
        def axhline(self, y, **kw):
            drawn.append((y, kw["label"]))

    _baselines(Axes(), summary)
    assert drawn == [(50.0, "trivial baseline (majority class)")]  # the same floor: one line
    assert set(render_plots(summary)) == {"depth", "pareto", "curves"}


def test_the_issue_example_is_no_signal_and_the_head_is_called_out():
    # full 57.8 ± 1.3 over 3 seeds against a majority class of 52.7 (issue 16)
    rows = study([0.565, 0.578, 0.591], [0.56, 0.57, 0.58], [0.53, 0.54, 0.55],
                 [0.515, 0.52, 0.525])  # fmt: skip
    summary = summarize(rows, floors(rows, 0.527))
    (answer,) = answer_study(summary)
    assert answer.signal is False and answer.deepest is None
    assert "clears it by only 1.9 points, under the 2.5 points required" in answer.headline
    assert answer.below == ("head (lr=0.001)",)
    assert line(summary, "bottom:4").gain == pytest.approx((0.54 - 0.527) / (0.578 - 0.527))
