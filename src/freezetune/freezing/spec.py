"""Parse ``--freeze`` specs into a pure description of what trains (no torch here).

Units are ``[embeddings, block_0, ..., block_{L-1}, head]``; most strategies are "the first n
units are frozen" (fastai's ``freeze_to``), either fixed or changing on a schedule. Non-prefix
selections (bias-only, name patterns, LoRA) are separate fields and combine with a prefix by
union of what they freeze. The head always trains.

Grammar: components joined by ``+``; ``pattern:REGEX`` must come last (its regex may contain
``+``). Options are ``name:value`` or ``name:key=value,key=value``::

    static:    full | head | embeddings | bottom:K | top:K | bitfit | pattern:REGEX
    schedules: two-phase[:epochs=1,to=K,scale=1,head_scale=10] | gradual[:epochs=1|steps=N,stlr]
               progressive[:freezeout|linear,t0=0.8,start=0.5,level=1] | autofreeze[:n=10,p=50]
               | any policy registered with ``register_policy`` or a ``freezetune.policies``
               entry point (its options are the fields of its options dataclass)
    modifiers: llrd:DECAY | lora[:r=8,alpha=16,dropout=0.1,targets=query|value] | train-bn
    e.g.  bottom:3+bitfit    autofreeze+llrd:0.9    bottom:2+lora:r=4    bottom:5+train-bn

``train-bn`` is fastai's ``train_bn``: the BatchNorm layers of frozen units keep training
(their affine parameters and running statistics). Without it, Keras's rule: a frozen unit's
BatchNorm runs in inference mode and stays bit-identical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from freezetune.errors import UserError
from freezetune.freezing.registry import POLICIES, option_types
from freezetune.plugin_options import build_options, parse_options, parse_value

__all__ = ["SPEC_HELP", "FreezeSpec", "parse_freeze", "policy_options"]

SPEC_HELP = (
    "full, head, embeddings, bottom:K, top:K, bitfit, pattern:REGEX, two-phase, gradual, "
    "progressive, autofreeze, lora, llrd:DECAY, train-bn, joined with '+' (e.g. bottom:3+bitfit)"
)

LORA_OPTIONS: dict[str, type] = {"r": int, "alpha": int, "dropout": float, "targets": str}

Options = tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class FreezeSpec:
    """What a spec freezes, before it is resolved against a model's units.

    ``prefix`` counts frozen leading units (``top`` counts trainable blocks from the top).
    """

    text: str
    prefix: int = 0  # leading units frozen: 1 = embeddings, K + 1 = embeddings + K blocks
    top: int | None = None  # train only the top K blocks (+ head); resolved with the block count
    head_only: bool = False
    bitfit: bool = False  # freeze every weight that is not a bias (outside the head)
    patterns: tuple[str, ...] = ()  # freeze parameters whose qualified name matches
    schedule: str | None = None  # a registered policy: what is frozen changes during training
    schedule_options: Options = ()
    llrd: float | None = None  # layer-wise LR decay per unit below the head
    lora: Options | None = None  # LoRA adapters (PEFT); the wrapped weights freeze
    train_bn: bool = False  # BatchNorm of frozen units keeps training (fastai's train_bn)

    def option(self, key: str, default: object) -> object:
        return dict(self.schedule_options).get(key, default)

    def frozen_units(self, num_blocks: int) -> int:
        """Number of leading units a static spec freezes, for ``num_blocks`` blocks.

        >>> parse_freeze("bottom:3").frozen_units(6), parse_freeze("top:2").frozen_units(6)
        (4, 5)
        >>> parse_freeze("head").frozen_units(6)
        7
        """
        if self.head_only:
            return num_blocks + 1
        if self.top is not None:
            if self.top > num_blocks:
                raise UserError(
                    f"--freeze top:{self.top} asks for more blocks than the model has "
                    f"({num_blocks}); use top:K with K <= {num_blocks}"
                )
            return max(self.prefix, num_blocks - self.top + 1)
        if self.prefix > num_blocks + 1:
            raise UserError(
                f"--freeze bottom:{self.prefix - 1} asks for more blocks than the model has "
                f"({num_blocks}); use bottom:K with K <= {num_blocks}, or head"
            )
        return self.prefix


def _count(component: str, value: str) -> int:
    if not value.isdigit():
        raise UserError(f"--freeze {component}: K must be a whole number >= 0; e.g. bottom:3")
    return int(value)


def _plugins() -> str:
    """The registered policies beyond the built-in ones, for the unknown-part message."""
    extra = [n for n in POLICIES.names() if POLICIES.source(n) != "freezetune"]
    return f"; or a plugin policy: {', '.join(extra)}" if extra else ""


def policy_options(name: str, options: Options, text: str | None = None) -> object:
    """Policy ``name``'s options dataclass built from parsed ``options``; a bad value is a
    UserError quoting ``--freeze text``.

    >>> policy_options("autofreeze", (("n", 20),))
    AutoFreezeOptions(n=20, p=50.0)
    """
    where = f"--freeze {text or name}"
    return build_options(where, name, POLICIES.get(name).options, dict(options))


def _options(
    component: str, text: str, positional: str | None, allowed: dict[str, type]
) -> Options:
    """``a=1,b=2`` (or a bare first value for ``positional``) -> typed ((key, value), ...)."""
    return tuple(sorted(parse_options(f"--freeze {component}", text, allowed, positional).items()))


def _parse_part(part: str, fields: dict) -> None:
    name, _, value = part.partition(":")
    if name == "full" and not value:
        return
    if name == "head" and not value:
        fields["head_only"] = True
    elif name == "embeddings" and not value:
        fields["prefix"] = max(fields["prefix"], 1)
    elif name == "bottom" and value:
        fields["prefix"] = max(fields["prefix"], _count(part, value) + 1)
    elif name == "top" and value:
        fields["top"] = _count(part, value)
    elif name == "bitfit" and not value:
        fields["bitfit"] = True
    elif name == "train-bn" and not value:
        fields["train_bn"] = True
    elif name in POLICIES:
        if fields["schedule"]:
            raise UserError(f"--freeze takes one schedule, got {fields['schedule']} and {name}")
        plugin = POLICIES.get(name)
        options = _options(part, value, plugin.positional, option_types(plugin.options))
        policy_options(name, options, part)  # its options dataclass validates them now
        fields["schedule"] = name
        fields["schedule_options"] = options
    elif name == "llrd" and value:
        decay = parse_value(f"--freeze {part}", "DECAY", value, float)
        if not 0 < decay <= 1:  # type: ignore[operator]
            raise UserError(f"--freeze {part}: DECAY must be in (0, 1], e.g. llrd:0.9")
        fields["llrd"] = decay
    elif name == "lora":
        fields["lora"] = _options(part, value, "r", LORA_OPTIONS)
    else:
        raise UserError(f"unknown --freeze part {part!r}; use {SPEC_HELP}{_plugins()}")


def parse_freeze(text: str) -> FreezeSpec:
    """Parse a ``--freeze`` spec; unknown parts raise :class:`UserError` listing the choices.

    >>> parse_freeze("bottom:2+bitfit")
    FreezeSpec(text='bottom:2+bitfit', prefix=3, top=None, head_only=False, bitfit=True, \
patterns=(), schedule=None, schedule_options=(), llrd=None, lora=None, train_bn=False)
    >>> parse_freeze("autofreeze:n=20+llrd:0.9").schedule_options
    (('n', 20),)
    """
    raw = text.strip()
    head, sep, regex = raw.partition("pattern:")
    parts = [p for p in head.split("+") if p] if head else []
    if sep and head and not head.endswith("+"):
        raise UserError(f"bad --freeze {text!r}: pattern:REGEX must come last; use {SPEC_HELP}")
    if not parts and not sep:
        raise UserError(f"empty --freeze spec; use one of: {SPEC_HELP}")
    fields: dict = {
        "prefix": 0,
        "top": None,
        "head_only": False,
        "bitfit": False,
        "schedule": None,
        "schedule_options": (),
        "llrd": None,
        "lora": None,
        "train_bn": False,
    }
    for part in parts:
        _parse_part(part, fields)
    if fields["schedule"] and (
        fields["prefix"] or fields["top"] is not None or fields["head_only"]
    ):
        raise UserError(
            f"--freeze {raw}: a schedule decides the frozen prefix itself; drop bottom/top/"
            "head/embeddings, or use two-phase:to=K to stop unfreezing at bottom:K"
        )
    patterns: tuple[str, ...] = ()
    if sep:
        if not regex:
            raise UserError("--freeze pattern: needs a regular expression, e.g. pattern:attention")
        try:
            re.compile(regex)
        except re.error as err:
            raise UserError(
                f"--freeze pattern:{regex} is not a valid regular expression ({err})"
            ) from None
        patterns = (regex,)
    return FreezeSpec(text=raw, patterns=patterns, **fields)
