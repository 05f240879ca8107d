"""Learning rates per strategy family, for ``--lrs auto|one|LIST``.

Strategies whose trainable parameters differ want different rates: a fresh head alone takes
~1e-3, LoRA adapters ~1e-4..1e-3, a full fine-tune of BERT-base 2e-5..5e-5 (Devlin et al.
2019), so one shared rate is unfair to some of them. A strategy is a ``--freeze`` spec as a
study labels it, maybe with its own settings in parentheses (``"full (student=3,
teacher=@full)"``); it is classified by parsing, in this order:

    head     ``head`` (only the head trains)
    lora     ``lora`` or ``bitfit`` anywhere in the spec (few, isolated trainable parameters)
    student  a cut student (``student=K``), distilled or not
    full     everything else: full and partial freezes, every schedule, plugins' policies

``auto`` gives each family its 3-value grid, ``one`` its middle value, ``LIST`` (``"1e-4,3e-5"``)
the same rates to every strategy; a strategy that sets its own ``lr=`` keeps it. Grids are
written for BERT-base (hidden size ``d0 = 768``) and scale with the model's hidden size ``d``::

    lr(d) = lr(768) * clip(768 / d, 1/4, 4)      (2 significant digits)

Adam's best rate falls roughly as 1/width (muP, Yang et al. 2022; BERT-large's 1e-5..3e-5 against
BERT-base's 2e-5..5e-5; MiniLM-L6 at d = 384 likes ~1e-4), and the clip keeps tiny test models
and giant ones at sane values.

>>> lrs_for("bottom:3", "auto", hidden_size=384)
(4e-05, 0.0001, 0.0002)
>>> lrs_for("head", "one"), lrs_for("full (student=3, teacher=@full)", "one")
((0.001,), (0.0001,))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from freezetune.errors import UserError
from freezetune.freezing.spec import parse_freeze

__all__ = [
    "FAMILIES",
    "IMAGE_FAMILIES",
    "REFERENCE_HIDDEN",
    "Family",
    "LrChoice",
    "family_label",
    "family_of",
    "lrs_for",
    "parse_lrs",
    "size_factor",
]

#: ``auto``, ``one``, or explicit rates.
LrChoice = str | tuple[float, ...]

REFERENCE_HIDDEN = 768  # BERT-base: the width the grids below are written for
LRS_HELP = "use auto, one, or a comma-separated list of rates in (0, 1) like 1e-4,3e-5"


@dataclass(frozen=True)
class Family:
    """A strategy family: what it covers and its rates for a BERT-base-size model (the middle
    one is its ``one`` rate)."""

    about: str
    grid: tuple[float, float, float]


#: Image models without a width (CNNs such as EfficientNet-Lite0, ImageNet-pretrained, Adam):
#: rates ~10x a BERT's, as the vision study's 1e-3 (full) and 1e-2 (head) found; not scaled.
IMAGE_FAMILIES: dict[str, Family] = {
    "full": Family("full and partial freezes, schedules", (3e-4, 1e-3, 3e-3)),
    "head": Family("the head alone", (3e-3, 1e-2, 3e-2)),
    "lora": Family("LoRA adapters and BitFit", (1e-3, 3e-3, 1e-2)),
    "student": Family("cut students, plain or distilled", (3e-4, 1e-3, 3e-3)),
}

FAMILIES: dict[str, Family] = {
    "full": Family("full and partial freezes, schedules", (2e-5, 5e-5, 1e-4)),
    "head": Family("the head alone", (3e-4, 1e-3, 3e-3)),
    "lora": Family("LoRA adapters and BitFit", (1e-4, 3e-4, 1e-3)),
    "student": Family("cut students, plain or distilled", (4e-5, 1e-4, 2e-4)),
}


def size_factor(hidden_size: int | None) -> float:
    """How much to multiply the BERT-base rates by for a model of width ``hidden_size``.

    >>> size_factor(384), size_factor(1024), size_factor(32), size_factor(None)
    (2.0, 0.75, 4.0, 1.0)
    """
    if hidden_size is None:
        return 1.0
    if hidden_size < 1:
        raise UserError(f"hidden size must be >= 1, got {hidden_size}")
    return min(4.0, max(0.25, REFERENCE_HIDDEN / hidden_size))


def _label(strategy: str) -> tuple[str, dict[str, str]]:
    """A study label ``"spec (key=value, ...)"`` -> (spec, {key: value})."""
    spec, sep, rest = strategy.strip().rpartition(" (")
    if not sep or not rest.endswith(")"):
        return strategy.strip(), {}
    items = [item.strip().partition("=") for item in rest[:-1].split(",")]
    if not all(eq and key.strip() for key, eq, _ in items):
        return strategy.strip(), {}
    return spec.strip(), {key.strip(): value.strip() for key, _, value in items}


def family_label(freeze: str, student_layers: object = None) -> str:
    """The label :func:`family_of` reads for a run's freeze spec and its student setting.

    >>> family_of(family_label("full", 3)), family_of(family_label("bottom:2"))
    ('student', 'full')
    """
    return freeze + (f" (student={student_layers})" if student_layers else "")


def family_of(strategy: str) -> str:
    """The family of a strategy label (see the module docstring for the order).

    >>> [family_of(s) for s in ("full", "bottom:3", "two-phase", "head", "bottom:2+lora:r=4")]
    ['full', 'full', 'full', 'head', 'lora']
    >>> family_of("full (student=3)"), family_of("autofreeze+llrd:0.9")
    ('student', 'full')
    """
    text, settings = _label(strategy)
    try:
        spec = parse_freeze(text)
    except UserError as err:
        raise UserError(f"strategy {strategy!r}: {err}") from None
    if spec.head_only:
        return "head"
    if spec.lora is not None or spec.bitfit:
        return "lora"
    if "student" in settings or "distill.student_layers" in settings:
        return "student"
    return "full"


def parse_lrs(value: str | Sequence[float]) -> LrChoice:
    """``--lrs``: ``auto``, ``one``, or a comma-separated list (a YAML list works too).

    >>> parse_lrs("auto"), parse_lrs(" 1e-4, 3e-5 "), parse_lrs([1e-3])
    ('auto', (0.0001, 3e-05), (0.001,))
    >>> parse_lrs("1e-4,fast")
    Traceback (most recent call last):
    ...
    freezetune.errors.UserError: --lrs '1e-4,fast': 'fast' is not a learning rate; use auto, \
