"""Typed, validated run configuration: dataclasses, YAML files and ``key=value`` overrides.

Precedence, lowest first: defaults < YAML file < command-line flags < ``section.key=value``.
Each option is declared once, as a field made by :func:`freezetune.options.option`: its
default, help, flag, choices, range and whether it is part of what a run is (its run_id; see
:func:`freezetune.options.identity`). Every section validates itself when it is built.

>>> cfg = RunConfig.from_dict({"optim": {"lr": 1e-4}, "freeze": "bottom:3"})
>>> cfg.optim.lr, cfg.freeze
(0.0001, 'bottom:3')
>>> TrainConfig(epochs=0)
Traceback (most recent call last):
...
freezetune.errors.UserError: train.epochs must be in 1..1000, got 0 (flag --epochs)
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from freezetune.config_sources import apply_overrides, copy_data, load_yaml
from freezetune.distill.config import DistillConfig
from freezetune.errors import UserError
from freezetune.freezing.spec import SPEC_HELP, parse_freeze
from freezetune.options import Range, item_kind, kind_of, option, validate_section

__all__ = [
    "SECTIONS",
    "DataConfig",
    "DistillConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "copy_data",
    "load_yaml",
]

#: Numbers in [0, 1) and (0, 1): rates, ratios, betas and dropouts.
UNIT = Range(0.0, 1.0, open_high=True)
OPEN_UNIT = Range(0.0, 1.0, open_low=True, open_high=True)
AT_LEAST_1 = Range(1)
TEXT, IMAGE = "text", "image"  # the modalities an option can be ``only`` for


@dataclass(frozen=True)
class ModelConfig:
    """The encoder to fine-tune and how its head reads it."""

    section: ClassVar[str] = "model"
    name: str = option(
        "minilm-l6",
        "Hugging Face hub id, local folder, or alias (minilm-l6 = packaged all-MiniLM-L6-v2)",
        flag="model",
        study=True,
    )
    pooling: str | None = option(
        None,
        "head input: pooler, cls, mean or last (default: what the checkpoint/family expects)",
        choices=("pooler", "cls", "mean", "last"),
    )
    blocks_path: str | None = option(
        None, "qualified name of the blocks' nn.ModuleList, for architectures not recognised"
    )
    embeddings_paths: tuple[str, ...] | None = option(
        None, "comma-separated qualified names of the modules before the first block"
    )
    classifier_dropout: float = option(
        0.1, "dropout before the linear head", flag=False, bounds=UNIT
    )
    trust_remote_code: bool = option(
        False, "run code shipped with a hub model (off unless you trust its author)"
    )

    def __post_init__(self) -> None:
        validate_section(self)


@dataclass(frozen=True)
class DataConfig:
    """The task: a GLUE task by name or your own files, and how much of it to use."""

    section: ClassVar[str] = "data"
    task: str | None = option(
        "sst2",
        "GLUE task (sst2, mrpc, stsb, cola, rte, qnli, qqp, mnli, wnli), fashion-mnist, a "
        "name for your own files (or image folders), or a hub dataset",
        study=True,
    )
    data_dir: str | None = option(
        None,
        "folder in the original GLUE layout (default $FREEZETUNE_GLUE_DIR; with neither, GLUE "
        "comes from the hub), or Fashion-MNIST's four IDX files",
        study=True,
    )
    train_file: str | None = option(
        None,
        "your own CSV/TSV/JSONL training file, or a folder of class folders of images (with "
        "--validation)",
        flag="train",
    )
    validation_file: str | None = option(
        None, "your own validation file, same columns as --train", flag="validation"
    )
    text_columns: tuple[str, ...] | None = option(
        None, "one or two text columns of your files, comma-separated (two for pairs)", only=TEXT
    )
    label_column: str | None = option(None, "label column of your files (default label)", only=TEXT)
    regression: bool = option(
        False, "your files' labels are real numbers (MSE loss, Pearson/Spearman)", only=TEXT
    )
    max_length: int = option(
        128,
        "truncate tokenized inputs to this many tokens (at most the model's positions)",
        bounds=Range(8, 100_000),
        study=True,
        only=TEXT,
    )
    max_train_samples: int | None = option(
        None, "seeded random subset of the training split", bounds=AT_LEAST_1, study=True
    )
    max_eval_samples: int | None = option(
        None, "seeded random subset of the validation split", bounds=AT_LEAST_1, study=True
    )
    group_by_length: bool = option(
        False, "batch examples of similar length together (less padding, faster)", only=TEXT
    )
    image_size: int = option(
        96,
        "images: resize to this many pixels square (Fashion-MNIST's 28 px -> 96; 0 keeps the "
        "images' own size, which must then all be equal)",
        bounds=Range(0, 4096),
        study=True,
        only=IMAGE,
        absent_means=96,  # added after text studies were stored: their run_ids stay
    )
    augment: bool = option(
        False,
        "images: random flips and crops of the training images (off: deterministic)",
        only=IMAGE,
        absent_means=False,
    )

    def __post_init__(self) -> None:
        validate_section(self)
        if self.text_columns is not None and not 1 <= len(self.text_columns) <= 2:
            raise UserError(
                f"data.text_columns takes one or two column names, got {list(self.text_columns)} "
                "(flag --text-columns)"
            )


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup and decay."""

    section: ClassVar[str] = "optim"
    lr: float = option(
        1e-4,
        "peak learning rate of AdamW (small models like MiniLM want ~1e-4)",
        bounds=OPEN_UNIT,
        study=True,
    )
    head_lr: float | None = option(
        None, "learning rate of the new head (default: the same as lr)", bounds=OPEN_UNIT
    )
    weight_decay: float = option(
        0.01, "AdamW weight decay (never applied to biases and norm weights)", bounds=UNIT
    )
    warmup_ratio: float = option(
        0.1, "fraction of optimizer steps with linear warmup; then linear decay to 0", bounds=UNIT
    )
    max_grad_norm: float = option(
        1.0, "clip the global gradient norm to this (0 = no clipping)", bounds=Range(0.0)
    )
    adam_beta1: float = option(0.9, "AdamW beta1", flag=False, bounds=UNIT)
    adam_beta2: float = option(0.999, "AdamW beta2", flag=False, bounds=UNIT)
    adam_eps: float = option(1e-8, "AdamW epsilon", flag=False, bounds=Range(0.0, open_low=True))

    def __post_init__(self) -> None:
        validate_section(self)


