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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from freezetune.errors import UserError
from freezetune.freezing.base import Policy
from freezetune.plugin_options import NoOptions, option_help, option_types, options_problem
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
class PolicyPlugin:
    """A registered policy: ``build(options, run)`` returns a fresh policy (``Policy``), with
    ``options`` an instance of the ``options`` dataclass. ``positional`` is the option that a
    bare first value sets (``two-phase:0.5`` = ``two-phase:epochs=0.5``)."""

    build: Callable[[Any, RunShape], Policy]
    options: type = NoOptions
    positional: str | None = None


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
    problem = options_problem(obj.options, "--freeze")
    if problem is not None:
        return problem
    if obj.positional is not None and obj.positional not in option_types(obj.options):
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
