"""What freezetune knows about each model family: one :class:`Family` record per model type.

A record says where the family keeps its parts (:class:`Layout`, read by ``units``), which
token its own classification head pools (``models``), which projections LoRA adapts by default
(``freezing.lora``), whether frozen-prefix caching was verified for it and what its blocks
return (``cache``), and where its config keeps the hidden size (``classifier``, ``cache``).
Adding a family means adding one record to :data:`FAMILIES`; ``tests/test_families.py`` builds
a tiny random model of every family and checks each field against it.

Pure data: importing this module imports neither torch nor transformers.

>>> get_family("qwen3").pooling, get_family("bert").pooling, get_family("t5") is None
('last', 'pooler', True)
>>> generic_layout("encoder.layer") is get_family("bert").layout
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "FAMILIES",
    "GENERIC_LAYOUTS",
    "VISION_FAMILIES",
    "Family",
    "Layout",
    "generic_layout",
    "get_family",
    "hidden_size",
    "is_image_config",
    "max_positions",
]

#: what a family's own ``*ForSequenceClassification`` head reads (see ``classifier.pool``)
Pooling = Literal["pooler", "cls", "last"]


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Where a family keeps its parts, relative to its base model (e.g. ``BertModel``)."""

    blocks: str  # the nn.ModuleList of layers
    embeddings: tuple[str, ...]  # modules that run before the first block
    shared: tuple[str, ...] = ()  # read by every block: frozen with the embeddings
    first_block: tuple[str, ...] = ()  # run right after block 0: part of block.0
    shared_blocks: bool = False  # the blocks are reused for several layers (ALBERT)


@dataclass(frozen=True, kw_only=True)
class Family:
    """Everything freezetune needs to know about one ``config.model_type``."""

    layout: Layout
    causal: bool  # decoder-only: token i attends only to tokens <= i
    pooling: Pooling  # what the family's own classification head pools ("last" if causal)
    lora_targets: tuple[str, ...]  # attention projections LoRA adapts (the LoRA paper: Wq, Wv)
    cacheable: bool  # frozen-prefix caching checked against the uncached path
    block_output: Literal["tensor", "tuple"]  # what one block's forward returns
    hidden_size_key: str = "hidden_size"  # the config attribute holding the hidden size
    # position ids start after the padding index (RoBERTa): pad_token_id + 1 positions unused
    padded_positions: bool = False
    note: str = ""  # what a block is, for ``freezetune inspect`` (vision: blocks are stages)


# ELECTRA projects embedding_size -> hidden_size before the first block
BERT = Layout(blocks="encoder.layer", embeddings=("embeddings", "embeddings_project"))
# DeBERTa: every layer's attention reads the relative-position embeddings (normalised by
# encoder.LayerNorm when norm_rel_ebd has "layer_norm"). They cannot train while any block is
# frozen without a full backward pass, so they freeze with the embeddings (i.e. they train only
# when nothing is frozen). encoder.conv (conv_kernel_size > 0) runs after layer 0 only.
DEBERTA = Layout(
    blocks="encoder.layer",
    embeddings=("embeddings",),
    shared=("encoder.rel_embeddings", "encoder.LayerNorm"),
    first_block=("encoder.conv",),
)
MPNET = Layout(
    blocks="encoder.layer", embeddings=("embeddings",), shared=("encoder.relative_attention_bias",)
)
DISTILBERT = Layout(blocks="transformer.layer", embeddings=("embeddings",))
# ALBERT projects embedding_size -> hidden_size inside its encoder, before the blocks
ALBERT = Layout(
    blocks="encoder.albert_layer_groups",
    embeddings=("embeddings", "encoder.embedding_hidden_mapping_in"),
    shared_blocks=True,
)
# GPT-2's dropout on the embeddings' output goes with them (frozen units run in eval())
GPT2 = Layout(blocks="h", embeddings=("wte", "wpe", "drop"))
# rotary_emb has no parameters; it runs once, before the first block
LLAMA = Layout(blocks="layers", embeddings=("embed_tokens", "rotary_emb"))
PHI = Layout(blocks="layers", embeddings=("embed_tokens", "embed_dropout", "rotary_emb"))
GPT_NEOX = Layout(blocks="layers", embeddings=("embed_in", "emb_dropout", "rotary_emb"))
MODERNBERT = Layout(blocks="layers", embeddings=("embeddings", "rotary_emb"))
# vision: ViT/DeiT keep their patch embeddings + [CLS] in embeddings and the layers in a list;
# CNNs (ConvNeXt, ResNet, freezetune's EfficientNet-Lite) have a stem + encoder.stages
VIT = Layout(blocks="layers", embeddings=("embeddings",))
STAGES = Layout(blocks="encoder.stages", embeddings=("embeddings",))
RESNET = Layout(blocks="encoder.stages", embeddings=("embedder",))

