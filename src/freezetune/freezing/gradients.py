"""Gradient statistics that adaptive policies (AutoFreeze) decide from: the torch side."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from freezetune.units import Units

__all__ = ["BlockGradients"]


class BlockGradients:
    """Sums each block parameter's signed gradient between decisions (AutoFreeze's signal).

    ``norms()`` returns, per block, the sum over its parameters of the L1 norm of the
    accumulated gradient; frozen blocks (no gradients) report 0.
    """

    def __init__(self, model: nn.Module, units: Units):
        params = dict(model.named_parameters())
        blocks = units.units[1:-1]
        self.blocks = [[params[n] for n in unit.params] for unit in blocks]
        self.sums: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def accumulate(self) -> None:
        """Call once per optimizer step, after backward (before the gradients are zeroed)."""
        self.add(
            {id(p): p.grad.detach().float() for b in self.blocks for p in b if p.grad is not None}
        )

    @torch.no_grad()
    def add(self, grads: Mapping[int, torch.Tensor]) -> None:
        """Add one step's gradients (keyed by ``id(parameter)``) to the sums."""
        for key, grad in grads.items():
            acc = self.sums.get(key)
            if acc is None:
                self.sums[key] = grad.clone()
            else:
                acc.add_(grad)

    @torch.no_grad()
    def norms(self, reset: bool = True) -> list[float]:
        out = []
        for block in self.blocks:
            total = sum(float(self.sums[id(p)].abs().sum()) for p in block if id(p) in self.sums)
            out.append(total)
        if reset:
            self.sums.clear()
        return out
