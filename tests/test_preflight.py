"""A study that cannot succeed stops before any training (its preflight), a study with failed runs
exits non-zero with the command that retries them, and a run that failed because its inputs were
unavailable is retried by the same command once they are back (tiny random BERT, 32 examples)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from freezetune.cli import main
from freezetune.study import StudySpec, run_study
from freezetune.study.executors import LocalExecutor
from freezetune.testing import assert_one_line_error

TINY = {"max_train_samples": 32, "max_eval_samples": 16, "max_length": 32}


def study_args(model: str, root: Path, strategies: str, *extra: str) -> list[str]:
    return [
        "study", "--name", "tiny", "--strategies", strategies, "--seeds", "0",
        "--model", model, "--task", "sst2", "--max-train-samples", "32",
        "--max-eval-samples", "16", "--max-length", "32", "--epochs", "1",
        "--batch-size", "16", "--out-root", str(root), "--no-progress", *extra,
    ]  # fmt: skip


def statuses(folder: Path) -> dict[str, tuple[str, str | None, int]]:
    conn = sqlite3.connect(folder / "results.sqlite")
    try:
        rows = conn.execute("SELECT strategy, status, cause, attempts FROM runs").fetchall()
    finally:
        conn.close()
    return {strategy: (status, cause, attempts) for strategy, status, cause, attempts in rows}


def test_a_strategy_deeper_than_the_model_stops_the_study_before_full_trains(
    tiny_bert, tmp_path, capsys
):
    started = time.monotonic()
    code = main(study_args(tiny_bert, tmp_path, "full,bottom:1,bottom:99"))
    line = assert_one_line_error(code, capsys.readouterr().err)
    assert "strategy bottom:99: --freeze bottom:99 asks for more blocks than the model has" in line
    assert list(tmp_path.iterdir()) == []  # no study folder, no rows, no run folders
    assert time.monotonic() - started < 60  # nothing trained


def test_a_study_without_its_data_stops_in_seconds_with_one_line(
    tiny_bert, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = tmp_path / "no-glue"
    empty.mkdir()
    root = tmp_path / "runs"
    args = study_args(tiny_bert, root, "full,bottom:1,head", "--data-dir", str(empty))
    line = assert_one_line_error(main(args), capsys.readouterr().err, str(empty))
    assert line.startswith("strategy full: ")
    assert not root.exists()


@pytest.fixture
def own_glue(tmp_path, glue_dir) -> Path:
    """A copy of SST-2's two files that a test can take away and put back."""
    folder = tmp_path / "glue" / "SST-2"
    folder.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        lines = (Path(glue_dir) / "SST-2" / name).read_text(encoding="utf-8").splitlines()
        (folder / name).write_text("\n".join(lines[:200]) + "\n", encoding="utf-8")
    return folder.parent


class DataVanishes:
    """The local executor, but the data folder disappears after the preflight passed (a network
    share that dropped) and comes back when the runs have ended."""

    name = "local"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def run(self, todo, ledger) -> None:
        hidden = self.folder.with_name("away")
        self.folder.rename(hidden)
        try:
            LocalExecutor(1).run(todo, ledger)
        finally:
            hidden.rename(self.folder)


def test_runs_whose_data_was_unavailable_are_retried_by_the_same_command(
    tiny_bert, tmp_path, own_glue
):
    spec = StudySpec.from_dict(
        {
            "name": "env",
            "strategies": ["full", "bottom:1"],
            "base": {
                "model": {"name": tiny_bert},
                "data": {"task": "sst2", "data_dir": str(own_glue), **TINY},
                "train": {"epochs": 1, "batch_size": 16, "progress": False},
            },
        }
    )
    first = run_study(spec, tmp_path, executor=DataVanishes(own_glue), progress=False)
    assert first.failed == 2
    assert statuses(first.folder) == {
        "full": ("failed", "inputs", 1), "bottom:1": ("failed", "inputs", 1),
    }  # fmt: skip
    again = run_study(spec, tmp_path, progress=False)  # the data is back; no --retry-failed
    assert (again.ran, again.succeeded, again.failed) == (2, 2, 0)
    assert statuses(again.folder) == {
        "full": ("succeeded", None, 2), "bottom:1": ("succeeded", None, 2),
    }  # fmt: skip


def test_a_failed_run_fails_the_command_and_needs_retry_failed(nan_bert, tmp_path, capsys):
    args = study_args(nan_bert, tmp_path, "full")
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "0 of 1 runs succeeded, 1 failed" in captured.out
    assert "retry them with: freezetune study --name tiny" in captured.err
    assert captured.err.rstrip().endswith("--no-progress --retry-failed")
    assert statuses(tmp_path / "tiny") == {"full": ("failed", "run", 1)}
    assert main(args) == 1  # its own config failed: the same command does not retry it
    assert statuses(tmp_path / "tiny") == {"full": ("failed", "run", 1)}
    assert main([*args, "--retry-failed"]) == 1
    assert statuses(tmp_path / "tiny") == {"full": ("failed", "run", 2)}


def test_a_study_store_written_before_causes_were_recorded_opens(tmp_path):
    from freezetune.study.store import open_store, read_rows

    path = tmp_path / "results.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, strategy TEXT NOT NULL)")
    conn.commit()
    conn.close()
    store = open_store(path)  # the column is added; old rows read with cause None
    assert "cause" in {row[1] for row in store.execute("PRAGMA table_info(runs)")}
    assert read_rows(store) == []
    store.close()
