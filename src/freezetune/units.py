"""Split a model into ordered units ``[embeddings, block.0, ..., block.{L-1}, head]``.

Every freezing strategy in freezetune is "how many leading units are frozen" (fastai's
splitter + ``freeze_to``). This module finds the units of any supported Hugging Face model,
whether bare (``BertModel``), a ``*ForSequenceClassification``, freezetune's own wrapper
(``encoder`` = the base model) or PEFT-wrapped (``base_model.model....``): the base model may sit
at any depth, so everything is matched on qualified-name suffixes.

Rules:

- **blocks**: the children of the ``nn.ModuleList`` of transformer layers, found through
  :data:`_LAYOUTS` (relative paths per layout) and :data:`_MODEL_TYPES` (``config.model_type``
  -> layout). ``blocks_path`` overrides detection.
- **embeddings**: what runs before the first block (token/position embeddings, ELECTRA's and
  ALBERT's projection to the hidden size), plus tensors that *every* block reads (DeBERTa's
  relative-position embeddings, MPNet's relative attention bias): they can only be trained if
  no block is frozen, so they freeze with the first unit. ``embeddings_paths`` overrides.
- **head**: every remaining parameter (pooler, classifier/score, final norms, new weights).

Each parameter of the model belongs to exactly one unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from torch import nn

from freezetune.errors import UserError

__all__ = [
    "EMBEDDINGS",
    "HEAD",
    "Unit",
    "Units",
    "block_name",
    "count_params",
    "describe_units",
    "split_units",
    "trainable_line",
]

EMBEDDINGS = "embeddings"
HEAD = "head"


def block_name(index: int) -> str:
    """Name of the unit holding block ``index``.

    >>> block_name(3)
    'block.3'
    """
    return f"block.{index}"


@dataclass(frozen=True)
class Unit:
    """One freezable unit: the modules to switch to ``eval()`` and the parameters it owns."""

    name: str  # "embeddings", "block.0", ..., "head"
    modules: tuple[str, ...]  # qualified names, as in model.named_modules()
    params: tuple[str, ...]  # qualified names, as in model.named_parameters()


@dataclass(frozen=True)
class Units:
    """The ordered units of a model: ``[embeddings, block.0, ..., block.{L-1}, head]``."""

    units: tuple[Unit, ...]
    family: str  # config.model_type of the base model ("bert", "gpt2", ...) or "custom"
    blocks_path: str  # qualified name of the nn.ModuleList holding the blocks
    shared_blocks: bool = False  # True for ALBERT: one block is applied several times
    note: str = ""  # plain-language remark on what freezing means for this model

    @property
    def num_blocks(self) -> int:
        """Number of block units (the units between embeddings and head)."""
        return len(self.units) - 2

    @property
    def names(self) -> tuple[str, ...]:
        """Unit names in order: ``("embeddings", "block.0", ..., "head")``."""
        return tuple(unit.name for unit in self.units)

    def param_count(self, model: nn.Module) -> list[int]:
        """Number of parameter elements in each unit, in unit order."""
        sizes = {name: p.numel() for name, p in model.named_parameters()}
        return [sum(sizes[name] for name in unit.params) for unit in self.units]


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Layout:
    """Where a family keeps its parts, relative to its base model (e.g. ``BertModel``)."""

    blocks: str  # the nn.ModuleList of layers
    embeddings: tuple[str, ...]  # modules that run before the first block
    shared: tuple[str, ...] = ()  # read by every block: frozen with the embeddings
    first_block: tuple[str, ...] = ()  # run right after block 0: part of block.0
    shared_blocks: bool = False  # the blocks are reused for several layers (ALBERT)


_LAYOUTS: dict[str, _Layout] = {
    # ELECTRA projects embedding_size -> hidden_size before the first block
    "bert": _Layout(blocks="encoder.layer", embeddings=("embeddings", "embeddings_project")),
    # DeBERTa: every layer's attention reads the relative-position embeddings (normalised by
    # encoder.LayerNorm when norm_rel_ebd has "layer_norm"). They cannot train while any block is
    # frozen without a full backward pass, so they freeze with the embeddings (i.e. they train
    # only when nothing is frozen). encoder.conv (conv_kernel_size > 0) runs after layer 0 only.
    "deberta-v2": _Layout(
        blocks="encoder.layer",
        embeddings=("embeddings",),
        shared=("encoder.rel_embeddings", "encoder.LayerNorm"),
        first_block=("encoder.conv",),
    ),
    "mpnet": _Layout(
        blocks="encoder.layer",
        embeddings=("embeddings",),
        shared=("encoder.relative_attention_bias",),
    ),
    "distilbert": _Layout(blocks="transformer.layer", embeddings=("embeddings",)),
    # ALBERT projects embedding_size -> hidden_size inside its encoder, before the blocks
    "albert": _Layout(
        blocks="encoder.albert_layer_groups",
        embeddings=("embeddings", "encoder.embedding_hidden_mapping_in"),
        shared_blocks=True,
    ),
    # GPT-2's dropout on the embeddings' output goes with them (frozen units run in eval())
    "gpt2": _Layout(blocks="h", embeddings=("wte", "wpe", "drop")),
    # rotary_emb has no parameters; it runs once, before the first block
    "llama": _Layout(blocks="layers", embeddings=("embed_tokens", "rotary_emb")),
    "modernbert": _Layout(blocks="layers", embeddings=("embeddings", "rotary_emb")),
}

# config.model_type of the base model -> layout
_MODEL_TYPES: dict[str, str] = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "camembert": "bert",
    "electra": "bert",
    "deberta": "deberta-v2",
    "deberta-v2": "deberta-v2",
    "mpnet": "mpnet",
    "distilbert": "distilbert",
    "albert": "albert",
    "gpt2": "gpt2",
    "gpt_neo": "gpt2",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "qwen3": "llama",
    "gemma": "llama",
    "phi3": "llama",
    "modernbert": "modernbert",
}

# blocks suffix -> layout used when the base model has no known model_type
_SUFFIX_LAYOUTS: dict[str, str] = {
    "encoder.layer": "bert",
    "transformer.layer": "distilbert",
    "encoder.albert_layer_groups": "albert",
    "h": "gpt2",
    "layers": "llama",
}

_MAX_CANDIDATES = 8


# --------------------------------------------------------------------------- path helpers


def _join(base: str, rel: str) -> str:
    return f"{base}.{rel}" if base else rel


def _within(name: str, root: str) -> bool:
    """``name`` is ``root`` or lies under it (on a ``.`` boundary)."""
    return not root or name == root or name.startswith(root + ".")


def _overlap(a: str, b: str) -> bool:
    return _within(a, b) or _within(b, a)


def _strip_suffix(name: str, suffix: str) -> str | None:
    """The base path if ``name`` ends with ``suffix`` on a ``.`` boundary, else ``None``."""
    if name == suffix:
        return ""
    if name.endswith("." + suffix):
        return name[: -len(suffix) - 1]
    return None


def _outermost(names: Iterable[str]) -> list[str]:
    """Drop names that lie under another name of the list (keeps the order)."""
    names = list(names)
    return [n for n in names if not any(o != n and _within(n, o) for o in names)]


def _model_type(module: nn.Module | None) -> str | None:
    model_type = getattr(getattr(module, "config", None), "model_type", None)
    return model_type if isinstance(model_type, str) and model_type else None


def _module_lists(modules: dict[str, nn.Module]) -> list[str]:
    """Outermost non-empty ModuleLists: the candidates shown when detection fails."""
    lists = [n for n, m in modules.items() if isinstance(m, nn.ModuleList) and len(m) > 0]
    return _outermost(lists)


def _candidates_text(modules: dict[str, nn.Module]) -> str:
    lists = _module_lists(modules)
    if not lists:
        return "the model has no nn.ModuleList"
    more = f", ... ({len(lists)} in all)" if len(lists) > _MAX_CANDIDATES else ""
    return "candidates: " + ", ".join(lists[:_MAX_CANDIDATES]) + more


# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class _Match:
    blocks_path: str
    base: str | None  # path of the base model; None when no layout applies
    layout: str | None
    family: str


def _match_path(path: str, modules: dict[str, nn.Module]) -> _Match | None:
    """Layout and family for a ModuleList at ``path``, if its name fits a known layout."""
    for suffix, fallback in _SUFFIX_LAYOUTS.items():
        base = _strip_suffix(path, suffix)
        if base is None or base not in modules:
            continue
        model_type = _model_type(modules[base])
        known = _MODEL_TYPES.get(model_type or "")
        layout = known if known and _LAYOUTS[known].blocks == suffix else fallback
        return _Match(path, base, layout, model_type or "custom")
    return None


def _detect_blocks(model: nn.Module, modules: dict[str, nn.Module]) -> _Match:
    """Find the blocks: the outermost ModuleList(s) whose name fits a layout.

    Nested matches lie inside a block and are ignored; if several outermost lists match, the
    one whose base model has a known ``config.model_type`` wins, else the choice is ambiguous.
    """
    lists = [n for n, m in modules.items() if isinstance(m, nn.ModuleList) and len(m) > 0]
    found = [m for m in (_match_path(n, modules) for n in lists) if m is not None]
    keep = set(_outermost(m.blocks_path for m in found))
    matches = [m for m in found if m.blocks_path in keep]
    if len(matches) > 1:
        matches = [m for m in matches if m.family in _MODEL_TYPES] or matches
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


def _check_blocks_path(model: nn.Module, modules: dict[str, nn.Module], path: str) -> _Match:
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
    return _Match(path, None, None, _model_type(parent) or "custom")


# --------------------------------------------------------------------------- embeddings


def _layout_paths(modules: dict[str, nn.Module], match: _Match, rels: Sequence[str]) -> list[str]:
    """Full paths of the layout entries ``rels`` that exist in the model."""
    if match.base is None:
        return []
    paths = (_join(match.base, rel) for rel in rels)
    return [p for p in paths if p in modules]


def _guess_embeddings(modules: dict[str, nn.Module], blocks_path: str) -> list[str]:
    """Unknown layout: every nn.Embedding outside the blocks (or its ``*embed*`` parent)."""
    found: list[str] = []
    for path, module in modules.items():
        if not isinstance(module, nn.Embedding) or _within(path, blocks_path):
            continue
        parent = path.rpartition(".")[0]
        use_parent = "embed" in parent.rpartition(".")[2].lower()
        if use_parent and not _within(blocks_path, parent):
            path = parent
        if path not in found:
            found.append(path)
    return _outermost(found)


def _check_embeddings_paths(
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


# --------------------------------------------------------------------------- units


def _head_modules(model: nn.Module, claimed: Sequence[str], prefix: str = "") -> list[str]:
    """The largest submodules that hold nothing claimed by the embeddings or the blocks."""
    out: list[str] = []
    for child_name, child in model.named_children():
        path = _join(prefix, child_name)
        if path in claimed:
            continue
        if any(_within(c, path) for c in claimed):
            out.extend(_head_modules(child, claimed, path))
        else:
            out.append(path)
    return out


def _owner(param: str, roots: dict[str, int]) -> int | None:
    """Index of the unit whose root holds ``param`` (innermost root first)."""
    parts = param.split(".")
    for end in range(len(parts), 0, -1):
        unit = roots.get(".".join(parts[:end]))
        if unit is not None:
            return unit
    return None


def _num_layers(modules: dict[str, nn.Module], match: _Match, blocks: int) -> int:
    """Layers computed by the blocks: ``config.num_hidden_layers`` of the base, if known."""
    config = getattr(modules.get(match.base or ""), "config", None)
    layers = getattr(config, "num_hidden_layers", None)
    return layers if isinstance(layers, int) else blocks


def _note(
    shared_blocks: bool, blocks: int, layers: int, shared: Sequence[str], first: Sequence[str]
) -> str:
    """Plain-language remarks on what freezing means for this model."""
    notes: list[str] = []
    if shared_blocks and blocks == 1:
        notes.append(
            f"ALBERT applies one shared block {layers} times; freezing block.0 freezes every layer"
        )
    elif shared_blocks:
        notes.append(
            f"ALBERT applies {blocks} shared blocks over {layers} layers; freezing a block "
            "freezes every layer that reuses it"
        )
    if shared:
        notes.append(
            f"every block reads {', '.join(shared)} (kept in the embeddings unit, so trained "
            "only when nothing is frozen)"
        )
    if first:
        notes.append(f"{', '.join(first)} is kept in block.0 (it runs right after block 0)")
    return "; ".join(notes)


def split_units(
    model: nn.Module,
    *,
    blocks_path: str | None = None,
    embeddings_paths: Sequence[str] | None = None,
) -> Units:
    """Split ``model`` into ``[embeddings, block.0, ..., block.{L-1}, head]``.

    ``blocks_path`` (qualified name of the nn.ModuleList of layers) and ``embeddings_paths``
    (qualified module or parameter names) override detection for unknown architectures.

    >>> from transformers import AutoModelForSequenceClassification, BertConfig
    >>> cfg = BertConfig(vocab_size=99, hidden_size=8, num_hidden_layers=2,
    ...                  num_attention_heads=2, intermediate_size=16)
    >>> units = split_units(AutoModelForSequenceClassification.from_config(cfg))
    >>> units.names, units.blocks_path, units.family
    (('embeddings', 'block.0', 'block.1', 'head'), 'bert.encoder.layer', 'bert')
    >>> units.units[-1].modules
    ('bert.pooler', 'dropout', 'classifier')
    """
    modules = dict(model.named_modules())
    params = [name for name, _ in model.named_parameters()]
    if blocks_path is None:
        match = _detect_blocks(model, modules)
    else:
        match = _check_blocks_path(model, modules, blocks_path)
    layout = _LAYOUTS[match.layout] if match.layout is not None else None

    block_roots = [
        [_join(match.blocks_path, n)] for n, _ in modules[match.blocks_path].named_children()
    ]
    first_block = _layout_paths(modules, match, layout.first_block) if layout else []
    block_roots[0].extend(first_block)
    flat_blocks = [root for roots in block_roots for root in roots]

    shared: list[str] = []
    if embeddings_paths is not None:
        emb_roots = _check_embeddings_paths(model, modules, params, embeddings_paths, flat_blocks)
    else:
        before = _layout_paths(modules, match, layout.embeddings) if layout else []
        shared = _layout_paths(modules, match, layout.shared) if layout else []
        emb_roots = before + shared
        if not emb_roots:  # unknown layout (or one that did not fit): guess
            emb_roots = _guess_embeddings(modules, match.blocks_path)

    roots = {root: 0 for root in emb_roots}
    for index, block in enumerate(block_roots, start=1):
        roots.update({root: index for root in block})
    head_index = len(block_roots) + 1
    owned: list[list[str]] = [[] for _ in range(head_index + 1)]
    for name in params:
        owner = _owner(name, roots)
        owned[head_index if owner is None else owner].append(name)

    unit_modules = [[r for r in emb_roots if r in modules], *block_roots]
    unit_modules.append(_head_modules(model, [*emb_roots, *flat_blocks]))
    unit_names = [EMBEDDINGS, *(block_name(i) for i in range(len(block_roots))), HEAD]
    units = tuple(
        Unit(name, tuple(mods), tuple(ps))
        for name, mods, ps in zip(unit_names, unit_modules, owned, strict=True)
    )
    shared_blocks = bool(layout and layout.shared_blocks)
    layers = _num_layers(modules, match, len(block_roots))
    note = _note(shared_blocks, len(block_roots), layers, shared, first_block)
    return Units(units, match.family, match.blocks_path, shared_blocks, note)


# --------------------------------------------------------------------------- counting


def count_params(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter elements; tied/shared tensors count once (like PEFT).

    >>> m = nn.Linear(3, 2)
    >>> _ = m.bias.requires_grad_(False)
    >>> count_params(m)
    (6, 8)
    """
    trainable = total = 0
    for _, param in model.named_parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def trainable_line(model: nn.Module) -> str:
    """PEFT's ``print_trainable_parameters()`` line, as a string.

    >>> trainable_line(nn.Linear(3, 2))
    'trainable params: 8 || all params: 8 || trainable%: 100.0000'
    """
    trainable, total = count_params(model)
    percent = 100 * trainable / total if total else 0.0
    return (
        f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {percent:.4f}"
    )


def describe_units(
    model: nn.Module,
    units: Units,
    trainable: Callable[[str], bool] | None = None,
) -> list[tuple[str, int, int]]:
    """``(unit name, total params, trainable params)`` per unit, for ``freezetune inspect``.

    ``trainable(param_name)`` previews a plan; by default ``requires_grad`` is used.

    >>> from transformers import AutoModel, GPT2Config
    >>> cfg = GPT2Config(vocab_size=10, n_embd=4, n_layer=1, n_head=1,
    ...                  bos_token_id=0, eos_token_id=0)
    >>> m = AutoModel.from_config(cfg)
    >>> describe_units(m, split_units(m), trainable=lambda name: name.startswith("ln_f"))
    [('embeddings', 4136, 0), ('block.0', 244, 0), ('head', 8, 8)]
    """
    named = dict(model.named_parameters())
    is_trainable = trainable or (lambda name: named[name].requires_grad)
    rows = []
    for unit in units.units:
        total = sum(named[name].numel() for name in unit.params)
        train = sum(named[name].numel() for name in unit.params if is_trainable(name))
        rows.append((unit.name, total, train))
    return rows
