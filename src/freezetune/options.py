"""Declaring a config option once: its default, help, flag, choices and range, in one field.

A config dataclass declares each option with :func:`option`; everything else reads that
declaration: the section validates itself with :func:`validate_section`, ``freezetune.flags``
generates the command-line flags, :func:`set_key` writes ``section.key`` into plain config
data (flags, ``key=value`` overrides and study grids all go through it), and :func:`identity`
says what a run is (its run_id hashes it; an attempt with the same identity continues the run).

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Demo:
...     section = "demo"
...     steps: int = option(3, "How many steps.", bounds=Range(1, 10))
...     def __post_init__(self) -> None:
...         validate_section(self)
>>> Demo(steps=0)
Traceback (most recent call last):
...
freezetune.errors.UserError: demo.steps must be in 1..10, got 0 (flag --steps)
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any

from freezetune.errors import UserError

__all__ = [
    "NOT_SET",
    "Range",
    "check_applies",
    "flag_name",
    "identity",
    "key_of",
    "kind_of",
    "option",
    "set_key",
    "validate_section",
]


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: ``low``/``high`` bounds (None = unbounded), open or closed.

    >>> str(Range(0, 1, open_low=True, open_high=True)), str(Range(1)), 0.5 in Range(0, 1)
    ('in (0, 1)', '>= 1', True)
    """

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int | float):
            return False
        if self.low is not None and not (value > self.low if self.open_low else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.open_high else '<='} {self.high:g}"
        whole = isinstance(self.low, int) and isinstance(self.high, int)
        if whole and not (self.open_low or self.open_high):
            return f"in {self.low}..{self.high}"
        left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


#: "not declared" for the :func:`option` arguments where None is a value
class _NotSet:
    def __repr__(self) -> str:
        return "NOT_SET"


NOT_SET: Any = _NotSet()


def option(
    default: Any,
    help: str,
    *,
    flag: str | bool = True,
    choices: tuple[str, ...] | None = None,
    bounds: Range | None = None,
    study: bool = False,
    negate: str | None = None,
    only: str | None = None,
    needs: str | None = None,
    identity: bool = True,
    absent_means: Any = NOT_SET,
    hashed_as: Any = NOT_SET,
) -> Any:
    """A dataclass field with its one declaration in ``metadata``.

    ``flag``: the command-line name without dashes (True: the field name with ``-``; False: no
    flag, set it with ``section.key=value``). ``study``: also a flag of ``freezetune study``.
    ``negate``: for a bool that defaults to True, the help of its flag that turns it off
    (``--no-cache``). ``only``: the one modality the option means something for (``text`` or
    ``image``); ``needs``: the key that must be on (truthy) for it to mean anything. Set
    where it means nothing, it is refused (:func:`check_applies`).

    What a run is (:func:`identity`): ``identity=False`` for an option of the invocation, not
    of the experiment (where the run is written, how it shows or logs progress, how often it
    checkpoints, where it pauses): it is no part of the run_id, and a later attempt may change it and still
    continue the run. ``absent_means``: for an option added after runs were stored, the value
    those runs had in effect (usually its default); a run at it leaves the key out of its
    identity, so their run_ids stay. ``hashed_as``: for an invocation option that was once
    part of run ids, the value identities hold it at, whatever the run sets.
    """
    meta = {"help": help, "flag": flag, "choices": choices, "bounds": bounds, "only": only}
    extra = {"study": study, "negate": negate, "needs": needs}
    ids = {"identity": identity, "absent_means": absent_means, "hashed_as": hashed_as}
    return dataclasses.field(default=default, metadata={**meta, **extra, **ids})


def flag_name(f: dataclasses.Field[Any]) -> str | None:
    """The command-line flag of a field (without dashes), or None if it has none.

    >>> flag_name(dataclasses.fields(Range)[0]) is None  # not declared with option()
    True
    """
    flag = f.metadata.get("flag", False)
    if flag is True:
        return f.name.replace("_", "-")
    return flag or None


