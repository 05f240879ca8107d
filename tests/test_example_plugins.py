"""The example plugins of ``examples/plugins`` (package ``freezetune-examples``), installed as a
user would install them: found through entry points, with nothing of them in freezetune."""

from __future__ import annotations

import json
import signal

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import Trainer

from conftest import wait_for_step
from freezetune.cli import main
from freezetune.config import RunConfig
from freezetune.distill.student import pick_blocks
from freezetune.errors import UserError
from freezetune.freezing import make_policy, parse_freeze
from freezetune.freezing.registry import POLICIES
from freezetune.integrations.transformers import FreezeCallback
from freezetune.testing import assert_one_line_error, save_tiny_model, tiny_run_config
from freezetune.training import prepare, train
from test_resume import assert_same_run, cli, start
from test_trainer_callback import hf_tiny_bert, random_data, tiny_args

lisa = pytest.importorskip("freezetune_examples.lisa")


def test_lisa_comes_from_its_package_and_refuses_what_cannot_be_sampled():
    assert "lisa" in POLICIES and POLICIES.source("lisa") == "freezetune-examples"
    policy = make_policy(parse_freeze("lisa:2"), 6, 100, 10, 0.1, seed=3)
    assert isinstance(policy, lisa.Lisa) and (policy.k, policy.every, policy.seed) == (2, 50, 3)
    assert make_policy(parse_freeze("lisa:k=1,seed=7"), 6, 100, 10, 0.1, seed=3).seed == 7
    with pytest.raises(UserError, match=r"^--freeze lisa:k=6: k=6 trains all 6 blocks"):
        make_policy(parse_freeze("lisa:k=6"), 6, 100, 10, 0.1)
    with pytest.raises(UserError, match=r"^--freeze lisa:every=0: every=0 must be >= 1$"):
        parse_freeze("lisa:every=0")


@pytest.fixture(scope="module")
def six_blocks(tmp_path_factory) -> str:
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-bert-6"), layers=6))


def test_lisa_trains_sampled_blocks_and_leaves_the_others_bit_identical(six_blocks, tmp_path):
    # 10 steps, a draw every 5: two draws of 2 of the 6 blocks, so 2 or more never train
    train_opts = {"epochs": 1, "batch_size": 8}
    cfg = tiny_run_config(
        six_blocks, tmp_path, "lisa:k=2,every=5", train_samples=80, train=train_opts
    )
    setup = prepare(cfg)
    model, units = setup.model, setup.units
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train(setup)
    draws = [lisa.Lisa(6, 2, 5, cfg.train.seed).sampled(period) for period in (0, 1)]
    assert draws[0] != draws[1]  # the timeline switches
    expected = [[f"block.{b}" for b in range(6) if b not in d] for d in draws]
    assert [(e["step"], e["frozen"]) for e in result.freeze_timeline] == list(
        zip((0, 5), expected, strict=True)
    )
    assert all(e["frozen_units"] == 0 for e in result.freeze_timeline)  # the embeddings train
    never = [b for b in range(6) if all(b not in d for d in draws)]
    assert len(never) >= 2
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    for name in (n for b in never for n in units.units[b + 1].params):
        assert name not in changed, name
    for unit in (units.units[0], *(units.units[b + 1] for b in draws[1]), units.units[-1]):
        assert set(unit.params) & changed, unit.name  # the embeddings, the head, the sampled
    last = {n for b in range(6) if b not in draws[1] for n in units.units[b + 1].params}
    for name, p in model.named_parameters():
        assert p.requires_grad == (name not in last) and (name not in last or p.grad is None)


def test_lisa_resumes_bit_identically_after_a_kill(tiny_bert, tmp_path):
    whole, killed, freeze = tmp_path / "whole", tmp_path / "killed", "lisa:k=2,every=5"
    assert main(cli(tiny_bert, whole, freeze)) == 0
    proc = start(cli(tiny_bert, killed, freeze))
    wait_for_step(killed, 13, proc)  # of 36, in a period: its set comes from the checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists()
    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    assert_same_run(whole, killed)
    timeline = json.loads((whole / "result.json").read_text())["freeze_timeline"]
    assert len({tuple(e["frozen"]) for e in timeline}) > 1


