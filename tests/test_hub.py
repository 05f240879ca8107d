"""Tests for freezetune.hub: GLUE from `nyu-mll/glue` when no GLUE folder is given.

No network is touched: `datasets.load_dataset` is replaced by one that returns a DatasetDict
built here from the shared GLUE TSV files, with the hub's own schema (ClassLabel names, float32
scores, an `idx` column), so the hub path must give exactly the TSV path's examples.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from freezetune import hub
from freezetune.cli import main
from freezetune.errors import UserError
from freezetune.tasks import load_task
from freezetune.testing import assert_one_line_error

GLUE_DIR = Path("/work/shared/data/glue")
needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason="shared GLUE data not present")
REAL_PROBE = hub._probe

# task -> (GLUE folder, {hub column: TSV column}, TSV label column, ClassLabel names or None)
HUB_SCHEMA: dict[str, tuple[str, dict[str, str], str, list[str] | None]] = {
    "sst2": ("SST-2", {"sentence": "sentence"}, "label", ["negative", "positive"]),
    "mrpc": (
        "MRPC",
        {"sentence1": "#1 String", "sentence2": "#2 String"},
        "Quality",
        ["not_equivalent", "equivalent"],
    ),
    "stsb": ("STS-B", {"sentence1": "sentence1", "sentence2": "sentence2"}, "score", None),
}


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:  # MRPC starts with a BOM
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def hub_like(task: str) -> Any:
    """The DatasetDict `load_dataset('nyu-mll/glue', task)` returns, built from the TSV files."""
    datasets = pytest.importorskip("datasets")
    folder, columns, label, names = HUB_SCHEMA[task]
    label_feature = datasets.ClassLabel(names=names) if names else datasets.Value("float32")
    features = datasets.Features(
        {
            **{column: datasets.Value("string") for column in columns},
            "label": label_feature,
            "idx": datasets.Value("int32"),
        }
    )
    splits = {}
    for split, file in (("train", "train.tsv"), ("validation", "dev.tsv")):
        rows = _read_tsv(GLUE_DIR / folder / file)
        data: dict[str, list[Any]] = {
            hub_col: [r[col] for r in rows] for hub_col, col in columns.items()
        }
        data["label"] = [int(r[label]) if names else float(r[label]) for r in rows]
        data["idx"] = list(range(len(rows)))
        splits[split] = datasets.Dataset.from_dict(data, features=features)
    return datasets.DatasetDict(splits)


@pytest.fixture(scope="module")
def hub_dicts() -> dict[str, Any]:
    if not GLUE_DIR.is_dir():
        pytest.skip("shared GLUE data not present")
    return {task: hub_like(task) for task in HUB_SCHEMA}


@pytest.fixture
def no_folder(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("FREEZETUNE_GLUE_DIR", raising=False)
    return monkeypatch


@pytest.fixture
def fake_hub(no_folder: pytest.MonkeyPatch, hub_dicts: dict[str, Any]) -> list[tuple]:
    """Serve `hub_dicts` as the hub (online, the probe answered); returns the calls made."""
    datasets = pytest.importorskip("datasets")
    calls: list[tuple] = []

    def load_dataset(path: str, name: str | None = None, *args: Any, **kwargs: Any) -> Any:
        calls.append((path, name))
        assert path == "nyu-mll/glue" and not args and not kwargs
        return hub_dicts[name or ""]

    no_folder.setattr(datasets, "load_dataset", load_dataset)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        no_folder.setattr(datasets.config, var, False, raising=False)
        no_folder.delenv(var, raising=False)
    no_folder.setattr(hub, "_probe", lambda repo_id: calls.append(("probe", repo_id)))
    return calls


def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """HF_HUB_OFFLINE=1 as `datasets` sees it, with an empty cache: nothing to load."""
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


# ---------------------------------------------------------------- the same examples as the TSVs


@needs_glue
@pytest.mark.parametrize("task", ["sst2", "mrpc"])
def test_hub_gives_the_tsv_examples(fake_hub: list[tuple], task: str) -> None:
    from_hub = load_task(task)
    from_tsv = load_task(task, data_dir=str(GLUE_DIR))
    assert fake_hub == [("probe", "nyu-mll/glue"), ("nyu-mll/glue", task)]
    assert from_hub.task == from_tsv.task and from_hub.task.labels == ("0", "1")
    assert from_hub.train == from_tsv.train
    assert from_hub.validation == from_tsv.validation


@needs_glue
def test_hub_stsb_scores_are_the_tsv_scores_up_to_float32(fake_hub: list[tuple]) -> None:
    import numpy as np

    from_hub, from_tsv = load_task("stsb"), load_task("stsb", data_dir=str(GLUE_DIR))
    assert from_hub.task == from_tsv.task and from_hub.task.is_regression
    for hub_split, tsv_split in (
        (from_hub.train, from_tsv.train),
        (from_hub.validation, from_tsv.validation),
    ):
        assert [ex.texts for ex in hub_split] == [ex.texts for ex in tsv_split]
        # the hub keeps scores as float32: "3.800" is 3.8 again, 2.11111111111111 is 2.111111
        assert [ex.label for ex in hub_split] == [
            float(str(np.float32(ex.label))) for ex in tsv_split
        ]
    same = sum(a == b for a, b in zip(from_hub.train, from_tsv.train, strict=True))
    assert same == len(from_tsv.train) - 14  # only the 14 scores written with 14 decimals differ


@needs_glue
def test_hub_subsets_match_the_tsv_subsets(fake_hub: list[tuple]) -> None:
    kwargs: dict[str, Any] = {"max_train_samples": 50, "max_eval_samples": 20, "seed": 3}
    assert load_task("sst2", **kwargs) == load_task("sst2", data_dir=str(GLUE_DIR), **kwargs)


def test_hub_labels_map_by_name_not_position() -> None:
    """MNLI's hub order (entailment, neutral, contradiction) is not the TSV path's sorted one."""
    from freezetune.tasks import GLUE_TASKS

    for name, spec in hub._GLUE.items():
        info = GLUE_TASKS[name].task
        assert len(spec.text_columns) == len(info.text_columns)
        assert (spec.tsv_labels is None) == info.is_regression
        assert spec.tsv_labels is None or sorted(spec.tsv_labels) == sorted(info.labels or ())
    assert hub._GLUE["mnli"].dev_split == "validation_matched"


# ---------------------------------------------------------------- offline: one line, promptly


FIXES = ("--data-dir or set FREEZETUNE_GLUE_DIR", "pip install 'freezetune[hub]' and go online")


def test_offline_without_a_folder_says_both_fixes(
    no_folder: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    offline(no_folder, tmp_path)
    start = time.monotonic()
    with pytest.raises(UserError) as caught:
        load_task("sst2")
    assert time.monotonic() - start < 5  # no retries against an unreachable hub
    message = str(caught.value)
    assert "\n" not in message and "offline (HF_HUB_OFFLINE=1)" in message
    assert all(fix in message for fix in FIXES) and "SST-2/" in message


def test_without_datasets_says_both_fixes(no_folder: pytest.MonkeyPatch) -> None:
    no_folder.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(UserError, match="datasets package is not installed") as caught:
        load_task("mrpc")
    assert all(fix in str(caught.value) for fix in FIXES) and "MRPC/" in str(caught.value)


def test_unreachable_hub_fails_fast_without_loading(
    fake_hub: list[tuple], no_folder: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import HfApi

    no_folder.setattr(hub, "_probe", REAL_PROBE)  # fake_hub replaced it
    asked: list[dict[str, Any]] = []

    def dataset_info(self: Any, repo_id: str, **kwargs: Any) -> Any:
        asked.append({"repo_id": repo_id, **kwargs})
        raise OSError("[Errno -2] Name or service not known\n(while resolving huggingface.co)")

    no_folder.setattr(HfApi, "dataset_info", dataset_info)
    with pytest.raises(
        UserError, match=r"the hub is unreachable \(OSError: .*not known\)"
    ) as caught:
        load_task("sst2")
    assert all(fix in str(caught.value) for fix in FIXES) and "\n" not in str(caught.value)
    assert asked == [{"repo_id": "nyu-mll/glue", "timeout": 5.0}]
    assert fake_hub == []  # load_dataset (which retries for ~30 s) was never called


def test_offline_exits_2_through_the_cli(
    capsys: pytest.CaptureFixture[str],
    no_folder: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_bert: str,
) -> None:
    offline(no_folder, tmp_path)
    out = tmp_path / "out"
    code = main(
        ["train", "--model", tiny_bert, "--task", "sst2", "--no-progress", "--out", str(out)]
    )
    assert_one_line_error(code, capsys.readouterr().err, *FIXES, alone=False)
    assert not out.exists()


# ---------------------------------------------------------------- end to end


@needs_glue
def test_train_without_a_folder_goes_through_the_hub(
    capsys: pytest.CaptureFixture[str], fake_hub: list[tuple], tmp_path: Path, tiny_bert: str
) -> None:
    args = [
        *("train", "--model", tiny_bert, "--task", "sst2", "--max-train-samples", "64"),
        *("--max-eval-samples", "16", "--max-length", "24", "--epochs", "1", "--no-progress"),
    ]
    assert main([*args, "--out", str(tmp_path / "hub")]) == 0
    assert ("nyu-mll/glue", "sst2") in fake_hub
    assert main([*args, "--data-dir", str(GLUE_DIR), "--out", str(tmp_path / "tsv")]) == 0
    capsys.readouterr()
    results = [json.loads((tmp_path / run / "result.json").read_text()) for run in ("hub", "tsv")]
    hub_final, tsv_final = (
        {k: v for k, v in r["final"].items() if "time" not in k} for r in results
    )
    assert hub_final == tsv_final  # same examples, same seed: same metrics
