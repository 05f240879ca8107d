"""Compare --freeze strategies end to end on one task: accuracy, wall time, throughput.

Each strategy runs as its own ``freezetune train`` process (so peak RSS is per run), one after
the other on the same data subset, seed and precision, and the script prints Markdown tables.
Suites:

- ``static`` (issue 2): full, bottom:3, bottom:6, head; 8,000 SST-2 examples, 2 epochs.
- ``schedules`` (issue 3): full, two-phase, gradual, progressive, autofreeze, lora, all
  without caching; 3 epochs; plus AutoFreeze's freezing timeline.
- ``time-to-accuracy`` (issue 4): full, autofreeze uncached, and bottom:3, autofreeze and
  head cached, evaluated every 50 steps; training time until dev accuracy first reaches full
  fine-tuning's final accuracy minus 0.5 point (also issue 3's AutoFreeze-vs-full check).

    python benchmarks/strategies.py static --out runs/bench
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from freezetune.records import current_names

SUITES: dict[str, dict[str, Any]] = {
    "static": {
        "epochs": 2,
        "runs": {
            "full": ["--freeze", "full"],
            "bottom:3": ["--freeze", "bottom:3"],
            "bottom:6": ["--freeze", "bottom:6"],
            "head": ["--freeze", "head", "--lr", "1e-3"],
        },
    },
    "schedules": {
        "epochs": 3,
        "runs": {
            "full": ["--freeze", "full"],
            "two-phase": ["--freeze", "two-phase", "--no-cache"],
            "gradual": ["--freeze", "gradual:steps=50", "--no-cache"],
            "progressive": ["--freeze", "progressive", "--no-cache"],
            "autofreeze": ["--freeze", "autofreeze", "--no-cache"],
            "lora": ["--freeze", "lora", "--lr", "5e-4", "--no-cache"],
        },
    },
    "autofreeze": {  # issue 3's target on this machine: the schedules suite's two key rows
        "epochs": 3,
        "runs": {
            "full": ["--freeze", "full"],
            "autofreeze": ["--freeze", "autofreeze", "--no-cache"],
        },
    },
    "time-to-accuracy": {
        "epochs": 3,
        "runs": {
            "full": ["--freeze", "full", "--eval-every", "50"],
            "autofreeze uncached": ["--freeze", "autofreeze", "--eval-every", "50", "--no-cache"],
            "bottom:3 cached": ["--freeze", "bottom:3", "--eval-every", "50"],
            "autofreeze cached": ["--freeze", "autofreeze", "--eval-every", "50"],
            "head cached": ["--freeze", "head", "--lr", "1e-3", "--eval-every", "50"],
        },
    },
}


def run_all(suite: str, out_root: Path, samples: int, extra: list[str]) -> dict[str, dict]:
    spec = SUITES[suite]
    results = {}
    for name, flags in spec["runs"].items():
        out = out_root / suite / name.replace(":", "").replace(" ", "-")
        command = [
            sys.executable,
            "-m",
            "freezetune",
            "train",
            "--task",
            "sst2",
            "--max-train-samples",
            str(samples),
            "--epochs",
            str(spec["epochs"]),
            "--seed",
            "0",
            "--bf16",
            "--no-progress",
            "--out",
            str(out),
            "--overwrite",
            *flags,
            *extra,
        ]
        print("$ freezetune", " ".join(command[3:]), flush=True)
        subprocess.run(command, check=True)
        results[name] = current_names(json.loads((out / "result.json").read_text()))
        results[name]["curve"] = [
            current_names(json.loads(line))
            for line in (out / "metrics.jsonl").read_text().splitlines()
        ]
    return results


def summary_table(results: dict[str, dict]) -> str:
    full = results.get("full")
    rows = [
        "| strategy | trainable params | dev acc (final) | dev acc (best) | wall time s | "
        "vs full | train examples/s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        speedup = f"{full['wall_time_s'] / r['wall_time_s']:.2f}x" if full else "-"
        rows.append(
            f"| {name} | {r['trainable_params']:,} | {r['final']['accuracy']:.4f} | "
            f"{r['best']['accuracy']:.4f} | {r['wall_time_s']:.0f} | {speedup} | "
            f"{r['train_examples_per_s']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(rows)


def timeline(result: dict) -> str:
    events = [e for e in result["curve"] if e["event"] == "freeze"]
    return " -> ".join(f"step {e['step']}: {e['frozen_units']}" for e in events)


def time_to_accuracy(results: dict[str, dict]) -> str:
    target = results["full"]["final"]["accuracy"] - 0.005
    rows = [
        f"target: dev accuracy >= {target:.4f} (full fine-tuning's final - 0.5 point)",
        "",
        "| strategy | reached at step | training time to target s | vs full |",
        "|---|---|---|---|",
    ]
    times = {}
    for name, r in results.items():
        hit = next(
            (e for e in r["curve"] if e["event"] == "eval" and e["accuracy"] >= target), None
        )
        times[name] = hit and hit["train_time_s"]  # evaluation time excluded
        step = hit["step"] if hit else "never"
        when = f"{hit['train_time_s']:.0f}" if hit else "-"
        ratio = f"{times['full'] / times[name]:.2f}x" if hit and times.get("full") else "-"
        rows.append(f"| {name} | {step} | {when} | {ratio} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--max-train-samples", type=int, default=8000)
    args, extra = parser.parse_known_args()  # anything else is passed to every run
    extra = [a for a in extra if a != "--"]
    results = run_all(args.suite, Path(args.out), args.max_train_samples, extra)
    print()
    print(summary_table(results))
    for name, r in results.items():
        if r.get("freeze_timeline") and len(r["freeze_timeline"]) > 1:
            print(f"\n{name} units frozen by step: {timeline(r)}")
    if args.suite == "time-to-accuracy":
        print()
        print(time_to_accuracy(results))


if __name__ == "__main__":
    main()
