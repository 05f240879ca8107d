"""What the loop minimises: the seam between a model's output and the loss that trains it.

The loop calls ``objective.prepare()`` once before training (its seconds count as training
time) and ``objective.loss(output, labels, index)`` for every (micro-)batch, and nothing else
about the loss; the task's own loss (what the model returns for its labels) is the default.
Another objective (distillation, ``freezetune.distill``) brings its own targets and the state
a checkpoint must keep (``state_dict``: tensors only, saved as safetensors).

>>> import torch
>>> from types import SimpleNamespace
>>> TaskLoss().loss(SimpleNamespace(loss=torch.tensor(0.5)), torch.tensor([1]), None)
tensor(0.5000)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["Objective", "TaskLoss"]


@runtime_checkable
class Objective(Protocol):
    """A training loss over a model's output, with the state it needs to resume exactly."""

    name: str

    def prepare(self) -> float:
        """Get ready before the first step (e.g. compute targets); return the seconds spent."""
        ...

    def loss(self, output: Any, labels: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """The loss of one batch: ``output`` of the model (``.logits``, ``.loss``), its
        ``labels`` and each example's ``index`` in the training split (None if not known)."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors a checkpoint keeps (empty when the objective is stateless)."""
        ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...

    def summary(self) -> dict[str, Any] | None:
        """What ``result.json`` records about the objective (None: nothing to say)."""
        ...


class TaskLoss:
    """The task's own loss: cross-entropy for classes, MSE for regression (the model's)."""

    name = "task"

    def prepare(self) -> float:
        return 0.0

    def loss(self, output: Any, labels: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        return output.loss

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def summary(self) -> dict[str, Any] | None:
        return None
