"""Where run-config data comes from besides the defaults: YAML files and ``key=value``
overrides (re-exported by :mod:`freezetune.config`, which types and validates the result)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from freezetune.errors import UserError
from freezetune.options import set_key

__all__ = ["apply_overrides", "copy_data", "load_yaml"]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config (safe loader only); it must be a mapping."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {p} does not exist; check the path")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"config file {p} is not valid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            f"config file {p} must be a mapping of keys to values, got {type(data).__name__}"
        )
    return data


def copy_data(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of nested config data whose sections can be changed without touching ``data``."""
    return {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to nested config data (values parsed as YAML scalars).

    >>> apply_overrides({}, ["optim.lr=3e-4", "freeze=head"])
    {'optim': {'lr': '3e-4'}, 'freeze': 'head'}

    (YAML reads ``3e-4`` as a string; the typed config converts it.)
    """
    out = copy_data(data)
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise UserError(
                f"override {item!r} must look like section.key=value, e.g. optim.lr=1e-4"
            )
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError:
            value = raw
        set_key(out, key, value)
    return out
