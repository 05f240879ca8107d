"""Issue 7: kill a training run with SIGKILL at random steps, resume it, and compare with an
uninterrupted run of the same seed (weights bit for bit, metrics exactly).

Uses a tiny random BERT (3 blocks) on a 96-example SST-2 slice, checkpointing every step.

    python benchmarks/kill_resume.py --trials 12
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from freezetune.testing import TINY_RUN_ARGS, save_tiny_model

SPECS = ["full", "bottom:1", "gradual:steps=5", "autofreeze:n=6"]
ARGS = TINY_RUN_ARGS  # 36 optimizer steps, a checkpoint after each


def freezetune(*argv: str, wait: bool = True) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "freezetune", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if wait:
        assert proc.wait() == 0, argv
    return proc


def newest_step(out: Path) -> int:
    return max((int(p.name[5:]) for p in (out / "checkpoints").glob("step-*")), default=-1)


def equal_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(a), load_file(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def compare(a: Path, b: Path) -> dict[str, bool]:
    """Saved (best) weights, last weights (the final step's checkpoint) and final metrics."""
    ra, rb = (json.loads((p / "result.json").read_text()) for p in (a, b))
    untimed = [{k: v for k, v in r["final"].items() if not k.endswith("time_s")} for r in (ra, rb)]
    last = f"checkpoints/step-{ra['steps']:09d}/model.safetensors"
    return {
        "best": equal_weights(a / "model.safetensors", b / "model.safetensors"),
        "last": equal_weights(a / last, b / last),
        "metrics": untimed[0] == untimed[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="kill-resume-"))
    model = str(save_tiny_model(root / "tiny"))
    for spec in SPECS:
        freezetune("train", "--model", model, "--freeze", spec, *ARGS, "--out", str(root / spec))
    print(
        "| trial | --freeze | killed after checkpoint of step | saved (best) weights identical "
        "| last weights identical | final metrics identical |"
    )
    print("|---|---|---|---|---|---|")
    passed = 0
    for trial in range(args.trials):
        spec, target = SPECS[trial % len(SPECS)], rng.randint(1, 34)
        out = root / f"trial-{trial}"
        proc = freezetune(
            "train", "--model", model, "--freeze", spec, *ARGS, "--out", str(out), wait=False
        )
        while newest_step(out) < target and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = newest_step(out)
        assert not (out / "result.json").exists(), "the run finished before the kill"
        freezetune("train", "--resume", str(out), "--no-progress")
        checks = compare(root / spec, out)
        passed += all(checks.values())
        marks = " | ".join("yes" if v else "NO" for v in checks.values())
        print(f"| {trial} | {spec} | {killed_at} | {marks} |", flush=True)
    print(f"\n{passed} of {args.trials} killed runs resumed bit-identically")


if __name__ == "__main__":
    main()
