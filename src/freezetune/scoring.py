"""Score a model on the dev set: forward passes (from cached states where it can), pooled over
ranks, then the task's metrics (``metrics.compute_metrics``, which needs no torch)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from freezetune import distributed
from freezetune.cache import PrefixCache
from freezetune.loop import forward
from freezetune.metrics import compute_metrics
from freezetune.precision import autocast
from freezetune.tasks import TaskInfo

__all__ = ["evaluate_model"]


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: Iterable[dict[str, torch.Tensor]],
    task: TaskInfo,
    device: torch.device,
    *,
    bf16: bool = False,
    cache: PrefixCache | None = None,
    frozen_units: int = 0,
) -> dict[str, Any]:
    """Dev-set metrics for ``task``, plus the mean loss, with ``frozen_units`` units frozen.

    Under DDP each rank scores its shard of the dev set (maybe none); the shards are pooled in
    rank order, so that every rank computes the same metrics.
    """
    model.eval()
    logits, labels, losses = [], [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(bf16, device):
            out = forward(model, cache, batch, frozen_units)
        logits.append(out.logits.float().cpu())
        labels.append(batch["labels"].cpu())
        losses.append(out.loss.item() * len(batch["labels"]))
    shards = distributed.all_gather((logits, labels, sum(losses)), distributed.current())
    preds = torch.cat([t for s in shards for t in s[0]]).numpy()
    gold = torch.cat([t for s in shards for t in s[1]]).numpy()
    metrics = compute_metrics(task, preds, gold)
    metrics["loss"] = float(sum(s[2] for s in shards) / len(gold))
    return metrics