#: Layouts tried, by the name of the blocks list, for a model type with no record (or whose
#: record's blocks path does not fit): the first whose ``blocks`` ends the list's name.
GENERIC_LAYOUTS: tuple[Layout, ...] = (BERT, DISTILBERT, ALBERT, GPT2, LLAMA, STAGES)

_QV = ("query", "value")
_PROJ_QV = ("q_proj", "v_proj")


def _encoder(layout: Layout, pooling: Pooling, targets: tuple[str, ...], **kw: Any) -> Family:
    """A bidirectional encoder (block_output and cacheable default to the common case)."""
    kw.setdefault("block_output", "tensor")
    kw.setdefault("cacheable", False)
    return Family(layout=layout, causal=False, pooling=pooling, lora_targets=targets, **kw)


def _decoder(layout: Layout, targets: tuple[str, ...], **kw: Any) -> Family:
    """A causal decoder: only the last real token has seen the whole sentence."""
    kw.setdefault("block_output", "tensor")
    kw.setdefault("cacheable", False)
    return Family(layout=layout, causal=True, pooling="last", lora_targets=targets, **kw)


#: ``config.model_type`` of the base model -> its record
FAMILIES: dict[str, Family] = {
    "bert": _encoder(BERT, "pooler", _QV, cacheable=True),
    "roberta": _encoder(BERT, "cls", _QV, cacheable=True, padded_positions=True),
    "xlm-roberta": _encoder(BERT, "cls", _QV, cacheable=True, padded_positions=True),
    "camembert": _encoder(BERT, "cls", _QV, padded_positions=True),
    "electra": _encoder(BERT, "cls", _QV, cacheable=True),
    "deberta": _encoder(DEBERTA, "cls", ("in_proj",), block_output="tuple"),
    "deberta-v2": _encoder(
        DEBERTA, "cls", ("query_proj", "value_proj"), block_output="tuple", cacheable=True
    ),
    "mpnet": _encoder(MPNET, "cls", ("q", "v"), block_output="tuple", padded_positions=True),
    "distilbert": _encoder(
        DISTILBERT, "cls", ("q_lin", "v_lin"), cacheable=True, hidden_size_key="dim"
    ),
    "albert": _encoder(ALBERT, "pooler", _QV),
    "modernbert": _encoder(MODERNBERT, "cls", ("Wqkv",)),
    "gpt2": _decoder(GPT2, ("c_attn",), cacheable=True),
    "gpt_neo": _decoder(GPT2, _PROJ_QV, block_output="tuple"),
    "gpt_neox": _decoder(GPT_NEOX, ("query_key_value",)),
    "llama": _decoder(LLAMA, _PROJ_QV, cacheable=True),
    "mistral": _decoder(LLAMA, _PROJ_QV),
    "qwen2": _decoder(LLAMA, _PROJ_QV),
    "qwen3": _decoder(LLAMA, _PROJ_QV),
    "gemma": _decoder(LLAMA, _PROJ_QV),
    "gemma2": _decoder(LLAMA, _PROJ_QV),
    "phi": _decoder(PHI, _PROJ_QV),
    "phi3": _decoder(LLAMA, ("qkv_proj",)),
}


