"""The registry of freezing policies: what ``--freeze NAME:key=value,...`` may name.

A policy is registered with :func:`register_policy` as a *build* function and one *options*
dataclass. The dataclass's fields are the policy's ``--freeze`` options: their names, types
(``int``, ``float``, ``str``, ``bool``; ``X | None`` for "not given"), defaults and help
(``field(metadata={"help": ...})``) come from it alone, and its ``__post_init__`` validates
them. freezetune's own schedules register in :mod:`freezetune.freezing.builtin` just as a
plugin would; installed packages add theirs through the ``freezetune.policies`` entry points,
each naming a :class:`PolicyPlugin`.

>>> from dataclasses import dataclass, field
>>> from freezetune.freezing.schedules import Static
>>> @dataclass(frozen=True)
... class HalfOptions:
...     at: float = field(default=0.5, metadata={"help": "when the bottom half freezes"})
>>> def half(options: HalfOptions, run: RunShape) -> Static:
...     return Static(run.num_blocks // 2 + 1)
>>> register_policy("half-example", half, options=HalfOptions)
>>> option_types(POLICIES.get("half-example").options)
{'at': <class 'float'>}
>>> POLICIES.unregister("half-example")
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from freezetune.errors import UserError
from freezetune.freezing.base import Policy
from freezetune.plugins import Registry

__all__ = [
    "POLICIES",
    "STATIC_PARTS",
    "NoOptions",
    "PolicyPlugin",
    "RunShape",
    "check_range",
    "option_help",
    "option_types",
    "register_policy",
]

#: the ``--freeze`` parts that are not policies: no policy may take these names
STATIC_PARTS = frozenset(
    ("full", "head", "embeddings", "bottom", "top", "bitfit", "pattern", "lora", "llrd", "train-bn")
)
_KINDS = (bool, int, float, str)


@dataclass(frozen=True)
class RunShape:
    """What a policy is sized to: the model's blocks and the run's steps; ``seed`` is the
    run's seed, for a policy that samples (0 where the caller has none)."""

    num_blocks: int
    total_steps: int
    steps_per_epoch: int
    warmup_ratio: float
    seed: int = 0


@dataclass(frozen=True)
class NoOptions:
    """The options of a policy that takes none."""


@dataclass(frozen=True)
class PolicyPlugin:
    """A registered policy: ``build(options, run)`` returns a fresh policy (``Policy``), with
    ``options`` an instance of the ``options`` dataclass. ``positional`` is the option that a
    bare first value sets (``two-phase:0.5`` = ``two-phase:epochs=0.5``)."""

    build: Callable[[Any, RunShape], Policy]
    options: type = NoOptions
    positional: str | None = None


def option_types(options: type) -> dict[str, type]:
    """Each option of the ``options`` dataclass and the type its text is parsed to.

    >>> from freezetune.freezing.builtin import TwoPhaseOptions
    >>> option_types(TwoPhaseOptions)["to"], option_types(TwoPhaseOptions)["scale"]
    (<class 'int'>, <class 'float'>)
    """
    hints = typing.get_type_hints(options)
    out: dict[str, type] = {}
    for f in dataclasses.fields(options):
        kind = hints[f.name]
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if kind not in _KINDS:
            raise TypeError(f"option {f.name} of {options.__name__}: {kind} is not one of {_KINDS}")
        out[f.name] = kind
    return out


def option_help(options: type) -> dict[str, str]:
    """Each option's help (``field(metadata={"help": ...})``) with its default.

    >>> from freezetune.freezing.builtin import AutoFreezeOptions
    >>> option_help(AutoFreezeOptions)["n"]
    'decisions over the run (default 10)'
    """
    out = {}
    for f in dataclasses.fields(options):
        default = "" if f.default is dataclasses.MISSING else f" (default {f.default})"
        out[f.name] = f"{f.metadata.get('help', '')}{default}".strip()
    return out


def check_range(
    name: str, value: float, low: float, high: float, *, low_open: bool = False
) -> None:
    """A UserError naming ``name=value`` and the range ``[low, high]`` (``(low`` if
    ``low_open``; ``high`` may be ``inf``) when ``value`` is outside it (NaN included).

    >>> check_range("p", 150.0, 0, 100)
    Traceback (most recent call last):
    ...
    freezetune.errors.UserError: p=150.0 must be in [0, 100]
    """
    above = value > low if low_open else value >= low
    if above and value <= high:
        return
    if high == float("inf"):
        raise UserError(f"{name}={value} must be {'>' if low_open else '>='} {low}")
    raise UserError(f"{name}={value} must be in {'(' if low_open else '['}{low}, {high}]")


def _check(name: str, obj: object) -> str | None:
    """What is wrong with registering ``obj`` as policy ``name``, if anything."""
    if name in STATIC_PARTS or not name or any(c in name for c in "+:,="):
        return "takes a name that --freeze cannot use (a static part, or + : , =); rename it"
    if not isinstance(obj, PolicyPlugin):
        return f"is a {type(obj).__name__}, not a PolicyPlugin; fix it or uninstall it"
    if not dataclasses.is_dataclass(obj.options):
        return "has options that are not a dataclass; fix it or uninstall it"
    try:
        fields = option_types(obj.options)
    except TypeError as err:
        return f"has an option of a type --freeze cannot parse ({err}); fix it or uninstall it"
    if obj.positional is not None and obj.positional not in fields:
        return f"has no option {obj.positional!r} to set positionally; fix it or uninstall it"
    return None


POLICIES: Registry[PolicyPlugin] = Registry(
    "freezetune.policies", "policy", builtins="freezetune.freezing.builtin", check=_check
)


def register_policy(
    name: str,
    build: Callable[[Any, RunShape], Policy],
    *,
    options: type = NoOptions,
    positional: str | None = None,
    source: str | None = None,
) -> None:
    """Make ``--freeze name[:key=value,...]`` build a policy with ``build(options, run)``.

    ``options`` is the policy's options dataclass, ``positional`` the option a bare first
    value sets, ``source`` the package named in errors (default: ``build``'s top package).
    The name then works wherever a built-in one does (``+llrd``, studies, ``inspect``,
    checkpoints, the Trainer callback).
    """
    module = getattr(build, "__module__", None) or "__main__"
    plugin = PolicyPlugin(build, options, positional)
    POLICIES.register(name, plugin, source=source or module.partition(".")[0], module=module)
