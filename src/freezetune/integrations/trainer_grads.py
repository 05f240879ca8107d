"""AutoFreeze's gradient signal under Trainer: the raw gradient of every optimizer step.

freezetune's loop sums each block parameter's gradient before clipping it
(``Loop._optimizer_step``). Trainer clips in place right before ``on_pre_optimizer_step``, the
first hook after backward, so that hook only sees clipped gradients. A post-accumulate-grad
hook on each block parameter instead copies the gradient as backward leaves it; after a step's
last micro-batch that copy is the whole step's raw gradient, and :meth:`RawGradients.flush`
(at ``on_pre_optimizer_step``) adds it to ``BlockGradients``' sums exactly as
``BlockGradients.accumulate`` adds ``p.grad``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from freezetune.errors import UserError
from freezetune.freezing.gradients import BlockGradients
from freezetune.units import Units

__all__ = ["GRADS_FILE", "RawGradients"]

#: where a Trainer checkpoint keeps the gradient sums of an unfinished AutoFreeze interval
GRADS_FILE = "freezetune_grads.safetensors"


class RawGradients:
    """``BlockGradients`` fed from hooks, so clipping cannot reach what it sums.

    Costs one extra copy of the block parameters' gradients, held from backward to the
    optimizer step.
    """

    def __init__(self, model: nn.Module, units: Units):
        self.grads = BlockGradients(model, units)
        self.params = dict(model.named_parameters())
        self.names = {id(p): name for name, p in self.params.items()}
        self.staged: dict[int, torch.Tensor] = {}
        # a parameter that never requires grad (bitfit, patterns) never gets one to sum
        self.handles = [
            p.register_post_accumulate_grad_hook(self._stage)
            for block in self.grads.blocks
            for p in block
            if p.requires_grad
        ]

    def _stage(self, param: torch.Tensor) -> None:
        # under gradient accumulation each micro-batch overwrites the copy with the running
        # total, so the last one holds the step's gradient, as p.grad does before clipping
        if param.grad is not None:
            self.staged[id(param)] = param.grad.detach().to(torch.float32, copy=True)

    @torch.no_grad()
    def flush(self) -> None:
        """Add this step's staged gradients to the sums (once per optimizer step)."""
        self.grads.add(self.staged)
        self.staged = {}

    def norms(self) -> list[float]:
        """Per-block L1 norms of the sums since the last call (``BlockGradients.norms``)."""
        return self.grads.norms()

    @property
    def pending(self) -> bool:
        """Whether sums of an unfinished decision interval exist (a checkpoint must keep them)."""
        return bool(self.grads.sums)

    def save(self, folder: str | Path) -> None:
        tensors = {self.names[k]: v.contiguous() for k, v in self.grads.sums.items()}
        save_file(tensors, str(Path(folder) / GRADS_FILE))

    def load(self, folder: str | Path) -> None:
        path = Path(folder) / GRADS_FILE
        if not path.is_file():  # the sums of the unfinished interval: deciding without is wrong
            raise UserError(
                f"AutoFreeze's gradient sums are not in {path}; resume from the checkpoint "
                "folder inside args.output_dir that Trainer wrote them to"
            )
        sums = load_file(str(path))
        self.grads.sums = {
            id(self.params[name]): value.to(self.params[name].device)
            for name, value in sums.items()
        }

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