def kind_of(hint: Any) -> tuple[type, bool]:
    """A field's value type (int, float, bool, str or tuple) and whether None is allowed.

    >>> kind_of(int | None), kind_of(tuple[str, ...])
    ((<class 'int'>, True), (<class 'tuple'>, False))
    """
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kinds = [a for a in args if a is not type(None)]
    base = typing.get_origin(kinds[0]) or kinds[0]
    return base, len(kinds) < len(args)


def item_kind(hint: Any) -> type:
    """The element type of a tuple field (``tuple[int, ...]``: int); str for any other field.

    >>> item_kind(tuple[int, ...] | None), item_kind(tuple[str, ...]), item_kind(int)
    (<class 'int'>, <class 'str'>, <class 'str'>)
    """
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for arg in args:
        if typing.get_origin(arg) is tuple:
            return typing.get_args(arg)[0]  # type: ignore[no-any-return]
    return str


_KIND_TEXT = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


def _type_ok(value: Any, kind: type, item: type = str) -> bool:
    if kind is tuple:
        return isinstance(value, tuple) and all(_type_ok(v, item) for v in value)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a class, computed once."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def key_of(section: str, name: str) -> str:
    """``section.name``, or ``name`` for a top-level key (``section`` empty)."""
    return f"{section}.{name}" if section else name


def validate_section(config: Any) -> None:
    """Check every :func:`option` field of a config dataclass: type, choices and range.

    Messages name the key, the value, what is allowed and the flag, on one line.
    """
    section = str(getattr(config, "section", ""))
    for f in dataclasses.fields(config):
        if "help" not in f.metadata:
            continue
        value = getattr(config, f.name)
        hint_of = _hints(type(config))[f.name]
        kind, optional = kind_of(hint_of)
        flag = flag_name(f)
        where = key_of(section, f.name)
        hint = f" (flag --{flag})" if flag else ""
        if value is None:
            if not optional:
                raise UserError(f"{where} must be set, got None{hint}")
            continue
        if not _type_ok(value, kind, item_kind(hint_of)):
            items = "whole numbers" if item_kind(hint_of) is int else "strings"
            what = _KIND_TEXT.get(kind, f"a tuple of {items}")
            raise UserError(f"{where} must be {what}, got {value!r}{hint}")
        choices, bounds = f.metadata["choices"], f.metadata["bounds"]
        if choices and value not in choices:
            raise UserError(f"{where} must be one of {', '.join(choices)}, got {value!r}{hint}")
        if bounds is not None and value not in bounds:
            raise UserError(f"{where} must be {bounds}, got {value!r}{hint}")


