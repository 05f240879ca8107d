"""What Trainer cannot do with a freezetune spec, refused up front with one line naming the fix.

Each check raises :class:`~freezetune.errors.UserError`, never skips silently: a spec that
quietly did less than it says would make every comparison built on it wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from freezetune.errors import UserError
from freezetune.freezing import FreezeSpec
from freezetune.integrations.trainer_lr import UnitLR

__all__ = ["check_args", "check_lora", "check_lr", "check_optimizer"]


def _name(spec: FreezeSpec) -> str:
    return f"FreezeCallback({spec.text!r})"


def check_args(args: Any, spec: FreezeSpec, *, watcher: bool, frozen_early: bool) -> None:
    """Refuse the training setups under which what trains cannot be changed as the spec says.

    ``watcher``: the policy decides from gradients (AutoFreeze); ``frozen_early``: the
    callback set ``requires_grad`` before Trainer wrapped the model (at ``on_init_end``).
    """
    if args.deepspeed or args.fsdp:
        raise UserError(
            f"{_name(spec)}: DeepSpeed and FSDP shard the parameters, so freezing cannot be "
            "applied under them; train without them (or use freezetune train)"
        )
    if watcher and args.fp16:
        raise UserError(
            f"{_name(spec)}: under fp16 the gradients AutoFreeze decides from are loss-scaled; "
            "use bf16=True or fp32"
        )
    if args.world_size > 1 and watcher:
        raise UserError(
            f"{_name(spec)}: AutoFreeze under Trainer runs in one process only (its hooks see "
            "each process's own gradients); use freezetune train for data-parallel AutoFreeze"
        )
    changes = spec.schedule is not None or not frozen_early
    if args.world_size > 1 and changes and not args.ddp_find_unused_parameters:
        raise UserError(
            f"{_name(spec)}: DistributedDataParallel waits for gradients of parameters frozen "
            "after it wrapped the model; pass ddp_find_unused_parameters=True"
        )


def check_lora(model: nn.Module, spec: FreezeSpec) -> None:
    """LoRA needs adapters in the model before Trainer builds its optimizer over it."""
    if spec.lora is None:
        return
    if not any("lora_" in name for name, _ in model.named_parameters()):
        raise UserError(
            f"{_name(spec)}: the model has no LoRA adapters, and Trainer's optimizer is built "
            "from the model it is given; wrap it first (model = peft.get_peft_model(model, "
            "peft.LoraConfig(...))) and keep 'lora' in the spec"
        )
    if spec.lora:
        options = ",".join(f"{k}={v}" for k, v in spec.lora)
        raise UserError(
            f"{_name(spec)}: the model's adapters already exist, so lora:{options} would be "
            "ignored; set them in peft.LoraConfig and write plain 'lora' in the spec"
        )


def check_optimizer(model: nn.Module, optimizer: Any, may_train: Iterable[str], spec: FreezeSpec):
    """Every parameter the spec may ever train must be in the optimizer Trainer steps.

    Trainer's optimizer holds what required grad when it was built: a parameter frozen then
    and thawed later by a schedule would get gradients and never be updated.
    """
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    params = dict(model.named_parameters())
    missing = [name for name in may_train if id(params[name]) not in held]
    if missing:
        raise UserError(
            f"{_name(spec)}: {len(missing)} parameters it may train are not in Trainer's "
            f"optimizer (e.g. {missing[0]}: frozen when it was built); pass the callback in "
            "Trainer(callbacks=[...]) rather than add_callback(), and do not freeze the model "
            "yourself"
        )


def check_lr(spec: FreezeSpec, per_unit: bool, optimizer: Any, scheduler: Any) -> None:
    """Per-unit rates (``per_unit``) need freezetune's optimizer groups and scheduler."""
    ours = isinstance(scheduler, UnitLR)
    if ours and not all("unit" in group for group in optimizer.param_groups):
        raise UserError(
            f"{_name(spec)}: the UnitLR scheduler needs freezetune's optimizer; pass both from "
            "optimizers=callback.optimizers(model, args)"
        )
    if per_unit and not ours:
        why = "layer-wise LR decay" if spec.llrd is not None else "its own per-unit LR schedule"
        raise UserError(
            f"{_name(spec)}: {why} needs one LR per unit, which Trainer's optimizer and "
            "scheduler cannot give; pass optimizers=callback.optimizers(model, args) to Trainer"
        )
