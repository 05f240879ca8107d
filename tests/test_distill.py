"""Distillation as a strategy: the loss, the student's blocks, the teacher run once, exact
resume after SIGKILL, a study's teacher, and bad input (one line, exit 2, nothing written).

Under torchrun: tests/test_distributed.py (a distilled student on 2 processes == on 1).
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import wait_for_step
from freezetune.cli import main
from freezetune.config import RunConfig
from freezetune.distill.loss import kd_loss
from freezetune.distill.student import pick_blocks
from freezetune.distill.teacher import Teacher
from freezetune.errors import UserError
from freezetune.study import StudySpec, run_study
from freezetune.testing import (
    EPS32,
    TINY_RUN_ARGS,
    assert_one_line_error,
    save_tiny_model,
    tiny_run_config,
)
from freezetune.training import prepare, resume, train
from test_resume import _stop_at, assert_same_run, start

# ---- the loss --------------------------------------------------------------------------------


def _softmax(row: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def test_kd_loss_is_hintons_by_hand():
    s, t, y = [[1.0, -1.0], [0.5, 0.25]], [[2.0, 0.0], [-1.0, 1.0]], [0, 1]
    temperature, alpha = 2.0, 0.3
    kl = ce = 0.0
    for srow, trow, label in zip(s, t, y, strict=True):
        p, q = _softmax(trow, temperature), _softmax(srow, temperature)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
        ce -= math.log(_softmax(srow, 1.0)[label])
    expected = alpha * temperature**2 * kl / 2 + (1 - alpha) * ce / 2  # batchmean: / batch
    got = kd_loss(
        torch.tensor(s),
        torch.tensor(t),
        torch.tensor(y),
        temperature=temperature,
        alpha=alpha,
        regression=False,
    )
    # float32 against float64 by hand: about 40 float32 operations (2 x 2 softmaxes at two
    # temperatures, their logs, the KL and CE sums, the weighting), each rounding by at most
    # EPS32 / 2 of its value; the sums do not cancel (the loss is of the order of its largest
    # term), so the relative error stays under 40 x EPS32 / 2 < 32 x EPS32
    assert got.item() == pytest.approx(expected, rel=32 * EPS32)


def test_kd_loss_for_regression_is_mse_to_the_teacher_and_the_labels():
    s, t, y = torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [2.0]]), torch.tensor([0.0, 4.0])
    got = kd_loss(s, t, y, temperature=2.0, alpha=0.25, regression=True)
    assert got.item() == pytest.approx(0.25 * 1.0 + 0.75 * 1.0)


# ---- the student -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("blocks", "keep", "how", "kept"),
    [
        (12, 6, "even", [0, 2, 4, 7, 9, 11]),  # DistilBERT's teacher layers
        (6, 3, "even", [0, 3, 5]),
        (6, 3, "first", [0, 1, 2]),
        (6, 6, "even", [0, 1, 2, 3, 4, 5]),
        (6, 1, "even", [0]),
        (4, 2, "even", [0, 3]),
    ],
)
def test_pick_blocks(blocks, keep, how, kept):
    assert pick_blocks(blocks, keep, how) == kept


@pytest.mark.parametrize("keep", [0, 5])
def test_a_student_deeper_than_the_model_is_refused(keep):
    with pytest.raises(UserError, match=r"pass 1\.\.4"):
        pick_blocks(4, keep, "even")


@pytest.fixture(scope="module")
def deep_bert(tmp_path_factory) -> str:
    return str(save_tiny_model(tmp_path_factory.mktemp("bert4"), layers=4))


def student_config(model: str, out: Path, **distill) -> RunConfig:
    base = tiny_run_config(model, out, train={"epochs": 2, "batch_size": 8, "save_every": 1})
    return RunConfig.from_dict({**base.to_dict(), "distill": distill})


@pytest.fixture(scope="module")
def teacher(deep_bert: str, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "full"
    train(tiny_run_config(deep_bert, out, train={"epochs": 2}))
    return out


def test_the_student_keeps_the_chosen_blocks_and_reloads_cut(deep_bert, tmp_path):
    setup = prepare(student_config(deep_bert, tmp_path / "s", student_layers=2))
    assert setup.units.num_blocks == 2
    whole = prepare(tiny_run_config(deep_bert, tmp_path / "w"))
    layers = {n: p for n, p in setup.model.named_parameters()}
    for new, old in enumerate([0, 3]):  # even: the first block and the last
        for name, value in whole.model.named_parameters():
            if f".layer.{old}." in name:
                assert torch.equal(layers[name.replace(f".layer.{old}.", f".layer.{new}.")], value)
    result = train(setup)
    assert result.total_params < sum(p.numel() for p in whole.model.parameters())
    from transformers import AutoModelForSequenceClassification

    import freezetune.classifier  # noqa: F401

    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    assert saved.config.encoder.num_hidden_layers == 2
    assert sum(p.numel() for p in saved.parameters()) == result.total_params
    assert result.distill is None  # plain fine-tuning of the cut model


# ---- the teacher runs once -------------------------------------------------------------------


@pytest.fixture
def teacher_forwards(monkeypatch) -> list[int]:
    """Batch sizes of every forward the teacher's model runs."""
    calls: list[int] = []
    load = Teacher.load

    def counting(self: Teacher) -> torch.nn.Module:
        model = load(self)
        model.register_forward_pre_hook(
            lambda _m, _a, kw: calls.append(len(kw["input_ids"])), with_kwargs=True
        )
        return model

    monkeypatch.setattr(Teacher, "load", counting)
    return calls


