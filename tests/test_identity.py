"""What a run *is* is declared once, on its options (issue 24, item 6).

Its run_id hashes its identity (``options.identity``), and an attempt whose identity is the same
continues the run. So options of the invocation (``--report-to``, ``--no-inference-cost``,
checkpoints, the executor that sets them) neither change a run_id nor restart an unfinished
run, and an option added with a default keeps every stored run_id.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from freezetune.cli import main
from freezetune.config import RunConfig, TrainConfig
from freezetune.errors import UserError
from freezetune.options import NOT_SET, identity, option
from freezetune.rundir import auto_action
from freezetune.study import StudySpec
from freezetune.study.spec import config_hash
from test_study import rows_of

# ---- run ids stay ---------------------------------------------------------------------------

#: run ids as the code at commit 6088844 computed them (before identity was declared on the
#: options); every study stored since must find its runs again
STORED_IDS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "plain": (
        {"strategies": ["full", "head", "bottom:2", "lora"], "seeds": [0, 1]},
        ["1fffed8abf8636a2", "90ef3761fc2864f6", "b21cd4a54ba55842", "727404656fb05da6",
         "ab9980fc9556fa8f", "50977b4e34833163", "0eb571faaa499ef7", "86003fc62b8cfd89"],
    ),
    "axes": (
        {"strategies": ["full", {"freeze": "head", "optim.lr": 1e-3}], "lrs": [1e-4, 3e-4],
         "train_sizes": [100]},
        ["9b6684f0f7a81e97", "af7ff4db94246886", "fb6b3e3cc7512b2b"],
    ),
    "invocation": (
        {"strategies": ["full"], "base": {"train": {"report_to": "tensorboard",
         "inference_cost": False, "save_every": 5, "progress": False}}},
        ["1fffed8abf8636a2"],  # the same run as plain's first
    ),
    "distill": (
        {"strategies": ["full", {"freeze": "full", "distill.student_layers": 3},
         {"freeze": "full", "distill.student_layers": 3, "distill.teacher": "@full"}]},
        ["1fffed8abf8636a2", "0b2ddedecfcb4b04", "450272320c4675b0"],
    ),
    "image": (
        {"strategies": ["full", "head"], "base": {"data": {"task": "fashion-mnist"}}},
        ["511737f2c1902f55", "fe605815156fa77b"],
    ),
    "image-set": (
        {"strategies": ["full"], "base": {"data": {"task": "fashion-mnist", "image_size": 32,
         "augment": True}}},
        ["cdacdd4e2365a79f"],
    ),
    "base": (
        {"strategies": ["full"], "base": {"model": {"name": "bert-base-uncased"},
         "data": {"task": "mrpc", "max_length": 64}, "train": {"epochs": 2, "bf16": True}}},
        ["9c5a07f1db255614"],
    ),
}  # fmt: skip

#: the keys of a text run's identity at commit 6088844 (distill, image_size and augment were
#: added later and are left out at their defaults)
STORED_KEYS = {
    "freeze",
    *("model." + k for k in ("name", "pooling", "blocks_path", "embeddings_paths")),
    *("model." + k for k in ("classifier_dropout", "trust_remote_code")),
    *("data." + k for k in ("task", "data_dir", "train_file", "validation_file")),
    *("data." + k for k in ("text_columns", "label_column", "regression", "max_length")),
    *("data." + k for k in ("max_train_samples", "max_eval_samples", "group_by_length")),
    *("optim." + k for k in ("lr", "head_lr", "weight_decay", "warmup_ratio", "max_grad_norm")),
    *("optim." + k for k in ("adam_beta1", "adam_beta2", "adam_eps")),
    *("train." + k for k in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "bf16")),
    *("train." + k for k in ("seed", "eval_every", "threads", "save_every", "keep_checkpoints")),
    *("train." + k for k in ("skip_nonfinite", "cache", "cache_dtype", "cache_dir")),
    "train.cache_budget_mb",
}


@pytest.mark.parametrize("name", STORED_IDS)
def test_every_stored_run_id_stays(name):
    data, ids = STORED_IDS[name]
    spec = StudySpec.from_dict({"name": "s", **data}, preset_blocks=6)
    assert [run.run_id for run in spec.grid()] == ids


def _declared(config: Any, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every option of ``config`` by key, but those of sections left out at their defaults."""
    found = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            if not getattr(value, "absent_means_defaults", False):
                found.update(_declared(value, f"{f.name}."))
        else:
            found[prefix + f.name] = f
    return found


