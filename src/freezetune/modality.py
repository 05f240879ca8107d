"""The modality seam: what a run reads (text, images...) and how it becomes model inputs.

Training, caching, freezing and studies never ask which modality they run: they call the
methods of :class:`Modality` on the one :func:`modality_of` picks from the config (each
modality's ``detect``), or :func:`model_modality` from a model's config (its ``owns``). The
modalities live in a registry like the freezing policies: freezetune's text (here) and images
(:mod:`freezetune.vision.modality`) register with :func:`register_modality` just as code that
is not installed as a package would, and installed packages add theirs through the
``freezetune.modalities`` entry points, each naming a :class:`Modality` object.

>>> from freezetune.config import RunConfig
>>> modality_of(RunConfig.from_dict({"data": {"task": "fashion-mnist"}})).name
'image'
>>> modality_of(RunConfig()).name
'text'
>>> MODALITIES.names()
['text', 'image']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

from freezetune.batching import Collator, Feature, token_lengths, tokenize
from freezetune.cache_store import Inputs
from freezetune.models import Loaded, load_model, quiet_loading, resolve_model_path
from freezetune.options import check_applies
from freezetune.plugins import Registry
from freezetune.tasks import TaskData, TaskInfo, load_configured

if TYPE_CHECKING:
    from freezetune.config import RunConfig

__all__ = [
    "DEFAULT",
    "MODALITIES",
    "TEXT",
    "Collate",
    "Loaded",
    "Modality",
    "Text",
    "checked_modality",
    "modality_of",
    "model_modality",
    "read_model_config",
    "register_modality",
]

Collate = Callable[[Sequence[Feature]], dict[str, Any]]

#: the modality of a run or model that no other one claims
DEFAULT = "text"


class Modality(Protocol):
    """One kind of input, named ``name`` (what ``option(only=...)`` refers to)."""

    name: str

    def owns(self, model_config: Any) -> bool:
        """Whether a model of this config (a transformers config, or a saved ``config.json``
        as attributes) reads this modality's inputs."""
        ...

    def detect(self, config: RunConfig) -> bool:
        """Whether the run ``config`` (its task, its ``--train`` path...) reads this."""
        ...

    def load_data(self, config: RunConfig) -> TaskData:
        """The task and its splits."""
        ...

    def load_model(self, config: RunConfig, task: TaskInfo) -> Loaded:
        """The model with a fresh head for ``task``, and its processor."""
        ...

    def load_saved(self, folder: str) -> Any:
        """The fp32 model a finished run saved in ``folder`` (``save_pretrained``)."""
        ...

    def features(self, loaded: Loaded, config: RunConfig, examples: Sequence[Any]) -> list[Feature]:
        """``examples`` prepared once, before training (tokens; raw images)."""
        ...

    def collator(
        self, loaded: Loaded, task: TaskInfo, config: RunConfig, *, train: bool
    ) -> Collate:
        """Turns a list of features into a batch (``train``: with augmentation, if any)."""
        ...

    def lengths(self, features: Sequence[Feature]) -> list[int] | None:
        """Each example's sequence length when a cached state has one row per position,
        None when every example's state has one shape (``cache_store.Shapes``)."""
        ...

    def input_shape(self, batch: Inputs) -> tuple[int, ...]:
        """One example's input shape in a batch (text: the padded width)."""
        ...

    def stand_in(
        self, count: int, shape: tuple[int, ...], lengths: torch.Tensor | None, device: torch.device
    ) -> Inputs:
        """Inputs the model runs on in place of cached examples (``cache_store.Shapes``)."""
        ...