def set_key(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``section.key`` (or a top-level ``key``) in nested plain config data, in place.

    >>> data = {"optim": {"lr": 1e-4}}
    >>> set_key(data, "optim.lr", 3e-4); set_key(data, "train.seed", 1); set_key(data, "freeze", "head")
    >>> data
    {'optim': {'lr': 0.0003}, 'train': {'seed': 1}, 'freeze': 'head'}
    """
    section, dot, name = key.partition(".")
    if not dot:
        data[key] = value
        return
    if not isinstance(data.setdefault(section, {}), dict):
        raise UserError(
            f"cannot set {key}: config section {section} must be a mapping of keys to values, "
            f"got {data[section]!r}"
        )
    data[section][name] = value


# ---------------------------------------------------------------- what a run is


def _identity_value(f: dataclasses.Field[Any], value: Any) -> Any:
    """What field ``f`` at ``value`` adds to an identity (NOT_SET: nothing)."""
    meta = f.metadata
    if "help" not in meta:  # a section, or a field not declared with option(): as it is
        return identity(value) if dataclasses.is_dataclass(value) else value
    if meta.get("hashed_as", NOT_SET) is not NOT_SET:
        return meta["hashed_as"]
    if not meta.get("identity", True) or value == meta.get("absent_means", NOT_SET):
        return NOT_SET
    return value


def identity(config: Any) -> dict[str, Any]:
    """What a run *is*: its config as plain JSON data (tuples as lists), by the declarations
    of its options: without the options declared ``identity=False``, those declared
    ``absent_means`` left out at that value, those declared ``hashed_as`` at that value. A
    section whose class says ``absent_means_defaults`` (one added after runs were stored) is
    left out while every option in it is at its default.

    >>> @dataclass(frozen=True)
    ... class Demo:
    ...     lr: float = option(1e-4, "learning rate")
    ...     out: str = option("runs/x", "where", identity=False)
    ...     size: int = option(96, "pixels", absent_means=96)
    >>> identity(Demo(out="elsewhere")), identity(Demo(size=32))
    ({'lr': 0.0001}, {'lr': 0.0001, 'size': 32})
    """
    data = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        default_section = getattr(type(value), "absent_means_defaults", False)
        if default_section and value == type(value)():
            continue
        kept = _identity_value(f, value)
        if kept is not NOT_SET:
            data[f.name] = kept
    return typing.cast(dict[str, Any], json.loads(json.dumps(data)))


# ---------------------------------------------------------------- does each option apply?

#: how a refusal names what a modality reads
_READS = {"text": "text", "image": "images"}


@dataclass(frozen=True)
class _Set:
    """One :func:`option` field of a config and its value."""

    key: str
    field: dataclasses.Field[Any]
    value: Any
    owner: Any  # the section holding it (its ``only``/``what`` class attributes apply to it)

    @property
    def name(self) -> str:
        flag = flag_name(self.field)
        return f"--{flag}" if flag else self.key


def _options(config: Any, section: str = "") -> list[_Set]:
    """Every :func:`option` field of ``config`` and of its sections, in declaration order."""
    found = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if "help" in f.metadata:
            found.append(_Set(key_of(section, f.name), f, value, config))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            found += _options(value, str(getattr(value, "section", f.name)))
    return found


def _check_modality(o: _Set, modality: str, reads: str) -> None:
    own = o.field.metadata.get("only")
    only = own or getattr(o.owner, "only", None)
    if not only or only == modality:
        return
    what = (
        f"{o.name} is for {_READS.get(only, only)}"
        if own
        else f"{getattr(o.owner, 'what', o.key.partition('.')[0])} is for {only} models"
    )
    raise UserError(
        f"{what}, and this run reads {_READS.get(modality, modality)} ({reads}); drop {o.name}"
    )


def _check_needs(o: _Set, by_key: dict[str, _Set]) -> None:
    needs = o.field.metadata.get("needs")
    if not needs or by_key[needs].value:
        return
    needed = by_key[needs]
    if needed.field.metadata.get("negate"):  # on by default: the user turned it off
        raise UserError(f"{o.name} does nothing with {needed.name}; drop one of them")
    raise UserError(
        f"{o.name} does nothing without {needed.name}; pass {needed.name} too or drop {o.name}"
    )


def check_applies(config: Any, modality: str, reads: str) -> None:
    """Refuse an option set away from its default where it means nothing: one declared
    ``only`` for the other modality (or in a section declared so: its class attribute
    ``only``, named by ``what``), or one whose ``needs`` key is off.

    ``config``: a run config; ``modality``: what the run reads (``text`` or ``image``);
    ``reads``: how to say which input that is, e.g. ``task sst2``.

    >>> @dataclass(frozen=True)
    ... class Demo:
    ...     size: int = option(96, "pixels", only="image")
    ...     cache: bool = option(True, "cache", flag="no-cache", negate="off")
    ...     dtype: str = option("f32", "cache type", needs="cache")
    >>> check_applies(Demo(), "text", "task sst2")  # all at their defaults
    >>> check_applies(Demo(size=32), "text", "task sst2")
    Traceback (most recent call last):
    ...
    freezetune.errors.UserError: --size is for images, and this run reads text (task sst2); drop --size
    >>> check_applies(Demo(cache=False, dtype="bf16"), "image", "task fashion-mnist")
    Traceback (most recent call last):
    ...
    freezetune.errors.UserError: --dtype does nothing with --no-cache; drop one of them
    """
    options = _options(config)
    by_key = {o.key: o for o in options}
    for o in options:
        if o.value != o.field.default:
            _check_modality(o, modality, reads)
            _check_needs(o, by_key)
