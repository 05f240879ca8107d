"""Command-line flags generated from the run config's fields (``freezetune train``, ``study``).

Each flag comes from one :func:`freezetune.options.option` field: its name, help, type, choices
and default are read from there, so no option is declared twice. A flag's value is None unless
it is given, so a flag never hides what a YAML file set.

>>> [flag.name for flag in config_flags() if flag.study][:3]
['--model', '--task', '--data-dir']
>>> parser = argparse.ArgumentParser()
>>> add_config_flags(parser, [f for f in config_flags() if f.key == "optim.lr"])
>>> apply_flags({}, parser.parse_args(["--lr", "3e-4"]))
{'optim': {'lr': 0.0003}}
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from freezetune.config import SECTIONS, RunConfig
from freezetune.options import flag_name, key_of, kind_of, set_key

__all__ = [
    "GROUPS",
    "Flag",
    "add_config_flags",
    "add_flag",
    "add_overrides",
    "apply_flags",
    "config_flags",
    "flag_for",
]

#: Help group of each config section ("" = the top-level keys).
GROUPS = {
    "model": "model",
    "data": "data",
    "optim": "optimisation",
    "train": "training",
    "distill": "distillation",
    "": "run",
}


@dataclass(frozen=True)
class Flag:
    """One command-line flag and the config key it sets."""

    key: str  # "optim.lr", or "freeze" for a top-level key
    name: str  # "--lr"
    kind: type  # int, float, str, bool (a switch) or tuple (comma-separated)
    help: str
    choices: tuple[str, ...] | None = None
    negate: bool = False  # a switch that sets the key to False (``--no-cache``)
    study: bool = False  # also a flag of ``freezetune study`` (its base run config)

    @property
    def dest(self) -> str:
        """The argparse attribute: ``--max-length`` -> ``max_length``."""
        return self.name.removeprefix("--").replace("-", "_")

    @property
    def section(self) -> str:
        return self.key.partition(".")[0] if "." in self.key else ""


def _with_default(text: str, default: object) -> str:
    """``"a (b)"`` -> ``"a (b; default X)"``; ``"a"`` -> ``"a (default X)"``."""
    if text.endswith(")"):
        return f"{text[:-1]}; default {default})"
    return f"{text} (default {default})"


def _flag(section: str, f: dataclasses.Field[Any], hint: Any) -> Flag | None:
    name = flag_name(f)
    if name is None:
        return None
    kind, _ = kind_of(hint)
    meta = f.metadata
    text = meta["negate"] or meta["help"]
    if kind is not bool and f.default is not None:
        text = _with_default(text, f.default)
    return Flag(
        key=key_of(section, f.name),
        name=f"--{name}",
        kind=kind,
        help=text,
        choices=meta["choices"],
        negate=bool(meta["negate"]),
        study=meta["study"],
    )


@functools.cache
def config_flags() -> tuple[Flag, ...]:
    """Every run-config flag, section by section in declaration order, top-level keys last."""
    flags: list[Flag] = []
    for section, cls in [*SECTIONS.items(), ("", RunConfig)]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            made = _flag(section, f, hints[f.name]) if "help" in f.metadata else None
            flags += [made] if made else []
    return tuple(flags)


def flag_for(key: str) -> Flag:
    """The flag that sets config ``key``.

    >>> flag_for("data.train_file").name
    '--train'
    """
    return next(flag for flag in config_flags() if flag.key == key)


def add_flag(group: Any, flag: Flag) -> None:
    """Add one flag to an argparse parser or argument group."""
    if flag.kind is bool:
        # store_true with default None (False for --no-X switches) so YAML values stay
        default = False if flag.negate else None
        group.add_argument(flag.name, action="store_true", default=default, help=flag.help)
        return
    kind = flag.kind if flag.kind in (int, float) else None
    group.add_argument(flag.name, type=kind, choices=flag.choices, help=flag.help)


def add_config_flags(
    parser: argparse.ArgumentParser,
    flags: Iterable[Flag],
    title: str | None = None,
    description: str | None = None,
) -> None:
    """Add ``flags`` to ``parser``: in one group called ``title``, or one group per section."""
    groups: dict[str, Any] = {}
    for flag in flags:
        group_name = title or GROUPS[flag.section]
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name, description)
        add_flag(groups[group_name], flag)


def apply_flags(
    data: dict[str, Any], args: argparse.Namespace, flags: Iterable[Flag] | None = None
) -> dict[str, Any]:
    """Set every run-config flag given on the command line in its section of ``data``."""
    for flag in config_flags() if flags is None else flags:
        value = getattr(args, flag.dest, None)
        if value is None or (flag.negate and not value):
            continue
        set_key(data, flag.key, False if flag.negate else value)
    return data


def add_overrides(parser: argparse.ArgumentParser, what: str) -> None:
    """The trailing ``section.key=value`` arguments (``freezetune train`` and ``study``)."""
    parser.add_argument(
        "overrides", nargs="*", metavar="section.key=value", help=f"override any {what}"
    )
