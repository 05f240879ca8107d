"""Typed, validated run configuration: dataclasses, YAML files and ``key=value`` overrides.

Precedence, lowest first: defaults < YAML file < command-line flags < ``section.key=value``.

>>> cfg = RunConfig.from_dict({"optim": {"lr": 1e-4}, "freeze": "bottom:3"})
>>> cfg.optim.lr, cfg.freeze
(0.0001, 'bottom:3')
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from freezetune.errors import UserError

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "load_yaml",
]


@dataclass(frozen=True)
class ModelConfig:
    name: str = "minilm-l6"
    """Hugging Face id, local folder, or alias (``minilm-l6`` = packaged all-MiniLM-L6-v2)."""
    pooling: str | None = None
    """Head input: pooler, cls, mean or last; None = what the checkpoint/family expects."""
    blocks_path: str | None = None
    """Qualified name of the nn.ModuleList of blocks, for architectures not recognised."""
    embeddings_paths: tuple[str, ...] | None = None
    """Qualified names of the modules that run before the first block (override detection)."""
    classifier_dropout: float = 0.1
    """Dropout before the linear head."""
    trust_remote_code: bool = False
    """Run code shipped with a hub model. Off unless you trust its author."""


@dataclass(frozen=True)
class DataConfig:
    task: str | None = "sst2"
    """GLUE task name (sst2, mrpc, stsb, cola, rte, qnli, qqp, mnli, wnli); None with files."""
    data_dir: str | None = None
    """Folder in the original GLUE layout; default: $FREEZETUNE_GLUE_DIR."""
    train_file: str | None = None
    """Your own CSV/TSV/JSONL training file (with validation_file, text_columns, label_column)."""
    validation_file: str | None = None
    """Your own validation file, same columns as train_file."""
    text_columns: tuple[str, ...] | None = None
    """One or two text columns of your files (pairs for two)."""
    label_column: str | None = None
    """The label column of your files."""
    regression: bool = False
    """Treat your files' labels as real numbers (MSE loss, Pearson/Spearman)."""
    max_length: int = 128
    """Truncate tokenized inputs to this many tokens."""
    max_train_samples: int | None = None
    """Seeded random subset of the training split."""
    max_eval_samples: int | None = None
    """Seeded random subset of the validation split."""
    group_by_length: bool = False
    """Batch examples of similar length together (less padding, faster)."""


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    """Peak learning rate of AdamW (small models like MiniLM want ~1e-4)."""
    head_lr: float | None = None
    """Learning rate of the new head; None = lr."""
    weight_decay: float = 0.01
    """AdamW weight decay (never applied to biases and norm weights)."""
    warmup_ratio: float = 0.1
    """Fraction of optimizer steps with linear warmup; then linear decay to 0."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping)."""
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    """Passes over the training set."""
    batch_size: int = 32
    """Examples per optimizer step (before gradient accumulation)."""
    eval_batch_size: int = 128
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    bf16: bool = False
    """bfloat16 autocast (about 2x faster on recent CPUs; fp32 keeps results exact)."""
    seed: int = 0
    eval_every: int | None = None
    """Also evaluate every N optimizer steps (always at each epoch end)."""
    threads: int | None = None
    """torch intra-op threads; None = torch's default."""
    progress: bool = True
    """Show progress bars."""
    save_every: int | None = None
    """Checkpoint every N optimizer steps and at each epoch end (None: only on SIGINT/SIGTERM)."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep."""
    skip_nonfinite: bool = False
    """Skip a batch whose loss is NaN/inf instead of stopping."""
    cache: bool = True
    """Cache the frozen prefix's output per example so later epochs skip it."""
    cache_dtype: str = "float32"
    """Storage type of cached states: float32 (exact), bfloat16 or float16 (half the memory)."""
    cache_dir: str | None = None
    """Folder for a memory-mapped cache when it exceeds cache_budget_mb (default <out>/cache)."""
    cache_budget_mb: float = 4096
    """Largest cache kept in RAM; bigger ones go to a memory-mapped file."""


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    freeze: str = "full"
    """What trains: full, head, embeddings, bottom:K, top:K, bitfit, pattern:REGEX (joined by +)."""
    out: str = "runs/train"
    """Output folder: metrics.jsonl, result.json and the fine-tuned model."""
    overwrite: bool = False
    """Replace an output folder that already holds a result."""

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from nested plain data (YAML), rejecting unknown keys."""
        return _build(cls, data, "")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
}


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert YAML/CLI values to the field's type; strings from ``key=value`` are parsed."""
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise UserError(f"{where} must not be empty")
    if "tuple" in text:
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(str(v).strip() for v in items if str(v).strip())
    if "bool" in text:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes", "on"):
            return True
        if str(value).lower() in ("false", "0", "no", "off"):
            return False
        raise UserError(f"{where} must be true or false, got {value!r}")
    for kind in (int, float):
        if kind.__name__ in text.split(" | ")[0]:
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
            f"config {prefix or 'file'} must be a mapping of keys to values, got {type(data).__name__}"
        )
    hints = get_type_hints(cls)
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


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _validate(cfg: RunConfig) -> None:
    o, t, d = cfg.optim, cfg.train, cfg.data
    _check(math.isfinite(o.lr) and 0 < o.lr < 1, f"optim.lr must be in (0, 1), got {o.lr}")
    _check(
        o.head_lr is None or 0 < o.head_lr < 1, f"optim.head_lr must be in (0, 1), got {o.head_lr}"
    )
    _check(0 <= o.weight_decay < 1, f"optim.weight_decay must be in [0, 1), got {o.weight_decay}")
    _check(0 <= o.warmup_ratio < 1, f"optim.warmup_ratio must be in [0, 1), got {o.warmup_ratio}")
    _check(o.max_grad_norm >= 0, f"optim.max_grad_norm must be >= 0, got {o.max_grad_norm}")
    _check(0 <= o.adam_beta1 < 1 and 0 <= o.adam_beta2 < 1, "optim.adam_beta1/2 must be in [0, 1)")
    _check(o.adam_eps > 0, f"optim.adam_eps must be > 0, got {o.adam_eps}")
    _check(1 <= t.epochs <= 1000, f"train.epochs must be in 1..1000, got {t.epochs}")
    _check(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    _check(t.eval_batch_size >= 1, f"train.eval_batch_size must be >= 1, got {t.eval_batch_size}")
    _check(t.grad_accum >= 1, f"train.grad_accum must be >= 1, got {t.grad_accum}")
    _check(t.eval_every is None or t.eval_every >= 1, "train.eval_every must be >= 1")
    _check(t.threads is None or t.threads >= 1, "train.threads must be >= 1")
    _check(t.save_every is None or t.save_every >= 1, "train.save_every must be >= 1")
    _check(t.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1")
    _check(
        t.cache_dtype in ("float32", "bfloat16", "float16"),
        f"train.cache_dtype must be float32, bfloat16 or float16, got {t.cache_dtype!r}",
    )
    _check(t.cache_budget_mb >= 0, "train.cache_budget_mb must be >= 0")
    _check(
        8 <= d.max_length <= 100_000, f"data.max_length must be in 8..100000, got {d.max_length}"
    )
    for key in ("max_train_samples", "max_eval_samples"):
        value = getattr(d, key)
        _check(value is None or value >= 1, f"data.{key} must be >= 1, got {value}")
    _check(
        d.text_columns is None or 1 <= len(d.text_columns) <= 2,
        "data.text_columns takes one or two column names",
    )
    _check(0 <= cfg.model.classifier_dropout < 1, "model.classifier_dropout must be in [0, 1)")
    _check(bool(cfg.out.strip()), "out must name an output folder")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config (safe loader only); it must be a mapping."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {p} does not exist; check the path")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"config file {p} is not valid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            f"config file {p} must be a mapping of keys to values, got {type(data).__name__}"
        )
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to nested config data (values parsed as YAML scalars).

    >>> apply_overrides({}, ["optim.lr=3e-4", "freeze=head"])
    {'optim': {'lr': '3e-4'}, 'freeze': 'head'}

    (YAML reads ``3e-4`` as a string; the typed config converts it.)
    """
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise UserError(
                f"override {item!r} must look like section.key=value, e.g. optim.lr=1e-4"
            )
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError:
            value = raw
        section, dot, name = key.partition(".")
        if dot:
            out.setdefault(section, {})
            if not isinstance(out[section], dict):
                raise UserError(f"override {item!r}: {section} is not a section")
            out[section][name] = value
        else:
            out[key] = value
    return out
