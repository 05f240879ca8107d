"""Issue 2's measurement: SST-2 dev accuracy, wall time and throughput per --freeze spec.

Each strategy runs as its own ``freezetune train`` process (so peak RSS is per run), one after
the other, on the same data subset, seed and precision. Prints a Markdown table.

    python benchmarks/train_sst2.py --out runs/bench-train-sst2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

STRATEGIES: dict[str, list[str]] = {
    "full": ["--freeze", "full"],
    "bottom:3": ["--freeze", "bottom:3"],
    "bottom:6": ["--freeze", "bottom:6"],
    "head": ["--freeze", "head", "--lr", "1e-3"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/bench-train-sst2")
    parser.add_argument("--max-train-samples", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="subset of strategies")
    parser.add_argument("extra", nargs="*", help="more flags for every run")
    args = parser.parse_args()
    rows = []
    for name, flags in STRATEGIES.items():
        if args.only and name not in args.only:
            continue
        out = Path(args.out) / name.replace(":", "")
        command = [sys.executable, "-m", "freezetune", "train", "--task", "sst2",
                   "--max-train-samples", str(args.max_train_samples),
                   "--epochs", str(args.epochs), "--seed", "0", "--bf16", "--no-progress",
                   "--out", str(out), "--overwrite", *flags, *args.extra]
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True)
        rows.append((name, json.loads((out / "result.json").read_text())))
    print("\n| --freeze | trainable params | dev acc (final) | dev acc (best) | wall time s | "
          "train examples/s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['trainable_params']:,} | {r['final']['accuracy']:.4f} | "
              f"{r['best']['accuracy']:.4f} | {r['wall_time_s']:.1f} | "
              f"{r['train_examples_per_s']:.1f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
