"""What trains: parse a spec (pure), resolve it against a model's units, apply it.

Policies are found by name in a registry that plugins extend (:func:`register_policy`, or
the ``freezetune.policies`` entry points). Parsing needs no torch (``freezetune.config`` validates specs with it): the torch-backed names
are imported on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from freezetune.freezing.registry import PolicyPlugin, RunShape, register_policy
from freezetune.freezing.spec import SPEC_HELP, FreezeSpec, parse_freeze

if TYPE_CHECKING:
    from freezetune.freezing.apply import apply_frozen, freeze, frozen_parameters, set_train_modes
    from freezetune.freezing.policies import (
        GradientWatcher,
        Policy,
        Progress,
        UnitSelector,
        frozen_now,
        make_policy,
    )

_LAZY = {
    **dict.fromkeys(("apply_frozen", "freeze", "frozen_parameters", "set_train_modes"), "apply"),
    **dict.fromkeys(
        ("GradientWatcher", "Policy", "Progress", "UnitSelector", "frozen_now", "make_policy"),
        "policies",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'freezetune.freezing' has no attribute {name!r}")
    return getattr(importlib.import_module(f"freezetune.freezing.{module}"), name)


__all__ = [
    "SPEC_HELP",
    "FreezeSpec",
    "GradientWatcher",
    "Policy",
    "PolicyPlugin",
    "Progress",
    "RunShape",
    "UnitSelector",
    "apply_frozen",
    "freeze",
    "frozen_now",
    "frozen_parameters",
    "make_policy",
    "parse_freeze",
    "register_policy",
    "set_train_modes",
]
