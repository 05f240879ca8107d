"""A task's metrics from predictions and labels, with scikit-learn and scipy only (no torch).

``scoring.py`` runs a model over the dev set and hands its predictions to
:func:`compute_metrics`; the study's trivial baseline scores its constant predictions here too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from freezetune.errors import UserError
from freezetune.tasks import TaskInfo

__all__ = ["METRICS", "compute_metrics"]


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(accuracy_score(labels, predictions))


def _f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    # Binary F1 of the positive class (index 1), as GLUE reports it; 0.0 when nothing is positive.
    return float(f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0.0))


def _mcc(predictions: np.ndarray, labels: np.ndarray) -> float:
    # sklearn already returns 0.0 when a side is constant (the coefficient is undefined there).
    return float(matthews_corrcoef(labels, predictions))


def _constant(*arrays: np.ndarray) -> bool:
    return any(len(a) < 2 or bool(np.all(a == a[0])) for a in arrays)


def _pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    # A constant input (e.g. a collapsed regressor) makes the correlation undefined: scipy gives
    # NaN plus a warning. Report 0.0, "no linear relation", so runs stay comparable and sortable.
    if _constant(predictions, labels):
        return 0.0
    return float(pearsonr(predictions, labels)[0])


def _spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    # Same guard as pearson: a constant input has no ranking, report 0.0 rather than NaN.
    if _constant(predictions, labels):
        return 0.0
    return float(spearmanr(predictions, labels)[0])


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "mcc": _mcc,
    "pearson": _pearson,
    "spearman": _spearman,
}


def _prepare(
    task: TaskInfo, predictions: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Logits [N, C] -> class ids, regression [N] or [N, 1] -> floats; check the shapes agree."""
    predictions, labels = np.asarray(predictions), np.asarray(labels).reshape(-1)
    if task.is_regression:
        predictions = predictions.reshape(-1).astype(np.float64)
        labels = labels.astype(np.float64)
    elif predictions.ndim == 2:
        predictions = predictions.argmax(axis=-1)
    if predictions.shape != labels.shape:
        raise UserError(
            f"{len(predictions)} predictions for {len(labels)} labels in task '{task.name}'; "
            "pass one prediction row per label"
        )
    if len(labels) == 0:
        raise UserError(f"no examples to score for task '{task.name}'; give a validation set")
    return predictions, labels


def compute_metrics(
    task: TaskInfo, predictions: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Every metric of `task` as a plain float, from logits (classification) or scores.

    >>> from freezetune.tasks import GLUE_TASKS
    >>> logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    >>> compute_metrics(GLUE_TASKS["mrpc"].task, logits, np.array([0, 1, 0]))
    {'f1': 0.6666666666666666, 'accuracy': 0.6666666666666666}
    """
    predictions, labels = _prepare(task, predictions, labels)
    unknown = [name for name in task.metrics if name not in METRICS]
    if unknown:
        raise UserError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    return {name: METRICS[name](predictions, labels) for name in task.metrics}
