"""A policy that watches gradients (AutoFreeze) wired to the gradients it watches.

``freezing.GradientWatcher`` decides from per-block gradient norms summed over an interval;
:class:`GradientWatch` sums them before every optimizer step (before clipping: the raw
signal) and asks the watcher at its decision steps. Other policies get no watch (None).
"""

from __future__ import annotations

from torch import nn

from freezetune import distributed
from freezetune.distributed import Dist
from freezetune.freezing.gradients import BlockGradients
from freezetune.freezing.policies import GradientWatcher, Policy
from freezetune.units import Units

__all__ = ["GradientWatch", "watch_gradients"]


class GradientWatch:
    """``watcher`` and the block-gradient sums ``grads`` it decides from."""

    def __init__(self, watcher: GradientWatcher, grads: BlockGradients, dist: Dist):
        self.watcher, self.grads, self.dist = watcher, grads, dist

    def accumulate(self) -> None:
        """Add this step's gradients (call before clipping: the watcher sees raw gradients)."""
        self.grads.accumulate()

    def decide(self, step: int) -> None:
        """After optimizer step ``step``: let the watcher decide if an interval ends here."""
        if self.watcher.is_decision_step(step):
            # the gradients are DDP-averaged already; rank 0's norms make the decision certain
            norms = distributed.broadcast(self.grads.norms(), self.dist)
            self.watcher.decide(norms, step=step)


def watch_gradients(
    policy: Policy, model: nn.Module, units: Units, dist: Dist
) -> GradientWatch | None:
    """A :class:`GradientWatch` for a policy that watches gradients; None for any other."""
    if not isinstance(policy, GradientWatcher):
        return None
    return GradientWatch(policy, BlockGradients(model, units), dist)