@dataclass(frozen=True)
class TrainConfig:
    """The training loop: epochs, batches, precision, evaluation, checkpoints and caching."""

    section: ClassVar[str] = "train"
    epochs: int = option(3, "passes over the training set", bounds=Range(1, 1000), study=True)
    batch_size: int = option(
        32,
        "examples per optimizer step (before gradient accumulation)",
        bounds=AT_LEAST_1,
        study=True,
    )
    eval_batch_size: int = option(128, "examples per evaluation batch", bounds=AT_LEAST_1)
    grad_accum: int = option(1, "micro-batches accumulated per optimizer step", bounds=AT_LEAST_1)
    bf16: bool = option(
        False,
        "bfloat16 autocast (about 2x faster on recent CPUs; fp32 keeps results exact)",
        study=True,
    )
    seed: int = option(
        0, "seed of the head's initialisation, data order and subsets", bounds=Range(0, 2**32 - 1)
    )
    eval_every: int | None = option(
        None, "also evaluate every N optimizer steps (always at each epoch end)", bounds=AT_LEAST_1
    )
    eval_at: tuple[int, ...] | None = option(  # absent_means: stored runs keep their run_ids
        None, "also evaluate after these optimizer steps (advise's rungs)", flag=False,
        absent_means=None,
    )  # fmt: skip
    threads: int | None = option(
        None, "torch intra-op threads (default: torch's own)", bounds=AT_LEAST_1, study=True
    )
    progress: bool = option(
        True, "show progress bars", flag="no-progress", negate="hide progress bars", identity=False
    )
    save_every: int | None = option(
        None,
        "checkpoint every N optimizer steps and at each epoch end (default: only on SIGINT/SIGTERM)",
        bounds=AT_LEAST_1,
        identity=False,  # a resumed run ends where an uninterrupted one ends
        hashed_as=None,  # it was part of run ids once: they hold it at None, so ids stay
    )
    keep_checkpoints: int = option(
        2, "how many of the newest checkpoints to keep", bounds=AT_LEAST_1
    )
    stop_at_step: int | None = option(
        None,
        "pause after optimizer step N: checkpoint it and stop (no result); "
        "freezetune train --resume OUT continues as if it never stopped",
        bounds=AT_LEAST_1,
        identity=False,  # where this invocation stops, not what the run is (advise's rungs)
    )
    skip_nonfinite: bool = option(False, "skip a batch whose loss is NaN/inf instead of stopping")
    cache: bool = option(
        True,
        "cache the frozen prefix's output per example so later epochs skip it",
        flag="no-cache",
        negate="recompute frozen units every step instead of caching their output",
    )
    cache_dtype: str = option(
        "float32",
        "storage type of cached states: float32 (exact), bfloat16 or float16 (half the memory)",
        choices=("float32", "bfloat16", "float16"),
        needs="train.cache",
    )
    cache_dir: str | None = option(
        None,
        "folder for a memory-mapped cache over the budget (default <out>/cache)",
        needs="train.cache",
    )
    cache_budget_mb: float = option(
        4096,
        "largest cache kept in RAM, in MiB; bigger ones go to a memory-mapped file",
        bounds=Range(0.0),
        needs="train.cache",
    )
    inference_cost: bool = option(
        True,
        "time the saved model on the dev set after training (result.json's inference block)",
        flag="no-inference-cost",
        negate="skip timing the saved model after training",
        identity=False,  # timing the saved model afterwards changes nothing about the run
    )
    report_to: str = option(
        "none",
        "also log live curves: tensorboard (event files in <out>/tensorboard; needs "
        "freezetune[tensorboard])",
        choices=("none", "tensorboard"),
        study=True,
        identity=False,  # a live logger changes nothing about the run
    )

    def __post_init__(self) -> None:
        validate_section(self)
        if any(step < 1 for step in self.eval_at or ()):
            raise UserError(f"train.eval_at must list optimizer steps >= 1, got {self.eval_at}")

    def evaluates_at(self, step: int) -> bool:
        """Whether the loop evaluates after optimizer ``step`` (besides each epoch's end)."""
        return step % (self.eval_every or step + 1) == 0 or step in (self.eval_at or ())


