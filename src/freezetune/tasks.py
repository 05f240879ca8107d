"""Tasks: what a task looks like, and loading one as train and validation examples.

A task comes from one of three sources: a GLUE task by name (the original GLUE TSV folders, or
without one `nyu-mll/glue` from the hub, giving the same examples), your own train/validation
files (CSV, TSV or JSONL, read by `freezetune.readers`), or a hub dataset (hub datasets need the
optional `datasets` package; see `freezetune.hub`). `load_task` picks the source and takes
seeded subsets. Nothing here tokenizes or batches: that is `freezetune.batching`.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from freezetune import hub
from freezetune.errors import UserError
from freezetune.readers import DATA_SUFFIXES, Table, read_delimited, read_file

if TYPE_CHECKING:
    from freezetune.config import RunConfig

__all__ = [
    "GLUE_TASKS",
    "Example",
    "GlueSpec",
    "TaskData",
    "TaskInfo",
    "load_configured",
    "load_task",
    "take_subset",
]


@dataclass(frozen=True)
class TaskInfo:
    """What a task looks like: its text and label columns, label names and metrics."""

    name: str
    text_columns: tuple[str, ...]
    label_column: str
    labels: tuple[str, ...] | None  # label names as written in the file; None for regression
    is_regression: bool
    metrics: tuple[str, ...]
    main_metric: str

    @property
    def num_labels(self) -> int:
        """Size of the model's output layer: 1 for regression."""
        return 1 if self.is_regression else len(self.labels or ())


@dataclass(frozen=True)
class Example:
    """One row: 1 or 2 texts and a class index into `TaskInfo.labels` (or a float target)."""

    texts: tuple[str, ...]
    label: float | int


@dataclass(frozen=True)
class TaskData:
    """A task with its train and validation examples."""

    task: TaskInfo
    train: list[Example]
    validation: list[Example]


@dataclass(frozen=True)
class GlueSpec:
    """Where a GLUE task lives in the original GLUE folder layout."""

    task: TaskInfo
    folder: str
    dev_file: str = "dev.tsv"
    columns: tuple[str, ...] | None = None  # column names for files without a header (CoLA)


def _spec(
    name: str,
    folder: str,
    text: tuple[str, ...],
    label: str,
    labels: tuple[str, ...] | None,
    metrics: tuple[str, ...],
    **where: Any,
) -> GlueSpec:
    """Build a GlueSpec; the first metric is the main one, labels=None means regression."""
    info = TaskInfo(name, text, label, labels, labels is None, metrics, metrics[0])
    return GlueSpec(info, folder, **where)


_BINARY = ("0", "1")
_NLI = ("entailment", "not_entailment")
_MNLI = ("contradiction", "entailment", "neutral")
_PAIR = ("sentence1", "sentence2")
_ACC, _F1_ACC, _CORR = ("accuracy",), ("f1", "accuracy"), ("pearson", "spearman")
_COLA_COLUMNS = ("source", "label", "original_label", "sentence")  # CoLA TSVs have no header

GLUE_TASKS: dict[str, GlueSpec] = {
    "cola": _spec("cola", "CoLA", ("sentence",), "label", _BINARY, ("mcc",), columns=_COLA_COLUMNS),
    "sst2": _spec("sst2", "SST-2", ("sentence",), "label", _BINARY, _ACC),
    "mrpc": _spec("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", _BINARY, _F1_ACC),
    "stsb": _spec("stsb", "STS-B", _PAIR, "score", None, _CORR),
    "qqp": _spec("qqp", "QQP", ("question1", "question2"), "is_duplicate", _BINARY, _F1_ACC),
    "mnli": _spec("mnli", "MNLI", _PAIR, "gold_label", _MNLI, _ACC, dev_file="dev_matched.tsv"),
    "qnli": _spec("qnli", "QNLI", ("question", "sentence"), "label", _NLI, _ACC),
    "rte": _spec("rte", "RTE", _PAIR, "label", _NLI, _ACC),
    "wnli": _spec("wnli", "WNLI", _PAIR, "label", _BINARY, _ACC),
}
"""The GLUE tasks by lower-case name without dashes (``sst2``, ``stsb``, ...)."""

_Splits = tuple[TaskInfo, list[Example], list[Example]]
T = TypeVar("T")


# ---------------------------------------------------------------- tables into examples


