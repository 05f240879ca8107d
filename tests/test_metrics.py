"""Tests for freezetune.metrics against values worked out by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from freezetune.errors import UserError
from freezetune.metrics import compute_metrics
from freezetune.tasks import GLUE_TASKS, TaskInfo

MRPC = GLUE_TASKS["mrpc"].task  # f1 + accuracy
COLA = GLUE_TASKS["cola"].task  # mcc
STSB = GLUE_TASKS["stsb"].task  # pearson + spearman


def logits_for(classes: list[int], num_labels: int = 2) -> np.ndarray:
    """Logits whose argmax is `classes`."""
    return np.eye(num_labels)[classes] * 3.0 - 1.0


def test_accuracy_and_f1() -> None:
    # preds 1 1 0 0 1 vs labels 1 0 0 1 1: tp=2 fp=1 fn=1 tn=1
    metrics = compute_metrics(MRPC, logits_for([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1]))
    assert metrics == pytest.approx({"f1": 2 * 2 / (2 * 2 + 1 + 1), "accuracy": 3 / 5})
    assert all(type(v) is float for v in metrics.values())


def test_f1_without_positive_predictions_is_zero() -> None:
    metrics = compute_metrics(MRPC, logits_for([0, 0]), np.array([1, 0]))
    assert metrics == {"f1": 0.0, "accuracy": 0.5}


def test_mcc() -> None:
    # tp=2 tn=1 fp=1 fn=1: (2*1 - 1*1) / sqrt(3 * 3 * 2 * 2) = 1/6
    mcc = compute_metrics(COLA, logits_for([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1]))["mcc"]
    assert mcc == pytest.approx(1 / 6)
    assert compute_metrics(COLA, logits_for([1, 1]), np.array([1, 0]))["mcc"] == 0.0


def test_pearson_and_spearman() -> None:
    # x=1,2,3 y=1,2,4: cov sum 3, |dx|=sqrt(2), |dy|=sqrt(42)/3 -> r = 9/sqrt(84)
    metrics = compute_metrics(STSB, np.array([[1.0], [2.0], [3.0]]), np.array([1.0, 2.0, 4.0]))
    assert metrics["pearson"] == pytest.approx(9 / math.sqrt(84))
    assert metrics["spearman"] == pytest.approx(1.0)
    # ranks 1,2,3 vs 1,3,2: 1 - 6 * 2 / (3 * 8) = 0.5
    assert compute_metrics(STSB, np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0]))[
        "spearman"
    ] == pytest.approx(0.5)


def test_constant_predictions_give_zero_not_nan() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = compute_metrics(STSB, np.full(4, 2.5), np.array([0.0, 1.0, 2.0, 5.0]))
    assert metrics == {"pearson": 0.0, "spearman": 0.0}


def test_multiclass_and_class_ids() -> None:
    task = GLUE_TASKS["mnli"].task
    logits = np.array([[0.1, 0.5, 0.2], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert compute_metrics(task, logits, np.array([1, 0, 0])) == {"accuracy": pytest.approx(2 / 3)}
    assert compute_metrics(task, np.array([1, 0, 2]), np.array([1, 0, 0]))[
        "accuracy"
    ] == pytest.approx(2 / 3)


def test_bad_inputs() -> None:
    with pytest.raises(UserError, match="3 predictions for 2 labels"):
        compute_metrics(MRPC, logits_for([0, 1, 1]), np.array([0, 1]))
    with pytest.raises(UserError, match="no examples"):
        compute_metrics(MRPC, np.zeros((0, 2)), np.zeros(0))
    odd = TaskInfo("odd", ("text",), "label", ("a", "b"), False, ("bleu",), "bleu")
    with pytest.raises(UserError, match="unknown metric 'bleu'"):
        compute_metrics(odd, logits_for([0]), np.array([0]))


def test_main_metric() -> None:
    assert [GLUE_TASKS[n].task.main_metric for n in ("mrpc", "stsb", "cola", "sst2")] == [
        "f1",
        "pearson",
        "mcc",
        "accuracy",
    ]
