"""What a run leaves behind: its typed result, written safely and stamped with its origin.

:class:`RunResult` is what ``train`` returns; its ``to_dict`` is ``result.json``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "PROVENANCE_KEYS",
    "RunResult",
    "append_jsonl",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "current_names",
    "freeze_state",
    "peak_rss_mb",
    "provenance",
]

#: what ``provenance()`` returns, spread at the end of ``result.json``
PROVENANCE_KEYS = ("git", "versions", "python", "machine")

#: keys that files of an older freezetune hold under another name, and their name now
RENAMED = {"units_frozen": "frozen_units"}

PACKAGES = ("freezetune", "torch", "transformers", "tokenizers", "numpy", "scikit-learn", "peft")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` so that readers see the old file or the new one, never half of it."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` so that readers see the old file or the new one, never half of it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def freeze_state(record: dict[str, Any]) -> tuple[Any, ...]:
    """What a ``freeze`` record says trains: the frozen leading units, the frozen set when it is
    not a leading run (``frozen``, by unit name) and the trainable parameter count. A timeline
    whose records all share one state never changed what trains.

    >>> freeze_state({"frozen_units": 0, "frozen": ["block.1"], "trainable_params": 9})
    (0, ('block.1',), 9)
    """
    return (
        record.get("frozen_units"),
        tuple(record.get("frozen") or ()),
        record.get("trainable_params"),
    )


def current_names(record: Any) -> Any:
    """A record read from a file (``result.json``, a ``metrics.jsonl`` line, a study row's
    result or event) with the keys an older freezetune wrote under another name (:data:`RENAMED`)
    renamed, in place in the key order; its ``freeze_timeline`` too. Every reader of a run's
    files passes what it reads through this, so old runs, studies and checkpoints still read.
    Anything but a dict comes back as it is (the reader judges it).

    >>> current_names({"event": "freeze", "step": 0, "units_frozen": 2})
    {'event': 'freeze', 'step': 0, 'frozen_units': 2}
    >>> current_names({"freeze_timeline": [{"units_frozen": 1}]})
    {'freeze_timeline': [{'frozen_units': 1}]}
    """
    if not isinstance(record, dict):
        return record
    renamed = {RENAMED.get(key, key): value for key, value in record.items()}
    if isinstance(renamed.get("freeze_timeline"), list):
        renamed["freeze_timeline"] = [current_names(e) for e in renamed["freeze_timeline"]]
    return renamed


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _git_hash() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def provenance() -> dict[str, Any]:
    """Git hash, package versions and machine: enough to tell two results apart later."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "git": _git_hash(),
        "versions": versions,
        "python": sys.version.split()[0],
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpus": os.cpu_count(),
        },
    }


@dataclass(frozen=True)
class RunResult:
    """The outcome of one finished run; ``to_dict()`` is exactly its ``result.json``.

    Times are seconds. ``final`` and ``best`` are eval records (the metrics plus ``step``,
    ``epoch`` and times); ``frozen_units`` is the number of leading units frozen at the end
    (``units_frozen`` in files written before it had that name: they read back too).
    ``inference`` and ``distill`` are absent from files written before they existed; they read
    back as None.

    >>> r = RunResult.from_dict(_EXAMPLE)
    >>> r.best_score, r.out.name, r.to_dict() == _EXAMPLE
    (0.9, 'x', True)
    >>> old = {k: v for k, v in _EXAMPLE.items() if k not in ("inference", "distill")}
    >>> RunResult.from_dict(old).inference is None
    True
    >>> older = {("units_frozen" if k == "frozen_units" else k): v for k, v in old.items()}
    >>> RunResult.from_dict(older).frozen_units
    4
    """

    status: str
    task: str
    main_metric: str
    freeze: str
    frozen_units: int | None
    num_blocks: int
    final: dict[str, Any]
    best: dict[str, Any] | None
    steps: int
    train_examples: int
    wall_time_s: float
    train_time_s: float
    eval_time_s: float
    train_examples_per_s: float
    peak_rss_mb: float
    trainable_params: int
    total_params: int
    trainable: str
    freeze_timeline: list[dict[str, Any]]
    policy_state: dict[str, Any]
    cache: dict[str, dict[str, Any]] | None  # per split ("train", "validation"), when cached
    model_path: str
    config: dict[str, Any]  # the RunConfig, as ``RunConfig.to_dict()``
    processes: int
    provenance: dict[str, Any] = field(default_factory=dict)  # PROVENANCE_KEYS
    #: the saved model's cost to use (``inference.measure_inference``); None: not measured
    inference: dict[str, Any] | None = None
    #: a distilled run's teacher: ``teacher`` (its run folder), ``teacher_wall_time_s`` and
    #: ``logits_time_s``; None for a run without a teacher
    distill: dict[str, Any] | None = None

    @property
    def out(self) -> Path:
        """The run folder: model, processor, ``result.json`` and ``metrics.jsonl``."""
        return Path(self.config["out"])

    @property
    def best_score(self) -> float | None:
        """The main metric of the best evaluation."""
        return None if self.best is None else self.best[self.main_metric]

    def to_dict(self) -> dict[str, Any]:
        """``result.json``'s content, keys in its order."""
        return {
            "status": self.status,
            "task": self.task,
            "main_metric": self.main_metric,
            "freeze": self.freeze,
            "frozen_units": self.frozen_units,
            "num_blocks": self.num_blocks,
            "final": self.final,
            "best": self.best,
            "steps": self.steps,
            "train_examples": self.train_examples,
            "wall_time_s": self.wall_time_s,
            "train_time_s": self.train_time_s,
            "eval_time_s": self.eval_time_s,
            "train_examples_per_s": self.train_examples_per_s,
            "peak_rss_mb": self.peak_rss_mb,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "trainable": self.trainable,
            "freeze_timeline": self.freeze_timeline,
            "policy_state": self.policy_state,
            "cache": self.cache,
            "model_path": self.model_path,
            "config": self.config,
            "processes": self.processes,
            "inference": self.inference,
            "distill": self.distill,
            **self.provenance,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """Read a ``result.json`` back (the inverse of ``to_dict``)."""
        fields = {k: v for k, v in current_names(data).items() if k not in PROVENANCE_KEYS}
        return cls(**fields, provenance={k: data[k] for k in PROVENANCE_KEYS if k in data})


_EXAMPLE: dict[str, Any] = {
    "status": "succeeded",
    "task": "sst2",
    "main_metric": "accuracy",
    "freeze": "bottom:3",
    "frozen_units": 4,
    "num_blocks": 6,
    "final": {"event": "eval", "step": 10, "epoch": 1, "accuracy": 0.9},
    "best": {"event": "eval", "step": 10, "epoch": 1, "accuracy": 0.9},
    "steps": 10,
    "train_examples": 80,
    "wall_time_s": 1.5,
    "train_time_s": 1.0,
    "eval_time_s": 0.5,
    "train_examples_per_s": 80.0,
    "peak_rss_mb": 900.0,
    "trainable_params": 10,
    "total_params": 100,
    "trainable": "trainable params: 10 || all params: 100 || trainable%: 10.0000",
    "freeze_timeline": [],
    "policy_state": {},
    "cache": None,
    "model_path": "m",
    "config": {"out": "runs/x"},
    "processes": 1,
    "inference": None,
    "distill": None,
    "git": None,
    "versions": {},
    "python": "3.11",
    "machine": {},
}
