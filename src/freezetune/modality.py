"""The modality seam: what a run reads (text or images) and how it becomes model inputs.

Training, caching, freezing and studies never ask which modality they run: they call the four
methods of :class:`Modality` (load the task, load the model and its processor, turn examples
into features, batch features) on the one :func:`modality_of` picks from the config. Adding a
modality means writing those four methods and adding it to :data:`MODALITIES`.

>>> from freezetune.config import RunConfig
>>> modality_of(RunConfig.from_dict({"data": {"task": "fashion-mnist"}})).name
'image'
>>> modality_of(RunConfig()).name
'text'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from freezetune.batching import Collator, Feature, tokenize
from freezetune.models import load_model, quiet_loading
from freezetune.options import check_applies
from freezetune.tasks import TaskData, TaskInfo, load_configured
from freezetune.vision.images import IMAGE_TASKS

if TYPE_CHECKING:
    from freezetune.config import RunConfig

__all__ = ["MODALITIES", "Modality", "checked_modality", "modality_of"]

Collate = Callable[[Sequence[Feature]], dict[str, Any]]


class Modality(Protocol):
    """One kind of input. ``loaded`` is what ``load_model`` returned (``.model``,
    ``.tokenizer``: the tokenizer or image processor, saved beside the model, ``.path``)."""

    name: str

    def load_data(self, config: RunConfig) -> TaskData: ...
    def load_model(self, config: RunConfig, task: TaskInfo) -> Any: ...
    def features(
        self, loaded: Any, config: RunConfig, examples: Sequence[Any]
    ) -> list[Feature]: ...
    def collator(
        self, loaded: Any, task: TaskInfo, config: RunConfig, *, train: bool
    ) -> Collate: ...


class Text:
    """Sentences and sentence pairs: GLUE, own CSV/TSV/JSONL files, hub datasets."""

    name = "text"

    def load_data(self, config: RunConfig) -> TaskData:
        return load_configured(config)

    def load_model(self, config: RunConfig, task: TaskInfo) -> Any:
        m = config.model
        return load_model(
            m.name,
            num_labels=task.num_labels,
            labels=task.labels,
            pooling=m.pooling,
            classifier_dropout=m.classifier_dropout,
            trust_remote_code=m.trust_remote_code,
            max_length=config.data.max_length,
        )

    def features(self, loaded: Any, config: RunConfig, examples: Sequence[Any]) -> list[Feature]:
        return tokenize(examples, loaded.tokenizer, max_length=config.data.max_length)

    def collator(self, loaded: Any, task: TaskInfo, config: RunConfig, *, train: bool) -> Collate:
        return Collator.for_task(loaded.tokenizer, task)


class Image:
    """Images: Fashion-MNIST, or class-per-folder images (``freezetune.vision``)."""

    name = "image"

    def load_data(self, config: RunConfig) -> TaskData:
        from freezetune.vision.data import load_image_task

        return load_image_task(config)

    def load_model(self, config: RunConfig, task: TaskInfo) -> Any:
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

    def features(self, loaded: Any, config: RunConfig, examples: Sequence[Any]) -> list[Feature]:
        from freezetune.vision.images import image_features

        return image_features(examples)

    def collator(self, loaded: Any, task: TaskInfo, config: RunConfig, *, train: bool) -> Collate:
        from freezetune.vision.collate import ImageCollator

        p = loaded.tokenizer
        augment = train and config.data.augment
        return ImageCollator(config.data.image_size, p.mean, p.std, augment=augment)


#: the modalities by name
MODALITIES: dict[str, Modality] = {"text": Text(), "image": Image()}


def modality_of(config: RunConfig) -> Modality:
    """Images for an image task (``fashion-mnist``) or a folder of class folders (``--train
    DIR``, or a path without a suffix that does not exist yet); text otherwise."""
    d = config.data
    train = Path(d.train_file) if d.train_file else None
    folder = train is not None and (train.is_dir() or not (train.exists() or train.suffix))
    if (d.task or "").lower() in IMAGE_TASKS or folder:
        return MODALITIES["image"]
    return MODALITIES["text"]


def checked_modality(config: RunConfig) -> Modality:
    """:func:`modality_of` ``config``, once every option it sets is known to mean something
    for that modality and beside the other options (``options.check_applies``: each option
    declares where it applies, once). ``--no-progress`` also quiets transformers' own bars."""
    modality, d = modality_of(config), config.data
    source = f"--train {d.train_file}" if d.train_file else f"task {d.task}"
    check_applies(config, modality.name, source)
    quiet_loading(config.train.progress)
    return modality
