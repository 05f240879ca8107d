"""Find a model's blocks and embeddings by qualified name, for ``units.split_units``.

The base model may sit at any depth (bare, ``*ForSequenceClassification``, freezetune's
wrapper, PEFT), so everything is matched on qualified-name suffixes against the family's
:class:`~freezetune.families.Layout`, or a generic layout when the family has no record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn

from freezetune.errors import UserError
from freezetune.families import GENERIC_LAYOUTS, Layout, get_family

__all__ = [
    "Match",
    "block_roots",
    "check_embeddings_paths",
    "embedding_roots",
    "find_blocks",
    "join",
    "outermost",
    "within",
]

_MAX_CANDIDATES = 8


# --------------------------------------------------------------------------- path helpers


def join(base: str, rel: str) -> str:
    """``base.rel``, or ``rel`` at the top level.

    >>> join("bert", "encoder.layer"), join("", "h")
    ('bert.encoder.layer', 'h')
    """
    return f"{base}.{rel}" if base else rel


def within(name: str, root: str) -> bool:
    """``name`` is ``root`` or lies under it (on a ``.`` boundary)."""
    return not root or name == root or name.startswith(root + ".")


def _overlap(a: str, b: str) -> bool:
    """One of ``a`` and ``b`` lies within the other."""
    return within(a, b) or within(b, a)


def _strip_suffix(name: str, suffix: str) -> str | None:
    """The base path if ``name`` ends with ``suffix`` on a ``.`` boundary, else ``None``."""
    if name == suffix:
        return ""
    if name.endswith("." + suffix):
        return name[: -len(suffix) - 1]
    return None


def outermost(names: Iterable[str]) -> list[str]:
    """Drop names that lie under another name of the list (keeps the order)."""
    names = list(names)
    return [n for n in names if not any(o != n and within(n, o) for o in names)]


def _model_type(module: nn.Module | None) -> str | None:
    """``module.config.model_type`` when it is a non-empty string."""
    model_type = getattr(getattr(module, "config", None), "model_type", None)
    return model_type if isinstance(model_type, str) and model_type else None


def _module_lists(modules: dict[str, nn.Module]) -> list[str]:
    """Outermost non-empty ModuleLists: the candidates shown when detection fails."""
    lists = [n for n, m in modules.items() if isinstance(m, nn.ModuleList) and len(m) > 0]
    return outermost(lists)


def _candidates_text(modules: dict[str, nn.Module]) -> str:
    """The ModuleLists a user could pass as ``--blocks-path``, for error messages."""
    lists = _module_lists(modules)
    if not lists:
        return "the model has no nn.ModuleList"
    more = f", ... ({len(lists)} in all)" if len(lists) > _MAX_CANDIDATES else ""
    return "candidates: " + ", ".join(lists[:_MAX_CANDIDATES]) + more


# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Match:
    """Where a model's blocks are, and the layout and family they were recognised as."""

    blocks_path: str
    base: str | None  # path of the base model; None when no layout applies
    layout: Layout | None
    family: str


def _match_path(path: str, modules: dict[str, nn.Module]) -> Match | None:
    """Layout and family for a ModuleList at ``path``, if its name fits a known layout."""
    for generic in GENERIC_LAYOUTS:
        base = _strip_suffix(path, generic.blocks)
        if base is None or base not in modules:
            continue
        model_type = _model_type(modules[base])
        known = get_family(model_type)
        fits = known is not None and known.layout.blocks == generic.blocks
        layout = known.layout if known is not None and fits else generic
        return Match(path, base, layout, model_type or "custom")
    return None


def find_blocks(model: nn.Module, modules: dict[str, nn.Module], path: str | None) -> Match:
    """The blocks of ``model``: detected, or the user-given ``path`` checked."""
    return (
        _detect_blocks(model, modules) if path is None else _check_blocks_path(model, modules, path)
    )


