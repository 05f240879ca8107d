"""The report's inference and distillation parts, over fabricated rows with known values: the
table's cost columns, the accuracy-vs-inference-speed plot, and the speed answer's sentences
(best accuracy per training and per inference second, the Pareto front, distillation against
the same student without a teacher), including studies that lack the data for some of them."""

from __future__ import annotations

import csv
import dataclasses
import io

import pytest
from scipy import stats

from freezetune.report import build_report, render_html, write_report
from freezetune.report.answer import answer_study
from freezetune.report.cells import (
    INFERENCE,
    MODEL,
    TEACHER,
    cost_cells,
    results_csv,
    strategies_csv,
)
from freezetune.report.costs import Student, student_of
from freezetune.report.distillation import distillation
from freezetune.report.markdown import render_markdown
from freezetune.report.plots import plot_inference, render_plots
from freezetune.report.speed import _train_clause, compare_distilled, speed_answer
from freezetune.report.stats import welch_ci
from freezetune.report.tables import summarize
from freezetune.study.store import open_store, read_rows
from test_report import STUDY, floors, line, row, write_study

PLAIN = "full (distill.student_layers=3)"
TAUGHT = "full (distill.teacher=@full, distill.student_layers=3)"
BIG, SMALL = 22_000_000, 15_000_000


def measured(r, speed, p50, params, *, threads=2):
    """``r`` with an inference block (speed + 10 per seed, so seeds differ a little)."""
    block = {
        "examples_per_s": speed + 10.0 * (r.seed - 1), "latency_ms_p50": p50,
        "latency_ms_p90": 1.5 * p50, "batch_size": 128, "examples": 500, "latency_samples": 100,
        "params": params, "disk_mb": params * 4 / 2**20, "threads": threads, "bf16": True,
        "device": "cpu", "seconds": 3.0,
    }  # fmt: skip
    return dataclasses.replace(r, result={**(r.result or {}), "inference": block})


def student(strategy, seed, value, wall, *, teacher=False, layers=3):
    """A 3-block student (freeze full), with a per-seed teacher folder when taught."""
    r = row(strategy, seed, value, wall, freeze="full")
    distill = {"teacher": f"runs/s/full-{seed}" if teacher else None, "student_layers": layers,
               "student_pick": "even", "temperature": 2.0, "alpha": 0.5}  # fmt: skip
    result = {**(r.result or {}), "frozen_units": 0, "num_blocks": layers}
    if teacher:
        result["distill"] = {"teacher": distill["teacher"], "teacher_wall_time_s": 100.0 + seed,
                             "logits_time_s": 3.0}  # fmt: skip
    r = dataclasses.replace(r, config={**r.config, "distill": distill}, result=result)
    return measured(r, 2000.0, 5.0, SMALL)


BASE = [measured(r, 1000.0, 10.0, BIG) for r in STUDY]
PLAIN_ROWS = [student(PLAIN, s, v, 50.0) for s, v in enumerate([0.86, 0.87, 0.865])]
TAUGHT_ROWS = [student(TAUGHT, s, v, 55.0, teacher=True) for s, v in enumerate([0.89, 0.9, 0.895])]
SPEED = [*BASE, *PLAIN_ROWS, *TAUGHT_ROWS]


def said(answer):
    assert answer.speed is not None
    return " ".join(answer.speed.sentences)


def test_students_are_read_from_the_distill_section_and_old_configs_are_plain():
    assert student_of({"model": {"name": "m"}}) == Student("m", None, None, False)
    assert student_of(TAUGHT_ROWS[0].config) == Student("minilm-l6", 3, "even", True)
    assert student_of(PLAIN_ROWS[0].config).twin == student_of(TAUGHT_ROWS[0].config).twin


