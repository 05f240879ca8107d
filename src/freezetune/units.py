"""Split a model into ordered units ``[embeddings, block.0, ..., block.{L-1}, head]``.

Every freezing strategy in freezetune is "how many leading units are frozen" (fastai's
splitter + ``freeze_to``). This module finds the units of any supported Hugging Face model,
whether bare (``BertModel``), a ``*ForSequenceClassification``, freezetune's own wrapper
(``encoder`` = the base model) or PEFT-wrapped (``base_model.model....``): the base model may sit
at any depth, so everything is matched on qualified-name suffixes.

Rules:

- **blocks**: the children of the ``nn.ModuleList`` of transformer layers, found through the
  family's :class:`~freezetune.families.Layout` (``config.model_type`` ->
  :data:`~freezetune.families.FAMILIES`), else a generic layout that fits the list's name.
  ``blocks_path`` overrides detection.
- **embeddings**: what runs before the first block (token/position embeddings, ELECTRA's and
  ALBERT's projection to the hidden size), plus tensors that *every* block reads (DeBERTa's
  relative-position embeddings, MPNet's relative attention bias): they can only be trained if
  no block is frozen, so they freeze with the first unit. ``embeddings_paths`` overrides.
- **head**: every remaining parameter (pooler, classifier/score, final norms, new weights).

Each parameter of the model belongs to exactly one unit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from freezetune.locate import (
    Match,
    block_roots,
    check_embeddings_paths,
    embedding_roots,
    find_blocks,
    join,
    within,
)

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
    norms: tuple[str, ...] = ()  # qualified names of the BatchNorm layers (``train-bn``)

    @property
    def num_blocks(self) -> int:
        """Number of block units (the units between embeddings and head)."""
        return len(self.units) - 2

    @property
    def names(self) -> tuple[str, ...]:
        """Unit names in order: ``("embeddings", "block.0", ..., "head")``."""
        return tuple(unit.name for unit in self.units)

    def norm_params(self, units: int | None = None) -> frozenset[str]:
        """Parameters of the BatchNorm layers in the first ``units`` units (default: all)."""
        owned = {name for unit in self.units[:units] for name in unit.params}
        return frozenset(name for name in owned if name.rpartition(".")[0] in self.norms)


# --------------------------------------------------------------------------- units


def _head_modules(model: nn.Module, claimed: Sequence[str], prefix: str = "") -> list[str]:
    """The largest submodules that hold nothing claimed by the embeddings or the blocks."""
    out: list[str] = []
    for child_name, child in model.named_children():
        path = join(prefix, child_name)
        if path in claimed:
            continue
        if any(within(c, path) for c in claimed):
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


def _num_layers(modules: dict[str, nn.Module], match: Match, blocks: int) -> int:
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


def _owned(
    params: Sequence[str], emb_roots: Sequence[str], blocks: Sequence[Sequence[str]]
) -> list[list[str]]:
    """The parameters of each unit: under its roots, else the head's."""
    roots = {root: 0 for root in emb_roots}
    for index, block in enumerate(blocks, start=1):
        roots.update({root: index for root in block})
    head_index = len(blocks) + 1
    owned: list[list[str]] = [[] for _ in range(head_index + 1)]
    for name in params:
        owner = _owner(name, roots)
        owned[head_index if owner is None else owner].append(name)
    return owned


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
    match = find_blocks(model, modules, blocks_path)
    blocks = block_roots(modules, match)
    flat_blocks = [root for roots in blocks for root in roots]
    if embeddings_paths is not None:
        emb_roots = check_embeddings_paths(model, modules, params, embeddings_paths, flat_blocks)
        shared: list[str] = []
    else:
        emb_roots, shared = embedding_roots(modules, match)

    unit_modules = [[r for r in emb_roots if r in modules], *blocks]
    unit_modules.append(_head_modules(model, [*emb_roots, *flat_blocks]))
    unit_names = [EMBEDDINGS, *(block_name(i) for i in range(len(blocks))), HEAD]
    units = tuple(
        Unit(name, tuple(mods), tuple(ps))
        for name, mods, ps in zip(
            unit_names, unit_modules, _owned(params, emb_roots, blocks), strict=True
        )
    )
    shared_blocks = bool(match.layout and match.layout.shared_blocks)
    layers = _num_layers(modules, match, len(blocks))
    note = _note(shared_blocks, len(blocks), layers, shared, blocks[0][1:])
    norms = tuple(
        name for name, m in modules.items() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    )
    return Units(units, match.family, match.blocks_path, shared_blocks, note, norms)


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
