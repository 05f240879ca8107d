"""Patient knowledge distillation (Sun et al., EMNLP 2019, https://arxiv.org/abs/1908.09355),
registered as a freezetune objective from outside the package.

    loss = (1 - alpha) CE(s, y) + alpha T^2 KL(t/T || s/T) + beta * sum_j || s_j/|s_j| - t_j/|t_j| ||^2

``s_j`` is what the head reads (the model's pooling: mean, [CLS]...) of student block ``j``'s
output, ``t_j`` the same of the teacher block the student kept in its place
(``--student-layers``/``--student-pick``: block ``kept[j]``), for every student block but
the last, whose output the KD term already matches (the paper's PKD-Skip with an ``even``
pick, PKD-Last with ``first``). The squared distance is summed over those layers and
averaged over the batch. The teacher's logits and per-layer representations are computed
once, before training, in one pass, and are the objective's state: a checkpoint keeps them.

    freezetune train --model minilm-l6 --task sst2 --student-layers 3 \\
        --teacher runs/full --objective pkd:beta=100
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from freezetune.classifier import pool
from freezetune.config import RunConfig
from freezetune.distill.loss import kd_loss
from freezetune.distill.objective import teacher_pass
from freezetune.distill.student import pick_blocks
from freezetune.errors import UserError
from freezetune.freezing.registry import check_range
from freezetune.objectives import Batch, Forward, ObjectiveContext, ObjectivePlugin
from freezetune.units import split_units

__all__ = ["PLUGIN", "PatientDistillation", "PatientOptions", "patient_term"]


@dataclass(frozen=True)
class PatientOptions:
    """``--objective pkd:beta=...``: the weight of the patient term."""

    beta: float = field(default=100.0, metadata={"help": "weight of the patient term"})

    def __post_init__(self) -> None:
        check_range("beta", self.beta, 0, float("inf"))


def patient_term(student: list[torch.Tensor], teacher: torch.Tensor) -> torch.Tensor:
    """sum_j mean_batch || s_j/|s_j| - t_j/|t_j| ||^2 for student representations
    ``student[j]`` [B, H] and the teacher's ``teacher`` [B, J, H] (fp32).

    >>> s = [torch.tensor([[1.0, 0.0]])]
    >>> patient_term(s, torch.tensor([[[0.0, 3.0]]])).item()
    2.0
    """
    total = torch.zeros((), device=teacher.device)
    for j, s in enumerate(student):
        diff = F.normalize(s.float(), dim=-1) - F.normalize(teacher[:, j].float(), dim=-1)
        total = total + diff.pow(2).sum(-1).mean()
    return total


def _pooling(model: nn.Module) -> str:
    how = getattr(getattr(model, "config", None), "pooling", None)
    return "cls" if how in (None, "pooler") else str(how)


class _Blocks:
    """Forward hooks that keep the pooled output of a model's blocks ``picked``, while
    ``mask`` (the batch's attention mask) is set."""

    def __init__(self, model: nn.Module, picked: list[int]) -> None:
        blocks: Any = model.get_submodule(split_units(model).blocks_path)  # a ModuleList
        self.how = _pooling(model)
        self.mask: torch.Tensor | None = None
        self.outputs: dict[int, torch.Tensor] = {}
        self.handles = [
            blocks[i].register_forward_hook(self._keeper(j)) for j, i in enumerate(picked)
        ]

    def _keeper(self, j: int) -> Any:
        def keep(_module: nn.Module, _args: Any, output: Any) -> None:
            if self.mask is None:  # not watching (an evaluation pass)
                return
            hidden = output[0] if isinstance(output, tuple) else output
            self.outputs[j] = pool(hidden, self.mask, self.how)

        return keep

    def pooled(self, count: int) -> list[torch.Tensor]:
        """The kept outputs of the last forward pass (cleared for the next)."""
        missing = [j for j in range(count) if j not in self.outputs]
        if missing:  # a frozen, cached block does not run: nothing to match
            raise UserError(
                f"--objective pkd needs the output of student block {missing[0]}, which did "
                "not run (frozen and cached); train it, or pass --no-cache"
            )
        out, self.outputs = [self.outputs[j] for j in range(count)], {}
        return out

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class PatientDistillation:
    """An objective (``freezetune.objectives.Objective``) whose state is the teacher's logits
    and its per-layer representations of every training example."""

    name = "pkd"

    def __init__(self, options: PatientOptions, context: ObjectiveContext):
        d = context.config.distill
        assert context.teacher is not None and d.student_layers is not None  # _check
        self.context, self.beta = context, options.beta
        self.temperature, self.alpha = d.temperature, d.alpha
        self.regression = context.task.is_regression
        teacher_blocks = int(context.teacher.result["num_blocks"])
        kept = pick_blocks(teacher_blocks, d.student_layers, d.student_pick)
        self.matched = kept[:-1]  # the teacher blocks the student's first blocks stand for
        self.student = _Blocks(context.model, list(range(len(self.matched))))
        self.logits: torch.Tensor | None = None
        self.features: torch.Tensor | None = None
        self.seconds = 0.0

    def _read(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """One row per example: the teacher's logits, then its matched layers' pooled
        representations, flattened."""
        hooks = _Blocks(model, self.matched)
        hooks.mask = inputs["attention_mask"]
        try:
            logits = model(**inputs).logits.float()
        finally:
            hooks.remove()
        layers = torch.stack(hooks.pooled(len(self.matched)), dim=1).float()
        return torch.cat([logits, layers.flatten(1)], dim=1)

    def prepare(self) -> float:
        if self.logits is not None:
            return 0.0
        started = time.perf_counter()
        rows = teacher_pass(self.context, self._read)
        classes = self.context.task.num_labels
        self.logits = rows[:, :classes].contiguous()
        self.features = rows[:, classes:].reshape(len(rows), len(self.matched), -1).contiguous()
        spent = time.perf_counter() - started
        self.seconds += spent
        return spent

    def loss(self, forward: Forward, batch: Batch) -> tuple[torch.Tensor, Any]:
        if self.logits is None or self.features is None:
            raise RuntimeError("patient distillation needs the teacher's pass (prepare() first)")
        self.student.mask = batch["attention_mask"]  # watch this forward only
        try:
            output = forward(batch)
        finally:
            self.student.mask = None
        index = batch["index"].cpu()
        device = output.logits.device
        kd = kd_loss(
            output.logits,
            self.logits[index].to(device),
            batch["labels"],
            temperature=self.temperature,
            alpha=self.alpha,
            regression=self.regression,
        )
        student = self.student.pooled(len(self.matched))
        return kd + self.beta * patient_term(student, self.features[index].to(device)), output

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.logits is None or self.features is None:
            return {}
        return {
            "teacher_logits": self.logits,
            "teacher_features": self.features,
            "seconds": torch.tensor([self.seconds]),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.logits, self.features = state["teacher_logits"], state["teacher_features"]
        self.seconds = float(state["seconds"][0])

    def summary(self) -> dict[str, Any] | None:
        assert self.context.teacher is not None
        return {
            **self.context.teacher.about(),
            "logits_time_s": round(self.seconds, 3),
            "objective": "pkd",
            "beta": self.beta,
            "matched_teacher_blocks": list(self.matched),
        }


def _check(options: PatientOptions, config: RunConfig) -> None:
    """Before anything is written: a student of 2+ blocks, so that one block has a match."""
    layers = config.distill.student_layers
    if layers is None or layers < 2:
        raise UserError(
            "--objective pkd matches the student's blocks to the teacher's: pass "
            "--student-layers 2 or more"
        )


#: the entry point ``freezetune.objectives: pkd``
PLUGIN = ObjectivePlugin(PatientDistillation, PatientOptions, teacher=True, check=_check)
