"""The one place that turns a decision about what is frozen into model state."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence

from torch import nn

from freezetune.errors import UserError
from freezetune.freezing.spec import FreezeSpec, parse_freeze
from freezetune.units import Units, split_units

__all__ = ["apply_frozen", "check_spec", "freeze", "frozen_parameters", "set_train_modes"]


def _freezes_nothing(spec: FreezeSpec) -> bool:
    """Whether ``spec`` never freezes anything (``full``, with modifiers at most)."""
    return not (
        spec.prefix
        or spec.top is not None
        or spec.head_only
        or spec.bitfit
        or spec.patterns
        or spec.schedule
        or spec.lora is not None
    )


def check_spec(spec: FreezeSpec, units: Units) -> int:
    """``spec`` resolved against the model's ``units``: the leading units it freezes (static
    specs), or a one-line UserError when a part of it cannot apply to this model."""
    frozen_units = spec.frozen_units(units.num_blocks)  # bottom:K / top:K within the depth
    if spec.train_bn and not units.norms:
        raise UserError(
            f"--freeze {spec.text}: train-bn keeps BatchNorm layers training, and this model "
            f"({units.family}) has none; drop +train-bn"
        )
    if spec.train_bn and _freezes_nothing(spec):
        raise UserError(
            f"--freeze {spec.text}: train-bn keeps the BatchNorm of frozen units training, and "
            "nothing is frozen; drop +train-bn or freeze some units (e.g. bottom:4+train-bn)"
        )
    return frozen_units


def _chosen(frozen_units: int | Collection[int]) -> list[int]:
    """Unit indices: the first ``frozen_units`` of them, or the given ones in order."""
    if isinstance(frozen_units, int):
        return list(range(frozen_units))
    return sorted(frozen_units)


def frozen_parameters(
    units: Units, spec: FreezeSpec, frozen_units: int | Collection[int] | None = None
) -> frozenset[str]:
    """Names of the parameters frozen by ``spec`` with ``frozen_units`` frozen: that many
    leading units, or those unit indices (a :class:`~.base.UnitSelector`'s set); default:
    what the static spec freezes. Pure: works on names, touches no tensor.

    The head never freezes: it is new and must learn the task. With LoRA, every weight
    outside the adapters freezes. With ``train-bn``, BatchNorm parameters never freeze.
    """
    if frozen_units is None:
        frozen_units = check_spec(spec, units)
    frozen = {name for i in _chosen(frozen_units) for name in units.units[i].params}
    regexes = [re.compile(p) for p in spec.patterns]
    for unit in units.units[:-1]:
        for name in unit.params:
            if spec.bitfit and not name.endswith("bias"):
                frozen.add(name)
            if any(r.search(name) for r in regexes):
                frozen.add(name)
            if spec.lora is not None and "lora_" not in name:
                frozen.add(name)
    if spec.train_bn:
        frozen -= units.norm_params()
    return frozenset(frozen - set(units.units[-1].params))


def never_trains(spec: FreezeSpec, units: Units) -> frozenset[str]:
    """What never trains: a static spec's frozen units and selections, a schedule's
    selections only (a schedule may thaw any unit). The optimizer leaves these out."""
    prefix = spec.frozen_units(units.num_blocks) if spec.schedule is None else 0
    return frozen_parameters(units, spec, prefix)


def apply_frozen(model: nn.Module, frozen: Iterable[str]) -> None:
    """Set ``requires_grad`` so that exactly the ``frozen`` parameters get no gradient.

    Autograd then stops at the first trainable unit: frozen prefixes cost no backward pass.
    """
    frozen = set(frozen)
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
        if name in frozen:
            param.grad = None


def set_train_modes(
    model: nn.Module,
    units: Units,
    frozen_units: int | Collection[int],
    training: bool,
    train_bn: bool = False,
) -> None:
    """``model.train(training)``, but frozen units (the first ``frozen_units``, or those
    indices) always run in ``eval()``.

    A frozen unit must be a fixed function (no dropout, no drop-connect, BatchNorm on its
    running statistics, which then stay bit-identical: Keras's rule): that is what makes its
    outputs cacheable and its weights meaningfully "unchanged". ``train_bn`` (fastai's rule)
    keeps the BatchNorm layers of frozen units in ``training`` mode instead.
    """
    model.train(training)
    chosen = [units.units[i] for i in _chosen(frozen_units)]
    for unit in chosen:
        for module_name in unit.modules:
            model.get_submodule(module_name).eval()
    if train_bn and training:
        frozen = [m for unit in chosen for m in unit.modules]
        for norm in units.norms:
            if any(norm == m or norm.startswith(m + ".") for m in frozen):
                model.get_submodule(norm).train()


def _static(spec: str | FreezeSpec) -> FreezeSpec:
    """``spec`` parsed, refused with the fix when ``freeze`` cannot apply it on its own."""
    parsed = parse_freeze(spec) if isinstance(spec, str) else spec
    if parsed.schedule is not None:
        raise UserError(
            f"freeze(): {parsed.text!r} changes what is frozen during training; call freeze() "
            "with a static spec (e.g. bottom:K) whenever it should change, or use train()"
        )
    if parsed.lora is not None:
        raise UserError(
            f"freeze(): {parsed.text!r} adds LoRA adapters, which freeze() does not; "
            "drop lora from the spec, or use train()"
        )
    if parsed.llrd is not None:
        raise UserError(
            f"freeze(): {parsed.text!r} sets layer-wise learning rates, which freeze() does "
            "not touch; drop llrd from the spec and set them in your optimizer"
        )
    return parsed


def freeze(
    model: nn.Module,
    spec: str | FreezeSpec,
    *,
    blocks_path: str | None = None,
    embeddings_paths: Sequence[str] | None = None,
) -> Units:
    """Freeze ``model`` as the static ``spec`` does, for people who keep their own loop.

    fastai's ``freeze_to``: splits ``model`` into units (``blocks_path`` and
    ``embeddings_paths`` as in :func:`~freezetune.units.split_units`), sets ``requires_grad``
    (False on what ``spec`` freezes, True on every other parameter, so a second call can thaw),
    and puts the frozen leading units in ``eval()`` (the rest keep the model's mode). A later
    ``model.train()`` puts them back in training mode: call ``set_train_modes(model, units,
    frozen_units, True)`` instead, or ``freeze`` again. Schedules, LoRA and LLRD need the
    training loop: use :func:`freezetune.train`.

    >>> from transformers import AutoModelForSequenceClassification, BertConfig
    >>> cfg = BertConfig(vocab_size=99, hidden_size=8, num_hidden_layers=2,
    ...                  num_attention_heads=2, intermediate_size=16)
    >>> model = AutoModelForSequenceClassification.from_config(cfg).train()
    >>> units = freeze(model, "bottom:1")  # the embeddings and block.0
    >>> model.bert.embeddings.training, model.bert.encoder.layer[1].training
    (False, True)
    >>> [p.requires_grad for p in model.bert.encoder.layer[0:2].parameters()][::16]
    [False, True]
    """
    parsed = _static(spec)
    units = split_units(model, blocks_path=blocks_path, embeddings_paths=embeddings_paths)
    frozen_units = check_spec(parsed, units)
    apply_frozen(model, frozen_parameters(units, parsed, frozen_units))
    set_train_modes(model, units, frozen_units, model.training, parsed.train_bn)
    return units