def _detect_blocks(model: nn.Module, modules: dict[str, nn.Module]) -> Match:
    """Find the blocks: the outermost ModuleList(s) whose name fits a layout.

    Nested matches lie inside a block and are ignored; if several outermost lists match, the
    one whose base model has a known ``config.model_type`` wins, else the choice is ambiguous.
    """
    lists = [n for n, m in modules.items() if isinstance(m, nn.ModuleList) and len(m) > 0]
    found = [m for m in (_match_path(n, modules) for n in lists) if m is not None]
    keep = set(outermost(m.blocks_path for m in found))
    matches = [m for m in found if m.blocks_path in keep]
    if len(matches) > 1:
        matches = [m for m in matches if get_family(m.family)] or matches
    name = type(model).__name__
    if not matches:
        raise UserError(
            f"cannot find the transformer blocks of {name}; pass --blocks-path with the "
            f"qualified name of its nn.ModuleList of layers ({_candidates_text(modules)})"
        )
    if len(matches) > 1:
        paths = ", ".join(m.blocks_path for m in matches)
        raise UserError(
            f"{name} has several lists of transformer blocks ({paths}); pass --blocks-path "
            "with the one to split into units"
        )
    return matches[0]


def _check_blocks_path(model: nn.Module, modules: dict[str, nn.Module], path: str) -> Match:
    """Validate a user-given ``blocks_path`` and pick its layout (if its name fits one)."""
    name = type(model).__name__
    candidates = _candidates_text(modules)
    fix = (
        f"pass --blocks-path with the qualified name of its nn.ModuleList of layers ({candidates})"
    )
    if path not in modules:
        raise UserError(f"--blocks-path {path!r}: {name} has no such module; {fix}")
    module = modules[path]
    if not isinstance(module, nn.ModuleList):
        kind = type(module).__name__
        raise UserError(f"--blocks-path {path!r} is a {kind}, not an nn.ModuleList; {fix}")
    if len(module) == 0:
        raise UserError(f"--blocks-path {path!r} is an empty nn.ModuleList; {fix}")
    match = _match_path(path, modules)
    if match is not None:
        return match
    parent = modules.get(path.rpartition(".")[0])
    return Match(path, None, None, _model_type(parent) or "custom")


# --------------------------------------------------------------------------- embeddings


def _layout_paths(modules: dict[str, nn.Module], match: Match, rels: Sequence[str]) -> list[str]:
    """Full paths of the layout entries ``rels`` that exist in the model."""
    if match.base is None:
        return []
    paths = (join(match.base, rel) for rel in rels)
    return [p for p in paths if p in modules]


def _guess_embeddings(modules: dict[str, nn.Module], blocks_path: str) -> list[str]:
    """Unknown layout: every nn.Embedding outside the blocks (or its ``*embed*`` parent)."""
    found: list[str] = []
    for path, module in modules.items():
        if not isinstance(module, nn.Embedding) or within(path, blocks_path):
            continue
        parent = path.rpartition(".")[0]
        use_parent = "embed" in parent.rpartition(".")[2].lower()
        if use_parent and not within(blocks_path, parent):
            path = parent
        if path not in found:
            found.append(path)
    return outermost(found)


def check_embeddings_paths(
    model: nn.Module,
    modules: dict[str, nn.Module],
    params: Iterable[str],
    paths: Sequence[str],
    block_roots: Sequence[str],
) -> list[str]:
    """Validate user-given ``embeddings_paths``: module or parameter names outside the blocks."""
    name = type(model).__name__
    known = set(modules) | set(params)
    for path in paths:
        if not path or path not in known:
            raise UserError(
                f"--embeddings-paths {path!r}: {name} has no such module or parameter; pass "
                "qualified names as printed by model.named_modules() or named_parameters()"
            )
        clash = next((root for root in block_roots if _overlap(path, root)), None)
        if clash is not None:
            raise UserError(
                f"--embeddings-paths {path!r} overlaps the block {clash!r}; pass only modules "
                "that run before the first block"
            )
    return list(dict.fromkeys(paths))


def block_roots(modules: dict[str, nn.Module], match: Match) -> list[list[str]]:
    """Root modules of each block unit; block.0 also holds what runs right after block 0."""
    roots = [[join(match.blocks_path, n)] for n, _ in modules[match.blocks_path].named_children()]
    if match.layout is not None:
        roots[0].extend(_layout_paths(modules, match, match.layout.first_block))
    return roots


def embedding_roots(modules: dict[str, nn.Module], match: Match) -> tuple[list[str], list[str]]:
    """(roots of the embeddings unit, those of them that every block reads) by layout."""
    layout = match.layout
    before = _layout_paths(modules, match, layout.embeddings) if layout else []
    shared = _layout_paths(modules, match, layout.shared) if layout else []
    if before or shared:
        return before + shared, shared
    return _guess_embeddings(modules, match.blocks_path), []  # unknown layout (or no fit)
