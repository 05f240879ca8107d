"""Issue 25's rules for the report's verdicts, over fabricated rows with known values: verdicts
that pick from several strategies survive the picking (Holm-adjusted p, Bonferroni-simultaneous
intervals), "keeps >= 90%" holds for its interval, costs get the same care as accuracy (one
inference figure per model, winners only beyond the run-to-run noise), and an answer reads at
a glance (a headline, at most five bullets, tables that fit a laptop's window)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from pathlib import Path

import pytest
from scipy import stats

from freezetune.report import build_report, render_html, render_markdown, write_report
from freezetune.report.answer import BULLETS, answer_study
from freezetune.report.cells import MODEL, cost_cells, strategies_csv, table_cells
from freezetune.report.contrast import contrast
from freezetune.report.contrast_render import NOTE
from freezetune.report.html import method_note
from freezetune.report.stats import holm, least, simultaneous
from freezetune.report.tables import summarize
from freezetune.study.baseline import write_baselines
from test_contrast import IMAGES, TEXT, grid, study
from test_report import CHROMIUM, STUDY, chromium, floors, line, row, write_study
from test_report_speed import BASE, SPEED, measured, student

# full fine-tuning scores the same at every seed in some contrasts: scipy warns about that
pytestmark = pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")

FULL_PARAMS = 22_566_146
#: the default study as issue 13 measured it (RESULTS.md): 7 strategies against full, 3 seeds
DEFAULT = {
    "full": ([0.822, 0.829, 0.836], 34.4),
    "bottom:0": ([0.83, 0.84, 0.848], 31.6),
    "bottom:1": ([0.825, 0.831, 0.837], 28.4),
    "bottom:2": ([0.827, 0.834, 0.841], 23.4),
    "bottom:3": ([0.827, 0.83, 0.833], 19.6),
    "bottom:4": ([0.809, 0.815, 0.821], 14.3),
    "bottom:5": ([0.76, 0.775, 0.79], 9.9),
    "head (lr=0.001)": ([0.70, 0.73, 0.76], 5.8),
}


def at(r, units: int):
    """``r`` with ``units`` units frozen (embeddings = 1), as its result records them."""
    return dataclasses.replace(r, result={**(r.result or {}), "frozen_units": units})


def depth(strategy: str) -> int:
    """Units a static spec freezes in a 6-block model."""
    spec = strategy.split(" ")[0]
    fixed = {"full": 0, "embeddings": 1, "head": 7}
    return fixed[spec] if spec in fixed else int(spec.split(":")[1]) + 1


def default_study() -> list:
    """The default study's shape: every run's saved model timed, all of one architecture."""
    rows = []
    for strategy, (values, wall) in DEFAULT.items():
        for seed, value in enumerate(values):
            r = at(row(strategy, seed, value, wall + 0.5 * seed), depth(strategy))
            rows.append(measured(r, 405.0, 5.68, FULL_PARAMS))
    return rows


def said(answer) -> str:
    return " ".join(answer.sentences)


# ------------------------------------------------- verdicts that survive multiple comparisons


def test_holm_matches_the_textbook_step_down():
    # Holm (1979) on five p-values; statsmodels' multipletests(method="holm") gives the same
    found = holm([0.01, 0.02, 0.03, 0.04, 0.05])
    assert found == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])
    assert holm([0.04, None, 0.001]) == pytest.approx([0.04, None, 0.002])
    assert holm([0.9, 0.3]) == [0.9, 0.6] and holm([0.9, 0.8]) == [1.0, 1.0]  # order, cap
    assert holm([]) == []
    assert simultaneous(0.95, 7) == pytest.approx(1 - 0.05 / 7)


def test_indistinguishable_and_significantly_different_read_holm_adjusted_p():
    summary = summarize(default_study(), floors(default_study(), 0.513))
    b5 = line(summary, "bottom:5")
    raw = stats.ttest_ind([0.76, 0.775, 0.79], DEFAULT["full"][0], equal_var=False).pvalue
    assert b5.p_value == pytest.approx(raw) and raw < 0.05  # uncorrected: "different"
    family = [line(summary, s).p_value for s in DEFAULT if s != "full"]
    assert b5.p_adjusted == pytest.approx(holm(family)[5]) and b5.p_adjusted > 0.05
    (answer,) = answer_study(summary)
    assert answer.indistinguishable == tuple(s for s in DEFAULT if s != "full")  # all 7
    assert answer.headline.startswith(
        "7 of 7 strategies are indistinguishable from full fine-tuning (Welch p >= 0.05, "
        "Holm-adjusted)"
    )
    assert "Holm-adjusted over the 7 strategies compared with it" in said(answer)
    assert "bottom:5 (p = 0.090)" in said(answer)
    headers, cells, _ = table_cells(summary)
    rows = {c[0]: dict(zip(headers, c, strict=True)) for c in cells}
    assert (rows["bottom:5"]["p (Welch)"], rows["bottom:5"]["p (Holm)"]) == ("0.013", "0.090")
    records = {r["label"]: r for r in csv.DictReader(io.StringIO(strategies_csv(summary)))}
    assert float(records["bottom:5"]["p_holm"]) == pytest.approx(b5.p_adjusted)
    # a difference that survives the correction is still called one
    (clear,) = answer_study(summarize(STUDY))
    assert "significantly different (p < 0.05): bottom:4 (-5.0 points, p = 0.007)" in said(clear)


def test_the_contrast_verdict_survives_the_seven_strategies_it_picks_from(tmp_path):
    # issue 25: bottom:2 at 100.6% of full, paired 95% CI 100.2-100.9 on 3 seeds, 7 strategies
    others = {
        "bottom:0": (8000, [99.0, 100.0, 101.0], [90, 90, 90]),
        "bottom:1": (7000, [99.5, 100.0, 100.5], [80, 80, 80]),
        "bottom:2": (6000, [100.45, 100.6, 100.75], [70, 70, 70]),
        "bottom:3": (5000, [99.0, 100.0, 101.0], [60, 60, 60]),
        "bottom:4": (4000, [97.0, 98.3, 99.6], [50, 50, 50]),
        "bottom:5": (3000, [92.0, 93.4, 94.8], [40, 40, 40]),
        "head": (10, [85.0, 88.0, 91.0], [20, 20, 20]),
    }
    texts = grid(TEXT, 2000, 0.83, [100.0] * 3, others)
    small = [r for r in IMAGES if r.train_size == 500]
    found = contrast([study(tmp_path / "img", small, 0.10), study(tmp_path / "txt", texts, 0.51)],
                     tmp_path / "out")  # fmt: skip
    text = found.sides[-1]
    b2 = next(p for p in text.points if p.strategy == "bottom:2")
    assert b2.quality.low > 100  # uncorrected, this was "freezing helps on text"
    t = stats.t.ppf(1 - 0.05 / 14, 2)  # Bonferroni over 7, 3 seeds
    half = t * 0.15 / math.sqrt(3)
    assert (b2.joint.low, b2.joint.high) == pytest.approx((100.6 - half, 100.6 + half))
    assert text.verdict == "costs nothing measurable"
    assert "simultaneous over 7 frozen strategies" in text.sentence
    assert found.claim == "cannot tell" and "does not hold" not in found.closing
    assert "freezing costs nothing measurable, where the folklore says it hurts" in found.closing
    numbers = json.loads((tmp_path / "out" / "contrast.json").read_text())
    assert numbers["sides"][-1]["points"][3]["joint"]["low"] == pytest.approx(100.6 - half)


def test_the_method_notes_state_the_correction():
    note = method_note(summarize(default_study()))
    assert "p (Holm) the same p Holm-adjusted (step-down) over the strategies compared" in note
    assert (
        "'indistinguishable from' and 'significantly different from' full fine-tuning read" in note
    )
    assert "'keeps >= 90%' claim needs the lower end of its 95% CI above 90%" in note
    assert "named only when Welch's t-test on the seeds' wall times puts it below every" in note
    assert "only between different models" in note
    assert "Bonferroni-simultaneous 95% intervals (each at level 1 - 0.05/m" in NOTE
    assert "not corrected" not in NOTE


# ------------------------------------------------------- "keeps >= 90%" holds for its interval


def test_keeps_90_is_claimed_only_when_the_interval_clears_it():
    # a weak, noisy signal, as a new user would try it: bottom:1 keeps 96% by its point
    # estimate with an interval far below 90%; bottom:0 keeps ~100% with a tight interval
    rows = [
        *(row("full", s, v, 40.0) for s, v in enumerate([0.617, 0.62, 0.623])),
        *(at(row("bottom:0", s, v, 35.0), 1) for s, v in enumerate([0.619, 0.62, 0.621])),
        *(at(row("bottom:1", s, v, 30.0), 2) for s, v in enumerate([0.57, 0.615, 0.66])),
    ]  # fmt: skip
    summary = summarize(rows, floors(rows, 0.5))
    b1, b0 = line(summary, "bottom:1"), line(summary, "bottom:0")
    assert b1.gain == pytest.approx(0.115 / 0.12) and b1.gain_ci[0] < 0.9 < b1.gain
    assert b0.gain_ci[0] > 0.9
    (answer,) = answer_study(summary)
    assert answer.signal is True
    assert (answer.deepest, answer.deepest_point) == ("bottom:0", "bottom:1")
    low, high = b1.gain_ci
    assert (
        "By its point estimate, bottom:1 keeps >= 90% of full fine-tuning's accuracy gain over "
        f"the trivial baseline (95.8% of full's gain, 95% CI {low:.1%} to {high:.1%}), but the "
        "data cannot confirm it: its interval reaches below 90%. The deepest freeze whose 95% CI "
        "clears 90% is bottom:0 (embeddings frozen): "
    ) in answer.headline
    # without the confirmed one, the answer says that none clears it
    (alone,) = answer_study(summarize([r for r in rows if r.strategy != "bottom:0"],
                                      floors(rows, 0.5)))  # fmt: skip
    assert alone.deepest is None and alone.deepest_point == "bottom:1"
    assert alone.headline.endswith("its interval reaches below 90%. No freeze's 95% CI clears 90%.")


# ------------------------------------------------------------------ costs: the same care


def test_the_same_model_at_inference_shares_one_figure_and_wins_nothing():
    summary = summarize(BASE)  # every line: the whole model, 1000 examples/s +- 10 by seed
    lines = [x for x in summary.lines if x.n]
    assert all(x.inference.speed == pytest.approx(1000.0) for x in lines)
    assert all(len(x.inference.examples_per_s) == 12 for x in lines)
    assert all(x.inference_speedup == pytest.approx(1.0) for x in lines)
    assert line(summary, "bottom:2").same_model == ("full", "bottom:4", "head (lr=0.001)")
    headers, cells, _ = cost_cells(summary)
    assert {c[headers.index(MODEL)] for c in cells} == {"whole model (4 rows)"}
    assert {c[headers.index("inference examples/s")] for c in cells} == {"1,000.0"}
    (answer,) = answer_study(summary)
    assert answer.speed is not None and answer.speed.fastest_inference is None
    verdict = (
        "At inference, the strategies as accurate as the most accurate are one model (22,000,000 "
        "parameters; 1,000 examples/s, pooled over its 12 runs): no inference winner."
    )
    assert answer.speed.inference == verdict and verdict in answer.bullets
    records = {r["label"]: r for r in csv.DictReader(io.StringIO(strategies_csv(summary)))}
    assert records["bottom:4"]["model_at_inference"] == "whole model"
    assert records["bottom:4"]["same_model_as"] == "full; bottom:2; head (lr=0.001)"


def test_an_inference_winner_is_named_only_between_models_beyond_the_noise():
    close = [dataclasses.replace(r, result={**(r.result or {}), "inference": {
        **(r.inference or {}), "examples_per_s": 1005.0 + 10.0 * (r.seed - 1)}})
        for r in (student("full (distill.student_layers=3)", s, v, 50.0)
                  for s, v in enumerate([0.905, 0.91, 0.915]))]  # fmt: skip
    (answer,) = answer_study(summarize([*BASE, *close]))
    assert answer.speed is not None and answer.speed.fastest_inference is None
    assert answer.speed.inference.startswith(
        "Per inference second, no model is fastest beyond the run-to-run noise: "
        "full (distill.student_layers=3) (1,005/s) and full (1,000/s)."
    )
    (far,) = answer_study(summarize(SPEED))  # a 3-block student at 2,000/s: a winner
    assert far.speed is not None and far.speed.fastest_inference is not None


def test_a_training_time_winner_is_named_only_beyond_the_run_to_run_noise():
    noisy = [
        *(row("full", s, v, 100.0 + s) for s, v in enumerate([0.90, 0.91, 0.92])),
        *(row("bottom:2", s, v, w) for s, (v, w) in
          enumerate(zip([0.90, 0.915, 0.91], [50.0, 70.0, 60.0], strict=True))),
        *(at(row("bottom:3", s, v, w), 4) for s, (v, w) in
          enumerate(zip([0.905, 0.91, 0.915], [55.0, 68.0, 52.0], strict=True))),
    ]  # fmt: skip
    (answer,) = answer_study(summarize(noisy))
    assert answer.indistinguishable == ("bottom:2", "bottom:3") and answer.cheapest is None
    assert "cheapest" not in answer.headline
    assert (
        "No single cheapest to train without a measurable loss: bottom:3 (58.3 s) and bottom:2 "
        "(60.0 s) are within the run-to-run noise of each other."
    ) in answer.bullets
    walls = ((100.0, 101.0, 102.0), (50.0, 70.0, 60.0), (55.0, 68.0, 52.0))
    assert least(walls) == (2, [1])  # bottom:3 is not below bottom:2 beyond the noise
    assert least(((1.0,), (2.0,))) == (0, [1])  # one run each: the noise is unmeasured
    (clear,) = answer_study(summarize(STUDY))  # 60 s against 100-102 s: a winner
    assert clear.cheapest == "bottom:2" and "beyond the run-to-run noise" in " ".join(clear.bullets)


# ------------------------------------------------------------ an answer read at a glance


def fixtures():
    noisy = grid(TEXT, 2000, 0.83, [100.0] * 3, {"bottom:2": (6000, [99, 100, 101], [60] * 3)})
    return {
        "study": (STUDY, floors(STUDY, 0.5)),
        "speed": (SPEED, floors(SPEED, 0.5)),
        "default": (default_study(), floors(default_study(), 0.513)),
        "no signal": (SPEED, floors(SPEED, 0.905)),
        "unknown baseline": (noisy, None),
    }


@pytest.mark.parametrize("name", list(fixtures()))
def test_an_answer_is_a_headline_and_at_most_five_verdicts(name):
    rows, found = fixtures()[name]
    summary, answers, images = build_report(rows, found)
    for answer in answers:
        assert 1 <= len(answer.bullets) <= BULLETS, answer.bullets
        speed = answer.speed.sentences if answer.speed else ()
        assert all(b in (*answer.sentences, *speed) for b in answer.bullets)
        assert all(re.search(r"\d", b) for b in answer.bullets), "a verdict with its number"
        assert not set(answer.bullets) & set(answer.details)
        assert set(answer.sentences) <= {*answer.bullets, *answer.details} | {
            s for s in answer.sentences if s in answer.headline
        }
    page = render_html(name, summary, answers, images)
    box = page.split('<div class="answer">')[1].split("</div>")[0]
    assert box.count("<li>") == len(answers[0].bullets) <= BULLETS
    assert (
        page.index("<h2>Costs</h2>")
        < page.index("<h2>Method</h2>")
        < page.index("The answer in detail")
    )
    md = render_markdown(name, summary, answers, {})
    head = md.split("## Answer")[1].split("## Strategies")[0]
    assert head.count("\n- ") == len(answers[0].bullets)


def test_the_default_study_answer_reads_in_five_bullets():
    (answer,) = answer_study(summarize(default_study(), floors(default_study(), 0.513)))
    assert answer.cheapest == "bottom:3"  # not the head: it keeps 69% of the gain
    assert answer.deepest == "bottom:3" and answer.deepest_point == "bottom:4"
    assert [b.split(" ")[0] for b in answer.bullets] == [
        "Full", "Indistinguishable", "Cheapest", "At", "Yes,"
    ]  # fmt: skip
    assert answer.speed is not None and answer.speed.tied == (
        "bottom:0", "full", "bottom:1", "bottom:2", "bottom:3"
    )  # fmt: skip


PROBE = """<script>addEventListener("load", () => {
  const boxes = [...document.querySelectorAll(".scroll")];
  document.body.dataset.layout = JSON.stringify({
    page: document.documentElement.scrollWidth, window: innerWidth,
    tables: boxes.map(d => [d.firstElementChild.getBoundingClientRect().width, d.clientWidth])});
});</script>"""


def layout(tmp_path: Path, page: Path, width: int) -> dict:
    """The page's and each table container's widths in Chromium at ``width`` pixels."""
    probe = tmp_path / f"probe-{width}.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium(tmp_path, f"--window-size={width},900", "--virtual-time-budget=5000",
                   "--dump-dom", probe.as_uri()).stdout  # fmt: skip
    return json.loads(dom.split('data-layout="')[1].split('"')[0].replace("&quot;", '"'))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_tables_fit_a_laptop_window_in_chromium(tmp_path):
    folder = tmp_path / "wide"
    folder.mkdir()
    rows = [*default_study(), *SPEED[len(BASE) :]]  # every cost column: teachers, students
    write_study(folder, rows)
    write_baselines(folder, floors(rows, 0.513, predicts="class '0'"))
    write_report(folder)
    page = folder / "report.html"
    wide = layout(tmp_path, page, 1400)
    assert wide["page"] <= wide["window"], wide  # the page itself never runs off the right
    assert len(wide["tables"]) == 2  # strategies and costs, each in its container
    assert all(table <= box + 0.5 for table, box in wide["tables"]), wide
    narrow = layout(tmp_path, page, 700)  # a phone: the containers scroll, the page does not
    assert narrow["page"] <= narrow["window"], narrow


def test_a_freeze_significantly_better_than_full_can_be_the_cheapest():
    # the vision study at 500 images: freezing the body beats full fine-tuning beyond the noise
    # and trains in a third of the time; "without a measurable loss" includes it
    better = [
        *(row("full", s, v, 100.0 + s) for s, v in enumerate([0.67, 0.68, 0.69])),
        *(at(row("bottom:3", s, v, 30.0 + s), 4) for s, v in enumerate([0.75, 0.76, 0.755])),
    ]
    (answer,) = answer_study(summarize(better))
    assert answer.indistinguishable == () and answer.cheapest == "bottom:3"
    assert "Cheapest to train without a measurable loss: bottom:3" in " ".join(answer.bullets)
