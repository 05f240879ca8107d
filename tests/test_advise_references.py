"""Reference curves: from study rows and folders, the shipped file, picking and the prior."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from freezetune.advise.advice import ArmResult
from freezetune.advise.curves import predict_final
from freezetune.advise.lrs import FAMILIES
from freezetune.advise.references import (
    SHIPPED,
    Reference,
    from_folders,
    from_rows,
    parse_shipped,
    pick,
    prior_scores,
    shipped,
    to_shipped,
    without_lr,
)
from freezetune.errors import UserError
from freezetune.study.spec import PlannedRun
from freezetune.study.store import RunRow, finish_run, open_store, start_run

ROOT = Path(__file__).resolve().parent.parent


def row(
    label: str = "full",
    seed: int = 0,
    evals: tuple[tuple[int, float], ...] = ((50, 0.7), (100, 0.8)),
    steps: int | None = 100,
    task: str = "sst2",
    status: str = "succeeded",
    lr: float = 1e-4,
) -> RunRow:
    result = {"main_metric": "accuracy", **({"steps": steps} if steps else {})}
    return RunRow(
        f"{label}-{seed}-{lr}", label, label.split(" (")[0], seed, lr, 500, status,
        config={"data": {"task": task}, "model": {"name": "minilm-l6"}},
        result=result if status == "succeeded" else None, git="abc123",
        curve=[{"event": "eval", "step": s, "accuracy": y} for s, y in evals],
    )  # fmt: skip


def ref(strategy: str, family: str, lr: float, final: float, task: str = "sst2",
        model: str = "m") -> Reference:  # fmt: skip
    return Reference(strategy, strategy, family, lr, task, model, "text",
                     ((0.5, final - 0.1), (1.0, final)), final, "test")  # fmt: skip


def test_a_curve_is_the_best_so_far_against_the_share_of_the_run() -> None:
    found = from_rows([row(evals=((25, 0.6), (50, 0.8), (75, 0.7)))], "study s")[0]
    assert found.curve == ((0.25, 0.6), (0.5, 0.8), (0.75, 0.8), (1.0, 0.8))
    assert found.final == 0.8
    assert (found.family, found.task, found.model, found.modality) == (
        "full", "sst2", "minilm-l6", "text")  # fmt: skip
    assert (found.run_id, found.seed, found.git, found.train_size) == ("full-0-0.0001", 0,
                                                                       "abc123", 500)  # fmt: skip
    assert found.provenance == "study s"


def test_without_steps_the_budget_is_the_last_evaluated_step() -> None:
    found = from_rows([row(evals=((30, 0.5), (60, 0.4)), steps=None)], "s")[0]
    assert found.curve == ((0.5, 0.5), (1.0, 0.5))


def test_failed_runs_and_runs_without_a_curve_are_not_references() -> None:
    rows = [row(status="failed"), row(evals=()), row("head (lr=0.001)", lr=1e-3)]
    found = from_rows(rows, "s")
    assert [(r.strategy, r.family, r.lr) for r in found] == [("head (lr=0.001)", "head", 1e-3)]


def test_image_tasks_are_the_image_modality_and_unknown_plugins_count_as_full() -> None:
    found = from_rows([row(task="fashion-mnist"), row("someplugin:k=2")], "s")
    assert [(r.modality, r.family) for r in found] == [("image", "full"), ("text", "full")]


def _study(folder: Path) -> Path:
    folder.mkdir()
    conn = open_store(folder / "results.sqlite")
    run = PlannedRun("r1", "bottom:3", "bottom:3", 1, 1e-4, None,
                     {"data": {"task": "mrpc"}, "model": {"name": "bert"}})  # fmt: skip
    start_run(conn, run)
    result = {"main_metric": "f1", "steps": 10, "git": "deadbeef"}
    finish_run(conn, "r1", result, [], [{"event": "eval", "step": 10, "f1": 0.9}])
    conn.close()
    return folder


def test_study_folders_give_their_runs_with_the_folder_as_provenance(tmp_path: Path) -> None:
    found = from_folders([_study(tmp_path / "mine")])
    assert len(found) == 1
    assert (found[0].task, found[0].metric, found[0].final, found[0].git) == (
        "mrpc", "f1", 0.9, "deadbeef")  # fmt: skip
    assert found[0].provenance.startswith("study mine (")


def test_a_folder_without_results_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        from_folders([tmp_path / "nothing"])
    message = str(err.value)
    assert "\n" not in message and "nothing" in message and "freezetune study" in message
    assert not (tmp_path / "nothing").exists()  # nothing was created


def test_an_unreadable_results_file_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.sqlite").write_text("not a database " * 100)
    with pytest.raises(UserError) as err:
        from_folders([tmp_path / "bad"])
    assert "\n" not in str(err.value) and "bad" in str(err.value)


def test_shipped_references_carry_their_provenance() -> None:
    refs = shipped()
    assert len(refs) >= 20
    assert {r.task for r in refs} >= {"sst2", "fashion-mnist"}
    assert {r.family for r in refs} <= set(FAMILIES)
    assert all(r.curve[-1] == (1.0, r.final) and r.curve[0][0] > 0 for r in refs)
    assert all("configs/studies/" in r.provenance or "examples/" in r.provenance for r in refs)
    assert all("benchmarks/reference_curves.py" in r.provenance for r in refs)
    assert len({r.run_id for r in refs}) == len(refs)  # each run once


def test_the_shipped_file_is_small_and_package_data() -> None:
    path = ROOT / "src" / "freezetune" / "advise" / SHIPPED
    assert path.stat().st_size < 200_000
    data = json.loads(path.read_text("utf-8"))
    for study in data["studies"].values():
        assert (ROOT / study["config"]).is_file()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert SHIPPED in pyproject["tool"]["setuptools"]["package-data"]["freezetune.advise"]


def test_the_shipped_format_round_trips() -> None:
    found = from_rows([row(evals=((33, 0.712345), (100, 0.8)))], "s")
    data = {"command": "make refs", "studies": {"x": {"config": "c.yaml"}},
            "references": to_shipped("x", found)}  # fmt: skip
    back = parse_shipped(json.loads(json.dumps(data)))[0]
    assert back.curve == ((0.33, 0.7123), (1.0, 0.8))
    assert back.provenance == f"{SHIPPED}: study x (c.yaml), built by `make refs`"
    assert back.run_id == found[0].run_id and back.family == found[0].family


def test_pick_prefers_the_same_task_and_model_then_the_task_then_the_family() -> None:
    refs = [ref("full", "full", 1e-4, 0.8, "sst2", "m"), ref("bottom:3", "full", 1e-4, 0.7,
            "sst2", "other"), ref("full", "full", 1e-4, 0.6, "mrpc", "m"),
            ref("lora", "lora", 3e-4, 0.5, "mrpc", "m")]  # fmt: skip
    curves, note = pick(refs, task="sst2", model="m", family="full")
    assert curves == [refs[0].curve] and note == "1 reference of family full on sst2 with m"
    curves, note = pick(refs, task="sst2", model="x", family="full")
    assert len(curves) == 2 and "on sst2 with other models" in note
    curves, note = pick(refs, task="sst2", model="m", family="lora")
    assert curves == [refs[3].curve] and "other tasks (mrpc)" in note
    assert pick(refs, task="sst2", model="m", family="student") == ([], "no reference of "
                                                                     "family student")  # fmt: skip


def test_picked_curves_feed_the_curve_prior() -> None:
    curves, _ = pick(shipped(), task="sst2", model="minilm-l6", family="full")
    found = predict_final([(0.5, 0.75)], references=curves, bounds=(0.0, 1.0))
    assert found.source == "prior" and 0.75 < found.mean < 0.9


def test_the_prior_takes_the_same_strategy_then_the_family_at_the_nearest_lr() -> None:
    refs = [ref("full", "full", 1e-4, 0.8), ref("full", "full", 1e-5, 0.6),
            ref("bottom:3", "full", 3e-5, 0.7), ref("head (lr=0.001)", "head", 1e-3, 0.5),
            ref("head (lr=0.01)", "head", 1e-2, 0.3)]  # fmt: skip
    arms = [("full", "full", 3e-5), ("bottom:2", "full", 1e-5), ("head", "head", 3e-3),
            ("lora", "lora", 3e-4)]  # fmt: skip
    found = prior_scores(arms, refs, task="sst2", model="m")
    # full: its own references, at 1e-5 (3e-5 is 3x from it, 3.3x from 1e-4)
    assert found["full"] == 0.6
    assert found["bottom:2"] == 0.6  # no own reference: the family's nearest lr (1e-5)
    assert found["head"] == 0.5  # 3e-3 is nearer 1e-3 than 1e-2 in log space
    assert math.isnan(found["lora"])


def test_the_prior_averages_ties_and_keys_arm_results_by_id() -> None:
    refs = [ref("full", "full", 1e-4, 0.5), ref("full", "full", 1e-4, 0.75),
            ref("full", "full", 1e-3, 1.0)]  # fmt: skip
    arm = ArmResult("a7", "full (lr=0.0002)", "full", "full", 2e-4, 10, 10, 0, "stopped", (),
                    None)  # fmt: skip
    assert prior_scores([arm], refs, task="sst2", model="m") == {"a7": 0.625}


def test_without_lr_keeps_the_other_settings() -> None:
    assert without_lr("full (student=3, lr=1e-4)") == "full (student=3)"
    assert without_lr("head (optim.lr=0.01)") == "head"
    assert without_lr("lisa:k=2,every=20") == "lisa:k=2,every=20"
    assert without_lr("full (student=3, teacher=@full)") == "full (student=3, teacher=@full)"


def test_references_import_without_torch() -> None:
    code = "import sys, freezetune.advise.references; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_builder_script_writes_what_shipped_reads(tmp_path: Path) -> None:
    _study(tmp_path / "default")
    out = tmp_path / "refs.json"
    script = ROOT / "benchmarks" / "reference_curves.py"
    subprocess.run([sys.executable, str(script), "--runs", str(tmp_path), "--out", str(out),
                    "default"], check=True, capture_output=True)  # fmt: skip
    data = json.loads(out.read_text("utf-8"))
    assert data["studies"]["default"]["config"] == "configs/studies/default.yaml"
    assert [r.final for r in parse_shipped(data)] == [0.9]
    with sqlite3.connect(tmp_path / "default" / "results.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)
