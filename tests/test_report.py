"""Reports: aggregation math, the answer, CSV/Markdown/HTML, and the page in a real browser.

All rows here are fabricated (known values), so every number the report prints can be checked;
so are the trivial baselines (:func:`floors`), except where a test computes them from data.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from scipy import stats

from freezetune.report import build_report, render_html, write_report
from freezetune.report.answer import answer_study
from freezetune.report.cells import results_csv
from freezetune.report.plots import plot_timeline
from freezetune.report.tables import mean_ci, pareto_front, summarize, welch_p
from freezetune.study.baseline import Baseline, baseline_key, write_baselines
from freezetune.study.spec import PlannedRun
from freezetune.study.store import RunRow, fail_run, finish_run, open_store, read_rows, start_run

BLOCKS = 6
UNITS = {"full": 0, "bottom:2": 3, "bottom:4": 5, "head": BLOCKS + 1}


def row(strategy, seed, value, wall, *, freeze=None, n_train=2000, lr=1e-4, timeline=None,
        metric="accuracy", task="sst2"):  # fmt: skip
    """A succeeded run as the store would return it."""
    freeze = freeze or strategy.split(" ")[0]
    config = {
        "model": {"name": "minilm-l6"},
        "data": {"task": task, "max_train_samples": n_train, "max_eval_samples": 500},
        "optim": {"lr": lr},
        "train": {"epochs": 2, "seed": seed, "bf16": True},
        "freeze": freeze,
    }
    result = {
        "main_metric": metric,
        "best": {metric: value, "step": 10},
        "final": {metric: value - 0.01, "step": 20},
        "frozen_units": UNITS.get(freeze, 2),
        "num_blocks": BLOCKS,
        "wall_time_s": wall,
        "train_examples": n_train,
        "peak_rss_mb": 800.0,
        "trainable_params": 1000 * (10 - UNITS.get(freeze, 2)),
        "total_params": 10_000,
        "git": "abc123",
        "machine": {"cpus": 2},
    }
    curve = [
        {"event": "eval", "step": 10, metric: value - 0.05, "train_time_s": wall / 2},
        {"event": "eval", "step": 20, metric: value, "train_time_s": wall},
    ]
    return RunRow(
        run_id=f"{strategy}-{seed}-{n_train}-{lr}",
        strategy=strategy,
        freeze=freeze,
        seed=seed,
        lr=lr,
        train_size=n_train,
        status="succeeded",
        config=config,
        result=result,
        timeline=timeline or [],
        curve=curve,
        git="abc123",
    )


def failed(strategy, seed, error="unknown --freeze part"):
    return RunRow(strategy + str(seed), strategy, strategy, seed, 1e-4, 2000, "failed",
                  config={"freeze": strategy}, error=error)  # fmt: skip


FULL = [0.90, 0.91, 0.92]
STUDY = [
    *(row("full", s, v, 100.0 + s) for s, v in enumerate(FULL)),
    *(row("bottom:2", s, v, 60.0) for s, v in enumerate([0.90, 0.915, 0.91])),
    *(row("bottom:4", s, v, 40.0) for s, v in enumerate([0.86, 0.87, 0.85])),
    *(row("head (lr=0.001)", s, v, 5.0, freeze="head") for s, v in enumerate([0.70, 0.72, 0.71])),
]


def line(summary, label):
    return next(x for x in summary.lines if x.label == label)


def floors(rows, value, *, metric="accuracy", kind="majority", predicts="class '1'", **more):
    """The same trivial baseline for the dev examples of every run in ``rows``."""
    found = Baseline("sst2", kind, predicts, 500, {metric: value, **more})
    return {baseline_key(r.config): found for r in rows if r.config.get("data")}


def test_mean_std_and_student_t_interval():
    mean, std, low, high = mean_ci([0.8, 0.9, 1.0])
    half = stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
    assert mean == pytest.approx(0.9) and std == pytest.approx(0.1)
    assert (low, high) == pytest.approx((0.9 - half, 0.9 + half))
    assert half == pytest.approx(0.2484, abs=1e-4)
    one = mean_ci([0.7])
    assert one[0] == 0.7 and all(math.isnan(x) for x in one[1:])


def test_welch_matches_scipy_and_handles_degenerate_samples():
    a, b = (0.90, 0.91, 0.92), (0.70, 0.72, 0.71)
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p((1.0,), b) is None
    assert welch_p((0.5, 0.5), (0.5, 0.5)) == 1.0 and welch_p((0.5, 0.5), (0.6, 0.6)) == 0.0


def test_pareto_front_keeps_only_undominated_points_by_cost():
    points = [(100.0, 0.91), (60.0, 0.91), (40.0, 0.86), (5.0, 0.71), (50.0, 0.80)]
    assert pareto_front(points) == [3, 2, 1]  # (100, .91) is beaten by (60, .91); (50, .80) too


def test_summary_compares_each_strategy_with_full_and_orders_by_frozen_units():
    summary = summarize(STUDY)
    assert summary.metric == "accuracy"
    assert [x.label for x in summary.lines] == ["full", "bottom:2", "bottom:4", "head (lr=0.001)"]
    full, b4, head = (
        line(summary, "full"),
        line(summary, "bottom:4"),
        line(summary, "head (lr=0.001)"),
    )
    assert full.reference == "full" and full.n == 3 and full.mean == pytest.approx(0.91)
    assert full.wall == pytest.approx(101.0)
    assert b4.diff == pytest.approx(0.86 - 0.91) and b4.relative == pytest.approx(0.86 / 0.91)
    assert b4.speedup == pytest.approx(101.0 / 40.0)
    assert b4.p_value == pytest.approx(welch_p((0.86, 0.87, 0.85), tuple(FULL)))
    assert head.frozen_units == BLOCKS + 1 and head.trainable_params == 3000
    assert not head.static_prefix and b4.static_prefix  # head has its own lr


def test_answer_names_indistinguishable_cheapest_deepest_and_trend():
    (answer,) = answer_study(summarize(STUDY))
    assert answer.indistinguishable == ("bottom:2",)
    assert answer.cheapest == "bottom:2"
    assert answer.deepest == "bottom:4"  # 94.5% of full; head keeps only 78%
    rho, p = answer.spearman or (0, 1)
    assert rho < 0 and p < 0.05
    text = " ".join(answer.sentences)
    assert "Welch's two-sided t-test" in text and "bottom:2 (p = " in text
    assert "drops as more blocks freeze" in text and "bottom:4" in text
    assert answer.headline.startswith("1 of 3 strategies are indistinguishable")


def test_one_seed_says_the_difference_cannot_be_tested():
    rows = [row("full", 0, 0.9, 10.0), row("bottom:2", 0, 0.88, 6.0), row("bottom:4", 0, 0.82, 4.0)]
    (answer,) = answer_study(summarize(rows))
    assert "can't be tested" in " ".join(answer.sentences)
    assert answer.indistinguishable == () and answer.deepest is None  # no interval: unconfirmed
    assert answer.deepest_point == "bottom:4" and answer.cheapest is None
    assert ("By its point estimate, bottom:4 keeps >= 90% of full fine-tuning's accuracy (91.1% "
            "of full), but the data cannot confirm it: with one seed there is no interval. No "
            "freeze's 95% CI clears 90%.") in answer.headline  # fmt: skip


def test_a_constant_metric_is_reported_as_such_not_as_a_trend():
    rows = [row(s, seed, 0.5, 10.0) for s in ("full", "bottom:2", "bottom:4") for seed in (0, 1)]
    (answer,) = answer_study(summarize(rows))
    assert answer.spearman is None and "Accuracy is the same at every depth (6 runs)." in (
        answer.sentences
    )
    assert answer.indistinguishable == ("bottom:2", "bottom:4")


def test_a_train_size_axis_gets_its_own_full_reference_and_answer():
    rows = [
        *(row("full", s, 0.80 + s / 100, 10.0, n_train=500) for s in range(2)),
        *(row("bottom:2", s, 0.78 + s / 100, 6.0, n_train=500) for s in range(2)),
        *(row("full", s, 0.90 + s / 100, 40.0, n_train=2000) for s in range(2)),
        *(row("bottom:2", s, 0.89 + s / 100, 24.0, n_train=2000) for s in range(2)),
    ]
    summary = summarize(rows)
    labels = [x.label for x in summary.lines]
    assert labels == ["full n_train=500", "bottom:2 n_train=500", "full n_train=2000",
                      "bottom:2 n_train=2000"]  # fmt: skip
    assert line(summary, "bottom:2 n_train=2000").reference == "full n_train=2000"
    assert line(summary, "bottom:2 n_train=500").diff == pytest.approx(-0.02)
    assert [a.context for a in answer_study(summary)] == ["n_train=500", "n_train=2000"]


def test_failed_runs_are_counted_with_their_message():
    summary = summarize([*STUDY, failed("autofreeze", 0), failed("autofreeze", 1)])
    bad = line(summary, "autofreeze")
    assert bad.n == 0 and bad.n_failed == 2 and bad.errors == ("unknown --freeze part",)
    assert summary.lines[-1] is bad  # unknown depth sorts last
    assert ("runs", "12 succeeded, 2 failed") in summary.facts


def test_results_csv_has_one_line_per_run():
    records = list(csv.DictReader(io.StringIO(results_csv([*STUDY, failed("lora", 0)]))))
    assert len(records) == len(STUDY) + 1
    assert records[0]["best"] == "0.9" and records[0]["wall_time_s"] == "100.0"
    assert records[-1]["status"] == "failed" and records[-1]["error"] == "unknown --freeze part"


def test_timeline_plot_only_for_strategies_whose_freezing_changes():
    assert plot_timeline(summarize(STUDY)) is None
    timeline = [
        {"event": "freeze", "step": 0, "frozen_units": 0, "trainable_params": 10},
        {"event": "freeze", "step": 8, "frozen_units": 3, "trainable_params": 6},
    ]
    png = plot_timeline(summarize([*STUDY, row("autofreeze", 0, 0.9, 50.0, timeline=timeline)]))
    assert png is not None and png.startswith(b"\x89PNG")


def test_html_escapes_every_string_and_fetches_nothing():
    evil = [*STUDY, failed("<script>alert(1)</script>", 0, error="bad <b>&</b>")]
    summary, answers, images = build_report(evil)
    page = render_html("x<y", summary, answers, images)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "bad &lt;b&gt;&amp;&lt;/b&gt;" in page and "x&lt;y" in page
    assert "http" not in page.replace("http-equiv", "") and "<link" not in page
    assert page.count('src="data:image/png;base64,') == len(images) == 3  # depth, pareto, curves


def write_study(folder: Path, rows: list[RunRow]) -> None:
    """Store fabricated rows through the store's own API."""
    conn = open_store(folder / "results.sqlite")
    for r in rows:
        start_run(conn, PlannedRun(r.run_id, r.strategy, r.freeze, r.seed, r.lr, r.train_size,
                                   r.config))  # fmt: skip
        if r.status == "succeeded":
            finish_run(conn, r.run_id, r.result or {}, r.timeline, r.curve)
        else:
            fail_run(conn, r.run_id, r.error or "")
    conn.close()


