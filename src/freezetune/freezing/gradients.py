"""Gradient statistics that adaptive policies (AutoFreeze) decide from: the torch side."""

from __future__ import annotations

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
        for block in self.blocks:
            for p in block:
                if p.grad is None:
                    continue
                acc = self.sums.get(id(p))
                if acc is None:
                    self.sums[id(p)] = p.grad.detach().float().clone()
                else:
                    acc.add_(p.grad.detach().float())

    @torch.no_grad()
    def norms(self, reset: bool = True) -> list[float]:
        out = []
        for block in self.blocks:
            total = sum(float(self.sums[id(p)].abs().sum()) for p in block if id(p) in self.sums)
            out.append(total)
        if reset:
            self.sums.clear()
        return out
