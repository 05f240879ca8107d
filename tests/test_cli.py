"""The command line: one clear line and exit code 2 for every bad input, nothing written."""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from freezetune.cli import build_parser, main
from freezetune.testing import assert_one_line_error


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


def refused(code: int, err: str, needle: str) -> None:
    """Exit code 2 and one error line holding ``needle`` (training may warn on stderr first)."""
    assert_one_line_error(code, err, needle, alone=False)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--task", "sst3"], "unknown task 'sst3'"),
        (["--freeze", "bottom:9"], "more blocks than the model has"),
        (["--freeze", "lower:3"], "unknown --freeze part"),
        (["--freeze", "botom:3"], "unknown --freeze part 'botom:3'"),
        (["--epochs", "0"], "train.epochs must be in 1..1000, got 0 (flag --epochs)"),
        (["--pooling", "mean", "model.classifier_dropout=1"], "model.classifier_dropout"),
        (["--lr", "5"], "optim.lr must be in"),
        (["--data-dir", "/nonexistent/glue"], "/nonexistent/glue"),
        (["train.epochs=0"], "train.epochs"),
        (["optim.nope=1"], "unknown config key optim.nope"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(capsys, tmp_path, tiny_bert, extra, needle):
    out = tmp_path / "out"
    code, _, err = run(capsys, *base(tiny_bert, out, *extra))
    refused(code, err, needle)
    assert not out.exists()


def test_unknown_model_folder(capsys, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    code, _, err = run(capsys, "train", "--model", str(empty), "--out", str(tmp_path / "o"))
    refused(code, err, "not a model folder")
    code, _, err = run(capsys, "inspect", "--model", str(tmp_path / "missing"))
    refused(code, err, "does not exist")


def test_corrupt_weights_are_one_clear_line(capsys, tmp_path, tiny_bert):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((Path(tiny_bert) / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x10\x00not a safetensors file")
    code, _, err = run(capsys, "train", "--model", str(broken), "--out", str(tmp_path / "o"))
    refused(code, err, "cannot load model")
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
    refused(code, err, "'z'")
    code, _, err = run(capsys, *base(tiny_bert, tmp_path / "o", *files, "--label-column", "y"))
    refused(code, err, "maybe")
    assert not (tmp_path / "o").exists()
    missing = ["--train", str(tmp_path / "nope.csv"), "--validation", str(dev)]
    code, _, err = run(capsys, *base(tiny_bert, tmp_path / "o", "--task", "mine", *missing))
    refused(code, err, "nope.csv")


def test_existing_result_is_refused_then_overwritten_on_request(capsys, tmp_path, tiny_bert):
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, *base(tiny_bert, out))
    assert code == 0 and "best accuracy" in stdout
    before = (out / "result.json").read_bytes()
    code, _, err = run(capsys, *base(tiny_bert, out, "--seed", "1"))
    refused(code, err, "--overwrite")
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


# ---- the flags, generated from the config fields ----------------------------------------------


def kinds(kind: object, names: str) -> dict[str, object]:
    return dict.fromkeys(names.split(), kind)


# captured from the hand-written parser before the flags were generated from the config fields
TRAIN_FLAGS = {
    **kinds(
        "str",
        "--model --blocks-path --embeddings-paths --freeze --config --task --data-dir --train "
        "--validation --text-columns --label-column --resume --cache-dir --out --objective",
    ),
    **kinds(
        "int",
        "--max-length --max-train-samples --max-eval-samples --epochs --batch-size "
        "--eval-batch-size --grad-accum --seed --eval-every --threads --save-every "
        "--keep-checkpoints --stop-at-step",
    ),
    **kinds("float", "--lr --head-lr --weight-decay --warmup-ratio --max-grad-norm"),
    **kinds("float", "--cache-budget-mb"),
    **kinds(
        "switch",
        "--trust-remote-code --regression --group-by-length --bf16 --skip-nonfinite --no-cache "
        "--overwrite --no-progress",
    ),
    "--pooling": ("pooler", "cls", "mean", "last"),
    "--cache-dtype": ("float32", "bfloat16", "float16"),
    # added since: distillation (issue 12), inference timing, live curves (issue 15)
    **kinds("str", "--teacher"),
    **kinds("int", "--student-layers"),
    **kinds("float", "--kd-temperature --kd-alpha"),
    "--student-pick": ("even", "first"),
    "--no-inference-cost": "switch",
    "--report-to": ("none", "tensorboard"),
    # added since: images (issue 13)
    "--image-size": "int",
    "--augment": "switch",
}
STUDY_FLAGS = {
    **kinds("str", "--config --preset --name --strategies --seeds --lrs --train-sizes"),
    **kinds("str", "--model --task --data-dir --out-root"),
    **kinds("int", "--max-train-samples --max-eval-samples --max-length --epochs --batch-size"),
    **kinds("int", "--threads --jobs"),
    "--lr": "float",
    **kinds("switch", "--bf16 --retry-failed --no-progress"),
    "--report-to": ("none", "tensorboard"),
    # added since: the executor seam (issue 14)
    **kinds("str", "--executor --ray-address --run-resources --keep-models"),
    # added since: images (issue 13)
    "--image-size": "int",
}
# added since: the contrast report over two or more studies
REPORT_FLAGS = {"--out": "str", "--overwrite": "switch"}
INSPECT_FLAGS = {
    **kinds("str", "--model --blocks-path --embeddings-paths --freeze"),
    **kinds("switch", "--trust-remote-code"),
    "--pooling": ("pooler", "cls", "mean", "last"),
    "--num-labels": "int",
}
# every other flag defaults to None, so that it never hides a value set in a YAML file
DEFAULTS = {
    "train": {"--no-cache": False, "--no-progress": False, "--no-inference-cost": False},
    "study": {
        "--jobs": 1,
        "--retry-failed": False,
        "--out-root": "runs",
        "--no-progress": False,
        "--executor": "local",
        "--keep-models": "all",
    },
    "inspect": {"--num-labels": 2},
    "report": {"--overwrite": False},
}


def flags_of(command: str) -> dict[str, tuple[object, object, str | None]]:
    """flag -> (kind, default, help) of one subcommand of the real parser."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    found = {}
    for action in sub.choices[command]._actions:
        if not action.option_strings or action.dest == "help":
            continue
        if isinstance(action, argparse._StoreTrueAction):
            kind: object = "switch"
        elif action.choices:
            kind = tuple(action.choices)
        else:
            kind = getattr(action.type, "__name__", "str")
        found[action.option_strings[0]] = (kind, action.default, action.help)
    return found


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("train", TRAIN_FLAGS),
        ("study", STUDY_FLAGS),
        ("inspect", INSPECT_FLAGS),
        ("report", REPORT_FLAGS),
    ],
)
def test_generated_flags_are_the_flags_of_before(command, expected):
    found = flags_of(command)
    assert {flag: kind for flag, (kind, _, _) in found.items()} == expected
    defaults = {flag: default for flag, (_, default, _) in found.items() if default is not None}
    assert defaults == DEFAULTS[command]
    assert all(text for _, _, text in found.values()), "every flag has help"


def test_train_help_lists_every_flag_with_its_help_and_default(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines to the terminal
    for flag in TRAIN_FLAGS:
        assert flag in out, flag
    assert (
        "truncate tokenized inputs to this many tokens (at most the model's positions; default 128)"
        in out
    )
    assert "what trains: full, head" in out  # --freeze's help is the spec grammar's own


def test_flags_set_their_config_keys_and_switches_turn_defaults_off(tmp_path):
    from freezetune.cli import config_from_args

    args = build_parser().parse_args(
        ["train", "--train", "a.csv", "--lr", "3e-4", "--no-cache", "--no-progress", "--bf16"]
    )
    config = config_from_args(args)
    assert config.data.train_file == "a.csv" and config.optim.lr == 3e-4
    assert not config.train.cache and not config.train.progress and config.train.bf16
    plain = config_from_args(build_parser().parse_args(["train"]))
    assert plain.train.cache and plain.train.progress and not plain.train.bf16


def test_study_cli_does_not_import_the_top_level_cli():
    source = Path(__file__).parents[1] / "src" / "freezetune" / "study" / "cli.py"
    imported = {
        node.module
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.ImportFrom)
    }
    assert "freezetune.cli" not in imported  # the cycle cli <-> study.cli is gone


def test_parsing_the_command_line_needs_no_torch():
    code = (
        "import sys; from freezetune.cli import build_parser; "
        "build_parser().parse_args(['train', '--freeze', 'bottom:3']); "
        "from freezetune.config import RunConfig; RunConfig.from_dict({'freeze': 'bottom:3'}); "
        "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
