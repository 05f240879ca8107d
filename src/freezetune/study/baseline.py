"""The trivial baseline of a study: what a constant prediction scores on the runs' dev examples.

Classification: always predict the majority class of those dev examples (accuracy = its share,
F1 of that constant prediction, MCC 0). Regression: always predict the mean of their labels
(Pearson and Spearman 0, and the MSE of that constant, the labels' variance). Both are scored
with :func:`freezetune.metrics.compute_metrics`, the code that scores the runs, so the numbers
compare exactly.

The dev examples of a run depend on its data settings and, with ``--max-eval-samples``, on its
seed (each seed draws its own subset), so a baseline is computed once per such *context*
(:func:`baseline_key`) and kept in the study folder's ``baseline.json``.

>>> from freezetune.tasks import GLUE_TASKS
>>> import numpy as np
>>> found = trivial_baseline(GLUE_TASKS["mrpc"].task, np.array([1, 1, 0, 1]))
>>> found.predicts, found.metrics
("class '1'", {'f1': 0.8571428571428571, 'accuracy': 0.75})
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from freezetune.config import RunConfig
from freezetune.metrics import compute_metrics
from freezetune.records import atomic_write_text
from freezetune.study.spec import config_hash
from freezetune.tasks import TaskInfo

__all__ = [
    "BASELINE_FILE",
    "Baseline",
    "baseline_key",
    "compute_baseline",
    "ensure_baselines",
    "read_baselines",
    "trivial_baseline",
    "write_baselines",
]

BASELINE_FILE = "baseline.json"
FORMAT = 1

#: The data settings that decide which dev examples a run is scored on.
DATA_KEYS = (
    "task", "data_dir", "train_file", "validation_file", "text_columns", "label_column",
    "regression", "max_eval_samples",
)  # fmt: skip


@dataclass(frozen=True)
class Baseline:
    """A constant prediction's metrics on one context's dev examples."""

    task: str
    kind: str  # "majority" (classification) or "mean" (regression)
    predicts: str  # what it always predicts, e.g. "class '1'" or "2.71"
    examples: int
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def describe(self) -> str:
        """E.g. "always predicting the majority class ('1')"."""
        if self.kind == "mean":
            return f"always predicting the mean ({self.predicts})"
        return f"always predicting the majority class ({self.predicts.removeprefix('class ')})"


def baseline_key(config: dict[str, Any]) -> str | None:
    """The context of a run's dev examples (None for a config with no data section).

    >>> a = {"data": {"task": "sst2"}, "train": {"seed": 0}}
    >>> baseline_key(a) == baseline_key({**a, "train": {"seed": 1}})  # the whole dev split
    True
    """
    data = config.get("data")
    if not isinstance(data, dict):
        return None
    picked = {key: data.get(key) for key in DATA_KEYS}
    # only a subset of the dev split depends on the seed
    seed = (config.get("train") or {}).get("seed", 0) if data.get("max_eval_samples") else None
    return config_hash({"data": picked, "seed": seed})


def trivial_baseline(task: TaskInfo, labels: np.ndarray) -> Baseline:
    """The constant prediction's metrics on ``labels`` (ties between classes: the first)."""
    labels = np.asarray(labels).reshape(-1)
    if task.is_regression:
        targets = labels.astype(np.float64)
        mean = float(targets.mean()) if len(targets) else 0.0
        metrics = compute_metrics(task, np.full(len(targets), mean), targets)
        metrics["mse"] = float(np.mean((targets - mean) ** 2))
        return Baseline(task.name, "mean", f"{mean:.4g}", len(targets), metrics)
    counts = np.bincount(labels.astype(np.int64), minlength=task.num_labels)
    majority = int(np.argmax(counts))
    metrics = compute_metrics(task, np.full(len(labels), majority), labels)
    name = task.labels[majority] if task.labels and majority < len(task.labels) else majority
    return Baseline(task.name, "majority", f"class '{name}'", len(labels), metrics)


def compute_baseline(config: dict[str, Any]) -> Baseline:
    """Load a run's dev examples as its training does (same subset and seed) and score the
    trivial baseline on them. Raises (UserError, OSError, ...) when the data can't be loaded."""
    from freezetune.modality import modality_of  # imports torch: only when data is loaded

    run = RunConfig.from_dict(config)
    loaded = modality_of(run).load_data(run)
    return trivial_baseline(loaded.task, np.array([ex.label for ex in loaded.validation]))


def read_baselines(folder: str | Path) -> dict[str, Baseline]:
    """The baselines stored in ``folder/baseline.json`` by context key ({} if none or unreadable:
    they are recomputed)."""
    path = Path(folder) / BASELINE_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        return {key: Baseline(**value) for key, value in stored["baselines"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def write_baselines(folder: str | Path, baselines: dict[str, Baseline]) -> None:
    """Store ``baselines`` in ``folder/baseline.json`` (atomically)."""
    data = {"format": FORMAT, "baselines": {k: asdict(v) for k, v in sorted(baselines.items())}}
    atomic_write_text(Path(folder) / BASELINE_FILE, json.dumps(data, indent=1) + "\n")


def ensure_baselines(folder: str | Path, configs: Iterable[dict[str, Any]]) -> dict[str, Baseline]:
    """The stored baselines plus those of any context of ``configs`` not stored yet, computed
    now and saved. A context whose data can't be loaded is left out (its baseline is unknown)."""
    baselines = read_baselines(folder)
    tried: set[str] = set()
    for config in configs:
        key = baseline_key(config)
        if key is None or key in baselines or key in tried:
            continue
        tried.add(key)
        try:
            baselines[key] = compute_baseline(config)
        except Exception:  # missing data, a hub dataset without network, ...
            continue  # a baseline is never worth failing a study or report: it stays unknown
    if any(key in baselines for key in tried):
        with contextlib.suppress(OSError):  # a read-only copy of a study: report, don't save
            write_baselines(folder, baselines)
    return baselines
