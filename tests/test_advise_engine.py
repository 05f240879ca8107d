"""``freezetune advise`` end to end on a tiny random BERT: rungs are prefixes of the real runs,
decisions are stored rows, a killed advise resumes with them, the same seed gives the same
answer, Ray gives the local executor's, and bad input is one line before any training."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from freezetune.advise.advice import read_advice
from freezetune.advise.engine import run_advise
from freezetune.advise.spec import AdviseSpec
from freezetune.cli import main
from freezetune.config import RunConfig
from freezetune.testing import assert_one_line_error
from freezetune.training import train

# 48 examples in batches of 8: 6 steps an epoch, 3 epochs = 18 steps; 2 strategies x 3 rates =
# 6 arms, rungs at steps 2, 6 and 18 (first rung 1/9), finalists with 2 seeds
DATA = {"task": "sst2", "max_train_samples": 48, "max_eval_samples": 16, "max_length": 24}
TRAIN = {"epochs": 3, "batch_size": 8, "threads": 1, "progress": False}


def spec_of(tiny_bert: str, name: str = "tiny", **advise: object) -> AdviseSpec:
    return AdviseSpec.from_dict({
        "name": name,
        "base": {"model": {"name": tiny_bert}, "data": DATA, "train": TRAIN},
        "strategies": ["full", "bottom:1"],
        "advise": {"lrs": "auto", "seeds": 2, **advise},
    })  # fmt: skip


def cli_args(tiny_bert: str, root: Path, *extra: str) -> list[str]:
    return [
        "advise", "--strategies", "full,bottom:1", "--seeds", "2", "--name", "tiny",
        "--model", tiny_bert, "--task", "sst2", "--max-train-samples", "48",
        "--max-eval-samples", "16", "--max-length", "24", "--epochs", "3", "--batch-size", "8",
        "--threads", "1", "--no-progress", "--out-root", str(root), *extra,
    ]  # fmt: skip


def halving_rows(folder: Path) -> list[tuple]:
    with sqlite3.connect(folder / "results.sqlite") as conn:
        return conn.execute(
            "SELECT arm, rung, step, score, kind FROM advise_rows ORDER BY arm, kind, rung, step"
        ).fetchall()


def answer_of(folder: Path) -> dict:
    """What an advise answered, without clocks."""
    advice = read_advice(folder)
    arms = {
        a.id: (a.status, a.rung, a.reached, a.curve, a.score and (a.score.mean, a.score.n))
        for a in advice.arms
    }
    return {"arms": arms, "pick": advice.pick, "verdict": advice.verdict}


@pytest.fixture(scope="module")
def advised(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("advise")
    return run_advise(spec_of(tiny_bert), root, progress=False)


def test_successive_halving_runs_to_an_answer_with_its_decisions_stored(advised):
    advice, folder = advised.advice, advised.folder
    decided = [(row[1], row[4]) for row in halving_rows(folder) if row[4] != "observed"]
    assert sorted(decided) == sorted([(0, "promoted")] * 2 + [(0, "stopped")] * 4
                                     + [(1, "promoted"), (1, "stopped")])  # fmt: skip
    seeded = [a for a in advice.arms if a.score is not None and a.score.n == 2]
    assert len(seeded) == 1 and seeded[0].status == "finalist" and seeded[0].reached == 18
    stopped = [a for a in advice.arms if a.status == "stopped"]
    assert all(a.score is not None and a.score.source != "observed" for a in stopped)
    assert {a.reached for a in stopped} <= {2, 6} and len(stopped) >= 4
    assert {a.lr for a in advice.arms if a.freeze == "full"} == {8e-5, 2e-4, 4e-4}  # 768/32: x4
    for name in ("advice.json", "advice.md", "advice.html", "study.yaml", "advise.yaml"):
        assert (folder / name).is_file(), name
    assert advice.verdict in ("pick", "no signal") and advice.plan["first_steps"]


def _uninterrupted(folder: Path, arm_id: str, out: Path) -> list[dict]:
    config = json.loads((folder / "runs" / arm_id / "run_config.json").read_text())
    config["train"].update(stop_at_step=None, progress=False)
    train(RunConfig.from_dict({**config, "out": str(out), "overwrite": True}))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if '"eval"' in line]


def _measured(events: list[dict]) -> list[tuple]:
    return [(e["step"], e["accuracy"], e["loss"]) for e in events if e.get("event") == "eval"]


def test_rungs_are_prefixes_of_the_uninterrupted_runs(advised, tmp_path):
    advice, folder = advised.advice, advised.folder
    pruned = next(a for a in advice.arms if a.status == "stopped" and a.reached == 6)
    whole = _uninterrupted(folder, pruned.id, tmp_path / "whole")
    events = [json.loads(line) for line in
              (folder / "runs" / pruned.id / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    prefix = _measured(events)
    assert [p[0] for p in prefix] == [1, 2, 4, 6]
    assert prefix == _measured(whole)[: len(prefix)]  # bit for bit
    finalist = next(a for a in advice.arms if a.score is not None and a.score.n == 2)
    again = _uninterrupted(folder, finalist.id, tmp_path / "final")
    result = json.loads((folder / "runs" / finalist.id / "result.json").read_text())
    assert result["best"]["accuracy"] == max(e["accuracy"] for e in again)


def test_the_same_seed_gives_the_same_answer(advised, tiny_bert, tmp_path):
    again = run_advise(spec_of(tiny_bert), tmp_path, progress=False)
    assert answer_of(again.folder) == answer_of(advised.folder)
    assert halving_rows(again.folder) == halving_rows(advised.folder)


def _wait_for(folder: Path, kind: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (folder / "results.sqlite").is_file():
            try:
                if any(row[4] == kind for row in halving_rows(folder)):
                    return
            except sqlite3.OperationalError:
                pass  # the table is not there yet
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no {kind} row in time")


def test_a_killed_advise_resumes_with_its_decisions_intact(advised, tiny_bert, tmp_path):
    command = [sys.executable, "-m", "freezetune", *cli_args(tiny_bert, tmp_path)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        _wait_for(tmp_path / "tiny", "promoted", proc)  # the first rung is decided
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    decided = [row for row in halving_rows(tmp_path / "tiny") if row[4] != "observed"]
    assert main(cli_args(tiny_bert, tmp_path)) == 0
    assert set(decided) <= set(halving_rows(tmp_path / "tiny"))  # nothing decided again
    assert answer_of(tmp_path / "tiny") == answer_of(advised.folder)


def test_ray_gives_the_local_executors_answer(advised, tiny_bert, tmp_path, monkeypatch):
    import builtins

    ray = pytest.importorskip("ray")
    for key, value in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(builtins, "print", builtins.print)  # ray.init wraps it: put it back
    # plugins other tests of this process registered by code must import in Ray's workers too
    here = str(Path(__file__).parent)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    )
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             _temp_dir=str(Path("/tmp") / f"ft-ray-advise-{os.getpid()}"))  # fmt: skip
    try:
        remote = run_advise(spec_of(tiny_bert), tmp_path, executor="ray", progress=False)
    finally:
        ray.shutdown()
    assert answer_of(remote.folder) == answer_of(advised.folder)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--strategies", "full,bogus"), "bogus"),
        (("--lrs", "1e-4,fast"), "'fast' is not a learning rate"),
        (("--tolerance", "-1"), "--tolerance"),
        (("--optimize", "speed"), "--optimize 'speed'"),
        (("--seeds", "0"), "--seeds"),
    ],
)
def test_bad_input_is_one_line_before_anything_is_written(
    tiny_bert, tmp_path, capsys, extra, needle
):
    code = main(cli_args(tiny_bert, tmp_path / "out", *extra))
    assert_one_line_error(code, capsys.readouterr().err, needle)
    assert not (tmp_path / "out").exists()


def test_check_refuses_a_study_of_other_arms_in_one_line(advised, tiny_bert, tmp_path, capsys):
    from freezetune.study import StudySpec, run_study

    other = StudySpec.from_dict({
        "name": "other", "strategies": ["head"], "seeds": [0],
        "base": {"model": {"name": tiny_bert}, "data": DATA, "train": {**TRAIN, "epochs": 1}},
    })  # fmt: skip
    run_study(other, tmp_path, progress=False, report=False)
    root = advised.folder.parent
    code = main(cli_args(tiny_bert, root, "--check", str(tmp_path / "other")))
    assert_one_line_error(code, capsys.readouterr().err, "advise arm", "study other")


def test_images_go_through_the_same_advise(tiny_effnet, tiny_fashion_mnist, tmp_path, capsys):
    argv = ["advise", "--name", "img", "--strategies", "full,head", "--lrs", "one"]
    argv += ["--seeds", "1", "--model", tiny_effnet, "--task", "fashion-mnist"]
    argv += ["--data-dir", tiny_fashion_mnist, "--max-train-samples", "64", "--image-size", "32"]
    argv += ["--epochs", "2", "--batch-size", "16", "--threads", "1", "--no-progress"]
    assert main([*argv, "--out-root", str(tmp_path)]) == 0
    advice = read_advice(tmp_path / "img")
    assert advice.modality == "image" and advice.task == "fashion-mnist"
    assert {a.lr for a in advice.arms} == {1e-3, 1e-2}  # the image grids' middle rates
    assert "advise img: 2 arms" in capsys.readouterr().out


def test_check_against_the_full_study_of_the_same_arms(advised, tiny_bert, capsys):
    folder = advised.folder
    root = folder.parent
    assert main(["study", "--config", str(folder / "study.yaml"), "--out-root", str(root),
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(cli_args(tiny_bert, root, "--check", str(root / "tiny-study"))) == 0
    out = capsys.readouterr().out
    found = json.loads((folder / "check.json").read_text())
    assert found["study"] == "tiny-study" and len(found["arms"]) == 6
    assert -1 <= found["spearman"] <= 1 or found["spearman"] is None
    assert "Spearman" in out and (folder / "check.md").is_file()
