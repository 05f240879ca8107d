"""The distillation objective: Hinton et al. 2015 (https://arxiv.org/abs/1503.02531).

    loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)

``t`` are the teacher's logits for the same examples, computed once before training
(:mod:`freezetune.distill.teacher`) and looked up by example index, so an epoch of
distillation costs no teacher forward. The T^2 keeps the soft targets' gradients on the scale
of the hard ones; the KL is ``reduction="batchmean"`` (``"mean"`` would divide by the number
of classes too). For regression (STS-B) the soft term is the MSE to the teacher's predictions.

>>> import torch
>>> s, t, y = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([0])
>>> round(kd_loss(s, t, y, temperature=1.0, alpha=1.0, regression=False).item(), 4)
1.5232
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

from freezetune.objectives import Batch, Forward

__all__ = ["Distillation", "kd_loss"]


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
    regression: bool,
) -> torch.Tensor:
    """The mean distillation loss of a batch of student and teacher logits (fp32)."""
    student, teacher = student.float(), teacher.float()
    if regression:
        s = student.squeeze(-1)
        soft = F.mse_loss(s, teacher.squeeze(-1))
        hard = F.mse_loss(s, labels.float())
    else:
        t = temperature
        soft = F.kl_div(
            F.log_softmax(student / t, dim=-1),
            F.log_softmax(teacher / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        ) * (t * t)
        hard = F.cross_entropy(student, labels)
    return alpha * soft + (1.0 - alpha) * hard


class Distillation:
    """An :class:`~freezetune.objectives.Objective` with the teacher's logits as its state.

    ``compute`` returns the logits of every training example (row i = example i); it runs
    once, in :meth:`prepare`, unless a checkpoint already brought them back. ``about`` is
    what ``result.json`` says of the teacher.
    """

    name = "distill"

    def __init__(
        self,
        compute: Callable[[], torch.Tensor],
        about: dict[str, Any],
        *,
        temperature: float,
        alpha: float,
        regression: bool,
    ):
        self.compute, self.about = compute, about
        self.temperature, self.alpha = temperature, alpha
        self.regression = regression
        self.logits: torch.Tensor | None = None
        self.seconds = 0.0  # time the teacher's forward pass took (kept across resumes)

    def prepare(self) -> float:
        """Compute the teacher's logits unless restored; return the seconds it took now."""
        if self.logits is not None:
            return 0.0
        started = time.perf_counter()
        self.logits = self.compute().float().cpu()
        spent = time.perf_counter() - started
        self.seconds += spent
        return spent

    def loss(self, forward: Forward, batch: Batch) -> tuple[torch.Tensor, Any]:
        if self.logits is None:
            raise RuntimeError("distillation needs the teacher's logits (prepare() first)")
        output = forward(batch)
        teacher = self.logits[batch["index"].cpu()].to(output.logits.device)
        value = kd_loss(
            output.logits,
            teacher,
            batch["labels"],
            temperature=self.temperature,
            alpha=self.alpha,
            regression=self.regression,
        )
        return value, output

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.logits is None:
            return {}
        return {"teacher_logits": self.logits, "seconds": torch.tensor([self.seconds])}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.logits = state["teacher_logits"]
        self.seconds = float(state["seconds"][0])

    def summary(self) -> dict[str, Any] | None:
        return {**self.about, "logits_time_s": round(self.seconds, 3)}
