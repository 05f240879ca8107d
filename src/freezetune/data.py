"""Load GLUE tasks or your own CSV/TSV/JSONL files, tokenize them and batch them.

Nothing here knows about freezing: this module turns files into `TaskData`, features and
deterministic `DataLoader`s.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, cast

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from freezetune.errors import UserError

__all__ = [
    "GLUE_TASKS",
    "Collator",
    "EpochSampler",
    "Example",
    "Feature",
    "GlueSpec",
    "TaskData",
    "TaskInfo",
    "load_task",
    "make_loader",
    "set_epoch",
    "tokenize",
]

Feature = dict[str, Any]
"""One tokenized example: input_ids, attention_mask, [token_type_ids], labels (int or float)."""


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


# ---------------------------------------------------------------- reading files into tables


@dataclass(frozen=True)
class _Table:
    """Rows of one file as (line number, record) so errors can point at the line."""

    path: str
    columns: tuple[str, ...]
    rows: list[tuple[int, dict[str, Any]]]


def _listing(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


@contextmanager
def _reading(path: Path) -> Iterator[TextIO]:
    """Open a UTF-8 text file (a BOM is dropped) and turn decoding errors into UserErrors."""
    if not path.is_file():
        raise UserError(f"file not found: {path}; check the path (relative to {Path.cwd()})")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            yield handle
    except UnicodeDecodeError as err:
        byte = err.object[err.start : err.start + 1]
        raise UserError(f"{path} is not UTF-8 (found byte {byte!r}); re-save it as UTF-8") from None
    except csv.Error as err:
        raise UserError(f"{path} could not be parsed ({err}); fix the file's quoting") from None


def _read_delimited(
    path: Path, delimiter: str, *, glue: bool = False, columns: tuple[str, ...] | None = None
) -> _Table:
    """Read a CSV/TSV; GLUE files use QUOTE_NONE since their text holds unbalanced quotes."""
    rows: list[tuple[int, dict[str, Any]]] = []
    with _reading(path) as handle:
        reader = csv.reader(
            handle, delimiter=delimiter, quoting=csv.QUOTE_NONE if glue else csv.QUOTE_MINIMAL
        )
        header = columns or tuple(name.strip() for name in next(reader, []))
        if not header:
            raise UserError(f"{path} is empty; give a file with a header line and data rows")
        if len(set(header)) != len(header):
            raise UserError(f"{path} has duplicate column names ({', '.join(header)}); rename them")
        try:
            for fields in reader:
                if not fields:
                    continue  # blank line
                if len(fields) != len(header):
                    raise UserError(
                        f"{path} line {reader.line_num} has {len(fields)} fields but the header "
                        f"has {len(header)}; fix the quoting or delimiters on that line"
                    )
                rows.append((reader.line_num, dict(zip(header, fields, strict=True))))
        except csv.Error as err:  # e.g. a field over csv's size limit: a runaway quote
            raise UserError(
                f"{path} line {reader.line_num} could not be parsed ({err}); look for an "
                "unclosed quote there, or shorten the text"
            ) from None
    if not rows:
        raise UserError(f"{path} has no data rows (only a header or blank lines); add examples")
    return _Table(str(path), header, rows)


def _read_jsonl(path: Path) -> _Table:
    """Read JSON Lines: one object per line; the first object's keys are the columns."""
    rows: list[tuple[int, dict[str, Any]]] = []
    with _reading(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(
                    f"{path} line {number} is not valid JSON ({err.msg}); write one object per line"
                ) from None
            if not isinstance(record, dict):
                raise UserError(f"{path} line {number} is not a JSON object; write one per line")
            rows.append((number, record))
    if not rows:
        raise UserError(f"{path} is empty; add one JSON object per line")
    return _Table(str(path), tuple(rows[0][1]), rows)


_READERS = {".csv": ",", ".tsv": "\t"}


def _read_user_file(path: Path) -> _Table:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    if suffix in _READERS:
        return _read_delimited(path, _READERS[suffix])
    raise UserError(f"unsupported file type '{suffix}' for {path}; use .csv, .tsv or .jsonl")


# ---------------------------------------------------------------- tables into examples


def _check_columns(table: _Table, wanted: Sequence[str], fix: str) -> None:
    for name in wanted:
        if name not in table.columns:
            raise UserError(
                f"missing column '{name}' in {table.path} (columns: {', '.join(table.columns)}); "
                f"{fix}"
            )


def _cell(table: _Table, line: int, record: dict[str, Any], column: str) -> str:
    value = record.get(column)
    if value is None:  # JSONL null or missing key
        raise UserError(f"no value for '{column}' in {table.path} line {line}; fill it or drop it")
    return value if isinstance(value, str) else str(value)


def _label_names(table: _Table, column: str) -> tuple[str, ...]:
    """Distinct labels of the train file, sorted numerically when all are integers."""
    names = {_cell(table, line, rec, column).strip() for line, rec in table.rows}
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


def _examples(table: _Table, task: TaskInfo, origin: str) -> list[Example]:
    """Turn table rows into Examples; `origin` names where the label set came from."""
    index = {name: i for i, name in enumerate(task.labels or ())}
    out = []
    for line, record in table.rows:
        texts = tuple(_cell(table, line, record, column) for column in task.text_columns)
        raw = _cell(table, line, record, task.label_column)
        where = f"{table.path} line {line}"
        if task.is_regression:
            out.append(Example(texts, _float_target(raw, where)))
        else:
            out.append(Example(texts, _class_index(raw, index, origin, where)))
    return out


def _custom_task(
    name: str, train: _Table, text_columns: tuple[str, ...], label_column: str, regression: bool
) -> TaskInfo:
    """Describe a user task from its train table: labels are the train file's distinct labels."""
    if not 1 <= len(text_columns) <= 2:
        raise UserError(f"got {len(text_columns)} text columns; pass 1 or 2 with --text-columns")
    _check_columns(train, text_columns, "pass --text-columns with one or two of them")
    _check_columns(train, (label_column,), "pass --label-column with one of them")
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


# ---------------------------------------------------------------- sources: GLUE, files, hub


def _load_glue(name: str, data_dir: str | None) -> tuple[TaskInfo, list[Example], list[Example]]:
    spec = GLUE_TASKS[name]
    root = data_dir or os.environ.get("FREEZETUNE_GLUE_DIR")
    if not root:
        raise UserError(
            f"no GLUE folder given for task '{name}'; pass --data-dir or set FREEZETUNE_GLUE_DIR "
            f"to the folder that holds {spec.folder}/"
        )
    folder = Path(root) / spec.folder
    if not folder.is_dir():
        raise UserError(
            f"GLUE folder not found: {folder}; pass --data-dir (or set FREEZETUNE_GLUE_DIR) to the "
            f"folder that holds {spec.folder}/train.tsv"
        )
    task, splits = spec.task, []
    for file in ("train.tsv", spec.dev_file):
        table = _read_delimited(folder / file, "\t", glue=True, columns=spec.columns)
        fix = "use the original GLUE TSV files for this task"
        _check_columns(table, (*task.text_columns, task.label_column), fix)
        splits.append(_examples(table, task, f"GLUE task {name}"))
    return task, splits[0], splits[1]


def _load_files(
    name: str,
    train_file: str | None,
    validation_file: str | None,
    text_columns: Sequence[str] | None,
    label_column: str | None,
    regression: bool,
) -> tuple[TaskInfo, list[Example], list[Example]]:
    if not train_file or not validation_file:
        raise UserError("own data needs both files; pass --train and --validation together")
    columns = tuple(text_columns or ("text",))
    train, validation = _read_user_file(Path(train_file)), _read_user_file(Path(validation_file))
    task = _custom_task(name, train, columns, label_column or "label", regression)
    _check_columns(
        validation, (*columns, task.label_column), "use the same columns as the train file"
    )
    origin = f"train file {train.path}"
    return task, _examples(train, task, origin), _examples(validation, task, origin)


def _load_hub(
    name: str, text_columns: Sequence[str] | None, label_column: str | None, regression: bool
) -> tuple[TaskInfo, list[Example], list[Example]]:
    """Load `hf:NAME[:CONFIG]` or `owner/name` with the optional `datasets` package."""
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise UserError(
            f"task '{name}' is a hub dataset and needs the datasets package; "
            "pip install datasets (or use --train/--validation files)"
        ) from None
    path, _, config = name.removeprefix("hf:").partition(":")
    loaded = datasets.load_dataset(path, config or None)
    if "train" not in loaded or "validation" not in loaded:
        raise UserError(
            f"hub dataset '{name}' needs train and validation splits; has {list(loaded)}"
        )
    tables = [
        _Table(
            f"{name}[{split}]", tuple(loaded[split].column_names), list(enumerate(loaded[split], 1))
        )
        for split in ("train", "validation")
    ]
    columns = tuple(text_columns or ("text",))
    task = _custom_task(name, tables[0], columns, label_column or "label", regression)
    origin = f"{name}[train]"
    return task, _examples(tables[0], task, origin), _examples(tables[1], task, origin)


def _subset(
    examples: list[Example], limit: int | None, rng: random.Random, flag: str
) -> list[Example]:
    """A seeded random subset of `limit` examples, kept in file order."""
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

    Own files default to a 'text' column and a 'label' column.

    >>> data = load_task("sst2", data_dir="/data/glue", max_train_samples=100)  # doctest: +SKIP
    >>> data.task.labels, len(data.train)  # doctest: +SKIP
    (('0', '1'), 100)
    """
    if train_file or validation_file:
        args = (train_file, validation_file, text_columns, label_column, regression)
        info, train, validation = _load_files(task or "custom", *args)
    elif not task:
        names = ", ".join(GLUE_TASKS)
        raise UserError(
            f"no task given; name a GLUE task ({names}) or pass --train and --validation"
        )
    elif Path(task).suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        raise UserError(f"'{task}' is a file, not a task; pass it with --train (and --validation)")
    elif task.startswith("hf:") or "/" in task:
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
    train = _subset(train, max_train_samples, random.Random(seed), "--max-train-samples")
    rng = random.Random(f"validation-{seed}")  # its own stream: independent of the train subset
    validation = _subset(validation, max_eval_samples, rng, "--max-eval-samples")
    for split, examples in (("train", train), ("validation", validation)):
        if not examples:
            raise UserError(f"the {split} split of task '{info.name}' is empty; give it examples")
    return TaskData(info, train, validation)


# ---------------------------------------------------------------- tokenize, collate, batch


def tokenize(
    examples: Sequence[Example], tokenizer: Any, max_length: int = 128, batch_size: int = 1000
) -> list[Feature]:
    """Tokenize (pairs when 2 texts) with truncation and no padding; add the labels.

    >>> features = tokenize([Example(("a b",), 1)], tokenizer)  # doctest: +SKIP
    >>> features[0]["input_ids"], features[0]["labels"]  # doctest: +SKIP
    ([101, 1037, 1038, 102], 1)
    """
    features: list[Feature] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        columns = [list(texts) for texts in zip(*(ex.texts for ex in chunk), strict=True)]
        encoded = tokenizer(*columns, truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoded]
        for i, example in enumerate(chunk):
            features.append(
                {
                    **{k: list(encoded[k][i]) for k in keys},
                    "labels": example.label,
                    "index": start + i,
                }  # position in the split: the activation cache's key
            )
    return features


@dataclass(frozen=True)
class Collator:
    """Pad a batch to its longest item and return tensors (float labels for regression).

    >>> batch = [{"input_ids": [5, 6], "attention_mask": [1, 1], "labels": 1},
    ...          {"input_ids": [7], "attention_mask": [1], "labels": 0}]
    >>> Collator(pad_token_id=0)(batch)["input_ids"]
    tensor([[5, 6],
            [7, 0]])
    """

    pad_token_id: int
    is_regression: bool = False

    @classmethod
    def for_task(cls, tokenizer: Any, task: TaskInfo) -> Collator:
        """The collator for `task` that pads with the tokenizer's pad token."""
        if tokenizer.pad_token_id is None:
            raise UserError(
                "the tokenizer has no pad token; use a model whose tokenizer defines one"
            )
        return cls(int(tokenizer.pad_token_id), task.is_regression)

    def __call__(self, features: Sequence[Feature]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        batch = {}
        for key in (k for k in features[0] if k not in ("labels", "index")):
            pad = self.pad_token_id if key == "input_ids" else 0
            rows = [list(f[key]) + [pad] * (width - len(f[key])) for f in features]
            batch[key] = torch.tensor(rows, dtype=torch.long)
        dtype = torch.float32 if self.is_regression else torch.long
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=dtype)
        if "index" in features[0]:
            batch["index"] = torch.tensor([f["index"] for f in features], dtype=torch.long)
        return batch


class EpochSampler(Sampler[int]):
    """Index sampler whose order depends only on (seed, epoch); call `set_epoch` each epoch.

    With group_by_length, consecutive runs of `batch_size` indices form batches of similar
    length, so a DataLoader with the same batch_size pads less.

    >>> sampler = EpochSampler(4, seed=0, shuffle=True)
    >>> sampler.set_epoch(1); sorted(sampler)
    [0, 1, 2, 3]
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        shuffle: bool = True,
        group_by_length: bool = False,
        lengths: Sequence[int] | None = None,
        batch_size: int = 1,
    ) -> None:
        if group_by_length and (lengths is None or len(lengths) != n):
            raise ValueError("group_by_length needs one length per example")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.group_by_length, self.lengths, self.batch_size = group_by_length, lengths, batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = list(range(self.n))
        if self.shuffle:
            order = torch.randperm(self.n, generator=generator).tolist()
        if self.group_by_length:
            order = self._grouped(order, generator)
        return iter(order)

    def _grouped(self, order: list[int], generator: torch.Generator) -> list[int]:
        lengths, size = cast(Sequence[int], self.lengths), self.batch_size
        # 1. Sort each mega-chunk of 50 batches by length, longest first. The chunks are a
        #    random slice of the data, so batches stay varied across epochs while each batch
        #    holds neighbours in length. Python's sort is stable, so ties keep the shuffle.
        mega = 50 * size
        grouped: list[int] = []
        for start in range(0, len(order), mega):
            grouped += sorted(order[start : start + mega], key=lambda i: -lengths[i])
        # 2. Cut into batches. Every mega-chunk is a multiple of batch_size, so only the very
        #    last batch can be short; it stays last so the DataLoader's batches line up.
        batches = [grouped[i : i + size] for i in range(0, len(grouped), size)]
        tail = batches.pop() if batches and len(batches[-1]) < size else []
        # 3. Shuffle the order of the full batches, then put the batch with the longest example
        #    first so an out-of-memory error shows up at step 1 rather than mid-epoch.
        if self.shuffle and batches:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        if batches:  # a batch's first index is its longest one (step 1 sorted descending)
            longest = max(range(len(batches)), key=lambda b: lengths[batches[b][0]])
            batches[0], batches[longest] = batches[longest], batches[0]
        return [i for batch in batches for i in batch] + tail


def make_loader(
    features: Sequence[Feature],
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    collate: Any,
    group_by_length: bool = False,
    drop_last: bool = False,
    rank: int = 0,
    world: int = 1,
    fixed_shards: bool = False,
) -> DataLoader:
    """A DataLoader over `features` whose order depends only on (seed, epoch).

    Alone (``world == 1``) its sampler is an `EpochSampler` (loader.sampler); as rank ``rank``
    of ``world`` it yields this rank's slice of each global batch of ``batch_size``
    (`freezetune.distributed.ShardedBatches`, loader.batch_sampler; ``drop_last`` does not
    apply there). Call `set_epoch` on whichever has it (`set_epoch(loader, epoch)`).

    >>> loader = make_loader(
    ...     features, batch_size=32, shuffle=True, seed=0, collate=Collator(0)
    ... )  # doctest: +SKIP
    >>> set_epoch(loader, epoch)  # doctest: +SKIP
    """
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1 (got {batch_size}); pass a positive number")
    lengths = [len(f["input_ids"]) for f in features]
    sampler = EpochSampler(len(features), seed, shuffle, group_by_length, lengths, batch_size)
    if world > 1:
        from freezetune.distributed import ShardedBatches

        shards = ShardedBatches(sampler, batch_size, rank, world, fixed_shards, lengths)
        return DataLoader(
            cast("Dataset[Feature]", features),
            batch_sampler=shards,
            collate_fn=collate,
            num_workers=0,
            generator=torch.Generator().manual_seed(seed),  # or it draws from the global RNG
        )
    return DataLoader(
        cast("Dataset[Feature]", features),
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        drop_last=drop_last,
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Give the loader's sampler its epoch (a new, reproducible order every epoch)."""
    owner = loader.batch_sampler if hasattr(loader.batch_sampler, "set_epoch") else loader.sampler
    owner.set_epoch(epoch)  # type: ignore[union-attr]