#: vision backbones (``freezetune.vision``): a CNN's blocks are its stages; its head pools
#: the backbone's pooled output. LoRA has no default targets in a CNN (pass lora:targets=).
VISION_FAMILIES: dict[str, Family] = {
    "vit": _encoder(VIT, "cls", _QV, cacheable=True),
    "deit": _encoder(VIT, "cls", _QV),
    "dinov2": _encoder(BERT, "cls", _QV),
    "convnext": _encoder(
        STAGES, "pooler", ("dwconv",), cacheable=True, note="a block is one ConvNeXt stage"
    ),
    "resnet": _encoder(
        RESNET, "pooler", ("convolution",), cacheable=True, note="a block is one ResNet stage"
    ),
    "freezetune-efficientnet-lite": _encoder(
        STAGES,
        "pooler",
        ("project.0",),
        cacheable=True,
        note="blocks are the MBConv stages (one resolution and width each; Lite0: 7 stages of "
        "1/2/2/3/3/4/1 blocks) and, last, the 1x1 head conv (Lite0: 320->1280): bottom:K "
        "freezes the stem and the first K stages; head trains only the new classifier",
    ),
}


def get_family(model_type: str | None) -> Family | None:
    """The record of ``model_type`` (a ``config.model_type``), or None for an unknown one.

    >>> get_family("gpt_neo").lora_targets, get_family("resnet").layout.embeddings
    (('q_proj', 'v_proj'), ('embedder',))
    """
    key = model_type or ""
    return FAMILIES.get(key) or VISION_FAMILIES.get(key)


def generic_layout(blocks_suffix: str) -> Layout | None:
    """The generic layout for a blocks list named ``blocks_suffix`` (e.g. ``"layers"``).

    >>> generic_layout("h").embeddings, generic_layout("stack")
    (('wte', 'wpe', 'drop'), None)
    """
    return next((lay for lay in GENERIC_LAYOUTS if lay.blocks == blocks_suffix), None)


def hidden_size(config: Any) -> int | None:
    """The hidden size of a base model's ``config``, or None when it cannot be told.

    Known families read their record's ``hidden_size_key``; others try ``hidden_size``, then
    ``dim``.

    >>> from types import SimpleNamespace
    >>> hidden_size(SimpleNamespace(model_type="distilbert", dim=768))
    768
    >>> hidden_size(SimpleNamespace(model_type="custom", hidden_size=None, dim=64))
    64
    """
    family = get_family(getattr(config, "model_type", None))
    keys = (family.hidden_size_key,) if family else ("hidden_size", "dim")
    for key in keys:
        size = getattr(config, key, None)
        if isinstance(size, int) and size > 0:
            return size
    return None


def is_image_config(config: Any) -> bool:
    """Whether a base model's config is a vision model's: it reads pixels, not tokens.

    >>> from types import SimpleNamespace
    >>> is_image_config(SimpleNamespace(num_channels=3)), is_image_config(SimpleNamespace(vocab_size=9))
    (True, False)
    """
    return getattr(config, "num_channels", None) is not None and not hasattr(config, "vocab_size")


def max_positions(config: Any) -> int | None:
    """How many tokens a text model's ``config`` reads at most: its absolute position
    embeddings (less RoBERTa's padding offset); None when it has none (rotary or relative
    positions only: longer inputs do not crash it).

    >>> from types import SimpleNamespace
    >>> max_positions(SimpleNamespace(model_type="roberta", max_position_embeddings=514, pad_token_id=1))
    512
    >>> max_positions(SimpleNamespace(model_type="bert", max_position_embeddings=512))
    512
    >>> max_positions(SimpleNamespace(model_type="deberta-v2", max_position_embeddings=512,
    ...                               position_biased_input=False)) is None
    True
    """
    size = getattr(config, "max_position_embeddings", None)
    rotary = getattr(config, "rope_parameters", None) or getattr(config, "rope_theta", None)
    if not isinstance(size, int) or size <= 0 or rotary:
        return None
    if getattr(config, "position_biased_input", True) is False:  # DeBERTa: relative only
        return None
    family = get_family(getattr(config, "model_type", None))
    if family is not None and family.padded_positions:
        size -= int(getattr(config, "pad_token_id", None) or 0) + 1
    return size
