"""The objectives seam: a registered objective trains a run, sees the whole batch (twice if
it likes) without changing it, and bad objectives are refused in one line before anything
is written."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import twice_objective
from freezetune.cli import main
from freezetune.config import RunConfig
from freezetune.errors import UserError
from freezetune.loop import forward
from freezetune.objectives import (
    OBJECTIVES,
    TaskLoss,
    check_objective,
    objective_name,
    objective_options,
)
from freezetune.options import identity
from freezetune.plugins import code_modules
from freezetune.study import StudySpec, run_study
from freezetune.testing import assert_one_line_error, tiny_run_config
from freezetune.training import train


@pytest.fixture
def twice():
    twice_objective.register()
    twice_objective.CALLS.clear()
    yield twice_objective.CALLS
    OBJECTIVES.unregister("twice")


def test_a_registered_objective_trains_a_run_and_sees_the_whole_batch(tiny_bert, tmp_path, twice):
    config = tiny_run_config(tiny_bert, tmp_path / "run")
    config = RunConfig.from_dict({**config.to_dict(), "objective": "twice:weight=0.25"})
    result = train(config)
    assert result.distill == {"objective": "twice", "weight": 0.25}
    assert len(twice) == result.steps == 4  # 64 examples, batch 16, one epoch
    assert all("index" in keys and "labels" in keys for keys in twice)
    assert all(keys[: len(keys) // 2] == keys[len(keys) // 2 :] for keys in twice)


def test_forward_leaves_the_batch_as_it_was():
    seen = []
    model = lambda **inputs: seen.append(sorted(inputs)) or SimpleNamespace()  # noqa: E731
    batch = {"input_ids": torch.zeros(2, 3), "labels": torch.zeros(2), "index": torch.arange(2)}
    forward(model, None, batch, 0)
    assert sorted(batch) == ["index", "input_ids", "labels"]
    assert seen == [["input_ids", "labels"]]


def test_the_default_objective_is_the_tasks_loss_or_distill_with_a_teacher():
    assert objective_name(RunConfig()) == "task"
    assert objective_name(RunConfig.from_dict({"distill": {"teacher": "runs/full"}})) == "distill"
    assert objective_name(RunConfig.from_dict({"objective": "twice:weight=1"})) == "twice"
    loss, out = TaskLoss().loss(lambda b: SimpleNamespace(loss=torch.tensor(2.0)), {})
    assert loss.item() == 2.0 and out.loss.item() == 2.0


def test_an_objective_left_at_its_default_keeps_every_run_id():
    plain = RunConfig.from_dict({"freeze": "bottom:2"})
    assert identity(plain) == identity(
        RunConfig.from_dict({"freeze": "bottom:2", "objective": None})
    )
    assert identity(plain) != identity(
        RunConfig.from_dict({"freeze": "bottom:2", "objective": "task"})
    )


@pytest.mark.parametrize(
    ("text", "teacher", "expected"),
    [
        ("nope", None, "unknown --objective 'nope'; choose one of: task, distill"),
        (
            "twice:beta=1",
            None,
            "--objective twice:beta=1: unknown option 'beta'; choose from weight",
        ),
        ("twice:weight=x", None, "--objective twice:weight=x: weight must be a float, got 'x'"),
        ("distill", None, "--objective distill learns from a teacher; pass --teacher RUN_FOLDER"),
        ("twice", "runs/full", "--teacher is unused by --objective twice"),
    ],
)
def test_bad_objectives_are_one_line(text, teacher, expected, twice):
    config = RunConfig.from_dict({"objective": text, "distill": {"teacher": teacher}})
    with pytest.raises(UserError) as err:
        check_objective(config)
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_an_unknown_objective_stops_the_cli_before_any_folder(tiny_bert, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--model",
        tiny_bert,
        "--out",
        str(out),
        "--objective",
        "nope",
        "--no-progress",
    ]
    assert_one_line_error(main(argv), capsys.readouterr().err, "unknown --objective 'nope'")
    assert not out.exists()


def test_options_parse_to_the_dataclass(twice):
    plugin, options = objective_options("twice:weight=0.75")
    assert options == twice_objective.TwiceOptions(weight=0.75) and plugin.teacher is False


def test_a_study_runs_a_code_registered_objective_in_its_run_processes(tiny_bert, tmp_path, twice):
    base = {
        "model": {"name": tiny_bert},
        "data": {"task": "sst2", "max_train_samples": 32, "max_eval_samples": 8, "max_length": 20},
        "train": {"epochs": 1, "batch_size": 16},
    }
    strategies = ["full", {"freeze": "full", "objective": "twice:weight=0.5"}]
    spec = StudySpec.from_dict({"name": "obj", "base": base, "strategies": strategies})
    assert code_modules() == ["twice_objective"]  # registered by code, there
    outcome = run_study(spec, tmp_path, progress=False, report=False)
    assert (outcome.succeeded, outcome.failed) == (2, 0)
    twiced = next(r for r in spec.grid() if r.strategy != "full")
    result = json.loads((outcome.folder / "runs" / twiced.run_id / "result.json").read_text())
    assert result["distill"] == {"objective": "twice", "weight": 0.5}


def test_the_readmes_objective_example_trains(tiny_bert, tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("A loss of your own is an objective") :]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    module = types.ModuleType("rdrop")  # `import rdrop`, as the README says
    monkeypatch.setitem(sys.modules, "rdrop", module)
    exec(compile(code, "README rdrop.py", "exec"), module.__dict__)
    try:
        config = tiny_run_config(tiny_bert, tmp_path / "run", "bottom:1")
        result = train(RunConfig.from_dict({**config.to_dict(), "objective": "rdrop:alpha=4"}))
        assert result.distill == {"objective": "rdrop", "alpha": 4.0} and result.steps == 4
    finally:
        OBJECTIVES.unregister("rdrop")
