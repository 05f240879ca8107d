"""Every input that does not fit is refused in one line, exit code 2, nothing written (issue 25).

A flag that means nothing for this model or task, an argparse error, a model of the other
modality, a --max-length past the model's positions, a teacher without weights, a --data-dir
that is not there, a --ray-address that is not a Ray head: each is one line naming the problem
and the fix, before any output folder exists.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import shutil
import socket
import threading
import time
import typing
from pathlib import Path

import pytest

from freezetune.cli import main
from freezetune.config import RunConfig
from freezetune.errors import UserError
from freezetune.modality import checked_modality
from freezetune.options import _options, kind_of
from freezetune.testing import assert_one_line_error


def refused(capsys, argv: list[str], *nothing_in: Path) -> str:
    """Run ``freezetune argv``: exit code 2, one line on stderr, none of ``nothing_in`` made."""
    line = assert_one_line_error(main(argv), capsys.readouterr().err)
    for path in nothing_in:
        assert not path.exists(), path
    return line


def text(model: str, out: Path, *extra: str) -> list[str]:
    return [
        *("train", "--model", model, "--task", "sst2", "--max-train-samples", "16"),
        *("--max-eval-samples", "8", "--epochs", "1", "--no-progress", "--out", str(out)),
        *extra,
    ]


def images(model: str, fm: str, out: Path, *extra: str) -> list[str]:
    return [
        *("train", "--model", model, "--task", "fashion-mnist", "--data-dir", fm),
        *("--image-size", "32", "--max-train-samples", "16", "--max-eval-samples", "8"),
        *("--epochs", "1", "--no-progress", "--out", str(out)),
        *extra,
    ]


# ---------------------------------------------------------------- flags of the other modality


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        (
            ["--augment"],
            "--augment is for images, and this run reads text (task sst2); drop --augment",
        ),
        (
            ["data.image_size=64"],
            "--image-size is for images, and this run reads text (task sst2); drop --image-size",
        ),
    ],
)
def test_an_image_flag_on_a_text_task(capsys, tmp_path, tiny_bert, extra, line):
    out = tmp_path / "out"
    assert refused(capsys, text(tiny_bert, out, *extra), out) == line


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        (
            ["--group-by-length"],
            "--group-by-length is for text, and this run reads images (task fashion-mnist); "
            "drop --group-by-length",
        ),
        (
            ["--max-length", "64"],
            "--max-length is for text, and this run reads images (task fashion-mnist); "
            "drop --max-length",
        ),
        (
            ["--student-layers", "2"],
            "distillation is for text models, and this run reads images (task fashion-mnist); "
            "drop --student-layers",
        ),
    ],
)
def test_a_text_flag_on_images(capsys, tmp_path, tiny_effnet, tiny_fashion_mnist, extra, line):
    out = tmp_path / "out"
    argv = images(tiny_effnet, tiny_fashion_mnist, out, *extra)
    assert refused(capsys, argv, out) == line


def test_text_columns_on_image_folders(capsys, tmp_path, tiny_effnet, tiny_image_folders):
    out, (train, val) = tmp_path / "out", tiny_image_folders
    argv = [
        *("train", "--model", tiny_effnet, "--train", train, "--validation", val),
        *("--text-columns", "a", "--out", str(out)),
    ]
    assert refused(capsys, argv, out) == (
        f"--text-columns is for text, and this run reads images (--train {train}); "
        "drop --text-columns"
    )


def _other_value(o) -> object:
    """A value of ``o``'s type other than its default."""
    kind, _ = kind_of(typing.get_type_hints(type(o.owner))[o.field.name])
    choices = o.field.metadata.get("choices")
    if choices:
        return next(c for c in choices if c != o.value)
    if kind is bool:
        return not o.value
    if kind is float:
        return o.value / 2
    if kind is int:
        return (o.value or 1) + 1
    return ("a",) if kind is tuple else "x"