def test_the_teacher_runs_once_and_not_again_on_resume(
    deep_bert, teacher, teacher_forwards, tmp_path
):
    cfg = student_config(
        deep_bert, tmp_path / "s", teacher=str(teacher), student_layers=2, student_pick="first"
    )
    cfg = RunConfig.from_dict(
        {**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "keep_checkpoints": 100}}
    )
    whole = train(cfg)
    assert sum(teacher_forwards) == whole.train_examples == 64  # each example once, 2 epochs
    assert whole.distill["teacher"] == str(teacher) and whole.distill["logits_time_s"] > 0
    teacher_result = json.loads((teacher / "result.json").read_text())
    assert whole.distill["teacher_wall_time_s"] == teacher_result["wall_time_s"]
    out = Path(cfg.out)
    expected = load_file(out / "model.safetensors")
    _stop_at(out, 3)  # as if killed at step 3
    teacher_forwards.clear()
    again = resume(out)
    assert teacher_forwards == []  # the logits came back with the checkpoint
    assert again.final["accuracy"] == whole.final["accuracy"]
    assert again.distill["logits_time_s"] == whole.distill["logits_time_s"]
    weights = load_file(out / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in expected.items())


def test_a_distillation_killed_by_sigkill_resumes_bit_identically(deep_bert, teacher, tmp_path):
    def argv(out: Path) -> list[str]:
        kd = ["--teacher", str(teacher), "--student-layers", "2", "--kd-temperature", "3"]
        return ["train", "--model", deep_bert, *TINY_RUN_ARGS, "--out", str(out), *kd]

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(argv(whole)) == 0
    proc = start(argv(killed))
    wait_for_step(killed, 17, proc)  # of 36
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists()
    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    assert_same_run(whole, killed)


def test_regression_distils_to_the_teachers_predictions(deep_bert, tmp_path, teacher_forwards):
    stsb = {"task": "stsb"}
    t = train(tiny_run_config(deep_bert, tmp_path / "t", task="stsb", data=stsb))
    cfg = tiny_run_config(deep_bert, tmp_path / "s", task="stsb", data=stsb)
    cfg = RunConfig.from_dict({**cfg.to_dict(), "distill": {"teacher": str(t.out)}})
    result = train(cfg)
    assert result.distill is not None and sum(teacher_forwards) == 64
    assert math.isfinite(result.final["pearson"])


# ---- in a study: the same seed's full run is the teacher -------------------------------------


