"""The one place that turns a decision about what is frozen into model state."""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from freezetune.freezing.spec import FreezeSpec
from freezetune.units import Units

__all__ = ["apply_frozen", "frozen_parameters", "set_train_modes"]


def frozen_parameters(units: Units, spec: FreezeSpec, prefix: int | None = None) -> frozenset[str]:
    """Names of the parameters frozen by ``spec`` with ``prefix`` leading units frozen
    (default: the spec's static prefix). Pure: works on names, touches no tensor.

    The head never freezes: it is new and must learn the task. With LoRA, every weight
    outside the adapters freezes.
    """
    n = spec.frozen_prefix(units.num_blocks) if prefix is None else prefix
    frozen = {name for unit in units.units[:n] for name in unit.params}
    regexes = [re.compile(p) for p in spec.patterns]
    for unit in units.units[:-1]:
        for name in unit.params:
            if spec.bitfit and not name.endswith("bias"):
                frozen.add(name)
            if any(r.search(name) for r in regexes):
                frozen.add(name)
            if spec.lora is not None and "lora_" not in name:
                frozen.add(name)
    return frozenset(frozen - set(units.units[-1].params))


def apply_frozen(model: nn.Module, frozen: Iterable[str]) -> None:
    """Set ``requires_grad`` so that exactly the ``frozen`` parameters get no gradient.

    Autograd then stops at the first trainable unit: frozen prefixes cost no backward pass.
    """
    frozen = set(frozen)
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
        if name in frozen:
            param.grad = None


def set_train_modes(model: nn.Module, units: Units, frozen_prefix: int, training: bool) -> None:
    """``model.train(training)``, but frozen leading units always run in ``eval()``.

    A frozen unit must be a fixed function (no dropout): that is what makes its outputs
    cacheable and its weights meaningfully "unchanged".
    """
    model.train(training)
    for unit in units.units[:frozen_prefix]:
        for module_name in unit.modules:
            model.get_submodule(module_name).eval()