@dataclass(frozen=True)
class RunConfig:
    """One run: the sections, what trains (``freeze``) and where it is written."""

    section: ClassVar[str] = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    freeze: str = option("full", f"what trains: {SPEC_HELP}")
    objective: str | None = option(
        None,
        "the loss: NAME[:key=value,...] of a registered objective (default: the task's loss, "
        "or distill with --teacher)",
        absent_means=None,
    )
    out: str = option(
        "runs/train", "output folder: metrics.jsonl, result.json and the model", identity=False
    )
    overwrite: bool = option(
        False, "replace an output folder that already holds a result", identity=False
    )

    def __post_init__(self) -> None:
        for name, kind in SECTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise UserError(
                    f"{name} must be a config section ({kind.__name__}), got "
                    f"{type(value).__name__}; RunConfig.from_dict builds one from plain data"
                )
        validate_section(self)
        parse_freeze(self.freeze)  # a typo fails now, not when the run (or a study) meets it
        if not self.out.strip():
            raise UserError("out must name an output folder (flag --out)")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from nested plain data (YAML), rejecting unknown keys and converting strings."""
        return _build(cls, data, "")

    def to_dict(self) -> dict[str, Any]:
        """Nested plain data, as :meth:`from_dict` reads it."""
        return dataclasses.asdict(self)


#: The sections of a run config, by key.
SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "distill": DistillConfig,
}


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert YAML/CLI values to the field's type; strings from ``key=value`` are parsed."""
    kind, optional = kind_of(hint)
    if value is None:
        if optional:
            return None
        raise UserError(f"{where} must not be empty")
    if kind is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        texts = [str(v).strip() for v in items if str(v).strip()]
        return tuple(_coerce(text, item_kind(hint), where) for text in texts)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes", "on"):
            return True
        if str(value).lower() in ("false", "0", "no", "off"):
            return False
        raise UserError(f"{where} must be true or false, got {value!r}")
    if kind in (int, float):
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise UserError(
                f"{where} must be a{'n' if kind is int else ''} {kind.__name__}, got {value!r}"
            ) from None
        if kind is int and isinstance(value, float) and value != number:
            raise UserError(f"{where} must be a whole number, got {value!r}")
        return number
    return str(value)


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(
            f"config {f'section {prefix[:-1]}' if prefix else 'file'} must be a mapping of keys "
            f"to values, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise UserError(
            f"unknown config key {prefix}{unknown[0]}; valid keys: "
            + ", ".join(prefix + n for n in names)
        )
    kwargs = {}
    for key, value in data.items():
        if key in SECTIONS and cls is RunConfig:
            kwargs[key] = _build(SECTIONS[key], value if value is not None else {}, key + ".")
        else:
            kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)
