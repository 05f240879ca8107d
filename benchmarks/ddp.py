"""Issue 6: the same runs on 1 process and on 2 DDP processes (torchrun, gloo) on this machine.

Each strategy trains minilm-l6 on the same seeded SST-2 subset with the same global batch,
once as a plain process (all cores) and once under ``torchrun --nproc_per_node=2`` (one core
each), one run at a time. Prints a Markdown table of train time, throughput and accuracy.

    python benchmarks/ddp.py --max-train-samples 2000 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from freezetune.records import current_names

STRATEGIES = ["full", "bottom:3", "autofreeze"]


def run(freeze: str, processes: int, args: argparse.Namespace) -> dict:
    out = Path(args.out) / f"{freeze.replace(':', '-')}-{processes}p"
    launcher = [sys.executable, "-m", "freezetune"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += [f"--nproc_per_node={processes}", "-m", "freezetune"]
    command = [*launcher, "train", "--freeze", freeze, "--bf16", "--no-progress", "--overwrite"]
    command += ["--max-train-samples", str(args.max_train_samples), "--epochs", str(args.epochs)]
    command += ["--batch-size", "32", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True)
    result = current_names(json.loads((out / "result.json").read_text()))
    return {
        "freeze": freeze,
        "processes": result["processes"],
        "train_time_s": result["train_time_s"],
        "examples_per_s": result["train_examples_per_s"],
        "accuracy": result["final"]["accuracy"],
        "frozen": [e["frozen_units"] for e in result["freeze_timeline"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-train-samples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="runs/bench/ddp")
    args = parser.parse_args()
    rows = []
    for freeze in STRATEGIES:
        for processes in (1, 2):
            rows.append(run(freeze, processes, args))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(
        "| --freeze | processes | train time s | train examples/s | vs 1 process | dev accuracy |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        one = next(x for x in rows if x["freeze"] == r["freeze"] and x["processes"] == 1)
        print(
            f"| {r['freeze']} | {r['processes']} | {r['train_time_s']:.1f} "
            f"| {r['examples_per_s']:.1f} | {r['examples_per_s'] / one['examples_per_s']:.2f}x "
            f"| {r['accuracy']:.4f} |"
        )
    for r in rows:
        if r["frozen"] and len(set(r["frozen"])) > 1:
            print(f"\n{r['freeze']} on {r['processes']} process(es): units frozen {r['frozen']}")


if __name__ == "__main__":
    main()