class Text:
    """Sentences and sentence pairs: GLUE, own CSV/TSV/JSONL files, hub datasets. The default:
    it reads every run and model that no other modality claims."""

    name = "text"

    def owns(self, model_config: Any) -> bool:
        """A model of tokens: it has a vocabulary (or is freezetune's text classifier)."""
        kind = getattr(model_config, "model_type", None)
        return kind == "freezetune" or hasattr(model_config, "vocab_size")

    def detect(self, config: RunConfig) -> bool:
        return True  # the default: modality_of asks it last

    def load_data(self, config: RunConfig) -> TaskData:
        return load_configured(config)

    def load_model(self, config: RunConfig, task: TaskInfo) -> Loaded:
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

    def load_saved(self, folder: str) -> Any:
        from transformers import AutoModelForSequenceClassification  # reads every saved kind

        return AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)

    def features(self, loaded: Loaded, config: RunConfig, examples: Sequence[Any]) -> list[Feature]:
        return tokenize(examples, loaded.processor, max_length=config.data.max_length)

    def collator(
        self, loaded: Loaded, task: TaskInfo, config: RunConfig, *, train: bool
    ) -> Collate:
        return Collator.for_task(loaded.processor, task)

    def lengths(self, features: Sequence[Feature]) -> list[int] | None:
        return token_lengths(features)

    def input_shape(self, batch: Inputs) -> tuple[int, ...]:
        return tuple(batch["input_ids"].shape[1:])

    def stand_in(
        self, count: int, shape: tuple[int, ...], lengths: torch.Tensor | None, device: torch.device
    ) -> Inputs:
        """Padding in ``shape``'s width around each example's real ``lengths`` (the mask is
        what later blocks read); the token ids are never used.

        >>> TEXT.stand_in(2, (3,), torch.tensor([3, 1]), torch.device("cpu"))["attention_mask"]
        tensor([[1, 1, 1],
                [1, 0, 0]])
        """
        assert lengths is not None and len(lengths) == count, "text states are per token"
        mask = (torch.arange(shape[0])[None, :] < lengths[:, None]).long()
        ids = torch.zeros(mask.shape, dtype=torch.long)
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


#: the text modality (``Setup``'s default)
TEXT = Text()
_METHODS = tuple(n for n in Modality.__dict__ if not n.startswith("_") and n != "name")


def _check(name: str, obj: object) -> str | None:
    """What is wrong with registering ``obj`` as modality ``name``, if anything."""
    if getattr(obj, "name", None) != name:
        return f"names itself {getattr(obj, 'name', None)!r}, not {name!r}; fix it or uninstall it"
    missing = [m for m in _METHODS if not callable(getattr(obj, m, None))]
    if missing:
        return f"is not a Modality (no {', '.join(missing)}); fix it or uninstall it"
    return None


#: name -> modality; plugins add theirs with ``freezetune.modalities`` entry points
MODALITIES: Registry[Modality] = Registry(
    "freezetune.modalities", "modality", builtins="freezetune.vision.modality", check=_check
)


def register_modality(modality: Modality, *, source: str | None = None) -> None:
    """Make ``modality`` read the runs it ``detect``s and the models it ``owns``, under its
    ``name``; ``source`` is the package named in errors (default: its class's top package)."""
    module = type(modality).__module__ or "__main__"
    name = str(getattr(modality, "name", ""))
    MODALITIES.register(name, modality, source=source or module.partition(".")[0], module=module)


register_modality(TEXT)


def _asked() -> list[Modality]:
    """Every modality in registration order (plugins after the built-ins), the default last:
    it claims whatever no other one does."""
    names = sorted(MODALITIES.names(), key=lambda n: n == DEFAULT)
    return [MODALITIES.get(n) for n in names]


def modality_of(config: RunConfig) -> Modality:
    """The first modality whose ``detect`` claims ``config`` (images: an image task such as
    ``fashion-mnist``, or a folder of class folders), else text."""
    return next((m for m in _asked() if m.detect(config)), MODALITIES.get(DEFAULT))


def model_modality(model_config: Any) -> Modality:
    """The first modality that ``owns`` a model's config, else text (whose loader then says
    what is wrong with it).

    >>> from types import SimpleNamespace
    >>> model_modality(SimpleNamespace(model_type="resnet", num_channels=3)).name
    'image'
    """
    return next((m for m in _asked() if m.owns(model_config)), MODALITIES.get(DEFAULT))


def read_model_config(name: str, trust_remote_code: bool = False) -> Any | None:
    """The config of model ``name`` (an alias of either built-in modality, a folder or a hub
    id), or None when it cannot be read."""
    from transformers import AutoConfig

    from freezetune.vision.models import resolve_image_model

    try:
        path = resolve_image_model(name) or resolve_model_path(name)
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception:  # offline, no such model: the loader names the problem
        return None


def checked_modality(config: RunConfig) -> Modality:
    """:func:`modality_of` ``config``, once every option it sets is known to mean something
    for that modality and beside the other options (``options.check_applies``: each option
    declares where it applies, once). ``--no-progress`` also quiets transformers' own bars."""
    modality, d = modality_of(config), config.data
    source = f"--train {d.train_file}" if d.train_file else f"task {d.task}"
    check_applies(config, modality.name, source)
    quiet_loading(config.train.progress)
    return modality
