"""freezetune: fine-tune Hugging Face encoders with any choice of what trains.

>>> from freezetune import RunConfig, train  # doctest: +SKIP
>>> result = train(RunConfig.from_dict({"freeze": "bottom:3", "out": "runs/b3"}))  # doctest: +SKIP
>>> result.best["accuracy"]  # doctest: +SKIP

``import freezetune`` is cheap: torch and transformers load only when a name that needs them is
first used (``freezetune.train``, ``freezetune.freeze``, ...). Importing
``freezetune.classifier`` (which ``train`` and ``load_model`` do) registers freezetune's
classifier with transformers' Auto classes, so a saved run loads with
``transformers.pipeline("text-classification", model=out_dir)``.

>>> import freezetune
>>> freezetune.RunConfig().freeze
'full'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first use: PEP 562)
_EXPORTS: dict[str, str] = {
    "DataConfig": "freezetune.config",
    "ModelConfig": "freezetune.config",
    "OptimConfig": "freezetune.config",
    "RunConfig": "freezetune.config",
    "TrainConfig": "freezetune.config",
    "UserError": "freezetune.errors",
    "FreezeSpec": "freezetune.freezing.spec",
    "parse_freeze": "freezetune.freezing.spec",
    "apply_frozen": "freezetune.freezing.apply",
    "frozen_parameters": "freezetune.freezing.apply",
    "freeze": "freezetune.freezing.apply",
    "FreezetuneConfig": "freezetune.classifier",
    "FreezetuneForSequenceClassification": "freezetune.classifier",
    "load_model": "freezetune.models",
    "FreezetuneForImageClassification": "freezetune.vision.models",
    "load_image_model": "freezetune.vision.models",
    "RunResult": "freezetune.records",
    "resume": "freezetune.training",
    "train": "freezetune.training",
    "train_or_resume": "freezetune.training",
    "Unit": "freezetune.units",
    "Units": "freezetune.units",
    "split_units": "freezetune.units",
    "trainable_line": "freezetune.units",
    "StudySpec": "freezetune.study.spec",
    "run_study": "freezetune.study.runner",
    "write_report": "freezetune.report",
}

__all__ = [
    "DataConfig",
    "FreezeSpec",
    "FreezetuneConfig",
    "FreezetuneForImageClassification",
    "FreezetuneForSequenceClassification",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "RunResult",
    "StudySpec",
    "TrainConfig",
    "Unit",
    "Units",
    "UserError",
    "apply_frozen",
    "freeze",
    "frozen_parameters",
    "load_image_model",
    "load_model",
    "parse_freeze",
    "resume",
    "run_study",
    "split_units",
    "train",
    "train_or_resume",
    "trainable_line",
    "write_report",
]

if TYPE_CHECKING:
    from freezetune.classifier import FreezetuneConfig, FreezetuneForSequenceClassification
    from freezetune.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
    from freezetune.errors import UserError
    from freezetune.freezing.apply import apply_frozen, freeze, frozen_parameters
    from freezetune.freezing.spec import FreezeSpec, parse_freeze
    from freezetune.models import load_model
    from freezetune.records import RunResult
    from freezetune.report import write_report
    from freezetune.study.runner import run_study
    from freezetune.study.spec import StudySpec
    from freezetune.training import resume, train, train_or_resume
    from freezetune.units import Unit, Units, split_units, trainable_line
    from freezetune.vision.models import FreezetuneForImageClassification, load_image_model


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'freezetune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