def test_a_study_distils_from_the_same_seed_full_run(deep_bert, tmp_path):
    base = {
        "model": {"name": deep_bert},
        "data": {"task": "sst2", "max_train_samples": 32, "max_eval_samples": 8, "max_length": 20},
        "train": {"epochs": 1, "batch_size": 16},
    }
    student = {"freeze": "full", "distill.student_layers": 2}
    distilled = {**student, "distill.teacher": "@full"}
    spec = StudySpec.from_dict(
        {"name": "kd", "base": base, "strategies": [distilled, student, "full"], "seeds": [0, 1]}
    )
    grid = spec.grid()
    full = {r.seed: r.run_id for r in grid if r.strategy == "full"}
    students = [r for r in grid if r.teacher is not None]
    assert [r.teacher for r in students] == [full[0], full[1]]
    assert all(
        grid.index(r) > next(i for i, g in enumerate(grid) if g.run_id == r.teacher)
        for r in students
    )
    outcome = run_study(spec, tmp_path, jobs=2, progress=False)
    assert (outcome.succeeded, outcome.failed) == (6, 0)
    report = (outcome.folder / "report.md").read_text()
    assert "wall time incl. teacher" in report and "inference examples/s" in report
    for r in students:
        result = json.loads((outcome.folder / "runs" / r.run_id / "result.json").read_text())
        assert result["distill"]["teacher"] == str(outcome.folder / "runs" / r.teacher)


def test_a_study_without_full_cannot_distil_from_it(deep_bert):
    with pytest.raises(UserError, match="add full to strategies"):
        StudySpec.from_dict(
            {
                "name": "kd",
                "base": {"model": {"name": deep_bert}},
                "strategies": [{"freeze": "head", "distill.teacher": "@full"}],
            }
        )


# ---- bad input: one line, exit 2, nothing written --------------------------------------------


def _other_tokenizer_model(path: Path) -> str:
    from transformers import BertTokenizerFast

    save_tiny_model(path)
    vocab = path / "small-vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghij"]))
    for f in path.glob("tokenizer*"):
        f.unlink()
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(path)
    return str(path)


def _unfinished(teacher: Path, tmp: Path) -> Path:
    import shutil

    folder = tmp / "unfinished"
    shutil.copytree(teacher, folder)
    (folder / "result.json").unlink()
    return folder


def _own_files(tmp: Path, labels: str) -> list[str]:
    rows = "\n".join(f"text {i},{labels[i % len(labels)]}" for i in range(24))
    for name in ("train", "dev"):
        (tmp / f"{name}.csv").write_text("text,label\n" + rows + "\n")
    return [
        "--task",
        "mine",
        "--train",
        str(tmp / "train.csv"),
        "--validation",
        str(tmp / "dev.csv"),
    ]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "does not exist"),
        ("unfinished", "has not finished"),
        ("other task", "was trained on task 'mrpc'"),
        ("other labels", "predicts labels"),
        ("too deep", "does not fit the model's 4 blocks"),
        ("tokenizer", "tokenizer splits"),
        ("study reference", "outside a study"),
    ],
)
def test_bad_distillation_input_is_one_line_and_writes_nothing(
    case, expected, deep_bert, teacher, tmp_path, capsys
):
    model, extra = deep_bert, ["--teacher", str(teacher)]
    if case == "missing":
        extra = ["--teacher", str(tmp_path / "nope")]
    elif case == "unfinished":
        extra = ["--teacher", str(_unfinished(teacher, tmp_path))]
    elif case == "other task":
        mrpc = tmp_path / "mrpc"
        train(tiny_run_config(deep_bert, mrpc, task="mrpc"))
        extra = ["--teacher", str(mrpc)]
    elif case == "other labels":
        abc = tmp_path / "abc"
        assert (
            main(
                [
                    "train",
                    "--model",
                    deep_bert,
                    *_own_files(tmp_path, "abc"),
                    "--out",
                    str(abc),
                    "--no-progress",
                    "--no-inference-cost",
                ]
            )
            == 0
        )
        extra = ["--teacher", str(abc), *_own_files(tmp_path, "ab")]
    elif case == "too deep":
        extra += ["--student-layers", "5"]
    elif case == "tokenizer":
        model = _other_tokenizer_model(tmp_path / "other-tok")
    elif case == "study reference":
        extra = ["--teacher", "@full"]
    out = tmp_path / "student"
    capsys.readouterr()
    argv = ["train", "--model", model, "--max-train-samples", "16", "--no-progress"]
    code = main([*argv, *extra, "--out", str(out)])
    assert_one_line_error(code, capsys.readouterr().err, expected, alone=False)
    assert not out.exists()
