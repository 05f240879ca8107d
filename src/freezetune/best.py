"""The best evaluation so far and the weights it was made with: :class:`BestTracker`.

The run ends by restoring the best weights (``restore``), so a late drop in the dev metric
costs nothing. Higher is better for every main metric (accuracy, F1, Matthews, Pearson).

>>> from types import SimpleNamespace
>>> kept = SimpleNamespace(best=None, best_weights={})
>>> tracker = BestTracker("accuracy", kept)
>>> [tracker.offer({"accuracy": a}, dict) for a in (0.5, 0.7, 0.6)]
[True, True, False]
>>> kept.best
{'accuracy': 0.7}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
from torch import nn

__all__ = ["BestRecords", "BestTracker", "restore", "snapshot"]

Weights = dict[str, torch.Tensor]


class BestRecords(Protocol):
    """Where the best record and its weights are kept (``LoopState``: checkpoints keep them)."""

    best: dict[str, Any] | None
    best_weights: Weights


class BestTracker:
    """Keeps in ``kept`` the record with the highest ``main_metric`` so far, and its weights."""

    def __init__(self, main_metric: str, kept: BestRecords):
        self.main, self.kept = main_metric, kept

    def offer(self, record: dict[str, Any], weights: Callable[[], Weights]) -> bool:
        """Keep ``record`` (and ``weights()``, called only then) if it is the best so far."""
        best = self.kept.best
        if best is not None and not record[self.main] > best[self.main]:
            return False
        self.kept.best, self.kept.best_weights = record, weights()
        return True


def snapshot(model: nn.Module, may_train: Iterable[str]) -> Weights:
    """A copy of the parameters named in ``may_train`` and of every buffer.

    Frozen tensors never change, so the trainable ones are all a best checkpoint needs;
    under a schedule "trainable" varies, so pass every parameter that ever could train.
    Buffers (BatchNorm's running statistics) change in trainable units without a gradient.
    """
    names = set(may_train)
    kept = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    return {**kept, **{n: b.detach().clone() for n, b in model.named_buffers()}}


def restore(model: nn.Module, weights: Weights) -> None:
    """Copy ``weights`` (a :func:`snapshot`) back into ``model``, in place."""
    with torch.no_grad():
        tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        for name, value in weights.items():
            tensors[name].copy_(value)