@pytest.mark.parametrize("modality", ["text", "image"])
def test_every_option_of_one_modality_is_refused_for_the_other(modality):
    """The class, not the examples: each option declared ``only`` for the other modality (or in
    a section that is) is refused by the one check a run and a study's preflight both make."""
    other = "image" if modality == "text" else "text"
    config = RunConfig.from_dict(
        {"data": {"task": "sst2" if modality == "text" else "fashion-mnist"}}
    )
    assert checked_modality(config).name == modality  # nothing set: nothing refused
    checked = []
    for o in _options(config):
        if (o.field.metadata.get("only") or getattr(o.owner, "only", None)) != other:
            continue
        section, _, name = o.key.rpartition(".")
        changed = dataclasses.replace(getattr(config, section), **{name: _other_value(o)})
        with pytest.raises(UserError, match=f"drop {o.name}$"):
            checked_modality(dataclasses.replace(config, **{section: changed}))
        checked.append(o.key)
    expected = {"image": 2, "text": 10}[other]  # image_size, augment; 5 data + 5 distill keys
    assert len(checked) == expected, checked


# ---------------------------------------------------------------- flags that need another


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        (
            ["--kd-alpha", "0.3"],
            "--kd-alpha does nothing without --teacher; pass --teacher too or drop --kd-alpha",
        ),
        (
            ["--kd-temperature", "4"],
            "--kd-temperature does nothing without --teacher; pass --teacher too or drop "
            "--kd-temperature",
        ),
        (
            ["--student-pick", "first"],
            "--student-pick does nothing without --student-layers; pass --student-layers too or "
            "drop --student-pick",
        ),
        (
            ["--no-cache", "--cache-dtype", "bfloat16"],
            "--cache-dtype does nothing with --no-cache; drop one of them",
        ),
        (
            ["--no-cache", "--cache-budget-mb", "10"],
            "--cache-budget-mb does nothing with --no-cache; drop one of them",
        ),
    ],
)
def test_a_flag_whose_switch_is_off(capsys, tmp_path, tiny_bert, extra, line):
    out = tmp_path / "out"
    assert refused(capsys, text(tiny_bert, out, *extra), out) == line


