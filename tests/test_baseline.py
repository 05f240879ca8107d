"""The trivial baseline (a constant prediction on the runs' own dev examples), where it is kept,
Fieller's interval and the signal rule; and a damaged results file as one clear error."""

from __future__ import annotations

import json
import math
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from freezetune import cli
from freezetune.errors import UserError
from freezetune.metrics import compute_metrics
from freezetune.report import write_report
from freezetune.report.rules import HELP, MARGIN, signal
from freezetune.report.stats import ratio_ci
from freezetune.study import runner
from freezetune.study.baseline import (
    BASELINE_FILE,
    baseline_key,
    compute_baseline,
    ensure_baselines,
    read_baselines,
    trivial_baseline,
)
from freezetune.study.spec import StudySpec
from freezetune.study.store import open_store, read_rows
from freezetune.tasks import GLUE_TASKS, TaskInfo, load_task
from freezetune.testing import assert_one_line_error


def test_majority_class_scores_as_the_metric_code_scores_it():
    mrpc = GLUE_TASKS["mrpc"].task
    labels = np.array([1, 1, 0, 1, 0, 1])
    found = trivial_baseline(mrpc, labels)
    assert found.kind == "majority" and found.predicts == "class '1'" and found.examples == 6
    assert found.metrics == compute_metrics(mrpc, np.ones(6, dtype=int), labels)
    assert found.metrics["accuracy"] == pytest.approx(4 / 6)
    assert found.describe == "always predicting the majority class ('1')"
    cola = GLUE_TASKS["cola"].task
    assert trivial_baseline(cola, np.array([0, 0, 1])).metrics == {"mcc": 0.0}
    tie = trivial_baseline(GLUE_TASKS["sst2"].task, np.array([1, 0, 1, 0]))
    assert tie.predicts == "class '0'"  # a tie goes to the first class


def test_regression_baseline_is_the_constant_mean():
    stsb = GLUE_TASKS["stsb"].task
    labels = np.array([0.0, 1.0, 4.0, 5.0])
    found = trivial_baseline(stsb, labels)
    assert found.kind == "mean" and found.predicts == "2.5"
    assert found.metrics == {"pearson": 0.0, "spearman": 0.0, "mse": pytest.approx(4.25)}
    assert found.describe == "always predicting the mean (2.5)"


def test_the_key_follows_the_dev_examples():
    base = {"data": {"task": "sst2", "max_eval_samples": None}, "train": {"seed": 0}}
    other_seed = {**base, "train": {"seed": 1}}
    assert baseline_key(base) == baseline_key(other_seed)  # the whole split: seed-free
    sub = {"data": {"task": "sst2", "max_eval_samples": 500}, "train": {"seed": 0}}
    sub1 = {**sub, "train": {"seed": 1}}
    assert baseline_key(sub) != baseline_key(sub1) != baseline_key(base)
    more_train = {"data": {**sub["data"], "max_train_samples": 9}, "train": {"seed": 0}}
    assert baseline_key(more_train) == baseline_key(sub)  # the train subset is not dev data
    assert baseline_key({"freeze": "full"}) is None


def own_files(folder: Path, n_dev: int = 40) -> dict:
    """A tiny own-file task (CSV) and the data section of a config that reads it."""
    rng = random.Random(0)
    for name, n in (("train.csv", 30), ("dev.csv", n_dev)):
        lines = ["text,label", *(f"text {i},{rng.choice('aab')}" for i in range(n))]
        (folder / name).write_text("\n".join(lines) + "\n")
    data = {"task": None, "train_file": str(folder / "train.csv"), "label_column": "label",
            "validation_file": str(folder / "dev.csv"), "max_eval_samples": 15}  # fmt: skip
    return data


def test_computed_on_the_same_subset_the_runs_score(tmp_path):
    data = own_files(tmp_path)
    for seed in (0, 1):
        found = compute_baseline({"data": data, "train": {"seed": seed}})
        loaded = load_task(None, train_file=data["train_file"], label_column="label",
                           validation_file=data["validation_file"], max_eval_samples=15,
                           seed=seed)  # fmt: skip
        labels = np.array([ex.label for ex in loaded.validation])
        majority = int(np.bincount(labels).argmax())
        assert found.examples == 15
        assert found.metrics == compute_metrics(loaded.task, np.full(15, majority), labels)


def test_ensure_computes_once_stores_atomically_and_skips_missing_data(tmp_path, monkeypatch):
    data = own_files(tmp_path)
    configs = [{"data": data, "train": {"seed": s}} for s in (0, 0, 1)]
    missing = {"data": {**data, "validation_file": str(tmp_path / "nope.csv")}, "train": {}}
    found = ensure_baselines(tmp_path, [*configs, missing])
    assert len(found) == 2 and baseline_key(missing) not in found
    assert read_baselines(tmp_path) == found
    assert not list(tmp_path.glob(".baseline.json.*"))  # no temp file left behind

    def boom(config):
        raise AssertionError("recomputed a stored baseline")

    monkeypatch.setattr("freezetune.study.baseline.compute_baseline", boom)
    assert ensure_baselines(tmp_path, configs) == found
    (tmp_path / BASELINE_FILE).write_text("{not json")
    assert read_baselines(tmp_path) == {}


