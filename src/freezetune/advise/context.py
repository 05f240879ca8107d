"""What advise must know before it plans: the model's width and modality, the task's main
metric, each arm's budget in optimizer steps, and the evaluation steps the rungs need.

The budget is the run's own arithmetic (``training._run``): ``ceil(ceil(n_train /
batch_size) / grad_accum) * epochs`` steps on one process; the engine checks it against the
first run's ``total_steps``. Evaluations (``train.eval_at``) go where successive halving
reads scores: four inside the first rung (the curve fits need points), then the middle and
the end of each later rung; the last rung ends with the run's own epoch-end evaluation.

>>> from freezetune.advise.halving import Halving
>>> eval_steps(Halving.of({"a": 126}, first=1 / 9))
(4, 7, 10, 14, 28, 42, 84)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from freezetune.advise.halving import Halving
from freezetune.config import RunConfig
from freezetune.errors import UserError

__all__ = ["Context", "eval_steps", "read_context"]


@dataclass(frozen=True)
class Context:
    """The facts advise plans with (from the base config, before any training)."""

    hidden_size: int | None
    modality: str
    metric: str
    budget: int  # optimizer steps of every arm's full run
    per_epoch: int
    task: str = ""
    model: str = ""


def eval_steps(plan: Halving) -> tuple[int, ...]:
    """Where the arms evaluate: 4 points in rung 0, then each later rung's middle and end
    (the budget itself is an epoch end, which always evaluates)."""
    arm = plan.arms[0].id
    rungs = [plan.steps(arm, k) for k in range(plan.promotions + 1)]
    steps = {max(1, round(rungs[0] * j / 4)) for j in range(1, 5)}
    for before, after in itertools.pairwise(rungs):
        steps |= {round((before + after) / 2), after}
    return tuple(sorted(s for s in steps if s < rungs[-1]))


def read_context(base: dict[str, Any], strategies_configs: list[dict[str, Any]]) -> Context:
    """Load the data once (no model) and read the model's config; one budget for all arms."""
    from freezetune.modality import modality_of, read_model_config

    config = RunConfig.from_dict({**base, "out": "advise-context"})
    modality = modality_of(config)
    data = modality.load_data(config)
    t = config.train
    per_epoch = math.ceil(math.ceil(len(data.train) / t.batch_size) / t.grad_accum)
    budget = per_epoch * t.epochs
    for other in strategies_configs:
        train, data_section = other.get("train") or {}, other.get("data") or {}
        same = all(train.get(k, getattr(t, k)) == getattr(t, k)
                   for k in ("epochs", "batch_size", "grad_accum"))  # fmt: skip
        if not same or data_section.get("max_train_samples") != config.data.max_train_samples:
            raise UserError(
                "advise compares arms of one training budget: a strategy here changes the "
                "epochs, batch size or training-set size; set them in the base instead"
            )
    model_config = read_model_config(config.model.name, config.model.trust_remote_code)
    hidden = getattr(model_config, "hidden_size", None)
    if modality.name == "image" and getattr(model_config, "num_attention_heads", None) is None:
        hidden = None  # a CNN: its width says nothing about Adam's rate (the image grids)
    return Context(
        hidden_size=hidden if isinstance(hidden, int) else None,
        modality=modality.name,
        metric=data.task.main_metric,
        budget=budget,
        per_epoch=per_epoch,
        task=data.task.name,
        model=config.model.name,
    )
