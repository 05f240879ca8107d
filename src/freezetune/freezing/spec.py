"""Parse ``--freeze`` specs into a pure description of what is frozen (no torch here).

Units are ``[embeddings, block_0, ..., block_{L-1}, head]``; most strategies are "the first n
units are frozen" (fastai's ``freeze_to``). Non-prefix selections (bias-only, name patterns) are
separate fields and combine with a prefix by union of what they freeze. The head always trains.

Grammar: components joined by ``+``; ``pattern:REGEX`` must come last (its regex may contain
``+``)::

    full | head | embeddings | bottom:K | top:K | bitfit | pattern:REGEX
    e.g.  bottom:3+bitfit    embeddings+pattern:attention\\.self
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from freezetune.errors import UserError

__all__ = ["SPEC_HELP", "FreezeSpec", "parse_freeze"]

SPEC_HELP = (
    "full, head, embeddings, bottom:K, top:K, bitfit, pattern:REGEX, joined with '+' "
    "(e.g. bottom:3+bitfit)"
)


@dataclass(frozen=True)
class FreezeSpec:
    """What a static spec freezes, before it is resolved against a model's units.

    ``prefix`` counts frozen leading units (``None`` with ``top`` set: counted from the top).
    """

    text: str
    prefix: int = 0  # leading units frozen: 1 = embeddings, K + 1 = embeddings + K blocks
    top: int | None = None  # train only the top K blocks (+ head); resolved with the block count
    head_only: bool = False
    bitfit: bool = False  # freeze every weight that is not a bias (outside the head)
    patterns: tuple[str, ...] = ()  # freeze parameters whose qualified name matches

    def frozen_prefix(self, num_blocks: int) -> int:
        """Number of leading units frozen for a model with ``num_blocks`` blocks.

        >>> parse_freeze("bottom:3").frozen_prefix(6), parse_freeze("top:2").frozen_prefix(6)
        (4, 5)
        >>> parse_freeze("head").frozen_prefix(6)
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


def parse_freeze(text: str) -> FreezeSpec:
    """Parse a ``--freeze`` spec; unknown parts raise :class:`UserError` listing the choices.

    >>> parse_freeze("bottom:2+bitfit")
    FreezeSpec(text='bottom:2+bitfit', prefix=3, top=None, head_only=False, bitfit=True, patterns=())
    """
    raw = text.strip()
    head, sep, regex = raw.partition("pattern:")
    parts = [p for p in head.split("+") if p] if head else []
    if sep and head and not head.endswith("+"):
        raise UserError(f"bad --freeze {text!r}: pattern:REGEX must come last; use {SPEC_HELP}")
    if not parts and not sep:
        raise UserError(f"empty --freeze spec; use one of: {SPEC_HELP}")
    fields: dict = {"prefix": 0, "top": None, "head_only": False, "bitfit": False}
    for part in parts:
        name, _, value = part.partition(":")
        if name == "full" and not value:
            continue
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
        else:
            raise UserError(f"unknown --freeze part {part!r}; use {SPEC_HELP}")
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
