"""A plugin's options: one dataclass whose fields are the ``NAME:key=value`` options of a
registered policy (``--freeze``) or objective (``--objective``): their types, help and the
parsing of their text, shared by both registries.

>>> parse_value("--freeze lisa:k=x", "k", "x", int)
Traceback (most recent call last):
...
freezetune.errors.UserError: --freeze lisa:k=x: k must be a int, got 'x'
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass

from freezetune.errors import UserError

__all__ = [
    "NoOptions",
    "build_options",
    "option_help",
    "option_types",
    "options_problem",
    "parse_options",
    "parse_value",
]

_KINDS = (bool, int, float, str)
_TRUE, _FALSE = ("", "true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True)
class NoOptions:
    """The options of a plugin that takes none."""


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


def options_problem(options: type, flag: str) -> str | None:
    """What is wrong with ``options`` as a plugin's options dataclass (for the registry's
    one-line refusal naming ``flag``), or None."""
    if not dataclasses.is_dataclass(options):
        return "has options that are not a dataclass; fix it or uninstall it"
    try:
        option_types(options)
    except TypeError as err:
        return f"has an option of a type {flag} cannot parse ({err}); fix it or uninstall it"
    return None


def parse_value(where: str, key: str, raw: str, kind: type) -> object:
    """Option ``key``'s text ``raw`` as ``kind`` (a bare ``key`` is True for a bool); a
    UserError quoting ``where`` (the flag and its text) when it does not parse."""
    try:
        if kind is bool:
            if raw.lower() not in (*_TRUE, *_FALSE):
                raise ValueError(raw)
            return raw.lower() in _TRUE
        return kind(raw)
    except ValueError:
        raise UserError(f"{where}: {key} must be a {kind.__name__}, got {raw!r}") from None


def parse_options(
    where: str, text: str, kinds: dict[str, type], positional: str | None = None
) -> dict[str, object]:
    """``a=1,b=2`` (or a bare first value for ``positional``) -> typed values by option; a
    UserError quoting ``where`` for an unknown option or a value that does not parse.

    >>> parse_options("--freeze two-phase:0.5", "0.5", {"epochs": float}, positional="epochs")
    {'epochs': 0.5}
    >>> parse_options("--objective task:beta=1", "beta=1", {})
    Traceback (most recent call last):
    ...
    freezetune.errors.UserError: --objective task:beta=1: unknown option 'beta'; it takes none
    """
    out: dict[str, object] = {}
    for i, item in enumerate(p for p in text.split(",") if p):
        key, eq, raw = item.partition("=")
        if not eq:
            bare = i == 0 and positional is not None and item not in kinds
            key, raw = (positional, item) if bare and positional else (item, "")
        if key not in kinds:
            allowed = f"choose from {', '.join(kinds)}" if kinds else "it takes none"
            raise UserError(f"{where}: unknown option {key!r}; {allowed}")
        out[key] = parse_value(where, key, raw, kinds[key])
    return out


def build_options(where: str, name: str, options: type, given: dict[str, object]) -> object:
    """``options(**given)``; a UserError quoting ``where`` for a required option not given or
    one the dataclass's own check refuses."""
    missing = [
        f"{f.name}=..."
        for f in dataclasses.fields(options)
        if f.name not in given
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise UserError(f"{where}: {name} needs {', '.join(missing)}")
    try:
        return options(**given)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
