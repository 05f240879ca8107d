"""One optimizer step's gradients: each micro-batch's backward pass, weighted so that data
parallelism counts every example once, and the clipped update they feed.

Under DDP each rank computes the mean loss of its share of the global batch and DDP averages
the gradients over ranks; an uneven last batch would then weigh the examples of a smaller
share more. :func:`weighted_backward` scales each rank's loss by its share, so N processes
take the step one process would, and checks the loss is finite on every rank (one collective
for both). :func:`nonfinite` is what happens when it is not.

>>> import torch
>>> from freezetune.distributed import Dist
>>> w = torch.ones(2, requires_grad=True)
>>> loss, examples, finite = weighted_backward(w, lambda: (w * 3).sum(), 4, True, Dist())
>>> loss.item(), examples, finite, w.grad.tolist()
(6.0, 4, True, [3.0, 3.0])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from freezetune import distributed
from freezetune.distributed import Dist
from freezetune.errors import UserError

__all__ = ["clip_and_step", "nonfinite", "weighted_backward"]


def weighted_backward(
    runner: nn.Module | torch.Tensor,
    compute_loss: Callable[[], torch.Tensor],
    n: int,
    sync: bool,
    dist: Dist,
) -> tuple[torch.Tensor, int, bool]:
    """``compute_loss()`` (the mean over ``n`` examples on this rank) and its backward.

    ``runner`` is what the loss runs through (a DDP wrapper all-reduces only when ``sync``:
    earlier micro-batches accumulate locally). Returns the loss, the examples of the global
    batch, and whether the loss was finite on every rank (no backward ran if not).
    """
    quiet: Any = contextlib.nullcontext()
    if not sync and isinstance(runner, DistributedDataParallel):
        quiet = runner.no_sync()  # accumulate locally; all-reduce on the last one
    with quiet:
        loss = compute_loss()
        bad, total = int(not torch.isfinite(loss)), n
        if dist.enabled:  # one collective: the global batch size, and any bad loss
            total, bad = distributed.sum_ints([n, bad], dist)
        if bad:
            return loss, total, False
        # DDP averages over ranks: weigh each rank's mean loss by its share of the global
        # batch, so that an uneven last batch counts every example once, as one process does
        scale = dist.world * n / total
        (loss * scale).backward() if scale != 1.0 else loss.backward()
    return loss, total, True


def nonfinite(loss: torch.Tensor, step: int, skip: bool) -> dict[str, Any]:
    """A non-finite loss (here or on another rank) at ``step``: the ``skipped`` record to log
    when ``skip`` (``--skip-nonfinite``), else a UserError saying what to do."""
    if not skip:
        value = loss.item() if not torch.isfinite(loss) else "non-finite elsewhere"
        raise UserError(
            f"loss became {value} at step {step}; the last checkpoint "
            "(if any) is kept; lower --lr, turn off --bf16, or pass --skip-nonfinite"
        )
    return {"event": "skipped", "step": step}


def clip_and_step(model: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    """The update from the accumulated gradients: clip their norm (when ``max_norm`` > 0),
    step, and drop them (``None``: frozen parameters stay without a gradient)."""
    if max_norm > 0:
        params = [p for p in model.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
