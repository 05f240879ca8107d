"""Refactoring guard: run a few real-model trainings and print their metrics as JSON.

Run it before and after a change that must keep behaviour; the two outputs must be equal
(same machine, same seed). The first run is the RESULTS static table's bottom:3 row.

    python benchmarks/equivalence.py > before.json   # on the old code
    python benchmarks/equivalence.py > after.json && diff before.json after.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from freezetune.records import current_names

COMMON = ["--task", "sst2", "--seed", "0", "--bf16", "--no-progress"]
RUNS: dict[str, list[str]] = {
    "static bottom:3": ["--freeze", "bottom:3", "--max-train-samples", "8000", "--epochs", "2"],
    "autofreeze cached": [
        *("--freeze", "autofreeze:n=2,p=50", "--max-train-samples", "600", "--epochs", "2"),
        *("--max-eval-samples", "200", "--eval-every", "10"),
    ],
    "two-phase+llrd": [
        *("--freeze", "two-phase+llrd:0.9", "--max-train-samples", "400", "--epochs", "2"),
        *("--max-eval-samples", "200"),
    ],
    "gradual steps": [
        *("--freeze", "gradual:steps=4", "--max-train-samples", "400", "--epochs", "2"),
        *("--max-eval-samples", "200", "--no-cache"),
    ],
    "lora": [
        *("--freeze", "lora", "--max-train-samples", "300", "--epochs", "1"),
        *("--max-eval-samples", "200", "--lr", "5e-4"),
    ],
}
KEEP = (
    "final",
    "best",
    "freeze_timeline",
    "frozen_units",
    "policy_state",
    "steps",
    "trainable_params",
)


def main() -> None:
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, flags) in enumerate(RUNS.items()):
            folder = Path(tmp) / str(i)
            cmd = [
                sys.executable,
                "-m",
                "freezetune",
                "train",
                *COMMON,
                *flags,
                "--out",
                str(folder),
            ]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            result = current_names(json.loads((folder / "result.json").read_text()))
            kept = {k: result.get(k) for k in KEEP}
            for key in ("final", "best"):  # times differ run to run; metrics must not
                kept[key] = {k: v for k, v in (kept[key] or {}).items() if "time" not in k}
            out[name] = kept
            print(f"{name}: {kept['best']}", file=sys.stderr)
    print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
