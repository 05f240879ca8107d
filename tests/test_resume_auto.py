"""``--resume auto``: one command that starts a run, resumes it, or leaves a finished one alone.

A Slurm requeue or a spot instance repeats the same command after each preemption; the result
must be that of an uninterrupted run, and a folder of another run must never be continued.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import TINY_RUN_ARGS, wait_for_step
from freezetune.cli import build_parser, config_from_args, main
from freezetune.testing import assert_one_line_error
from freezetune.training import train_or_resume
from test_resume import assert_same_run, cli, start

FREEZE = "bottom:1"
#: the tiny run without ``--save-every``: it checkpoints only on SIGINT/SIGTERM
_SAVE = TINY_RUN_ARGS.index("--save-every")
NO_CHECKPOINTS = TINY_RUN_ARGS[:_SAVE] + TINY_RUN_ARGS[_SAVE + 2 :]


def auto(tiny_bert: str, out: Path, *extra: str, args: list[str] = TINY_RUN_ARGS) -> list[str]:
    model = ["--model", tiny_bert, "--freeze", FREEZE]
    return ["train", "--resume", "auto", *model, *args, "--out", str(out), *extra]


@pytest.fixture(scope="module")
def whole(tiny_bert, tmp_path_factory) -> Path:
    """The same run, uninterrupted, started by a plain ``train``: what every test must match."""
    out = tmp_path_factory.mktemp("whole") / "run"
    assert main(cli(tiny_bert, out, FREEZE)) == 0
    return out


def snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``out`` with its mtime and size: touching one changes it."""
    return {
        str(p.relative_to(out)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in [out, *out.rglob("*")]
    }


def kill_at(argv: list[str], out: Path, step: int) -> None:
    proc = start(argv)
    wait_for_step(out, step, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_on_an_empty_folder_it_starts_the_run(tiny_bert, tmp_path, whole, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert main(auto(tiny_bert, out)) == 0
    captured = capsys.readouterr()
    assert "done: best accuracy" in captured.out and "resumed from" not in captured.err
    assert_same_run(whole, out)
    config = json.loads((out / "result.json").read_text())["config"]
    assert config["overwrite"] is False  # the run's config as given, not how it was started


def test_killed_twice_the_same_command_resumes_bit_identically(tiny_bert, tmp_path, whole, capsys):
    out = tmp_path / "out"
    for step in (7, 21):  # of 36: two preemptions, each answered by the same command
        kill_at(auto(tiny_bert, out), out, step)
    assert not (out / "result.json").exists()
    assert main(auto(tiny_bert, out)) == 0
    assert "resumed from" in capsys.readouterr().err
    assert_same_run(whole, out)


def test_another_invocation_of_the_run_resumes_it(tiny_bert, tmp_path, whole, capsys):
    """Options of the invocation (``identity=False``) may change between attempts of a run."""
    out = tmp_path / "out"
    kill_at(auto(tiny_bert, out), out, 12)
    started = (out / "run_config.json").read_text()
    again = ("--report-to", "tensorboard", "--no-inference-cost", "--save-every", "5")
    assert main(auto(tiny_bert, out, *again)) == 0
    assert "resumed from" in capsys.readouterr().err
    assert_same_run(whole, out)
    assert (out / "run_config.json").read_text() == started  # as the run was started
    config = json.loads((out / "result.json").read_text())["config"]
    assert config["train"]["report_to"] == "tensorboard" and not config["train"]["inference_cost"]
    assert config["train"]["save_every"] == 5 and any((out / "tensorboard").iterdir())


def test_a_corrupt_newest_checkpoint_is_skipped_for_an_older_one(
    tiny_bert, tmp_path, whole, capsys
):
    out = tmp_path / "out"
    kill_at(auto(tiny_bert, out), out, 12)
    newest = sorted((out / "checkpoints").glob("step-*"))[-1]
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert main(auto(tiny_bert, out)) == 0
    err = capsys.readouterr().err
    assert err.count("skipping corrupt or incomplete checkpoint") == 1, err
    assert "resumed from" in err
    assert_same_run(whole, out)


def test_with_every_checkpoint_corrupt_it_starts_over(tiny_bert, tmp_path, whole, capsys):
    out = tmp_path / "out"
    kill_at(auto(tiny_bert, out), out, 5)
    folders = sorted((out / "checkpoints").glob("step-*"))
    for folder in folders:
        (folder / "state.pt").write_bytes(b"garbage")
    assert main(auto(tiny_bert, out)) == 0
    err = capsys.readouterr().err
    assert err.count("skipping corrupt or incomplete checkpoint") == len(folders), err
    assert "resumed from" not in err
    assert_same_run(whole, out)


def test_a_finished_run_is_left_alone_in_one_line(tiny_bert, tmp_path, whole, capsys):
    out = tmp_path / "out"
    shutil.copytree(whole, out)  # a finished run, as if this command had written it
    before = snapshot(out)
    best = json.loads((out / "result.json").read_text())["best"]
    # the progress bar is not part of the run: it may differ between attempts
    invocation = ("--report-to", "tensorboard", "--no-inference-cost", "--save-every", "5")
    for extra in ((), ("train.progress=true",), invocation):
        assert main(auto(tiny_bert, out, *extra)) == 0
        captured = capsys.readouterr()
        assert captured.out.splitlines() == [
            f"{out} already finished: best accuracy {best['accuracy']:.4f} "
            f"(epoch {best['epoch']}); nothing to do"
        ]
        assert captured.err == ""
    assert snapshot(out) == before
    # the Python function returns the run's result as result.json holds it, writing nothing
    result = train_or_resume(config_from_args(build_parser().parse_args(auto(tiny_bert, out))))
    written = json.loads((out / "result.json").read_text())
    assert result.to_dict() == {**written, "config": {**written["config"], "out": str(out)}}
    assert snapshot(out) == before


def test_a_different_run_in_the_folder_is_refused_in_one_line(tiny_bert, tmp_path, whole, capsys):
    out = tmp_path / "out"
    shutil.copytree(whole, out)
    for finished in (True, False):
        if not finished:
            (out / "result.json").unlink()  # an unfinished run with its checkpoints
        before = snapshot(out)
        code = main(auto(tiny_bert, out, "--lr", "2e-3"))
        needles = "optim.lr is 0.001 there, 0.002 here", "another --out", "--overwrite"
        assert_one_line_error(code, capsys.readouterr().err, *needles)
        assert snapshot(out) == before
    # --overwrite asks for the other run to be replaced: a fresh run, never a resumed one
    assert main(auto(tiny_bert, out, "--lr", "2e-3", "--overwrite")) == 0
    assert "resumed from" not in capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["optim"]["lr"] == 2e-3 and result["steps"] == 36


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.02)


def test_an_attempt_killed_before_its_first_checkpoint_starts_fresh(
    tiny_bert, tmp_path, whole, capsys
):
    out = tmp_path / "out"
    proc = start(auto(tiny_bert, out, args=NO_CHECKPOINTS))
    wait_for_file(out / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "result.json").exists() and not any(out.glob("checkpoints/step-*"))
    with open(out / "metrics.jsonl", "a") as f:  # what a longer-lived attempt would have logged
        f.write(json.dumps({"event": "eval", "step": 12, "epoch": 1, "accuracy": 0.0}) + "\n")
    assert main(auto(tiny_bert, out, args=NO_CHECKPOINTS)) == 0
    assert "resumed from" not in capsys.readouterr().err
    assert_same_run(whole, out)  # the attempt's metrics were replaced, not appended to
    events = [json.loads(line)["event"] for line in (out / "metrics.jsonl").open()]
    assert events.count("start") == 1


def test_a_folder_named_auto_still_resumes_with_a_path(tiny_bert, tmp_path, whole, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(whole, tmp_path / "auto")
    (tmp_path / "auto" / "result.json").unlink()
    shutil.rmtree(sorted((tmp_path / "auto" / "checkpoints").glob("step-*"))[-1])
    assert main(["train", "--resume", "./auto", "--no-progress"]) == 0
    assert_same_run(whole, tmp_path / "auto")


def test_a_folder_that_holds_no_run_of_ours_is_refused_as_train_refuses(
    tiny_bert, tmp_path, capsys
):
    out = tmp_path / "a-model"
    shutil.copytree(tiny_bert, out)  # model.safetensors and config.json, but no run
    before = snapshot(out)
    code = main(auto(tiny_bert, out))
    assert_one_line_error(code, capsys.readouterr().err, "already holds a result")
    assert snapshot(out) == before