def _as_stored_before(r: RunRow) -> RunRow:
    """``r`` as an older freezetune stored it: the frozen-unit count was ``units_frozen``."""

    def old(record: dict) -> dict:
        return {("units_frozen" if k == "frozen_units" else k): v for k, v in record.items()}

    return dataclasses.replace(r, result=old(r.result or {}), timeline=list(map(old, r.timeline)))


def test_a_study_stored_under_the_old_name_reads_back_in_the_new_one(tmp_path):
    timeline = [
        {"event": "freeze", "step": 0, "frozen_units": 0, "trainable_params": 10},
        {"event": "freeze", "step": 8, "frozen_units": 3, "trainable_params": 6},
    ]
    rows = [*STUDY, row("autofreeze", 0, 0.9, 50.0, timeline=timeline)]
    write_study(tmp_path, [_as_stored_before(r) for r in rows])
    conn = open_store(tmp_path / "results.sqlite")
    try:
        raw = conn.execute("SELECT result, timeline FROM runs").fetchall()
        stored = read_rows(conn)
    finally:
        conn.close()
    assert all("units_frozen" in result and "frozen_units" not in result for result, _ in raw)
    assert [r.result for r in stored] == [r.result for r in rows]
    assert stored[-1].timeline == timeline
    units = [line.frozen_units for line in summarize(stored).lines]
    assert units == [line.frozen_units for line in summarize(rows).lines] and 3 in units


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    write_study(folder, [*STUDY, failed("lora", 0)])
    write_baselines(folder, floors(STUDY, 0.50, predicts="class '0'"))  # as the study wrote it
    written = write_report(folder)
    assert written.headline.startswith("1 of 3 strategies")
    return folder