def test_resume_with_other_settings(capsys, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--resume", str(out), "--lr", "1e-3", "train.seed=2", "--no-progress"]
    assert refused(capsys, argv, out) == (
        f"--resume {out} continues that run with its own config, so --lr, train.seed=2 would "
        "be ignored; drop them (only --no-progress and --stop-at-step may be given), or start a "
        "new run"
    )


# ---------------------------------------------------------------- freeze parts


def test_train_bn_on_a_model_without_batchnorm(capsys, tmp_path, tiny_bert):
    out = tmp_path / "out"
    line = refused(capsys, text(tiny_bert, out, "--freeze", "bottom:1+train-bn"), out)
    assert line == (
        "--freeze bottom:1+train-bn: train-bn keeps BatchNorm layers training, and this model "
        "(bert) has none; drop +train-bn"
    )
    line = refused(capsys, ["inspect", "--model", tiny_bert, "--freeze", "bottom:1+train-bn"])
    assert "has none; drop +train-bn" in line


def test_train_bn_with_nothing_frozen(capsys, tmp_path, tiny_effnet, tiny_fashion_mnist):
    out = tmp_path / "out"
    argv = images(tiny_effnet, tiny_fashion_mnist, out, "--freeze", "full+train-bn")
    assert refused(capsys, argv, out) == (
        "--freeze full+train-bn: train-bn keeps the BatchNorm of frozen units training, and "
        "nothing is frozen; drop +train-bn or freeze some units (e.g. bottom:4+train-bn)"
    )


# ---------------------------------------------------------------- data folders


def test_fashion_mnist_data_dir_that_does_not_exist(
    capsys, tmp_path, tiny_effnet, tiny_fashion_mnist, monkeypatch
):
    monkeypatch.setenv("FREEZETUNE_FASHION_MNIST_DIR", tiny_fashion_mnist)  # no fall-back to it
    out, missing = tmp_path / "out", tmp_path / "nope"
    assert refused(capsys, images(tiny_effnet, str(missing), out), out) == (
        f"--data-dir {missing} is not a folder; pass the folder with Fashion-MNIST's four IDX "
        "files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte, or .gz)"
    )


def test_fashion_mnist_data_dir_without_its_files(
    capsys, tmp_path, tiny_effnet, tiny_fashion_mnist, monkeypatch
):
    monkeypatch.setenv("FREEZETUNE_FASHION_MNIST_DIR", tiny_fashion_mnist)
    out, empty = tmp_path / "out", tmp_path / "empty"
    empty.mkdir()
    line = refused(capsys, images(tiny_effnet, str(empty), out), out)
    assert line.startswith(f"--data-dir {empty} has no Fashion-MNIST IDX files; put ")
    assert line.endswith("(or .gz) there, or leave --data-dir out to use the installed copy")


def test_glue_data_dir_that_does_not_exist(capsys, tmp_path, tiny_bert):
    out, missing = tmp_path / "out", tmp_path / "glue"
    assert refused(capsys, text(tiny_bert, out, "--data-dir", str(missing)), out) == (
        f"--data-dir {missing} is not a folder; pass the GLUE folder that holds "
        "SST-2/train.tsv (or leave it out to use $FREEZETUNE_GLUE_DIR or the hub)"
    )


def test_data_dir_beside_own_files(capsys, tmp_path, tiny_bert, glue_dir):
    out = tmp_path / "out"
    (tmp_path / "t.csv").write_text("text,label\na,0\nb,1\n")
    files = ["--task", "mine", "--train", str(tmp_path / "t.csv")]
    argv = text(tiny_bert, out, *files, "--validation", str(tmp_path / "t.csv"))
    assert refused(capsys, [*argv, "--data-dir", glue_dir], out) == (
        "--data-dir is for GLUE tasks and Fashion-MNIST; this task comes from "
        "--train/--validation files: drop --data-dir"
    )


def test_data_dir_beside_image_folders(
    capsys, tmp_path, tiny_effnet, tiny_image_folders, tiny_fashion_mnist
):
    out, (train, val) = tmp_path / "out", tiny_image_folders
    argv = [
        *("train", "--model", tiny_effnet, "--train", train, "--validation", val),
        *("--data-dir", tiny_fashion_mnist, "--out", str(out)),
    ]
    assert refused(capsys, argv, out) == (
        "--data-dir is for Fashion-MNIST and GLUE tasks; these images come from "
        "--train/--validation: drop --data-dir"
    )


# ---------------------------------------------------------------- the model


def test_an_image_alias_on_a_text_task(capsys, tmp_path):
    out = tmp_path / "out"
    assert refused(capsys, text("effnet-lite0", out), out) == (
        "effnet-lite0 is an image model and this is a text task; pass a text model (--model "
        "minilm-l6, or a hub id), or an image task (--task fashion-mnist)"
    )


def test_max_length_past_the_models_positions(capsys, tmp_path, tiny_bert):
    out = tmp_path / "out"
    line = refused(capsys, text(tiny_bert, out, "--max-length", "100000"), out)
    assert line == (
        f"--max-length 100000 is more than {tiny_bert} reads (128 positions); pass "
        "--max-length 128 or less"
    )


@pytest.mark.parametrize("model_type", ["bert", "roberta", "mpnet", "distilbert", "gpt2"])
def test_max_positions_is_the_longest_input_that_runs(model_type):
    """The limit named is exact: that many tokens run, one more crashes the model."""
    import torch
    from transformers import AutoModel

    from freezetune.families import max_positions
    from freezetune.testing import tiny_config

    config = tiny_config(model_type)
    limit = max_positions(config)
    assert limit is not None
    model = AutoModel.from_config(config).eval()
    ids = torch.full((1, limit + 1), 5)
    with torch.no_grad():
        model(input_ids=ids[:, :limit])
        with pytest.raises((IndexError, RuntimeError)):
            model(input_ids=ids)


# ---------------------------------------------------------------- a teacher without weights


def _finished_teacher(folder: Path, model: str) -> Path:
    """A teacher run folder as ``--keep-models none`` leaves it: result, config, tokenizer."""
    shutil.copytree(model, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    result = {"status": "succeeded", "task": "sst2", "freeze": "full"}
    (folder / "result.json").write_text(json.dumps(result))
    return folder


def test_teacher_whose_weights_were_removed(capsys, tmp_path, tiny_bert):
    out, teacher = tmp_path / "out", _finished_teacher(tmp_path / "teacher", tiny_bert)
    assert refused(capsys, text(tiny_bert, out, "--teacher", str(teacher)), out) == (
        f"teacher {teacher} has no saved weights (removed, e.g. by a study's --keep-models none "
        f"or best); train it again (freezetune train --freeze full --out {teacher} --overwrite) "
        "or pass another --teacher"
    )


# ---------------------------------------------------------------- argparse's own errors


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["train", "--report-to", "wandb"],
            "--report-to 'wandb' is not a choice; choose one of: none, tensorboard",
        ),
        (
            ["study", "--strategies", "full", "--report-to", "wandb"],
            "--report-to 'wandb' is not a choice; choose one of: none, tensorboard",
        ),
        (
            ["train", "--pooling", "max"],
            "--pooling 'max' is not a choice; choose one of: pooler, cls, mean, last",
        ),
        (
            ["train", "--cache-dtype", "int8"],
            "--cache-dtype 'int8' is not a choice; choose one of: float32, bfloat16, float16",
        ),
        (
            ["train", "--student-pick", "odd"],
            "--student-pick 'odd' is not a choice; choose one of: even, first",
        ),
        (["train", "--epochs", "two"], "--epochs must be a whole number, got 'two'"),
        (["train", "--lr"], "--lr needs a value; see freezetune train --help"),
        (
            [],
            "name a command: freezetune train|inspect|study|report|advise (see freezetune --help)",
        ),
        (["inspect", "--fast"], "unknown argument(s) --fast; see freezetune inspect --help"),
        (
            ["study", "--strategies", "full", "--cache-dtype", "bfloat16"],
            "freezetune study has no flag --cache-dtype; set train.cache_dtype=VALUE instead",
        ),
    ],
)
def test_argparse_errors_are_the_projects_one_line(capsys, tmp_path, monkeypatch, argv, line):
    monkeypatch.chdir(tmp_path)
    assert refused(capsys, argv) == line
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- a Ray address that is no head


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep the server's own log off the stderr the test reads."""