one, or a comma-separated list of rates in (0, 1) like 1e-4,3e-5
    """
    if isinstance(value, str) and value.strip().lower() in ("auto", "one"):
        return value.strip().lower()
    shown = value if isinstance(value, str) else ",".join(map(str, value))
    items = value.split(",") if isinstance(value, str) else list(value)
    rates: list[float] = []
    for item in items:
        try:
            rate = float(str(item).strip())
        except ValueError:
            rate = math.nan
        if not 0 < rate < 1:  # also refuses NaN
            raise UserError(
                f"--lrs {shown!r}: {str(item).strip()!r} is not a learning rate; {LRS_HELP}"
            )
        if rate in rates:
            raise UserError(f"--lrs {shown!r} lists {rate:g} twice; {LRS_HELP}")
        rates.append(rate)
    if not rates:
        raise UserError(f"--lrs {shown!r} names no rate; {LRS_HELP}")
    return tuple(rates)


def lrs_for(
    strategy: str, choice: LrChoice, hidden_size: int | None = None, modality: str = "text"
) -> tuple[float, ...]:
    """The learning rates ``strategy`` is tried at, for ``--lrs`` ``choice`` (parsed or not).
    An image model without a width (a CNN) takes :data:`IMAGE_FAMILIES`' grids, unscaled.

    >>> lrs_for("head", "auto", modality="image")
    (0.003, 0.01, 0.03)
    """
    image = modality == "image" and hidden_size is None
    family = (IMAGE_FAMILIES if image else FAMILIES)[family_of(strategy)]  # unknown: fails here
    _, settings = _label(strategy)
    own = settings.get("lr", settings.get("optim.lr"))
    if own is not None:
        return parse_lrs(own)  # type: ignore[return-value]
    parsed = parse_lrs(choice) if isinstance(choice, str) else choice
    if not isinstance(parsed, str):
        return parsed
    factor = size_factor(hidden_size)
    grid = tuple(float(f"{rate * factor:.2g}") for rate in family.grid)
    return grid if parsed == "auto" else (grid[1],)