def test_the_study_stores_the_baseline_before_its_runs(tmp_path, monkeypatch):
    data = own_files(tmp_path)
    spec = StudySpec.from_dict({"name": "b", "base": {"data": data}, "strategies": ["full"],
                                "seeds": [0, 1]})  # fmt: skip
    monkeypatch.setattr(runner, "_execute", lambda *args: None)  # no training here
    runner.run_study(spec, tmp_path / "runs", progress=False, report=False)
    stored = read_baselines(tmp_path / "runs" / "b")
    assert set(stored) == {baseline_key(run.config) for run in spec.grid()}


def test_an_old_study_gets_its_baseline_at_report_time(tmp_path):
    from test_report import row, write_study

    data = own_files(tmp_path)
    rows = [row(s, seed, v, 10.0) for s, vs in (("full", (0.95, 0.96)), ("bottom:2", (0.9, 0.92)))
            for seed, v in enumerate(vs)]  # fmt: skip
    for r in rows:
        r.config["data"] = data
    write_study(tmp_path, rows)
    written = write_report(tmp_path)
    assert (tmp_path / BASELINE_FILE).is_file()
    assert "of full fine-tuning's accuracy gain over the trivial baseline" in written.headline
    assert "| trivial baseline: always predicting the majority class" in (
        (tmp_path / "report.md").read_text()
    )


def test_fieller_interval_is_the_set_of_ratios_the_t_test_keeps():
    a, var_a, b, var_b, df = 0.36, 0.01**2 / 3, 0.41, 0.012**2 / 3, 2
    low, high = ratio_ci(a, var_a, b, var_b, df)
    t = stats.t.ppf(0.975, df)
    kept = [th for th in np.linspace(0.5, 1.2, 70001)
            if (a - th * b) ** 2 <= t * t * (var_a + th * th * var_b)]  # fmt: skip
    assert (low, high) == pytest.approx((min(kept), max(kept)), abs=2e-5)
    assert low < a / b < high
    assert ratio_ci(0.1, 0.01, 0.05, 0.01, 2) == (-math.inf, math.inf)  # b is noise


@pytest.mark.parametrize(
    ("mean", "low", "baseline", "n", "clear", "reason"),
    [
        (0.83, 0.813, 0.513, 3, True, ""),
        (0.83, 0.815, 0.812, 3, False, "clears it by only 0.3 points, under the 2.0 points"),
        (0.58, 0.546, 0.52, 3, False, "under the 3.0 points required"),  # half the gain
        (0.83, 0.80, 0.812, 3, False, "95% CI reaches down to it"),
        (0.50, 0.45, 0.52, 3, False, "does not beat it"),
        (0.60, math.nan, 0.50, 1, True, "with one seed its noise is unknown"),
        (0.51, math.nan, 0.50, 1, False, "beats it by only 1.0 points"),
    ],
)
def test_signal_rule(mean, low, baseline, n, clear, reason):
    found = signal(mean, low, baseline, n)
    assert found.clear is clear and found.known and reason in found.reason
    assert found.needed is not None and found.needed >= MARGIN
    assert signal(mean, low, None, n).clear and not signal(mean, low, None, n).known
    assert "more training data" in HELP and "more epochs" in HELP and "stronger model" in HELP


def test_a_corrupt_results_file_is_one_line_and_exit_2(tmp_path, capsys):
    db = tmp_path / "results.sqlite"
    db.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(UserError, match=r"results\.sqlite is not a readable study results file"):
        open_store(db)
    code, err = cli.main(["report", str(tmp_path)]), capsys.readouterr().err
    assert_one_line_error(code, err, str(db), "file is not a database", "move it aside")
    assert "Traceback" not in err


def test_a_damaged_row_is_a_user_error_too(tmp_path):
    from test_report import STUDY, write_study

    write_study(tmp_path, STUDY[:2])
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:
        conn.execute("UPDATE runs SET result = '{\"best\": ' WHERE rowid = 1")
    conn.close()
    store = open_store(tmp_path / "results.sqlite")
    with pytest.raises(UserError, match="not a readable study results file"):
        read_rows(store)
    store.close()


def test_task_info_is_what_the_baseline_names():
    task = TaskInfo("own", ("text",), "label", ("neg", "pos"), False, ("accuracy",), "accuracy")
    assert trivial_baseline(task, np.array([1, 1, 0])).describe == (
        "always predicting the majority class ('pos')"
    )
    assert json.dumps(trivial_baseline(task, np.array([0])).metrics) == '{"accuracy": 1.0}'
