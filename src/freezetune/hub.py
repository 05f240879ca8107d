"""Datasets from the Hugging Face hub, read with the optional `datasets` package (extra `hub`).

Two uses: a GLUE task with no local folder comes from `nyu-mll/glue`, turned into tables with
the GLUE TSV files' own columns and label strings (so `freezetune.tasks` makes exactly the
examples the TSV files give), and any other hub dataset (``hf:NAME[:CONFIG]``) comes as it is.
`datasets` is imported only here, and only when one of them is asked for.

Offline (``HF_HUB_OFFLINE=1``) a copy cached by an earlier online run is used; without one, and
when the hub does not answer a quick probe, the error is one prompt line that says what to do
(instead of `datasets` retrying for half a minute).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from freezetune.errors import UserError
from freezetune.readers import Table

__all__ = ["GLUE_HUB_ID", "dataset_tables", "glue_tables"]

GLUE_HUB_ID = "nyu-mll/glue"
"""The hub dataset that GLUE tasks come from when no GLUE folder is given (config = task)."""

_PROBE_TIMEOUT_S = 5.0  # one metadata request: a hub that does not answer fails this fast
_TRUE = {"1", "on", "yes", "true"}
_OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")  # the second: older `datasets` versions


@dataclass(frozen=True)
class _HubGlue:
    """How a GLUE task looks in `nyu-mll/glue`: its text columns, class names and dev split."""

    text_columns: tuple[str, ...]
    names: tuple[str, ...] | None  # the ClassLabel names in hub order; None for regression
    tsv_labels: tuple[str, ...] | None  # the TSV files' label string for each of `names`
    dev_split: str = "validation"


_BIT = ("0", "1")  # GLUE TSVs write these binary labels as class indexes
_NLI2 = ("entailment", "not_entailment")
_NLI3 = ("entailment", "neutral", "contradiction")

_GLUE: dict[str, _HubGlue] = {
    "cola": _HubGlue(("sentence",), ("unacceptable", "acceptable"), _BIT),
    "sst2": _HubGlue(("sentence",), ("negative", "positive"), _BIT),
    "mrpc": _HubGlue(("sentence1", "sentence2"), ("not_equivalent", "equivalent"), _BIT),
    "stsb": _HubGlue(("sentence1", "sentence2"), None, None),
    "qqp": _HubGlue(("question1", "question2"), ("not_duplicate", "duplicate"), _BIT),
    "mnli": _HubGlue(("premise", "hypothesis"), _NLI3, _NLI3, dev_split="validation_matched"),
    "qnli": _HubGlue(("question", "sentence"), _NLI2, _NLI2),
    "rte": _HubGlue(("sentence1", "sentence2"), _NLI2, _NLI2),
    "wnli": _HubGlue(("sentence1", "sentence2"), ("not_entailment", "entailment"), _BIT),
}


# ---------------------------------------------------------------- reaching the hub


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _import_datasets(problem: str, fix: str) -> Any:
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise UserError(f"{problem} and the datasets package is not installed; {fix}") from None
    return datasets


def _probe(repo_id: str) -> None:
    """Ask the hub about `repo_id` once, with a short timeout; raise why it did not answer."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        HfApi().dataset_info(repo_id, timeout=_PROBE_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise LookupError(f"no dataset '{repo_id}' on the hub") from None
    except Exception as err:  # no network, DNS, proxy, TLS, timeout, 5xx: it did not answer
        raise ConnectionError(f"the hub is unreachable ({_first_line(err)})") from None


def _load(repo_id: str, config: str | None, problem: str, fix: str) -> Any:
    """`datasets.load_dataset(repo_id, config)`, or a one-line UserError saying why not."""
    datasets = _import_datasets(problem, fix)
    config_offline = (getattr(datasets.config, v, False) for v in _OFFLINE)  # read at import
    offline = any(config_offline)
    if not offline and any(_env_true(variable) for variable in _OFFLINE):
        # set after `datasets` was imported: it would still go online, so do not call it
        raise UserError(f"{problem} and the hub is offline (HF_HUB_OFFLINE=1); {fix}")
    try:
        if not offline:
            _probe(repo_id)
        return datasets.load_dataset(repo_id, config)
    except (ConnectionError, LookupError) as err:
        why = "the hub is offline (HF_HUB_OFFLINE=1) with no cached copy" if offline else err
        raise UserError(f"{problem} and {why}; {fix}") from None
    except (OSError, ValueError) as err:  # not found, unknown config, broken cache
        raise UserError(
            f"{problem} and loading it from the hub failed ({_first_line(err)}); {fix}"
        ) from None


