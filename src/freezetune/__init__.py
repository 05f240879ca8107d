"""freezetune: fine-tune Hugging Face encoders with any choice of what trains.

>>> from freezetune import RunConfig, train  # doctest: +SKIP
>>> result = train(RunConfig.from_dict({"freeze": "bottom:3", "out": "runs/b3"}))  # doctest: +SKIP

Importing freezetune registers its classifier with transformers' Auto classes, so a saved run
loads with ``transformers.pipeline("text-classification", model=out_dir)``.
"""

from freezetune.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from freezetune.errors import UserError
from freezetune.freezing import FreezeSpec, apply_frozen, frozen_parameters, parse_freeze
from freezetune.classifier import FreezetuneConfig, FreezetuneForSequenceClassification
from freezetune.models import load_model
from freezetune.train import train
from freezetune.units import Unit, Units, split_units, trainable_line

__version__ = "0.1.0"

__all__ = [
    "DataConfig",
    "FreezeSpec",
    "FreezetuneConfig",
    "FreezetuneForSequenceClassification",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "Unit",
    "Units",
    "UserError",
    "apply_frozen",
    "frozen_parameters",
    "load_model",
    "parse_freeze",
    "split_units",
    "train",
    "trainable_line",
]