def test_lines_carry_inference_cost_and_teacher_time():
    summary = summarize(SPEED)
    taught, plain, full = line(summary, TAUGHT), line(summary, PLAIN), line(summary, "full")
    assert taught.n == 3  # per-seed teacher folders do not split the line
    assert full.is_full and not taught.is_full and not plain.is_full
    assert taught.reference == plain.reference == "full"  # the whole model is the reference
    assert not taught.static_prefix
    assert full.cost.speed == pytest.approx(1000.0) and taught.cost.speed == pytest.approx(2000.0)
    assert taught.inference_speedup == pytest.approx(2.0) and full.inference_speedup == 1.0
    assert taught.cost.wall_with_teacher == pytest.approx(55.0 + 101.0)
    assert plain.cost.walls_with_teacher == () and full.cost.params == BIG
    assert taught.cost.latency == pytest.approx(5.0) and taught.cost.latency_tail == 7.5


def test_costs_table_shows_cost_columns_next_to_the_wall_time():
    summary = summarize(SPEED)
    headers, cells, _ = cost_cells(summary)
    at = headers.index("wall time s")
    assert headers[at + 1 : at + 3] == [TEACHER, "speedup"]
    assert headers[-5:] == [MODEL, *INFERENCE]
    rows = {c[0]: dict(zip(headers, c, strict=True)) for c in cells}
    assert rows[TAUGHT][TEACHER] == "156.0" and rows["full"][TEACHER] == "—"
    assert rows[TAUGHT]["inference examples/s"] == "2,000.0"
    assert rows[TAUGHT][MODEL] == rows[PLAIN][MODEL] == "3-block student (2 rows)"
    assert rows["full"][MODEL] == rows["bottom:4"][MODEL] == "whole model (4 rows)"
    assert rows[TAUGHT]["inference speedup"] == "2.00x" and rows["full"]["params"] == "22,000,000"
    assert rows[TAUGHT]["latency p50 ms (batch 1)"] == "5.00"


def test_rows_without_inference_show_a_dash_and_old_studies_keep_their_columns():
    mixed = [*BASE[:3], *STUDY[3:]]  # only full measured its inference
    headers, cells, _ = cost_cells(summarize(mixed))
    rows = {c[0]: dict(zip(headers, c, strict=True)) for c in cells}
    assert rows["bottom:4"]["inference examples/s"] == "—" and rows["bottom:4"][MODEL] == "—"
    assert rows["bottom:4"]["inference speedup"] == "—" and rows["bottom:4"]["params"] == "—"
    assert rows["full"][MODEL] == "whole model" and TEACHER not in headers
    old, _, _ = cost_cells(summarize(STUDY))
    assert not {MODEL, *INFERENCE} & set(old) and TEACHER not in old
    (answer,) = answer_study(summarize(STUDY))
    assert answer.speed is None and plot_inference(summarize(STUDY)) is None


def test_speed_answer_names_the_fastest_of_the_strategies_tied_with_the_best():
    summary = summarize(SPEED)
    (answer,) = answer_study(summary)
    speed = answer.speed
    assert speed is not None and speed.best == "full"
    assert speed.tied == ("full", TAUGHT, "bottom:2")  # the plain student and bottom:4 are below
    assert speed.fastest_train == "bottom:2"  # the taught student's 55 s is 156 s with its teacher
    assert speed.fastest_inference == TAUGHT
    assert speed.front == ("full", TAUGHT)  # by the means: bottom:2 is as fast, less accurate
    text = said(answer)
    assert "not significantly below that of the most accurate, full (91.0; Welch's" in text
    assert (
        "Per training second (a distilled student's time counting its teacher's): bottom:2, "
        "60.0 s per run (1.68x faster than full fine-tuning's 101.0 s), beyond the run-to-run "
        "noise."
    ) in text
    assert f"Per inference second: {TAUGHT}, 2,000 examples/s (2.00x full)" in text
    assert (
        "batch-1 latency p50 5 ms, 15,000,000 parameters, faster than every other model here "
        "beyond the run-to-run noise."
    ) in text
    assert answer.speed.inference in answer.bullets  # a verdict with its number
    assert "2 threads, batch 128, bf16, cpu" in text and "not absolute claims" in text
    assert "different settings" not in text


