"""Tests for freezetune.tasks: GLUE tasks, own CSV/TSV/JSONL files and seeded subsets.

They go through `load_task`, as a user does, so the file errors of `freezetune.readers` are
checked here with the words a user reads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from freezetune.errors import UserError
from freezetune.tasks import GLUE_TASKS, Example, load_task

GLUE_DIR = Path("/work/shared/data/glue")
needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason="shared GLUE data not present")


def write(path: Path, text: str, encoding: str = "utf-8") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return str(path)


def own(tmp_path: Path, train: str, dev: str, ext: str = "csv", **kwargs: Any):
    """Write train/dev files with the given content and load them as a custom task."""
    train_file = write(tmp_path / f"train.{ext}", train)
    dev_file = write(tmp_path / f"dev.{ext}", dev)
    return load_task(None, train_file=train_file, validation_file=dev_file, **kwargs)


def raises(match: str):
    return pytest.raises(UserError, match=match)


# ---------------------------------------------------------------- GLUE on the real shared data


@needs_glue
@pytest.mark.parametrize(
    ("name", "n_train", "n_dev", "num_labels"),
    [("sst2", 67349, 872, 2), ("mrpc", 3668, 408, 2), ("stsb", 5749, 1500, 1)],
)
def test_glue_real_row_counts(name: str, n_train: int, n_dev: int, num_labels: int) -> None:
    data = load_task(name, data_dir=str(GLUE_DIR))
    assert (len(data.train), len(data.validation)) == (n_train, n_dev)
    assert data.task.num_labels == num_labels


@needs_glue
def test_glue_real_contents() -> None:
    sst2 = load_task("sst2", data_dir=str(GLUE_DIR), max_train_samples=5, max_eval_samples=3)
    assert (len(sst2.train), len(sst2.validation)) == (5, 3)
    assert sst2.task.labels == ("0", "1") and sst2.task.main_metric == "accuracy"

    mrpc = load_task("mrpc", data_dir=str(GLUE_DIR))
    first = mrpc.train[0]
    # The BOM is gone from the header and unbalanced quotes are kept as plain text.
    assert first.texts[0].startswith('Amrozi accused his brother, whom he called "the witness"')
    assert first.label == 1 and len(first.texts) == 2
    assert mrpc.validation[0].texts[1].startswith('"The foodservice pie')
    assert mrpc.task.metrics == ("f1", "accuracy") and mrpc.task.main_metric == "f1"

    stsb = load_task("STS-B", data_dir=str(GLUE_DIR))
    assert stsb.train[0] == Example(("A plane is taking off.", "An air plane is taking off."), 5.0)
    assert stsb.task.is_regression and stsb.task.labels is None
    assert all(0.0 <= float(ex.label) <= 5.0 for ex in stsb.train)


@needs_glue
def test_glue_dir_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREEZETUNE_GLUE_DIR", str(GLUE_DIR))
    assert len(load_task("mrpc", max_train_samples=10).train) == 10


def test_glue_dir_missing_says_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # without a folder GLUE comes from the hub (tests/test_hub.py); here `datasets` is missing
    monkeypatch.delenv("FREEZETUNE_GLUE_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with raises(r"--data-dir or set FREEZETUNE_GLUE_DIR .*SST-2/.*'freezetune\[hub\]'"):
        load_task("sst2")


def test_glue_folder_missing_names_path(tmp_path: Path) -> None:
    with raises(r"SST-2.*--data-dir"):
        load_task("sst2", data_dir=str(tmp_path))


# ---------------------------------------------------------------- GLUE layouts on tiny files

TINY_GLUE = {
    "cola": (
        "CoLA",
        "gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tThey \"drank the pub.\n",
        [(("Our friends won't buy this analysis.",), 1), (('They "drank the pub.',), 0)],
    ),
    "rte": (
        "RTE",
        "index\tsentence1\tsentence2\tlabel\n0\tA dog runs.\tAn animal moves.\tentailment\n"
        '1\tIt rains.\tIt is "dry.\tnot_entailment\n',
        [(("A dog runs.", "An animal moves."), 0), (("It rains.", 'It is "dry.'), 1)],
    ),
    "qnli": (
        "QNLI",
        "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tnot_entailment\n"
        "1\tWhat?\tThat.\tentailment\n",
        [(("Who?", "Him."), 1), (("What?", "That."), 0)],
    ),
    "qqp": (
        "QQP",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tHow?\tHow so?\t1\n"
        "4\t5\t6\tWhy?\tWhen?\t0\n",
        [(("How?", "How so?"), 1), (("Why?", "When?"), 0)],
    ),
    "mnli": (
        "MNLI",
        "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
        "0\t1\t1e\tfiction\tA man sleeps.\tA man is awake.\tcontradiction\tcontradiction\n"
        "1\t2\t2n\tslate\tA cat sits.\tA cat sits on a mat.\tneutral\tneutral\n",
        [(("A man sleeps.", "A man is awake."), 0), (("A cat sits.", "A cat sits on a mat."), 2)],
    ),
    "wnli": (
        "WNLI",
        "\ufeffindex\tsentence1\tsentence2\tlabel\n0\tI stuck a pin.\tThe pin stuck.\t1\n"
        "1\tJohn left.\tHe left.\t0\n",
        [(("I stuck a pin.", "The pin stuck."), 1), (("John left.", "He left."), 0)],
    ),
}


@pytest.mark.parametrize("name", sorted(TINY_GLUE))
def test_glue_layouts(tmp_path: Path, name: str) -> None:
    folder, content, expected = TINY_GLUE[name]
    dev = GLUE_TASKS[name].dev_file
    write(tmp_path / folder / "train.tsv", content)
    write(tmp_path / folder / dev, content)
    data = load_task(name.upper(), data_dir=str(tmp_path))
    assert [(ex.texts, ex.label) for ex in data.train] == expected
    assert data.validation == data.train
    assert data.task.name == name


def test_mnli_dev_is_dev_matched(tmp_path: Path) -> None:
    write(tmp_path / "MNLI" / "train.tsv", TINY_GLUE["mnli"][1])
    write(tmp_path / "MNLI" / "dev.tsv", TINY_GLUE["mnli"][1])
    with raises(r"dev_matched\.tsv"):
        load_task("mnli", data_dir=str(tmp_path))


def test_glue_label_outside_task_labels(tmp_path: Path) -> None:
    write(tmp_path / "SST-2" / "train.tsv", "sentence\tlabel\ngood\t1\nbad\t2\n")
    write(tmp_path / "SST-2" / "dev.tsv", "sentence\tlabel\ngood\t1\n")
    with raises(r"unknown label '2' in .*SST-2/train\.tsv line 3"):
        load_task("sst2", data_dir=str(tmp_path))


def test_glue_ragged_row_names_line(tmp_path: Path) -> None:
    write(tmp_path / "SST-2" / "train.tsv", "sentence\tlabel\ngood\t1\nbad\t0\textra\n")
    write(tmp_path / "SST-2" / "dev.tsv", "sentence\tlabel\ngood\t1\n")
    with raises(r"train\.tsv line 3 has 3 fields but the header has 2"):
        load_task("sst2", data_dir=str(tmp_path))


def test_glue_wrong_file_names_missing_column(tmp_path: Path) -> None:
    write(tmp_path / "SST-2" / "train.tsv", "text\tlabel\ngood\t1\n")
    write(tmp_path / "SST-2" / "dev.tsv", "text\tlabel\ngood\t1\n")
    with raises(r"missing column 'sentence' .*\(columns: text, label\)"):
        load_task("sst2", data_dir=str(tmp_path))


def test_unknown_task_lists_choices() -> None:
    with raises(r"unknown task 'sst3'; choose one of: cola, sst2.*--train and --validation"):
        load_task("sst3")
    with raises("no task given"):
        load_task(None)


def test_glue_rejects_own_file_options() -> None:
    with raises("--label-column"):
        load_task("sst2", data_dir="/nowhere", label_column="y")


def test_hub_task_without_datasets_says_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with raises("pip install datasets"):
        load_task("hf:glue:sst2")


# ---------------------------------------------------------------- own files


def test_csv_classification_numeric_label_order(tmp_path: Path) -> None:
    train = 'text,label\n"hello, world",10\n"two\nlines",2\nplain,1\nagain,2\n'
    data = own(tmp_path, train, "text,label\nx,1\n")
    assert data.task.labels == ("1", "2", "10")  # numeric, not "1", "10", "2"
    assert [ex.label for ex in data.train] == [2, 1, 0, 1]
    assert data.train[1].texts == ("two\nlines",)
    assert data.task.metrics == ("accuracy",) and data.task.name == "custom"


def test_tsv_pair_classification(tmp_path: Path) -> None:
    train = "a\tb\ty\nx1\tx2\tpos\ny1\ty2\tneg\n"
    data = own(
        tmp_path, train, "a\tb\ty\nz1\tz2\tpos\n", "tsv", text_columns=["a", "b"], label_column="y"
    )
    assert data.task.labels == ("neg", "pos") and data.task.metrics == ("accuracy", "f1")
    assert data.validation == [Example(("z1", "z2"), 1)]


def test_jsonl_classification_and_bom_csv(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": 0}]
    data = own(
        tmp_path, "\n".join(json.dumps(r) for r in rows) + "\n\n", json.dumps(rows[0]), "jsonl"
    )
    assert data.task.labels == ("0", "1") and [ex.label for ex in data.train] == [1, 0]
    bom = own(tmp_path, "\ufefftext,label\na,x\nb,y\n", "text,label\nc,y\n")
    assert bom.validation == [Example(("c",), 1)]


def test_regression_csv_and_jsonl(tmp_path: Path) -> None:
    data = own(tmp_path, "text,label\na,0.5\nb,3\n", "text,label\nc,-1e-3\n", regression=True)
    assert data.task.is_regression and data.task.num_labels == 1
    assert [ex.label for ex in data.train] == [0.5, 3.0] and data.validation[0].label == -0.001
    assert data.task.main_metric == "pearson"
    jsonl = own(
        tmp_path,
        '{"text": "a", "label": 2.5}\n',
        '{"text": "b", "label": 1}',
        "jsonl",
        regression=True,
    )
    assert jsonl.train == [Example(("a",), 2.5)]


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity"])
def test_regression_rejects_non_finite(tmp_path: Path, bad: str) -> None:
    with raises(rf"'{bad}' in .*train\.csv line 3 is not finite"):
        own(tmp_path, f"text,label\na,1\nb,{bad}\n", "text,label\nc,1\n", regression=True)


def test_regression_rejects_words(tmp_path: Path) -> None:
    with raises(r"'high' in .*dev\.csv line 2 is not a number"):
        own(tmp_path, "text,label\na,1\n", "text,label\nc,high\n", regression=True)


def test_validation_label_missing_from_train(tmp_path: Path) -> None:
    with raises(r"unknown label 'maybe' in .*dev\.csv line 3 \(labels from train file"):
        own(tmp_path, "text,label\na,yes\nb,no\n", "text,label\nc,yes\nd,maybe\n")


@pytest.mark.parametrize(
    ("train", "match"),
    [
        ("", "is empty"),
        ("text,label\n", "no data rows"),
        ("text,label\n\n\n", "no data rows"),
        ("text,label\na,1\nb,0,extra\n", r"train\.csv line 3 has 3 fields"),
        (
            "text,y\na,1\nb,0\n",
            r"missing column 'label' in .*train\.csv \(columns: text, y\); pass --label-column",
        ),
        ("words,label\na,1\nb,0\n", "pass --text-columns"),
        ("text,label\na,1\nb,1\n", "only one label"),
        ("text,text\na,1\n", "duplicate column names"),
    ],
)
def test_bad_csv_files(tmp_path: Path, train: str, match: str) -> None:
    with raises(match):
        own(tmp_path, train, "text,label\nc,1\n")


def test_huge_field_and_runaway_quote_name_the_line(tmp_path: Path) -> None:
    huge = "x" * 200_000
    with raises(r"train\.csv line 3 could not be parsed \(field larger than field limit"):
        own(tmp_path, f"text,label\na,1\n{huge},0\n", "text,label\nc,1\n")
    runaway = 'text,label\na,1\n"b,0\nc,1\nd,0\n'  # the quote swallows the rest of the file
    with raises(r"train\.csv line \d+ has 1 fields but the header has 2"):
        own(tmp_path, runaway, "text,label\nc,1\n")


def test_not_utf8(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\ncaf\u00e9,1\nb,0\n", encoding="latin-1")
    dev = write(tmp_path / "dev.csv", "text,label\nc,1\n")
    with raises(r"train\.csv is not UTF-8 .*re-save it as UTF-8"):
        load_task(None, train_file=train, validation_file=dev)


@pytest.mark.parametrize(
    ("train", "match"),
    [
        (
            '{"text": "a", "label": 1}\n{"text": "b", "label": \n',
            r"train\.jsonl line 2 is not valid JSON",
        ),
        ('{"text": "a", "label": 1}\n[1, 2]\n', r"line 2 is not a JSON object"),
        (
            '{"text": "a", "label": 1}\n{"text": null, "label": 0}\n',
            r"no value for 'text' in .* line 2",
        ),
        ('{"text": "a", "label": 1}\n{"label": 0}\n', r"no value for 'text' in .* line 2"),
    ],
)
def test_bad_jsonl_files(tmp_path: Path, train: str, match: str) -> None:
    with raises(match):
        own(tmp_path, train, '{"text": "c", "label": 1}\n', "jsonl")


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    dev = write(tmp_path / "dev.csv", "text,label\nc,1\n")
    with raises(r"file not found: .*nope\.csv"):
        load_task(None, train_file=str(tmp_path / "nope.csv"), validation_file=dev)
    with raises("pass --train and --validation together"):
        load_task("mine", train_file=dev)
    with raises(r"unsupported file type '\.txt'"):
        load_task(None, train_file=write(tmp_path / "t.txt", "x"), validation_file=dev)
    with raises("is a file, not a task; pass it with --train"):
        load_task(dev)
    with raises("pass 1 or 2 with --text-columns"):
        load_task(None, train_file=dev, validation_file=dev, text_columns=["a", "b", "c"])


def test_validation_missing_column(tmp_path: Path) -> None:
    with raises(r"missing column 'label' in .*dev\.csv"):
        own(tmp_path, "text,label\na,1\nb,0\n", "text,lbl\nc,1\n")


# ---------------------------------------------------------------- seeded subsets


def test_subsets_are_seeded_ordered_and_independent(tmp_path: Path) -> None:
    rows = "".join(f"t{i},{i % 3}\n" for i in range(200))
    train_file = write(tmp_path / "train.csv", "text,label\n" + rows)
    dev_file = write(tmp_path / "dev.csv", "text,label\n" + rows)

    def pick(**limits: Any) -> tuple[list[str], list[str]]:
        data = load_task("mine", train_file=train_file, validation_file=dev_file, **limits)
        return [ex.texts[0] for ex in data.train], [ex.texts[0] for ex in data.validation]

    train, dev = pick(max_train_samples=20, max_eval_samples=20, seed=1)
    assert (train, dev) == pick(max_train_samples=20, max_eval_samples=20, seed=1)
    assert len(train) == 20 and train == sorted(train, key=lambda t: int(t[1:]))
    assert train != dev  # the two splits draw from their own streams
    assert pick(max_train_samples=20, seed=2)[0] != train
    assert pick(max_train_samples=20, seed=1)[0] == train  # eval limit does not move train
    assert len(pick(max_train_samples=10_000)[0]) == 200
    with raises("--max-eval-samples must be at least 1"):
        pick(max_eval_samples=0)