def test_an_option_added_since_runs_were_stored_declares_what_they_ran_with():
    """A new option must not change stored run ids: declare ``absent_means`` (the value runs
    stored before it had in effect) or ``identity=False`` (it is no part of what a run is)."""
    plain = json.loads(json.dumps(RunConfig().to_dict()))
    for key, f in _declared(RunConfig()).items():
        if key in STORED_KEYS:
            continue
        invocation = not f.metadata["identity"]
        assert invocation or f.metadata["absent_means"] is not NOT_SET, (
            f"{key} was added after runs were stored: declare option(..., absent_means=<the "
            "value earlier runs had>) or option(..., identity=False)"
        )
        section, _, name = key.rpartition(".")
        default = plain[section][name] if section else plain[name]
        assert invocation or f.metadata["absent_means"] == default, key


@dataclass(frozen=True)
class NewTrain(TrainConfig):
    warmup_steps: int = option(0, "a new option", absent_means=0)
    log_every: int = option(10, "a new invocation option", identity=False)


@dataclass(frozen=True)
class NewSection:
    section: ClassVar[str] = "extra"
    absent_means_defaults: ClassVar[bool] = True
    depth: int = option(1, "a new section's option")
    name: str = option("x", "another")


@dataclass(frozen=True)
class NewRun(RunConfig):
    extra: NewSection = dataclasses.field(default_factory=NewSection)


def test_adding_an_option_or_a_section_with_a_default_keeps_every_run_id():
    old = RunConfig.from_dict({"freeze": "head"})  # plain's second run
    new = NewRun(freeze="head", optim=old.optim, train=NewTrain())
    assert identity(new) == identity(old) and config_hash(identity(new)) == "90ef3761fc2864f6"
    assert identity(NewRun(train=NewTrain(log_every=1))) == identity(RunConfig())
    moved = identity(NewRun(train=NewTrain(warmup_steps=5), extra=NewSection(depth=2)))
    assert moved["train"]["warmup_steps"] == 5 and moved["extra"] == {"depth": 2, "name": "x"}


def test_identity_leaves_out_the_invocation_and_holds_save_every_at_none():
    config = RunConfig.from_dict(
        {"out": "elsewhere", "overwrite": True, "train": {"progress": False, "save_every": 3,
         "report_to": "tensorboard", "inference_cost": False}}
    )  # fmt: skip
    ours = identity(config)
    assert ours == identity(RunConfig()) and "out" not in ours and "overwrite" not in ours
    assert ours["train"]["save_every"] is None and "report_to" not in ours["train"]
    assert "distill" not in ours and "image_size" not in ours["data"]
    student = identity(RunConfig.from_dict({"distill": {"student_layers": 2}}))
    assert student["distill"]["student_pick"] == "even"  # all of the section, once it is used


# ---- the same run continues whatever the invocation ------------------------------------------