def test_a_ray_address_that_answers_but_is_no_ray_head(capsys, tmp_path):
    pytest.importorskip("ray")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    argv = ["study", "--strategies", "full", "--out-root", str(tmp_path / "studies")]
    started = time.monotonic()
    try:
        line = refused(capsys, [*argv, "--executor", "ray", "--ray-address", address])
    finally:
        server.shutdown()
        server.server_close()
    assert time.monotonic() - started < 30
    assert line.startswith(f"{address} answers but is not a Ray head (no GCS reply: ")
    assert line.endswith("not the dashboard's (8265)")
    assert not (tmp_path / "studies").exists()


def test_the_probe_takes_a_real_socket_that_never_answers(monkeypatch):
    """A port that accepts and then says nothing (no HTTP either) fails in bounded time."""
    pytest.importorskip("ray")
    from freezetune.study.executors import ray_cluster

    monkeypatch.setattr(ray_cluster, "PROBE_S", 1)  # 10 s outside tests

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(UserError, match="is not a Ray head"):
            ray_cluster._probe(address)
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------- --no-progress is quiet


def test_no_progress_hides_transformers_bars_too(capsys, tmp_path, tiny_bert):
    from transformers.utils import logging

    logging.enable_progress_bar()  # as a fresh process has them
    out = tmp_path / "out"
    assert main(text(tiny_bert, out, "--max-length", "16", "--no-inference-cost")) == 0
    err = capsys.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err, err
    assert (out / "result.json").is_file()
