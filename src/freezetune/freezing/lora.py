"""LoRA adapters through PEFT (Hu et al. 2021): the parameter-efficient baseline to compare
freezing with. The adapted base weights freeze; adapters and the head train."""

from __future__ import annotations

from typing import Any

from torch import nn

from freezetune.errors import UserError
from freezetune.families import get_family

__all__ = ["add_lora", "default_targets", "merge_lora"]


def default_targets(model_type: str) -> tuple[str, ...]:
    """The modules LoRA adapts by default in ``model_type`` (``Family.lora_targets``).

    >>> default_targets("qwen3"), default_targets("t5")
    (('q_proj', 'v_proj'), ())
    """
    family = get_family(model_type)
    return family.lora_targets if family is not None else ()


def add_lora(model: Any, options: dict[str, Any]) -> nn.Module:
    """Wrap ``model`` (a FreezetuneForSequenceClassification) with LoRA adapters.

    >>> wrapped = add_lora(model, {"r": 8, "alpha": 16})  # doctest: +SKIP
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UserError("--freeze lora needs the peft package; pip install peft") from None
    family = model.config.encoder.model_type
    targets = options.get("targets")
    modules = tuple(str(targets).split("|")) if targets else default_targets(family)
    if not modules:
        raise UserError(
            f"no default LoRA targets for {family}; pass lora:targets=NAME|NAME with the "
            "names of its attention projection modules"
        )
    config = LoraConfig(
        r=int(options.get("r", 8)),
        lora_alpha=int(options.get("alpha", 16)),
        lora_dropout=float(options.get("dropout", 0.1)),
        target_modules=list(modules),
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise UserError(f"cannot add LoRA to {family} ({str(err).splitlines()[0]})") from None


def merge_lora(model: Any) -> Any:
    """Fold the adapters into the base weights: the saved model needs no PEFT to load."""
    return model.merge_and_unload()
