"""Named registries that outside packages extend: the plugin seam.

A :class:`Registry` maps names to objects of one kind (freezing policies, study executors...).
freezetune registers its built-ins with :meth:`Registry.register`, exactly as code that is not
installed as a package would; installed packages add theirs through the Python entry points of
the registry's group (the convention of pytest plugins)::

    # pyproject.toml of a package "freezetune-lisa"
    [project.entry-points."freezetune.policies"]
    lisa = "freezetune_lisa:PLUGIN"

Entry points are listed on the first lookup and each is imported only when its name is looked
up, so a broken plugin breaks nothing but itself. Every failure is one line (a ``UserError``,
exit 2 in the CLI) naming the plugin and the package it came from.

>>> colours = Registry("example.colours", "colour")
>>> colours.register("red", "#f00")
>>> colours.get("red"), colours.names()
('#f00', ['red'])
>>> colours.get("blue")
Traceback (most recent call last):
...
freezetune.errors.UserError: unknown colour 'blue'; choose one of: red
>>> colours.register("red", "#e00", source="my-colours")
Traceback (most recent call last):
...
freezetune.errors.UserError: colour 'red' from package 'my-colours' clashes with the one from \
package 'freezetune'; rename it or uninstall one of them

An installed plugin that does not import is named with its package when it is looked up:
"colour 'teal' from package 'freezetune-teal' failed to load: ImportError: ...; reinstall it
or uninstall it".
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from freezetune.errors import UserError, first_line

__all__ = ["Registry", "code_modules", "import_plugins"]

#: every registry made, so that a fresh process can learn what code registered in them
_REGISTRIES: list[Registry[Any]] = []

T = TypeVar("T")


@dataclass
class _Pending:
    """An entry point seen but not imported yet."""

    entry_point: Any  # importlib.metadata.EntryPoint
    source: str


def _package(entry_point: Any) -> str:
    dist = getattr(entry_point, "dist", None)
    return str(getattr(dist, "name", None) or entry_point.value.partition(":")[0])


class Registry(Generic[T]):
    """Names -> objects of one ``kind``, extended by the entry points of ``group``.

    ``builtins`` names a module that registers the built-in entries when imported; it is
    imported on the first lookup (so the registry's module need not import it). ``check``
    returns what is wrong with a name and object (the wrong shape...), or None. ``flag`` is
    how unknown names are quoted (``--executor``; default: the kind).
    """

    def __init__(
        self,
        group: str,
        kind: str,
        *,
        builtins: str | None = None,
        check: Callable[[str, object], str | None] | None = None,
        flag: str | None = None,
    ) -> None:
        self.group, self.kind, self.flag = group, kind, flag or kind
        self._builtins, self._check = builtins, check
        self._entries: dict[str, T] = {}
        self._sources: dict[str, str] = {}
        self._pending: dict[str, _Pending] = {}
        self._modules: dict[str, str] = {}
        self._discovered = False
        _REGISTRIES.append(self)

    def register(
        self, name: str, obj: T, *, source: str = "freezetune", module: str | None = None
    ) -> None:
        """Add ``obj`` under ``name``; ``source`` is the package it comes from (for errors),
        ``module`` the module whose import registers it. A name already taken is refused."""
        taken = self._sources.get(name) or (
            self._pending[name].source if name in self._pending else None
        )
        if taken is not None:
            raise UserError(
                f"{self.kind} {name!r} from package {source!r} clashes with the one from "
                f"package {taken!r}; rename it or uninstall one of them"
            )
        problem = None if self._check is None else self._check(name, obj)
        if problem is not None:
            raise UserError(f"{self.kind} {name!r} from package {source!r} {problem}")
        self._entries[name] = obj
        self._sources[name] = source
        if module is not None:
            self._modules[name] = module

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and notebooks that register a name more than once)."""
        self._entries.pop(name, None)
        self._sources.pop(name, None)
        self._modules.pop(name, None)
        self._pending.pop(name, None)

    def code_modules(self) -> list[str]:
        """The importable modules (not ``__main__``, not freezetune's) that registered entries
        by code: a fresh process (a study's worker) imports them to know those names too."""
        own = ("freezetune", "__main__")
        return sorted({m for m in self._modules.values() if m.partition(".")[0] not in own})

    def refresh(self) -> None:
        """List the entry points again on the next lookup (after installing a package)."""
        self._discovered = False
        self._pending.clear()

    def _discover(self) -> None:
        """Import the built-ins and list the group's entry points, once."""
        if self._discovered:
            return
        self._discovered = True
        if self._builtins is not None:
            importlib.import_module(self._builtins)
        seen: set[tuple[str, str]] = set()
        for entry_point in importlib.metadata.entry_points(group=self.group):
            if (entry_point.name, entry_point.value) in seen:
                continue  # the same package found twice on sys.path
            seen.add((entry_point.name, entry_point.value))
            source = _package(entry_point)
            if self._sources.get(entry_point.name) == source:
                continue  # loaded before a refresh
            if entry_point.name in self._sources or entry_point.name in self._pending:
                taken = (
                    self._sources.get(entry_point.name) or self._pending[entry_point.name].source
                )
                raise UserError(
                    f"{self.kind} {entry_point.name!r} from package {source!r} clashes with "
                    f"the one from package {taken!r}; uninstall one of them"
                )
            self._pending[entry_point.name] = _Pending(entry_point, source)

    def _load(self, name: str) -> None:
        pending = self._pending.pop(name)
        try:
            obj = pending.entry_point.load()
        except Exception as err:
            raise UserError(
                f"{self.kind} {name!r} from package {pending.source!r} failed to load: "
                f"{type(err).__name__}: {first_line(err)}; reinstall it or uninstall it"
            ) from None
        self.register(name, obj, source=pending.source)

    def get(self, name: str) -> T:
        """The object registered as ``name``; a one-line UserError if there is none."""
        self._discover()
        if name in self._pending:
            self._load(name)
        if name not in self._entries:
            raise UserError(f"unknown {self.flag} {name!r}; choose one of: {self.choices()}")
        return self._entries[name]

    def source(self, name: str) -> str:
        """The package ``name`` comes from (``freezetune`` for the built-ins)."""
        self.get(name)
        return self._sources[name]

    def names(self) -> list[str]:
        """Every name, built-ins first (in registration order), then plugins (not imported)."""
        self._discover()
        return [*self._entries, *(n for n in self._pending if n not in self._entries)]

    def choices(self) -> str:
        """The names, comma-separated, for error messages."""
        return ", ".join(self.names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.group!r}, {self.kind!r})"


def code_modules() -> list[str]:
    """The modules (not ``__main__``, not freezetune's) that registered entries by code, in
    every registry: a fresh process (a study's run) imports them to know those names too."""
    return sorted({m for registry in _REGISTRIES for m in registry.code_modules()})


def import_plugins(modules: list[str] | tuple[str, ...]) -> None:
    """Import ``modules`` (what :func:`code_modules` listed in the process that started this
    one), so that what they register is known here; one line naming a module that fails."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as err:
            raise UserError(
                f"module {module!r}, which registered a plugin in the study process, does not "
                f"import in its run: {type(err).__name__}: {first_line(err)}; make it importable "
                "there (installed, or on PYTHONPATH)"
            ) from None
