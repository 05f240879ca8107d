"""Images as a modality: what a run that reads images loads, batches and caches.

Registered with :func:`freezetune.modality.register_modality`, as a plugin's modality would
be; the registry imports this module on its first lookup.

>>> from freezetune.config import RunConfig
>>> IMAGE.detect(RunConfig.from_dict({"data": {"task": "fashion-mnist"}}))
True
>>> IMAGE.detect(RunConfig.from_dict({"data": {"train_file": "reviews.csv"}}))
False
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from freezetune.batching import Feature
from freezetune.cache_store import Inputs
from freezetune.families import is_image_config
from freezetune.modality import Collate, Loaded, register_modality
from freezetune.tasks import TaskData, TaskInfo
from freezetune.vision.images import IMAGE_TASKS

if TYPE_CHECKING:
    from freezetune.config import RunConfig

__all__ = ["IMAGE", "Image"]


class Image:
    """Images: Fashion-MNIST, or class-per-folder images (``freezetune.vision``)."""

    name = "image"

    def owns(self, model_config: Any) -> bool:
        """A vision model: it reads pixels, not tokens (or is freezetune's image classifier)."""
        kind = getattr(model_config, "model_type", None)
        return kind == "freezetune-image" or is_image_config(model_config)

    def detect(self, config: RunConfig) -> bool:
        """An image task (``fashion-mnist``), or ``--train`` a folder of class folders (or a
        path without a suffix that does not exist yet)."""
        d = config.data
        train = Path(d.train_file) if d.train_file else None
        folder = train is not None and (train.is_dir() or not (train.exists() or train.suffix))
        return (d.task or "").lower() in IMAGE_TASKS or folder

    def load_data(self, config: RunConfig) -> TaskData:
        from freezetune.vision.data import load_image_task

        return load_image_task(config)

    def load_model(self, config: RunConfig, task: TaskInfo) -> Loaded:
        from freezetune.vision.models import load_image_model

        m = config.model
        return load_image_model(
            m.name,
            labels=task.labels or (),
            image_size=config.data.image_size,
            pooling=m.pooling,
            classifier_dropout=m.classifier_dropout,
            trust_remote_code=m.trust_remote_code,
        )

    def load_saved(self, folder: str) -> Any:
        from transformers import AutoModelForImageClassification

        import freezetune.vision.models  # noqa: F401  (registers the image classifier)

        return AutoModelForImageClassification.from_pretrained(folder, dtype=torch.float32)

    def features(self, loaded: Loaded, config: RunConfig, examples: Sequence[Any]) -> list[Feature]:
        from freezetune.vision.images import image_features

        return image_features(examples)

    def collator(
        self, loaded: Loaded, task: TaskInfo, config: RunConfig, *, train: bool
    ) -> Collate:
        from freezetune.vision.collate import ImageCollator

        p = loaded.processor
        augment = train and config.data.augment
        return ImageCollator(config.data.image_size, p.mean, p.std, augment=augment)

    def lengths(self, features: Sequence[Feature]) -> list[int] | None:
        return None  # a feature map (or a ViT's tokens) of one shape per example

    def input_shape(self, batch: Inputs) -> tuple[int, ...]:
        return tuple(batch["pixel_values"].shape[1:])

    def stand_in(
        self, count: int, shape: tuple[int, ...], lengths: torch.Tensor | None, device: torch.device
    ) -> Inputs:
        """Black images of ``shape``: a cached prefix's states replace what they give."""
        return {"pixel_values": torch.zeros((count, *shape), device=device)}


#: the image modality
IMAGE = Image()
register_modality(IMAGE)
