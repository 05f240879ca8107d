"""One study on each executor, side by side: wall times and Ray's overhead (issue 14).

    python benchmarks/executors.py --out /tmp/exec           # the default study, three times
    python benchmarks/executors.py --out /tmp/exec --quick   # a tiny study: checks the script

It runs ``configs/studies/default.yaml`` (or, with ``--quick``, a tiny random-model study) with
``freezetune study`` three times, each into its own ``--out-root`` under ``--out``:

1. the local executor, one run at a time (``--jobs 1``, torch's own thread count);
2. the local executor, two at a time (``--jobs 2 --threads 1``);
3. Ray: a one-machine cluster of 2 CPUs (``ray start --head --num-cpus 2``, started first and
   timed apart), two one-CPU runs at a time (``--executor ray --threads 1``).

It prints a table of wall times (the ``freezetune study`` command, from start to report) and
Ray's overhead against the local executor at the same parallelism (2 at once, 1 thread each);
the logs of each are in ``--out``. On a 2-core CPU the default study takes ~15-20 min a row.
Nothing here is part of the tests.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / "shared" / "data" / "glue"
DEFAULT_STUDY = ROOT / "configs" / "studies" / "default.yaml"

QUICK_STUDY = """\
name: quick
base:
  model: {{name: {model}}}
  data: {{task: sst2, max_train_samples: 96, max_eval_samples: 32, max_length: 24}}
  train: {{epochs: 2, batch_size: 16}}
  optim: {{lr: 1.0e-3}}
strategies: [full, bottom:1, bottom:2, head]
seeds: [0, 1]
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    if GLUE.is_dir():  # like the Makefile: the local GLUE folder, offline
        env.setdefault("FREEZETUNE_GLUE_DIR", str(GLUE))
        env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def _quick_study(out: Path) -> Path:
    from freezetune.testing import save_tiny_model

    model = save_tiny_model(out / "tiny-model")
    path = out / "quick.yaml"
    path.write_text(QUICK_STUDY.format(model=model))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _study(config: Path, root: Path, flags: list[str], log: Path) -> float:
    """Run ``freezetune study`` into ``root``; its wall time in seconds."""
    command = [sys.executable, "-m", "freezetune", "study", "--config", str(config)]
    command += ["--out-root", str(root), *flags]
    print(f"$ {' '.join(command)}  (log: {log})", flush=True)
    started = time.monotonic()
    with log.open("w") as f:
        code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=_env()).returncode
    took = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"freezetune study exited with {code}; see {log}")
    return took


class RayHead:
    """``ray start --head --block`` as a child of this process, stopped by its pid."""

    def __init__(self, cpus: int, log: Path) -> None:
        self.port = _free_port()
        self.temp = Path(tempfile.mkdtemp(prefix="ft-bench-ray-", dir="/tmp"))
        ray = Path(sys.executable).with_name("ray")
        command = [str(ray), "start", "--head", "--block", f"--port={self.port}"]
        command += [f"--num-cpus={cpus}", "--num-gpus=0", f"--temp-dir={self.temp}"]
        command += ["--node-ip-address=127.0.0.1", "--include-dashboard=false"]
        command += ["--disable-usage-stats"]
        started = time.monotonic()
        self.log = log.open("w")
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=_env()
        )
        while not (self.temp / "ray_current_cluster").is_file():
            if self.process.poll() is not None or time.monotonic() - started > 120:
                raise SystemExit(f"ray start failed; see {log}")
            time.sleep(0.2)
        self.start_s = time.monotonic() - started

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()  # --block: it stops the node's processes as it exits
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def _succeeded(root: Path) -> str:
    (db,) = root.glob("*/results.sqlite")
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
    finally:
        conn.close()
    counts = dict(rows)
    return f"{counts.get('succeeded', 0)}/{sum(counts.values())}"


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{seconds:.1f} s"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the three studies and their logs")
    p.add_argument("--quick", action="store_true", help="a tiny study instead of the default")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = _quick_study(out) if args.quick else DEFAULT_STUDY
    rows: list[tuple[str, int, str, float, str]] = []
    for label, jobs, flags in (
        ("local", 1, ["--jobs", "1"]),
        ("local", 2, ["--jobs", "2", "--threads", "1"]),
    ):
        root = out / f"{label}-jobs{jobs}"
        took = _study(config, root, flags, out / f"{root.name}.log")
        rows.append(
            (label, jobs, "1" if "--threads" in flags else "torch's", took, _succeeded(root))
        )
    head = RayHead(cpus=2, log=out / "ray-head.log")
    try:
        flags = ["--executor", "ray", "--ray-address", head.address, "--threads", "1"]
        took = _study(config, out / "ray-2cpu", flags, out / "ray-2cpu.log")
        rows.append(("ray", 2, "1", took, _succeeded(out / "ray-2cpu")))
    finally:
        head.stop()
    print(f"\nstudy {config}")
    print(f"{'executor':<9} {'at once':>7} {'threads':>8} {'wall':>12} {'runs ok':>8}  overhead")
    local2 = rows[1][3]
    for label, jobs, threads, took, ok in rows:
        extra = ""
        if label == "ray":
            extra = f"{100 * (took / local2 - 1):+.1f}% ({took - local2:+.0f} s) vs local x2"
        print(f"{label:<9} {jobs:>7} {threads:>8} {_duration(took):>12} {ok:>8}  {extra}")
    print(f"(the Ray cluster took {_duration(head.start_s)} to start, before the study)")


if __name__ == "__main__":
    main()