def test_distillation_is_compared_with_the_same_student_without_a_teacher():
    summary = summarize(SPEED)
    (answer,) = answer_study(summary)
    assert answer.speed is not None
    (c,) = answer.speed.comparisons
    a, b = line(summary, TAUGHT).values, line(summary, PLAIN).values
    assert (c.distilled, c.plain, c.verdict) == (TAUGHT, PLAIN, "helped")
    assert c.diff == pytest.approx(0.03)
    assert c.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert c.ci == pytest.approx((interval.low, interval.high))
    text = said(answer)
    assert (
        "Distillation against the same student without a teacher (the 3-block student of "
        "minilm-l6 (evenly spaced blocks kept), freeze full): accuracy 89.5 ± 0.5 (3 seeds) "
        "against 86.5 ± 0.5 (3 seeds), +3.0 points (95% CI " in text
    )
    assert "+3.0 points (95% CI " in text and "distillation helped, significantly." in text
    assert "trained in 55.0 s, 156.0 s counting its teacher's training; without a teacher, " in text


def test_distillation_that_hurts_or_ties_is_said_so():
    worse = [student(TAUGHT, s, v, 55.0, teacher=True) for s, v in enumerate([0.8, 0.81, 0.805])]
    hurt = compare_distilled(line(s := summarize([*BASE, *PLAIN_ROWS, *worse]), TAUGHT),
                             line(s, PLAIN))  # fmt: skip
    assert hurt.verdict == "hurt" and hurt.diff < 0 and hurt.ci[1] < 0
    same = [student(TAUGHT, s, v, 55.0, teacher=True) for s, v in enumerate([0.865, 0.86, 0.87])]
    (answer,) = answer_study(summarize([*BASE, *PLAIN_ROWS, *same]))
    assert answer.speed is not None and answer.speed.comparisons[0].verdict == (
        "no significant difference"
    )
    assert "no significant difference either way" in said(answer)


def test_no_comparison_without_the_undistilled_twin_or_without_a_teacher():
    (answer,) = answer_study(summarize([*BASE, *TAUGHT_ROWS]))
    assert answer.speed is not None and answer.speed.comparisons == ()
    assert "No run of this study fine-tunes the 3-block student of minilm-l6" in said(answer)
    assert "is not measured" in said(answer)
    deeper = [student(PLAIN, s, v, 50.0, layers=4) for s, v in enumerate([0.86, 0.87, 0.865])]
    (answer,) = answer_study(summarize([*BASE, *deeper, *TAUGHT_ROWS]))  # a 4-block twin: no
    assert answer.speed is not None and answer.speed.comparisons == ()
    (answer,) = answer_study(summarize([*BASE, *PLAIN_ROWS]))  # nobody distilled
    assert answer.speed is not None and answer.speed.comparisons == ()
    assert "Distillation" not in said(answer) and "distilled" not in said(answer)


def test_without_signal_or_seeds_no_strategy_is_named_best_per_second():
    summary = summarize(SPEED, floors(SPEED, 0.905))  # full 91.0 barely clears 90.5
    (answer,) = answer_study(summary)
    assert answer.signal is False and answer.speed is not None
    assert answer.speed.fastest_train is None and answer.speed.front == ()
    assert "cannot tell the strategies' accuracy apart" in said(answer)
    assert "by speed alone, the fastest to train is head (lr=0.001)" in said(answer)
    one = [r for r in SPEED if r.seed == 0]
    (answer,) = answer_study(summarize(one))
    assert answer.speed is not None and answer.speed.tied == ()
    assert "can't be tested with one seed per strategy; by speed alone" in said(answer)
    assert answer.speed.fastest_train is None and answer.speed.front == ()


def test_different_measurement_settings_are_flagged():
    rows = [*BASE[:3], *(measured(r, 900.0, 9.0, BIG, threads=1) for r in STUDY[3:])]
    (answer,) = answer_study(summarize(rows))
    assert "different settings, so their speeds do not compare cleanly" in said(answer)
    facts = dict(summarize(rows).facts)
    assert (
        facts["inference measured with"] == "2 threads, batch 128, bf16, cpu, 1 threads, "
        "batch 128, bf16, cpu"
    )


