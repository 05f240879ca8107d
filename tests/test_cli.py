"""The command line: one clear line and exit code 2 for every bad input, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from freezetune.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def base(tiny_bert, out, *extra):
    return [
        "train",
        "--model",
        tiny_bert,
        "--max-train-samples",
        "32",
        "--max-eval-samples",
        "16",
        "--epochs",
        "1",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def assert_one_line_error(code, err, needle):
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("freezetune: error:")]
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--task", "sst3"], "unknown task 'sst3'"),
        (["--freeze", "bottom:9"], "more blocks than the model has"),
        (["--freeze", "lower:3"], "unknown --freeze part"),
        (["--lr", "5"], "optim.lr must be in"),
        (["--data-dir", "/nonexistent/glue"], "/nonexistent/glue"),
        (["train.epochs=0"], "train.epochs"),
        (["optim.nope=1"], "unknown config key optim.nope"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(capsys, tmp_path, tiny_bert, extra, needle):
    out = tmp_path / "out"
    code, _, err = run(capsys, *base(tiny_bert, out, *extra))
    assert_one_line_error(code, err, needle)
    assert not out.exists()


def test_unknown_model_folder(capsys, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    code, _, err = run(capsys, "train", "--model", str(empty), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "not a model folder")
    code, _, err = run(capsys, "inspect", "--model", str(tmp_path / "missing"))
    assert_one_line_error(code, err, "does not exist")


def test_corrupt_weights_are_one_clear_line(capsys, tmp_path, tiny_bert):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((Path(tiny_bert) / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x10\x00not a safetensors file")
    code, _, err = run(capsys, "train", "--model", str(broken), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "cannot load model")
    assert not (tmp_path / "o").exists()


def test_own_files_missing_column_and_unknown_label(capsys, tmp_path, tiny_bert):
    train = tmp_path / "train.csv"
    train.write_text("text,y\ngood,pos\nbad,neg\nfine,pos\n")
    dev = tmp_path / "dev.csv"
    dev.write_text("text,y\nok,pos\nmeh,maybe\n")
    files = [
        "--task",
        "mine",
        "--train",
        str(train),
        "--validation",
        str(dev),
        "--text-columns",
        "text",
    ]
    code, _, err = run(capsys, *base(tiny_bert, tmp_path / "o", *files, "--label-column", "z"))
    assert_one_line_error(code, err, "'z'")
    code, _, err = run(capsys, *base(tiny_bert, tmp_path / "o", *files, "--label-column", "y"))
    assert_one_line_error(code, err, "maybe")
    assert not (tmp_path / "o").exists()
    missing = ["--train", str(tmp_path / "nope.csv"), "--validation", str(dev)]
    code, _, err = run(capsys, *base(tiny_bert, tmp_path / "o", "--task", "mine", *missing))
    assert_one_line_error(code, err, "nope.csv")


def test_existing_result_is_refused_then_overwritten_on_request(capsys, tmp_path, tiny_bert):
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, *base(tiny_bert, out))
    assert code == 0 and "best accuracy" in stdout
    before = (out / "result.json").read_bytes()
    code, _, err = run(capsys, *base(tiny_bert, out, "--seed", "1"))
    assert_one_line_error(code, err, "--overwrite")
    assert (out / "result.json").read_bytes() == before
    code, _, _ = run(capsys, *base(tiny_bert, out, "--seed", "1", "--overwrite"))
    assert code == 0
    assert json.loads((out / "result.json").read_text())["config"]["train"]["seed"] == 1


def test_yaml_config_with_flag_and_override_precedence(capsys, tmp_path, tiny_bert):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {{name: {tiny_bert}}}\nfreeze: head\ntrain: {{epochs: 3, seed: 5}}\n")
    out = tmp_path / "out"
    code, _, _ = run(capsys, *base(tiny_bert, out, "--config", str(cfg), "train.seed=7"))
    assert code == 0
    saved = json.loads((out / "result.json").read_text())["config"]
    assert saved["freeze"] == "head"  # from YAML
    assert saved["train"]["epochs"] == 1  # flag beats YAML
    assert saved["train"]["seed"] == 7  # override beats both


def test_inspect_prints_units_and_the_canonical_line(capsys, tiny_bert):
    code, out, _ = run(capsys, "inspect", "--model", tiny_bert, "--freeze", "bottom:1")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[2:7]] == [
        "embeddings",
        "block.0",
        "block.1",
        "block.2",
        "head",
    ]
    assert "frozen" in lines[3] and "trains" in lines[5]
    assert lines[-1].startswith("trainable params: ") and " || all params: " in lines[-1]