def _attempt(out: Path, config: dict) -> None:
    """What an attempt killed after its checkpoint at step 4 leaves (auto_action only reads)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_config.json").write_text(json.dumps(config))
    (out / "checkpoints" / "step-00000004").mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize(
    "again",
    [
        {"train": {"report_to": "tensorboard"}},
        {"train": {"inference_cost": False}},
        {"train": {"save_every": 50}},  # what --executor ray asks of a run that sets none
        {"train": {"progress": False}, "overwrite": True},
    ],
)
def test_another_invocation_of_an_unfinished_run_resumes_it(tmp_path, again):
    out = tmp_path / "run"
    _attempt(out, RunConfig.from_dict({"out": str(out)}).to_dict())
    assert auto_action(RunConfig.from_dict({**again, "out": str(out)})) == "resume"


def test_another_run_in_the_folder_is_still_refused_naming_the_key(tmp_path):
    out = tmp_path / "run"
    image = {"data": {"task": "fashion-mnist"}, "out": str(out)}
    _attempt(out, RunConfig.from_dict(image).to_dict())
    bigger = RunConfig.from_dict({**image, "data": {"task": "fashion-mnist", "image_size": 32}})
    with pytest.raises(UserError, match=r"data\.image_size is 96 there, 32 here"):
        auto_action(bigger)
    assert auto_action(dataclasses.replace(bigger, overwrite=True)) == "start"


# ---- end to end: a study rerun with another invocation resumes its unfinished run -------------


def study_args(tiny_bert: str, root: Path, *extra: str) -> list[str]:
    # 2 epochs of 8 steps; checkpoints at 4, 8, 12, 16 (the newest 2 kept)
    return [
        "study", "--name", "tiny", "--strategies", "bottom:1", "--seeds", "0",
        "--model", tiny_bert, "--task", "sst2", "--max-train-samples", "64",
        "--max-eval-samples", "16", "--max-length", "24", "--epochs", "2", "--batch-size", "8",
        "--threads", "1", "--out-root", str(root), "--no-progress", "optim.lr=1e-3", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished_study(tiny_bert, tmp_path_factory) -> Path:
    """A one-run study that keeps its checkpoints (``train.save_every`` is no part of its id)."""
    root = tmp_path_factory.mktemp("identity")
    assert main(study_args(tiny_bert, root, "train.save_every=4")) == 0
    return root


def interrupt(folder: Path) -> tuple[str, Path]:
    """Turn the study's finished run into what a kill -9 after step 12's checkpoint leaves."""
    ((run_id, _),) = rows_of(folder).items()
    out = folder / "runs" / run_id
    for name in ("result.json", "model.safetensors"):
        (out / name).unlink()
    newest = sorted((out / "checkpoints").glob("step-*"))[-1]
    assert int(newest.name[5:]) == 16
    shutil.rmtree(newest)
    dead = subprocess.Popen(["true"])
    dead.wait()
    conn = sqlite3.connect(folder / "results.sqlite")
    with conn:
        conn.execute(
            "UPDATE runs SET status='running', result=NULL, finished_at=NULL, pid=? WHERE run_id=?",
            (dead.pid, run_id),
        )
    conn.close()
    return run_id, out


@pytest.mark.parametrize(
    ("rerun", "changed"),
    [
        (["train.save_every=4", "--report-to", "tensorboard"], ("report_to", "tensorboard")),
        (["train.save_every=4", "train.inference_cost=false"], ("inference_cost", False)),
        # the first attempt checkpointed as the Ray executor has a run do; the local one does not
        (["--jobs", "2"], ("save_every", None)),
    ],
    ids=["report-to", "no-inference-cost", "executor"],
)
def test_a_study_rerun_with_another_invocation_resumes_its_unfinished_run(
    tiny_bert, finished_study, tmp_path, rerun, changed
):
    root = tmp_path / "root"
    shutil.copytree(finished_study, root)
    folder = root / "tiny"
    run_id, out = interrupt(folder)
    whole = json.loads((finished_study / "tiny" / "runs" / run_id / "result.json").read_text())
    started = (out / "run_config.json").stat()
    assert main(study_args(tiny_bert, root, *rerun)) == 0
    (row,) = rows_of(folder).values()
    assert row["run_id"] == run_id and row["status"] == "succeeded" and row["attempts"] == 2
    # resumed, not started over: a fresh start writes run_config.json anew
    again = (out / "run_config.json").stat()
    assert (again.st_ino, again.st_mtime_ns) == (started.st_ino, started.st_mtime_ns)
    result = json.loads((out / "result.json").read_text())
    key, value = changed
    assert result["config"]["train"][key] == value  # the attempt ran as this invocation asks
    assert result["steps"] == whole["steps"] == 16
    assert result["best"] == whole["best"]  # and ends where the uninterrupted run ended
    if key == "report_to":
        assert any((out / "tensorboard").iterdir())