def _split(loaded: Any, split: str, what: str, fix: str) -> Any:
    if split not in loaded:
        raise UserError(f"{what} has no '{split}' split (has {', '.join(loaded)}); {fix}")
    return loaded[split]


# ---------------------------------------------------------------- GLUE as the TSV files have it


def _label_texts(dataset: Any, spec: _HubGlue, what: str, fix: str) -> list[str]:
    """The label column as the TSV files write it: class strings, or the float's digits."""
    feature = dataset.features["label"]
    names = tuple(getattr(feature, "names", None) or ()) or None
    if names != spec.names:
        raise UserError(f"{what} has labels {names}, not the expected {spec.names}; {fix}")
    values = dataset["label"]
    if spec.tsv_labels is None:  # STS-B scores are float32 on the hub: print its shortest digits
        import numpy as np

        if getattr(feature, "dtype", "") == "float32":
            return [str(np.float32(value)) for value in values]
        return [repr(float(value)) for value in values]
    tsv = dict(enumerate(spec.tsv_labels))
    return [tsv.get(value, str(value)) for value in values]  # unknown ones: tasks names them


def glue_tables(
    name: str, text_columns: tuple[str, ...], label_column: str, folder: str
) -> tuple[Table, Table]:
    """GLUE task `name` from `nyu-mll/glue` as (train, dev) tables in the TSV files' columns.

    `text_columns` and `label_column` are the TSV names the rows are written under; `folder` is
    the task's GLUE folder (``SST-2``), named in the error that says how to give one.

    >>> train, dev = glue_tables("sst2", ("sentence",), "label", "SST-2")  # doctest: +SKIP
    >>> train.rows[0]  # doctest: +SKIP
    (1, {'sentence': 'hide new secretions from the parental units ', 'label': '0'})
    """
    spec = _GLUE[name]
    problem = f"no GLUE folder given for task '{name}'"
    fix = (
        f"pass --data-dir or set FREEZETUNE_GLUE_DIR to a GLUE TSV folder (with {folder}/), "
        "or pip install 'freezetune[hub]' and go online (no HF_HUB_OFFLINE=1) to use the hub"
    )
    loaded = _load(GLUE_HUB_ID, name, problem, fix)
    tables = []
    for split in ("train", spec.dev_split):
        what = f"{GLUE_HUB_ID} ({name}) {split}"
        dataset = _split(loaded, split, what, fix)
        missing = [c for c in (*spec.text_columns, "label") if c not in dataset.column_names]
        if missing:
            raise UserError(f"{what} lacks column(s) {', '.join(missing)}; {fix}")
        texts = [list(dataset[column]) for column in spec.text_columns]
        labels = _label_texts(dataset, spec, what, fix)
        rows = [
            (n, {**dict(zip(text_columns, row, strict=True)), label_column: label})
            for n, (label, *row) in enumerate(zip(labels, *texts, strict=True), start=1)
        ]
        tables.append(Table(f"{what} (hub)", (*text_columns, label_column), rows))
    return tables[0], tables[1]


# ---------------------------------------------------------------- any other hub dataset


def dataset_tables(name: str) -> tuple[Table, Table]:
    """Hub dataset ``hf:NAME[:CONFIG]`` (or ``owner/name``) as its (train, validation) tables.

    >>> train, validation = dataset_tables("hf:imdb")  # doctest: +SKIP
    """
    path, _, config = name.removeprefix("hf:").partition(":")
    problem = f"task '{name}' is a hub dataset"
    fix = "pip install datasets and go online (or use --train/--validation files)"
    loaded = _load(path, config or None, problem, fix)
    what, need = f"hub dataset '{name}'", "a task needs train and validation splits"
    tables = []
    for split in ("train", "validation"):
        dataset = _split(loaded, split, what, need)
        rows = list(enumerate(dataset, 1))
        tables.append(Table(f"{name}[{split}]", tuple(dataset.column_names), rows))
    return tables[0], tables[1]