def test_a_study_compares_lisa_with_full(tiny_bert, tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({"strategies": ["full", "lisa:k=1,every=5"]}))
    argv = [
        "study", "--name", "lisa", "--config", str(config), "--seeds", "0",
        "--model", tiny_bert, "--task", "sst2", "--max-train-samples", "32",
        "--max-eval-samples", "16", "--max-length", "32", "--epochs", "1", "--batch-size", "8",
        "--out-root", str(tmp_path / "studies"), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    report = (tmp_path / "studies" / "lisa" / "report.md").read_text()
    assert "lisa:k=1,every=5" in report and "| full" in report


def test_lisa_under_trainer_switches_and_keeps_state_only_for_what_trains(tmp_path):
    model = hf_tiny_bert()  # 3 blocks
    freeze = FreezeCallback("lisa:k=1,every=2")
    args = tiny_args(tmp_path, max_steps=6, seed=4)
    trainer = Trainer(model=model, args=args, train_dataset=random_data(), callbacks=[freeze])
    trainer.train()
    expected = [lisa.Lisa(3, 1, 2, seed=4).sampled(p) for p in range(3)]
    got = [(e["step"], e.get("frozen")) for e in freeze.changes]
    assert [s for s, _ in got] == [
        p * 2 for p in range(3) if p == 0 or expected[p] != expected[p - 1]
    ]
    assert got[0][1] == [f"block.{b}" for b in range(3) if b not in expected[0]]
    state, params = trainer.optimizer.state, dict(model.named_parameters())
    for name, p in params.items():  # frozen now: no AdamW state kept for it
        assert (p in state) == p.requires_grad, name


# ---- patient distillation: an objective from the same package --------------------------------


@pytest.fixture(scope="module")
def pkd_teacher(six_blocks, tmp_path_factory):
    out = tmp_path_factory.mktemp("pkd-teacher") / "full"
    train(tiny_run_config(six_blocks, out, train_samples=32))
    return out


def pkd_cli(model, out, teacher, objective):
    return [
        *cli(model, out, "full"),
        *("--teacher", str(teacher), "--student-layers", "3", "--objective", objective),
    ]


def test_pkd_comes_from_its_package_and_matches_the_kept_blocks(six_blocks, pkd_teacher, tmp_path):
    from freezetune.objectives import OBJECTIVES

    assert OBJECTIVES.source("pkd") == "freezetune-examples"
    # mean pooling reads the mask, and with 64 tokens batches pad to different lengths (the
    # dev set's evaluation too, which the student's hooks must not read)
    cfg = tiny_run_config(
        six_blocks, tmp_path / "s", train_samples=32, max_length=64,
        model_options={"pooling": "mean"},
    )  # fmt: skip
    data = {**cfg.to_dict(), "objective": "pkd:beta=10"}
    data["distill"] = {"teacher": str(pkd_teacher), "student_layers": 3}
    result = train(RunConfig.from_dict(data))
    assert result.distill["objective"] == "pkd" and result.distill["beta"] == 10.0
    # the student keeps 3 evenly spaced blocks; its last is left to KD
    assert result.distill["matched_teacher_blocks"] == pick_blocks(6, 3, "even")[:-1]


def test_pkd_at_beta_0_is_distillation_and_beta_changes_training(six_blocks, pkd_teacher, tmp_path):
    runs = {}
    for name, objective in (("kd", "distill"), ("pkd0", "pkd:beta=0"), ("pkd", "pkd:beta=100")):
        assert main(pkd_cli(six_blocks, tmp_path / name, pkd_teacher, objective)) == 0
        runs[name] = load_file(tmp_path / name / "model.safetensors")
    assert all(torch.equal(runs["kd"][k], runs["pkd0"][k]) for k in runs["kd"])
    assert not all(torch.equal(runs["kd"][k], runs["pkd"][k]) for k in runs["kd"])


def test_pkd_resumes_bit_identically_after_a_kill(six_blocks, pkd_teacher, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(pkd_cli(six_blocks, whole, pkd_teacher, "pkd:beta=100")) == 0
    proc = start(pkd_cli(six_blocks, killed, pkd_teacher, "pkd:beta=100"))
    wait_for_step(killed, 17, proc)  # of 36: the teacher's features come from the checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists()
    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    assert_same_run(whole, killed)


def test_pkd_without_a_deep_enough_student_is_one_line(six_blocks, pkd_teacher, tmp_path, capsys):
    argv = [*cli(six_blocks, tmp_path / "s", "full"), "--teacher", str(pkd_teacher),
            "--objective", "pkd"]  # fmt: skip
    code = main(argv)
    assert_one_line_error(code, capsys.readouterr().err, "--student-layers 2 or more")
    assert not (tmp_path / "s").exists()
