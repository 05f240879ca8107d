"""LoRA adapters through PEFT (Hu et al. 2021): the parameter-efficient baseline to compare
freezing with. The adapted base weights freeze; adapters and the head train."""

from __future__ import annotations

from typing import Any

from torch import nn

from freezetune.errors import UserError

__all__ = ["DEFAULT_TARGETS", "add_lora", "merge_lora"]

#: attention projections LoRA adapts by default, per base-model family (the LoRA paper: Wq, Wv)
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "xlm-roberta": ("query", "value"),
    "electra": ("query", "value"),
    "albert": ("query", "value"),
    "deberta-v2": ("query_proj", "value_proj"),
    "distilbert": ("q_lin", "v_lin"),
    "gpt2": ("c_attn",),
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
}


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
    modules = tuple(str(targets).split("|")) if targets else DEFAULT_TARGETS.get(family)
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