def _listing(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _label_names(table: Table, column: str) -> tuple[str, ...]:
    """Distinct labels of the train file, sorted numerically when all are integers."""
    names = {table.cell(line, rec, column).strip() for line, rec in table.rows}
    try:
        return tuple(sorted(names, key=int))
    except ValueError:
        return tuple(sorted(names))


def _class_index(text: str, index: dict[str, int], origin: str, where: str) -> int:
    label = text.strip()
    if label not in index:
        raise UserError(
            f"unknown label '{label}' in {where} (labels from {origin}: {_listing(list(index))}); "
            "fix or remove that row"
        )
    return index[label]


def _float_target(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"regression target '{text}' in {where} is not a number; fix it") from None
    if not math.isfinite(value):
        raise UserError(f"regression target '{text}' in {where} is not finite; fix or drop it")
    return value


def _examples(table: Table, task: TaskInfo, origin: str) -> list[Example]:
    """Turn table rows into Examples; `origin` names where the label set came from."""
    index = {name: i for i, name in enumerate(task.labels or ())}
    out = []
    for line, record in table.rows:
        texts = tuple(table.cell(line, record, column) for column in task.text_columns)
        raw = table.cell(line, record, task.label_column)
        where = f"{table.path} line {line}"
        if task.is_regression:
            out.append(Example(texts, _float_target(raw, where)))
        else:
            out.append(Example(texts, _class_index(raw, index, origin, where)))
    return out


def _custom_task(
    name: str, train: Table, text_columns: tuple[str, ...], label_column: str, regression: bool
) -> TaskInfo:
    """Describe a user task from its train table: labels are the train file's distinct labels."""
    if not 1 <= len(text_columns) <= 2:
        raise UserError(f"got {len(text_columns)} text columns; pass 1 or 2 with --text-columns")
    train.check_columns(text_columns, "pass --text-columns with one or two of them")
    train.check_columns((label_column,), "pass --label-column with one of them")
    if regression:
        return TaskInfo(name, text_columns, label_column, None, True, _CORR, "pearson")
    labels = _label_names(train, label_column)
    if len(labels) < 2:
        raise UserError(
            f"{train.path} has only one label ({_listing(labels)}) in column '{label_column}'; "
            "a classifier needs at least 2 (pass --regression for numeric targets)"
        )
    metrics = ("accuracy", "f1") if len(labels) == 2 else ("accuracy",)
    return TaskInfo(name, text_columns, label_column, labels, False, metrics, "accuracy")


def _own_task(
    name: str,
    tables: tuple[Table, Table],
    text_columns: Sequence[str] | None,
    label_column: str | None,
    regression: bool,
    origin: str,
) -> _Splits:
    """A task described by its (train, validation) tables; both need the same columns.

    Text defaults to a 'text' column and the label to a 'label' column.
    """
    train, validation = tables
    columns = tuple(text_columns or ("text",))
    task = _custom_task(name, train, columns, label_column or "label", regression)
    fix = "use the same columns as the train file"
    validation.check_columns((*columns, task.label_column), fix)
    return task, _examples(train, task, origin), _examples(validation, task, origin)


# ---------------------------------------------------------------- sources: GLUE, files, hub


def _glue_folder(spec: GlueSpec, root: str) -> tuple[Table, Table]:
    """The task's train and dev tables from a folder in the original GLUE TSV layout."""
    folder = Path(root) / spec.folder
    if not folder.is_dir():
        raise UserError(
            f"GLUE folder not found: {folder}; pass --data-dir (or set FREEZETUNE_GLUE_DIR) to the "
            f"folder that holds {spec.folder}/train.tsv"
        )
    tables = []
    for file in ("train.tsv", spec.dev_file):
        table = read_delimited(folder / file, "\t", glue=True, columns=spec.columns)
        fix = "use the original GLUE TSV files for this task"
        table.check_columns((*spec.task.text_columns, spec.task.label_column), fix)
        tables.append(table)
    return tables[0], tables[1]


def _load_glue(name: str, data_dir: str | None) -> _Splits:
    """A GLUE task from its folder (--data-dir or $FREEZETUNE_GLUE_DIR), else from the hub."""
    spec = GLUE_TASKS[name]
    if data_dir and not Path(data_dir).is_dir():
        raise UserError(
            f"--data-dir {data_dir} is not a folder; pass the GLUE folder that holds "
            f"{spec.folder}/train.tsv (or leave it out to use $FREEZETUNE_GLUE_DIR or the hub)"
        )
    task, root = spec.task, data_dir or os.environ.get("FREEZETUNE_GLUE_DIR")
    if root:
        train, dev = _glue_folder(spec, root)
    else:  # the same columns and label strings as the TSV files, so the same examples
        train, dev = hub.glue_tables(name, task.text_columns, task.label_column, spec.folder)
    origin = f"GLUE task {name}"
    return task, _examples(train, task, origin), _examples(dev, task, origin)


def _load_files(
    name: str,
    train_file: str | None,
    validation_file: str | None,
    text_columns: Sequence[str] | None,
    label_column: str | None,
    regression: bool,
) -> _Splits:
    if not train_file or not validation_file:
        raise UserError("own data needs both files; pass --train and --validation together")
    train, validation = read_file(Path(train_file)), read_file(Path(validation_file))
    origin = f"train file {train.path}"
    return _own_task(name, (train, validation), text_columns, label_column, regression, origin)


def _load_hub(
    name: str, text_columns: Sequence[str] | None, label_column: str | None, regression: bool
) -> _Splits:
    """Load `hf:NAME[:CONFIG]` or `owner/name` with the optional `datasets` package."""
    train, validation = hub.dataset_tables(name)
    return _own_task(name, (train, validation), text_columns, label_column, regression, train.path)


def _is_hub(task: str) -> bool:
    """``hf:NAME[:CONFIG]`` or ``owner/name`` (a file name is refused before this is asked)."""
    return task.startswith("hf:") or (
        "/" in task and Path(task).suffix.lower() not in DATA_SUFFIXES
    )


def take_subset(examples: list[T], limit: int | None, rng: random.Random, flag: str) -> list[T]:
    """A seeded random subset of `limit` examples (text or images), kept in file order."""
    if limit is None or limit >= len(examples):
        return examples
    if limit < 1:
        raise UserError(f"{flag} must be at least 1 (got {limit}); pass a positive number")
    picked = sorted(rng.sample(range(len(examples)), limit))
    return [examples[i] for i in picked]


def load_task(
    task: str | None,
    *,
    data_dir: str | None = None,
    train_file: str | None = None,
    validation_file: str | None = None,
    text_columns: Sequence[str] | None = None,
    label_column: str | None = None,
    regression: bool = False,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 0,
) -> TaskData:
    """Load a GLUE task (by name), your own train/validation files, or a hub dataset.

    A GLUE task reads `data_dir` (default $FREEZETUNE_GLUE_DIR) or, with neither, `nyu-mll/glue`
    from the hub. Own files default to a 'text' column and a 'label' column.

    >>> data = load_task("sst2", data_dir="/data/glue", max_train_samples=100)  # doctest: +SKIP
    >>> data.task.labels, len(data.train)  # doctest: +SKIP
    (('0', '1'), 100)
    """
    if data_dir and (train_file or validation_file or (task and _is_hub(task))):
        where = "--train/--validation files" if train_file or validation_file else "the hub"
        raise UserError(
            f"--data-dir is for GLUE tasks and Fashion-MNIST; this task comes from {where}: "
            "drop --data-dir"
        )
    if train_file or validation_file:
        args = (train_file, validation_file, text_columns, label_column, regression)
        info, train, validation = _load_files(task or "custom", *args)
    elif not task:
        names = ", ".join(GLUE_TASKS)
        raise UserError(
            f"no task given; name a GLUE task ({names}) or pass --train and --validation"
        )
    elif Path(task).suffix.lower() in DATA_SUFFIXES:
        raise UserError(f"'{task}' is a file, not a task; pass it with --train (and --validation)")
    elif _is_hub(task):
        info, train, validation = _load_hub(task, text_columns, label_column, regression)
    elif (key := task.lower().replace("-", "")) in GLUE_TASKS:
        if text_columns or label_column or regression:
            flags = "--text-columns/--label-column/--regression"
            raise UserError(f"{flags} are for own files, not GLUE task '{task}'; drop them")
        info, train, validation = _load_glue(key, data_dir)
    else:
        raise UserError(
            f"unknown task '{task}'; choose one of: {', '.join(GLUE_TASKS)}, "
            "or pass your own files with --train and --validation"
        )
    train = take_subset(train, max_train_samples, random.Random(seed), "--max-train-samples")
    rng = random.Random(f"validation-{seed}")  # its own stream: independent of the train subset
    validation = take_subset(validation, max_eval_samples, rng, "--max-eval-samples")
    for split, examples in (("train", train), ("validation", validation)):
        if not examples:
            raise UserError(f"the {split} split of task '{info.name}' is empty; give it examples")
    return TaskData(info, train, validation)


def load_configured(config: RunConfig) -> TaskData:
    """The task a run config names, with its subsets: what training and the study's baseline
    both read (the dev subset depends only on ``max_eval_samples`` and the seed)."""
    d = config.data
    return load_task(
        d.task,
        data_dir=d.data_dir,
        train_file=d.train_file,
        validation_file=d.validation_file,
        text_columns=d.text_columns,
        label_column=d.label_column,
        regression=d.regression,
        max_train_samples=d.max_train_samples,
        max_eval_samples=d.max_eval_samples,
        seed=config.train.seed,
    )