def test_write_report_writes_every_file(report_dir):
    names = ("results.csv", "strategies.csv", "report.md", "report.html", "plots/depth.png",
             "plots/pareto.png", "baseline.json")  # fmt: skip
    for name in names:
        assert (report_dir / name).stat().st_size > 0, name
    md = (report_dir / "report.md").read_text()
    assert "- **train examples**: 2000" in md and "- **precision**: bf16" in md
    assert "| full | 0 | 3 | 91.0 ± 1.0 |" in md and "| bottom:4 | 5 | 3 | 86.0 ± 1.0 |" in md
    assert "## Failed runs" in md and "unknown --freeze part" in md
    # the baseline: a fact, a row above full, the gain column, the rule in the method note
    assert "- **trivial baseline**: always predicting the majority class ('0'): accuracy 50.0" in md
    assert "| trivial baseline: always predicting the majority class ('0') | — | — | 50.0 |" in md
    assert "| % of full's gain | gain 95% CI |" in md
    assert "| 94.5% | 87.8% | [" in md  # bottom:4: (86 - 50) / (91 - 50)
    assert "Strategies are ranked only when the lower end of full fine-tuning's 95% CI" in md
    html = (report_dir / "report.html").read_text()
    assert '<tr class="baseline">' in html and "% of full&#x27;s gain" in html


CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
PROBE = """<script>addEventListener("load", () => { document.body.dataset.widths =
  [...document.images].map(i => i.complete ? i.naturalWidth : -1).join(","); });</script>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM or "chromium", *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_a_headless_browser(report_dir, tmp_path):
    import numpy as np
    from matplotlib.image import imread

    page = report_dir / "report.html"
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,3000", page.as_uri())
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    assert (pixels.min(axis=2) < 0.9).mean() > 0.02  # text, tables and plots: not a blank page

    probe = tmp_path / "probe.html"  # the same page plus a script that reports image sizes
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()).stdout
    assert dom.count('src="data:image/png;base64,') == 3
    widths = dom.split('data-widths="')[1].split('"')[0].split(",")
    assert len(widths) == 3 and all(int(w) > 0 for w in widths), widths
    assert np.isfinite(pixels).all()
