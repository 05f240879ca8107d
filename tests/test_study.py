"""Studies: spec parsing and grids, the SQLite store, resuming, locking, and one tiny study
end to end through the CLI (tiny random BERT, 32 examples, 1 epoch)."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from freezetune.cli import main
from freezetune.config import load_yaml
from freezetune.errors import UserError
from freezetune.study import Strategy, StudySpec, plan_todo, preset_strategies, study_lock
from freezetune.study.spec import num_blocks_of
from freezetune.study.store import RunRow, fail_run, finish_run, open_store, read_rows, start_run

STUDY_CONFIGS = sorted((Path(__file__).parents[1] / "configs" / "studies").glob("*.yaml"))


def spec(**kw) -> StudySpec:
    return StudySpec.from_dict({"name": "s", "strategies": ["full", "bottom:2"], **kw})


def test_grid_runs_seeds_outermost_with_per_strategy_overrides():
    s = spec(strategies=["full", {"freeze": "head", "optim.lr": "1e-3"}], seeds=[0, 1])
    grid = s.grid()
    assert [(r.strategy, r.seed) for r in grid] == [
        ("full", 0), ("head (lr=0.001)", 0), ("full", 1), ("head (lr=0.001)", 1),
    ]  # fmt: skip
    assert grid[1].lr == 1e-3 and grid[1].freeze == "head" and grid[0].lr == 1e-4
    assert grid[0].config["train"]["seed"] == 0 and "out" not in grid[0].config
    assert len({r.run_id for r in grid}) == 4


def test_lr_and_train_size_axes_multiply_the_grid_and_identical_cells_collapse():
    s = spec(lrs=[1e-4, 3e-4], train_sizes=[100, 200], seeds=[0])
    assert len(s.grid()) == 2 * 2 * 2
    assert {(r.lr, r.train_size) for r in s.grid()} == {
        (lr, n) for lr in (1e-4, 3e-4) for n in (100, 200)
    }
    fixed = spec(strategies=[{"freeze": "head", "optim.lr": 1e-3}], lrs=[1e-4, 3e-4])
    assert len(fixed.grid()) == 1  # the strategy's own lr wins, so both cells are one run


def test_run_id_is_the_config_hash_ignoring_output_and_progress():
    a = spec().grid()[0]
    assert a.run_id == spec(name="other").grid()[0].run_id  # the name is not part of a run
    assert a.run_id == spec(base={"train": {"progress": False}}).grid()[0].run_id
    assert a.run_id != spec(base={"train": {"epochs": 2}}).grid()[0].run_id
    checkpointed = spec(base={"train": {"save_every": 5}}).grid()[0]  # an executor may add it
    assert checkpointed.run_id == a.run_id and checkpointed.save_every == 5
    assert checkpointed.config == a.config and a.config["train"]["save_every"] is None
    for watched in ({"report_to": "tensorboard"}, {"inference_cost": False}):  # not the result
        other = spec(base={"train": watched}).grid()[0]
        assert other.run_id == a.run_id and "inference_cost" not in other.config["train"]
    assert spec(base={"train": {"inference_cost": False}}).grid()[0].inference_cost is False
    assert len(a.run_id) == 16 and int(a.run_id, 16) >= 0


def test_presets_follow_the_number_of_blocks(tiny_bert):
    assert preset_strategies("depth", 3) == [
        "full", "bottom:0", "bottom:1", "bottom:2", "bottom:3", "head",
    ]  # fmt: skip
    assert preset_strategies("strategies", 3) == [
        "full", "head", "bottom:1", "two-phase", "gradual", "progressive", "autofreeze", "lora",
    ]  # fmt: skip
    assert num_blocks_of({"model": {"name": tiny_bert}}) == 3
    s = StudySpec.from_dict(
        {"name": "d", "preset": "depth", "base": {"model": {"name": tiny_bert}}}
    )
    assert [x.freeze for x in s.strategies][-2:] == ["bottom:3", "head"]


@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_study_config_loads(path):
    s = StudySpec.from_dict(load_yaml(path))
    assert s.name == path.stem and len(s.seeds) >= 2 and s.grid()
    again = StudySpec.from_dict(yaml.safe_load(s.to_yaml()))  # study.yaml round-trips
    assert [r.run_id for r in again.grid()] == [r.run_id for r in s.grid()]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"strategy": ["full"]}, "unknown study key strategy"),
        ({"strategies": [3]}, "bad strategy 3"),
        ({"strategies": ["full", "botom:3"]}, "strategy 'botom:3': unknown --freeze part"),
        ({"strategies": [{"freeze": "bogus", "optim.lr": 1e-3}]}, "strategy 'bogus': unknown"),
        ({"strategies": ["full"], "base": {"train": 3}}, "section train must be a mapping"),
        ({"strategies": ["full"], "base": {"optim": 3}}, "section optim must be a mapping"),
        ({"strategies": [{"freeze": "head", "lr": 1}]}, "section.key"),
        ({"strategies": [{"freeze": "head", "optim.lr": 5}]}, "strategy head: optim.lr must be"),
        ({"strategies": ["full"], "base": {"freeze": "head"}}, "must not set freeze"),
        ({"strategies": ["full"], "base": {"optim": {"lrr": 1}}}, "unknown config key optim.lrr"),
        ({"strategies": ["full"], "seeds": ["a"]}, "seeds must be a list of ints"),
        ({"strategies": ["full"], "seeds": [0, 0]}, "twice"),
        ({"strategies": ["full"], "name": "../x"}, "must be a folder name"),
        ({"preset": "widest"}, "unknown study preset"),
    ],
)
def test_bad_specs_name_the_problem(data, needle):
    with pytest.raises(UserError, match=needle):
        StudySpec.from_dict({"name": "s", **data}, preset_blocks=3)


def stored(run, status="succeeded", host="here"):
    return RunRow(run.run_id, run.strategy, run.freeze, run.seed, run.lr, run.train_size,
                  status, hostname=host)  # fmt: skip


def test_plan_todo_skips_done_retries_failed_on_request_and_resumes_dead_runs():
    a, b, c, d = spec(seeds=[0, 1]).grid()
    rows = [stored(a), stored(b, "failed"), stored(c, "running"), stored(d, "running", "other")]
    assert plan_todo([a, b, c, d], rows, retry_failed=False, host="here") == [c]
    assert plan_todo([a, b, c, d], rows, retry_failed=True, host="here") == [b, c]
    assert plan_todo([a, b, c, d], [], retry_failed=False, host="here") == [a, b, c, d]


def test_plan_todo_retries_runs_whose_inputs_failed_without_being_asked():
    a, b = spec().grid()
    rows = [dataclasses.replace(stored(a, "failed"), cause="inputs"), stored(b, "failed")]
    assert plan_todo([a, b], rows, retry_failed=False, host="here") == [a]
    assert plan_todo([a, b], rows, retry_failed=True, host="here") == [a, b]


def test_store_keys_rows_by_run_id_and_counts_attempts(tmp_path):
    run = spec().grid()[0]
    conn = open_store(tmp_path / "results.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    start_run(conn, run)
    fail_run(conn, run.run_id, "boom")
    start_run(conn, run)
    finish_run(conn, run.run_id, {"best": {"accuracy": 0.9}, "git": "g"}, [], [{"step": 1}])
    (row,) = read_rows(conn)
    assert row.status == "succeeded" and row.error is None and row.attempts == 2
    assert row.result == {"best": {"accuracy": 0.9}, "git": "g"} and row.curve == [{"step": 1}]
    assert row.config == run.config and row.git == "g" and row.pid and row.hostname


def test_a_second_holder_of_the_study_lock_is_refused(tmp_path):
    refused = pytest.raises(UserError, match=r"study s is already running \(pid \d+\)")
    with study_lock(tmp_path, "s"), refused, study_lock(tmp_path, "s"):
        pass
    with study_lock(tmp_path, "s"):  # released on exit
        pass


# ---- end to end through the CLI on the tiny model -------------------------------------------


# the third strategy trains a model with a NaN inside: it passes the preflight and fails in
# training, on its own config (a run that needs --retry-failed)
def study_args(tiny_bert, root, *extra, strategies=None):
    grid = ["--strategies", strategies] if strategies else ["--config", str(failing_yaml(root))]
    return [
        "study", "--name", "tiny", *grid, "--seeds", "0,1",
        "--model", tiny_bert, "--task", "sst2", "--max-train-samples", "32",
        "--max-eval-samples", "16", "--max-length", "32", "--epochs", "1", "--batch-size", "16",
        "--out-root", str(root), "--no-progress", "optim.lr=1e-3", *extra,
    ]  # fmt: skip


NAN_BERT: list[str] = []  # the nan_bert fixture's folder, set by tiny_study


def failing_yaml(root: Path) -> Path:
    path = root.parent / f"{root.name}-study.yaml"
    strategies = ["full", "bottom:1", {"freeze": "bottom:2", "model.name": NAN_BERT[0]}]
    path.write_text(yaml.safe_dump({"strategies": strategies}))
    return path


def rows_of(folder: Path) -> dict[str, sqlite3.Row]:
    conn = sqlite3.connect(folder / "results.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return {r["run_id"]: r for r in conn.execute("SELECT * FROM runs")}
    finally:
        conn.close()


def hold_lock(folder, locked, release):
    with study_lock(folder, "tiny"):
        locked.set()
        release.wait(60)


@pytest.fixture(scope="module")
def tiny_study(tiny_bert, nan_bert, tmp_path_factory):
    NAN_BERT[:] = [nan_bert]
    root = tmp_path_factory.mktemp("studies")
    assert main(study_args(tiny_bert, root)) == 1  # two runs failed
    return root, root / "tiny"


FAILING = "bottom:2 (model.name="


def test_study_runs_the_grid_records_failures_and_writes_the_report(tiny_study, capsys):
    _, folder = tiny_study
    rows = rows_of(folder)
    assert len(rows) == 6
    status = sorted((r["strategy"][: len(FAILING)], r["seed"], r["status"]) for r in rows.values())
    assert status == [
        ("bottom:1", 0, "succeeded"), ("bottom:1", 1, "succeeded"), (FAILING, 0, "failed"),
        (FAILING, 1, "failed"), ("full", 0, "succeeded"), ("full", 1, "succeeded"),
    ]  # fmt: skip
    for row in rows.values():
        if row["status"] == "failed":
            assert "loss became nan" in row["error"] and row["cause"] == "run"
            continue
        result = json.loads(row["result"])
        assert result["best"]["step"] >= 1 and result["peak_rss_mb"] > 0
        assert json.loads(row["curve"]) and json.loads(row["timeline"]) == []  # static specs
        assert (folder / "runs" / row["run_id"] / "result.json").is_file()
        assert row["git"] and json.loads(row["versions"])["torch"]
    for name in ("report.html", "report.md", "results.csv", "study.yaml", "plots/pareto.png"):
        assert (folder / name).is_file(), name
    failed_row = next(line for line in (folder / "report.md").read_text().splitlines()
                      if line.startswith(f"| {FAILING}"))  # fmt: skip
    assert "| — | 0 |" in failed_row


def test_rerunning_skips_finished_runs(tiny_bert, tiny_study, capsys):
    root, folder = tiny_study
    before = rows_of(folder)
    assert main(study_args(tiny_bert, root)) == 1  # the failed runs are still failed
    assert "(0 run now, 6 skipped)" in capsys.readouterr().out
    after = rows_of(folder)
    assert after.keys() == before.keys()
    for run_id, row in after.items():  # nothing was trained again
        assert tuple(row) == tuple(before[run_id])


def test_a_killed_run_is_resumed_and_failed_ones_retried_on_request(tiny_bert, tiny_study):
    root, folder = tiny_study
    before = rows_of(folder)
    victim = next(r for r in before.values() if r["strategy"] == "bottom:1")
    dead = subprocess.Popen(["true"])
    dead.wait()
    conn = sqlite3.connect(folder / "results.sqlite")
    with conn:  # what a kill -9 mid-run leaves: a running row and a partial folder
        conn.execute(
            "UPDATE runs SET status='running', result=NULL, finished_at=NULL, pid=? WHERE run_id=?",
            (dead.pid, victim["run_id"]),
        )
    conn.close()
    out = folder / "runs" / victim["run_id"]
    (out / "result.json").unlink()
    (out / "model.safetensors").write_bytes(b"partial")
    assert main(study_args(tiny_bert, root, "--retry-failed")) == 1
    after = rows_of(folder)
    assert len(after) == 6
    resumed = after[victim["run_id"]]
    assert resumed["status"] == "succeeded" and resumed["attempts"] == 2
    assert json.loads((out / "result.json").read_text())["status"] == "succeeded"
    assert (out / "model.safetensors").stat().st_size > 1000
    for run_id, row in after.items():
        if row["status"] == "failed":
            assert row["attempts"] == 2  # retried, and failed again with its message
        elif run_id != victim["run_id"]:
            assert tuple(row) == tuple(before[run_id])  # untouched


def test_a_second_process_on_the_same_study_is_refused(tiny_bert, tiny_study, capsys):
    root, folder = tiny_study
    ctx = multiprocessing.get_context("fork")
    locked, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=hold_lock, args=(folder, locked, release))
    holder.start()
    try:
        assert locked.wait(30)
        assert main(study_args(tiny_bert, root)) == 2
        err = capsys.readouterr().err
        assert f"study tiny is already running (pid {holder.pid})" in err
    finally:
        release.set()
        holder.join(30)


def test_bad_study_yaml_exits_2_before_anything_runs(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nstrategies: [full]\nbase:\n  optim:\n    lr: 7\n")
    assert main(["study", "--config", str(bad), "--out-root", str(tmp_path)]) == 2
    assert "optim.lr must be in (0, 1)" in capsys.readouterr().err
    bad.write_text("name: bad\nstrategies: [full]\nepochs: 2\n")
    assert main(["study", "--config", str(bad), "--out-root", str(tmp_path)]) == 2
    assert "unknown study key epochs" in capsys.readouterr().err
    assert main(["study", "--out-root", str(tmp_path)]) == 2
    assert not (tmp_path / "bad").exists()
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_jobs_run_several_at_once(nan_bert, tmp_path):
    args = study_args(nan_bert, tmp_path, "--jobs", "2", strategies="bottom:1,bottom:2")
    assert main(args) == 1
    rows = rows_of(tmp_path / "tiny")
    assert len(rows) == 4 and {r["status"] for r in rows.values()} == {"failed"}


def test_a_bad_strategy_fails_the_command_at_once_with_one_line(tmp_path, capsys, monkeypatch):
    import freezetune.study.runner as runner

    def never(*args, **kw):
        raise AssertionError("the study started")

    monkeypatch.setattr(runner, "run_study", never)
    code = main(["study", "--strategies", "full,bogus", "--out-root", str(tmp_path), "--name", "x"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "strategy 'bogus': unknown --freeze part 'bogus'" in err[0], err
    assert list(tmp_path.iterdir()) == []  # no study folder, no run folders


def test_a_spec_built_directly_is_validated_too():
    with pytest.raises(UserError, match="strategy 'bogus'"):
        Strategy("bogus")
    with pytest.raises(UserError, match=r"study s, strategy full: optim\.lr must be in"):
        StudySpec(name="s", base={"optim": {"lr": 5}})


# ---- --keep-models ---------------------------------------------------------------------------


def distil_grid():
    student = {"freeze": "full", "distill.student_layers": 1, "distill.teacher": "@full"}
    data = {"name": "k", "strategies": ["full", "bottom:1", student], "seeds": [0, 1]}
    return StudySpec.from_dict(data, preset_blocks=3).grid()


def finished(run, score, status="succeeded"):
    result = {"main_metric": "accuracy", "best": {"accuracy": score}}
    return RunRow(run.run_id, run.strategy, run.freeze, run.seed, run.lr, run.train_size,
                  status, result=result)  # fmt: skip


def test_keep_models_decides_whose_weights_go_and_spares_teachers():
    from freezetune.study.executors.keep import weights_to_drop

    full0, b0, kd0, full1, b1, kd1 = distil_grid()
    assert kd0.teacher == full0.run_id and kd1.teacher == full1.run_id
    scores = [(full0, 0.7), (b0, 0.8), (kd0, 0.6), (full1, 0.9), (b1, 0.5)]
    rows = {run.run_id: finished(run, score) for run, score in scores}
    rows[kd1.run_id] = finished(kd1, 0.0, "failed")
    everything = [full0, b0, kd0, full1, b1, kd1]
    drop = set(weights_to_drop("best", everything, rows, busy=set()))
    assert drop == {full0.run_id, b1.run_id, kd1.run_id}  # the best full, bottom:1, student stay
    assert set(weights_to_drop("none", everything, rows, busy=set())) == set(rows)
    # a student still to run keeps its teacher's weights (and nothing busy is touched)
    busy = {kd1.run_id}
    assert set(weights_to_drop("none", everything, rows, busy)) == set(rows) - {full1.run_id, *busy}
    assert weights_to_drop("all", everything, rows, busy=set()) == []


def test_a_student_retried_after_its_teacher_lost_its_weights_retrains_the_teacher(tmp_path):
    from freezetune.study.runner import _with_teachers

    full0, b0, kd0, full1, b1, kd1 = distil_grid()
    rows = [finished(full0, 0.9), finished(full1, 0.9), finished(kd1, 0.1, "failed")]
    for run in (full0, full1):
        (tmp_path / "runs" / run.run_id).mkdir(parents=True)
        (tmp_path / "runs" / run.run_id / "result.json").write_text("{}")
    (tmp_path / "runs" / full0.run_id / "model.safetensors").write_bytes(b"w")
    everything = [full0, b0, kd0, full1, b1, kd1]
    assert _with_teachers([kd0, kd1], everything, rows, tmp_path) == [full1, kd0, kd1]
    assert not (tmp_path / "runs" / full1.run_id).exists()  # so it trains again, not read back
    assert (tmp_path / "runs" / full0.run_id / "result.json").exists()


def test_keep_models_best_then_none_drop_weights_but_keep_results(tiny_bert, tiny_study):
    root, folder = tiny_study
    best: dict[
        str, tuple[float, int, str]
    ] = {}  # strategy -> (score, -seed, run_id): ties -> seed 0
    for row in rows_of(folder).values():
        if row["status"] == "succeeded":
            score = json.loads(row["result"])["best"]["accuracy"]
            key = (score, -row["seed"], row["run_id"])
            best[row["strategy"]] = max(best.get(row["strategy"], key), key)
    assert main(study_args(tiny_bert, root, "--keep-models", "best")) == 1
    with_weights = {p.parent.name for p in (folder / "runs").glob("*/model.safetensors")}
    assert with_weights == {run_id for _, _, run_id in best.values()}
    assert main(study_args(tiny_bert, root, "--keep-models", "none")) == 1
    done_runs = [path.parent for path in (folder / "runs").glob("*/result.json")]
    assert len(done_runs) == 4
    for run in done_runs:
        assert not list(run.glob("*.safetensors")) and not (run / "checkpoints").exists()
        assert (run / "metrics.jsonl").is_file() and (run / "config.json").is_file()
    assert (folder / "report.html").is_file()


def test_a_contrast_of_a_study_with_itself_is_refused(tiny_study, capsys, monkeypatch):
    root, folder = tiny_study
    monkeypatch.chdir(root)
    assert main(["report", str(folder), "./tiny/"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "are the same study; a contrast needs two different" in err[0]
    assert not list(root.glob("contrast-*"))
