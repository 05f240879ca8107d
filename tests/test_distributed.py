"""Data-parallel runs (torchrun, gloo, 2 processes on this machine) against a single process.

How the batches are sharded over ranks (`ShardedBatches`) is tested in test_batching.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import wait_for_step
from freezetune import RunConfig, train
from freezetune.testing import assert_runs_alike

WORKER = Path(__file__).with_name("ddp_worker.py")
STRATEGIES = ["full", "bottom:1", "gradual:steps=3", "autofreeze:n=3"]


def torchrun(*args: str, nproc: int = 2, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FREEZETUNE_DIST_TIMEOUT": "30"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out, err


def workers(launcher: subprocess.Popen) -> list[int]:
    """The processes torchrun started (its children), rank order unknown."""
    found = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True)
    pids = [int(p) for p in found.stdout.split()]
    assert len(pids) == 2, pids
    return pids


def kill_job(launcher: subprocess.Popen) -> None:
    """SIGKILL both ranks and torchrun itself (killing torchrun alone leaves ranks running)."""
    for pid in [*workers(launcher), launcher.pid]:
        os.kill(pid, signal.SIGKILL)
    launcher.wait()


@pytest.fixture(scope="module")
def quiet_model(tiny_bert: str, tmp_path_factory) -> str:
    """The tiny BERT without dropout: 1 and 2 processes then draw no different random masks."""
    import shutil

    from transformers import AutoConfig

    path = tmp_path_factory.mktemp("quiet-bert")
    shutil.copytree(tiny_bert, path, dirs_exist_ok=True)
    config = AutoConfig.from_pretrained(path)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(path)
    return str(path)


#: what config() runs, for freezetune.testing.reordering_tolerance: the gradient of a weight
#: applied to every token sums 8 x 20 terms (global batch x max_length), which 2 ranks add as
#: 4 x 20 each, then all-reduce; 7 steps an epoch (52 / 8, the last of 4), 2 epochs, lr 1e-3.
#: The bound is 14 x 160 x 2**-23 = 2.7e-4 of a tensor's scale; one step more or less moves some
#: tensor by 8-10% of it: 300 x that.
ALIKE = {"summands": 8 * 20, "steps": 7 * 2, "lr": 1e-3}
ACCUMULATED = {**ALIKE, "summands": 2 * 8 * 20, "steps": 4 * 2}  # grad_accum=2: 4 steps an epoch


def config(model: str, out: Path, freeze: str, **train_opts) -> dict:
    return {
        "model": {"name": model, "classifier_dropout": 0.0},
        "freeze": freeze,
        # 52 examples, batch 8: the last global batch (4) splits 2 + 2
        "data": {"task": "sst2", "max_train_samples": 52, "max_eval_samples": 12, "max_length": 20},
        "optim": {"lr": 1e-3},
        "train": {"batch_size": 8, "epochs": 2, "progress": False, "cache": False, **train_opts},
        "out": str(out),
    }


# 1) two processes == one process (same global batch and seed), replicas bit-identical
@pytest.fixture(scope="module")
def two_process_runs(quiet_model: str, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    configs = [config(quiet_model, root / f"two-{i}", s) for i, s in enumerate(STRATEGIES)]
    configs[1]["train"]["grad_accum"] = 2  # all-reduce on the second micro-batch only
    one_dev = config(quiet_model, root / "one-dev-example", "full")
    one_dev["data"]["max_eval_samples"] = 1  # rank 1 scores nothing
    configs.append(one_dev)
    # distillation: the teacher (one process) is read by both ranks; each computes the logits
    # of its share of the training set once and they are gathered
    train(RunConfig.from_dict(config(quiet_model, root / "teacher", "full")))
    student = config(quiet_model, root / "student", "full")
    student["distill"] = {"teacher": str(root / "teacher"), "student_layers": 2}
    configs.append(student)
    (root / "configs.json").write_text(json.dumps(configs))
    finish(torchrun(str(WORKER), str(root / "configs.json")))
    return root


@pytest.mark.parametrize("index", range(len(STRATEGIES)), ids=STRATEGIES)
def test_two_processes_train_like_one(
    two_process_runs: Path, quiet_model: str, tmp_path: Path, index: int
) -> None:
    two = two_process_runs / f"two-{index}"
    rank0, rank1 = (load_file(two / f"rank{r}.safetensors") for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "replicas drifted apart"
    one = RunConfig.from_dict(json.loads((two_process_runs / "configs.json").read_text())[index])
    one = dataclasses.replace(one, out=str(tmp_path / "one"))
    single = train(one).to_dict()
    # the loss curve and the weights (written once, by rank 0): the same sums in another order
    assert_runs_alike(two, tmp_path / "one", **(ACCUMULATED if index == 1 else ALIKE))
    result = json.loads((two / "result.json").read_text())
    assert result["processes"] == 2
    assert [e["frozen_units"] for e in result["freeze_timeline"]] == [
        e["frozen_units"] for e in single["freeze_timeline"]
    ]
    if STRATEGIES[index].startswith(("gradual", "autofreeze")):  # a thaw / a freeze mid-run
        assert len({e["frozen_units"] for e in result["freeze_timeline"]}) > 1
    assert result["final"]["accuracy"] == single["final"]["accuracy"]


def test_distillation_under_two_processes_matches_one(
    two_process_runs: Path, tmp_path: Path
) -> None:
    two = two_process_runs / "student"
    one = RunConfig.from_dict({**json.loads((two / "run_config.json").read_text())})
    single = train(dataclasses.replace(one, out=str(tmp_path / "one")))
    assert_runs_alike(two, tmp_path / "one", **ALIKE)
    result = json.loads((two / "result.json").read_text())
    assert result["processes"] == 2 and result["distill"]["teacher"] == str(
        two_process_runs / "teacher"
    )
    assert result["final"]["accuracy"] == single.final["accuracy"]


def test_a_rank_without_dev_examples_still_pools_the_scores(two_process_runs: Path) -> None:
    result = json.loads((two_process_runs / "one-dev-example" / "result.json").read_text())
    assert result["final"]["accuracy"] in (0.0, 1.0)


# 2) the command line under torchrun: one writer, per-rank caches, resume on 1 process
def test_torchrun_cli_caches_per_rank_and_writes_once(quiet_model: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["-m", "freezetune", "train", "--model", quiet_model, "--freeze", "bottom:2"]
    argv += ["--max-train-samples", "48", "--max-eval-samples", "12", "--batch-size", "8"]
    argv += ["--epochs", "2", "--no-progress", "--out", str(out)]
    stdout, _ = finish(torchrun(*argv))
    assert stdout.count("done: best") == 1 and stdout.count("cache (train)") == 1
    result = json.loads((out / "result.json").read_text())
    assert result["processes"] == 2
    # each rank keeps 24 of the 48 examples: epoch 1 fills 6 local batches, epoch 2 hits them
    assert (result["cache"]["train"]["hits"], result["cache"]["train"]["misses"]) == (6, 6)
    assert len(list((out / "cache").glob("*"))) == 0  # in RAM, nothing spilled
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("eval") == 2  # logged by rank 0 only


def test_distributed_checkpoint_resumes_on_one_process(quiet_model: str, tmp_path: Path) -> None:
    spec = "gradual:steps=4"
    argv = ["-m", "freezetune", "train", "--model", quiet_model, "--freeze", spec]
    argv += ["--max-train-samples", "200", "--max-eval-samples", "12", "--batch-size", "8"]
    argv += ["--max-length", "20", "--lr", "1e-3", "--no-cache", "--epochs", "2"]
    argv += ["--save-every", "1", "--no-progress", "model.classifier_dropout=0"]  # 50 steps
    proc = torchrun(*argv, "--out", str(tmp_path / "split"))
    wait_for_step(tmp_path / "split", 10, proc)
    kill_job(proc)  # both ranks and the launcher, after step 10 or so
    assert not (tmp_path / "split" / "result.json").exists(), "finished before the kill"
    resumed = subprocess.run(
        [sys.executable, "-m", "freezetune", "train", "--resume", str(tmp_path / "split")],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    single = subprocess.run(
        [sys.executable, *argv, "--out", str(tmp_path / "single")], capture_output=True, text=True
    )
    assert single.returncode == 0, single.stderr[-2000:]
    # batches of 8 x 20 tokens, 200 / 8 = 25 steps an epoch, 2 epochs, lr 1e-3
    assert_runs_alike(tmp_path / "split", tmp_path / "single", summands=8 * 20, steps=50, lr=1e-3)


def test_distributed_resume_is_exact_with_dropout(tiny_bert: str, tmp_path: Path) -> None:
    """Killed and resumed on 2 processes == uninterrupted on 2: each rank gets its own RNG."""
    argv = ["-m", "freezetune", "train", "--model", tiny_bert, "--freeze", "autofreeze:n=4"]
    argv += ["--max-train-samples", "200", "--max-eval-samples", "12", "--batch-size", "8"]
    argv += ["--max-length", "20", "--lr", "1e-3", "--epochs", "2", "--save-every", "1"]
    argv += ["--no-progress", "--no-cache"]  # per-rank caches are rebuilt, not checkpointed
    finish(torchrun(*argv, "--out", str(tmp_path / "whole")))
    proc = torchrun(*argv, "--out", str(tmp_path / "split"))
    wait_for_step(tmp_path / "split", 10, proc)
    kill_job(proc)
    assert not (tmp_path / "split" / "result.json").exists(), "finished before the kill"
    finish(torchrun("-m", "freezetune", "train", "--resume", str(tmp_path / "split")))
    last = f"checkpoints/step-{50:09d}/model.safetensors"
    for name in ("model.safetensors", last):
        a, b = (load_file(tmp_path / run / name) for run in ("whole", "split"))
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} differs after resume"


# 3) a lost rank ends the job with an error, not a hang
def test_killed_rank_ends_the_job(quiet_model: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["-m", "freezetune", "train", "--model", quiet_model, "--freeze", "full"]
    argv += ["--max-train-samples", "2000", "--batch-size", "8", "--epochs", "5"]
    argv += ["--save-every", "2", "--no-progress", "--out", str(out)]
    proc = torchrun(*argv)
    wait_for_step(out, 1, proc)
    os.kill(workers(proc)[1], signal.SIGKILL)
    started = time.monotonic()
    _, err = proc.communicate(timeout=90)
    assert proc.returncode != 0
    assert time.monotonic() - started < 60, "the surviving rank hung"
    assert "Signal 9" in err or "SIGKILL" in err or "lost a process" in err, err[-2000:]
    assert not (out / "result.json").exists()


def test_study_under_torchrun_trains_each_run_on_both_ranks(tiny_bert: str, tmp_path: Path) -> None:
    argv = ["-m", "freezetune", "study", "--name", "ddp", "--strategies", "full,bottom:2"]
    argv += ["--model", tiny_bert, "--max-train-samples", "32", "--max-eval-samples", "8"]
    argv += ["--epochs", "1", "--batch-size", "8", "--out-root", str(tmp_path), "--no-progress"]
    stdout, _ = finish(torchrun(*argv))
    assert stdout.count("study ddp: 2 of 2 runs succeeded") == 1
    results = [json.loads(p.read_text()) for p in (tmp_path / "ddp" / "runs").glob("*/result.json")]
    assert sorted(r["freeze"] for r in results) == ["bottom:2", "full"]
    assert all(r["processes"] == 2 for r in results)
    assert (tmp_path / "ddp" / "report.html").is_file()
