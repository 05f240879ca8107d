"""Nothing lost: atomic checkpoints, exact resume after SIGKILL/SIGTERM, safe failures."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_RUN_ARGS, wait_for_step
from freezetune import RunConfig
from freezetune.cli import main
from freezetune.errors import UserError
from freezetune.training import resume, train

ARGS = TINY_RUN_ARGS


def cli(tiny_bert: str, out: Path, freeze: str) -> list[str]:
    return ["train", "--model", tiny_bert, "--freeze", freeze, *ARGS, "--out", str(out)]


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "freezetune", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def comparable(out: Path) -> tuple[dict, list[dict]]:
    result = json.loads((out / "result.json").read_text())
    evals = [
        {k: v for k, v in e.items() if not k.endswith("time_s")}
        for e in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if e["event"] in ("eval", "freeze")
    ]
    final = {k: v for k, v in result["final"].items() if not k.endswith("time_s")}
    return {"final": final, "policy": result["policy_state"]}, evals


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ after resume"
    assert comparable(a) == comparable(b)


@pytest.mark.parametrize("freeze", ["full", "bottom:1", "gradual:steps=5", "autofreeze:n=6"])
def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tiny_bert, tmp_path, freeze):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(cli(tiny_bert, whole, freeze)) == 0
    kill_at = random.Random(freeze).randint(2, 30)  # of 36 steps
    proc = start(cli(tiny_bert, killed, freeze))
    wait_for_step(killed, kill_at, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists()
    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    assert_same_run(whole, killed)


def test_sigterm_checkpoints_and_says_how_to_resume(tiny_bert, tmp_path):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    argv = [a for a in cli(tiny_bert, stopped, "bottom:1") if a not in ("--save-every", "1")]
    assert main([a for a in cli(tiny_bert, whole, "bottom:1")]) == 0
    proc = start(argv)
    deadline = time.monotonic() + 120
    while (
        not (stopped / "metrics.jsonl").exists()
        or "freeze" not in (stopped / "metrics.jsonl").read_text()
    ):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"freezetune train --resume {stopped}" in err
    assert main(["train", "--resume", str(stopped), "--no-progress"]) == 0
    assert_same_run(whole, stopped)


def test_corrupt_newest_checkpoint_is_skipped(tiny_bert, tmp_path, capsys):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert main(cli(tiny_bert, whole, "full")) == 0
    proc = start(cli(tiny_bert, broken, "full"))
    wait_for_step(broken, 12, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    newest = sorted((broken / "checkpoints").glob("step-*"))[-1]
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["train", "--resume", str(broken), "--no-progress"]) == 0
    assert "skipping corrupt or incomplete checkpoint" in capsys.readouterr().err
    assert_same_run(whole, broken)


def test_unfinished_run_is_not_silently_replaced(tiny_bert, tmp_path, capsys):
    out = tmp_path / "out"
    proc = start(cli(tiny_bert, out, "full"))
    wait_for_step(out, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(cli(tiny_bert, out, "full")) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2


def config(tiny_bert, tmp_path, **train_kw):
    return RunConfig.from_dict(
        {
            "model": {"name": tiny_bert},
            "data": {
                "task": "sst2",
                "max_train_samples": 32,
                "max_eval_samples": 8,
                "max_length": 24,
            },
            "train": {"epochs": 1, "batch_size": 8, "progress": False, "save_every": 1, **train_kw},
            "out": str(tmp_path / "out"),
        }
    )


def test_disk_full_keeps_the_previous_checkpoint(tiny_bert, tmp_path, monkeypatch):
    import freezetune.checkpoint as checkpoint

    real = checkpoint.save_file

    def flaky(tensors, path, *args, **kwargs):
        if "step-000000003" in str(path):  # the disk fills up while writing the third
            raise OSError(28, "No space left on device")
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", flaky)
    with pytest.raises(UserError, match="No space left on device"):
        train(config(tiny_bert, tmp_path, keep_checkpoints=5))
    kept = sorted((tmp_path / "out" / "checkpoints").iterdir())
    assert [p.name for p in kept] == ["step-000000001", "step-000000002"]
    assert checkpoint.find_latest(tmp_path / "out") == kept[-1]


def test_nonfinite_loss_stops_with_the_step_or_is_skipped(tiny_bert, tmp_path, monkeypatch):
    from freezetune.classifier import FreezetuneForSequenceClassification as Model

    real, calls = Model.head_forward, {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3 and self.training:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(Model, "head_forward", poisoned)
    with pytest.raises(UserError, match="at step 2"):
        train(config(tiny_bert, tmp_path))
    assert (tmp_path / "out" / "checkpoints" / "step-000000002").is_dir()
    calls["n"] = 0
    result = train(config(tiny_bert, tmp_path / "skip", skip_nonfinite=True))
    events = (tmp_path / "skip" / "out" / "metrics.jsonl").read_text()
    assert '"event": "skipped"' in events and result.status == "succeeded"


def test_a_pickle_in_a_checkpoint_is_never_executed(tiny_bert, tmp_path):
    import freezetune.checkpoint as checkpoint

    out = tmp_path / "out"
    with pytest.raises(UserError):
        resume(out)  # nothing to resume yet
    train(config(tiny_bert, tmp_path, keep_checkpoints=1))
    (out / "result.json").unlink()
    latest = sorted((out / "checkpoints").glob("step-*"))[-1]

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"x": Evil()}, latest / "state.pt")
    manifest = json.loads((latest / "manifest.json").read_text())
    manifest["state.pt"] = {
        "bytes": (latest / "state.pt").stat().st_size,
        "sha256": checkpoint._sha256(latest / "state.pt"),
    }
    (latest / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="cannot be loaded safely"):
        resume(out)
    assert not (tmp_path / "pwned").exists()


def _rewrite_state(folder: Path, state: dict) -> None:
    """Replace a checkpoint's state.pt and keep its manifest true (as a writer would)."""
    import freezetune.checkpoint as checkpoint

    torch.save(state, folder / "state.pt")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["state.pt"] = {
        "bytes": (folder / "state.pt").stat().st_size,
        "sha256": checkpoint._sha256(folder / "state.pt"),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _format_2(state: dict) -> dict:
    """The state.pt layout of format 2: the timeline's records said ``units_frozen``."""
    loop = dict(state["loop"])
    loop["timeline"] = [
        {("units_frozen" if k == "frozen_units" else k): v for k, v in e.items()}
        for e in loop["timeline"]
    ]
    return {**state, "format": 2, "loop": loop}


def _format_1(state: dict) -> dict:
    """The state.pt layout written before checkpoints had a format number."""
    loop = dict(_format_2(state)["loop"])
    old = {k: v for k, v in state.items() if k not in ("format", "loop")}
    return {
        **old,
        "step": loop.pop("step"),
        "frozen_prefix": loop.pop("frozen_units"),
        "loop": loop,
    }


OLD_FORMATS = {1: _format_1, 2: _format_2}


def _stop_at(out: Path, step: int) -> Path:
    """Make ``out`` look killed right after the checkpoint of ``step``; return that checkpoint."""
    (out / "result.json").unlink()
    folders = sorted((out / "checkpoints").glob("step-*"))
    for later in folders[step:]:
        for f in later.iterdir():
            f.unlink()
        later.rmdir()
    return folders[step - 1]


@pytest.mark.parametrize(
    ("freeze", "version"), [("bottom:2", 1), ("autofreeze:n=4", 1), ("autofreeze:n=4", 2)]
)
def test_a_checkpoint_of_an_older_format_resumes_bit_identically(
    tiny_bert, tmp_path, freeze, version
):
    cfg = config(tiny_bert, tmp_path, epochs=2, keep_checkpoints=100)
    cfg = RunConfig.from_dict({**cfg.to_dict(), "freeze": freeze})  # bottom:2 caches states
    out = Path(cfg.out)
    whole = train(cfg)
    expected = comparable(out), load_file(out / "model.safetensors")
    folder = _stop_at(out, 3)  # of 8 steps
    state = torch.load(folder / "state.pt", weights_only=True)
    assert state["format"] == 3 and state["loop"]["step"] == 3
    assert state["loop"]["timeline"] and "frozen_units" in state["loop"]["timeline"][0]
    _rewrite_state(folder, OLD_FORMATS[version](state))
    again = resume(out)
    assert again.steps == whole.steps and again.final == {**whole.final, **timing(again.final)}
    assert again.freeze_timeline == whole.freeze_timeline  # the old records, renamed
    assert comparable(out) == expected[0]
    weights = load_file(out / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in expected[1].items())


def timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k.endswith("time_s")}


@pytest.mark.parametrize(
    "bad", [{"format": 99}, {"format": 3, "loop": {}}, {"format": 2, "loop": {}}, {"x": 1}]
)
def test_a_checkpoint_of_an_unknown_format_is_refused_in_one_line(tiny_bert, tmp_path, bad):
    out = tmp_path / "out"
    train(config(tiny_bert, tmp_path, keep_checkpoints=1))
    folder = _stop_at(out, 1)
    _rewrite_state(folder, bad)
    with pytest.raises(UserError, match="cannot read") as err:
        resume(out)
    assert "\n" not in str(err.value)