def test_speed_answer_needs_inference_or_a_teacher():
    assert speed_answer(list(summarize(STUDY).lines), "accuracy", True) is None


def test_inference_plot_and_reports_show_it():
    summary, answers, images = build_report(SPEED)
    assert set(images) == {"depth", "pareto", "inference", "curves"}
    assert images["inference"].startswith(b"\x89PNG")
    page = render_html("speed", summary, answers, images)
    assert "Training and inference cost" in page and "inference examples/s" in page
    assert "Inference is measured on each run&#x27;s saved model" in page
    md = render_markdown("speed", summary, answers, {"inference": "plots/inference.png"})
    assert "*Training and inference cost*" in md and "![Metric vs the saved model" in md
    assert "Wall time incl. teacher = a distilled student's wall time + its teacher's" in md


def test_csvs_carry_inference_and_teacher_numbers():
    records = list(csv.DictReader(io.StringIO(results_csv(SPEED))))
    taught = [r for r in records if r["strategy"] == TAUGHT]
    assert taught[0]["inference_examples_per_s"] == "1990.0" and taught[0]["student_layers"] == "3"
    assert taught[1]["wall_time_incl_teacher_s"] == "156.0"
    assert taught[0]["teacher"] == "runs/s/full-0" and records[0]["teacher"] == ""
    lines = {r["label"]: r for r in csv.DictReader(io.StringIO(strategies_csv(summarize(SPEED))))}
    assert float(lines[TAUGHT]["inference_speedup"]) == pytest.approx(2.0)
    assert lines[TAUGHT]["distilled"] == "True" and lines["full"]["distilled"] == "False"


def test_welch_interval_matches_scipy_and_handles_few_seeds():
    a, b = (0.89, 0.90, 0.895), (0.86, 0.87, 0.865)
    diff, low, high = welch_ci(a, b)
    interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(0.03) and (low, high) == pytest.approx(interval)
    one = welch_ci((0.9,), b)
    assert one[0] == pytest.approx(0.9 - 0.865) and all(x != x for x in one[1:])


def test_the_store_keeps_inference_and_distill_in_the_result_blob(tmp_path):
    old = dataclasses.replace(STUDY[6], run_id="old-bottom:4", seed=3)  # from before inference
    write_study(tmp_path, [*SPEED, old])
    conn = open_store(tmp_path / "results.sqlite")
    rows = read_rows(conn)
    conn.close()
    taught = next(r for r in rows if r.strategy == TAUGHT)
    assert taught.inference is not None and taught.inference["params"] == SMALL
    assert taught.distill is not None and taught.distill["teacher_wall_time_s"] == 100.0
    assert rows[-1].inference is None and rows[-1].distill is None
    written = write_report(tmp_path)
    assert (tmp_path / "plots" / "inference.png").stat().st_size > 0
    assert "Training and inference cost" in (tmp_path / "report.md").read_text()
    assert written.headline
    assert render_plots(summarize(rows))["inference"].startswith(b"\x89PNG")


def test_a_lone_eligible_strategy_is_not_said_to_beat_the_noise():
    full = line(summarize(SPEED), "full")
    clause, winner = _train_clause([full], full)
    assert winner is full and clause.endswith("the only one eligible")
    assert "noise" not in clause


def test_two_distilled_lines_of_one_student_each_say_which_they_are():
    pkd = "full (distill.teacher=@full, distill.student_layers=3, objective=pkd)"
    rows = [student(pkd, s, v, 60.0, teacher=True) for s, v in enumerate([0.88, 0.89, 0.885])]
    said, verdicts, found = distillation(list(summarize([*SPEED, *rows]).lines), "accuracy")
    assert len(found) == len(
        verdicts
    ) == 2 and f"The distilled student ({pkd}) trained" in " ".join(said)
    assert {v.partition(" against")[0] for v in verdicts} == {
        f"Distillation ({TAUGHT})",
        f"Distillation ({pkd})",
    }
    alone, _, _ = distillation(list(summarize(SPEED).lines), "accuracy")
    assert alone[0].startswith("Distillation against the same student")  # one: no name
