"""``--report-to tensorboard``: the curves a run writes, read back as TensorBoard reads them."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from freezetune.cli import main
from freezetune.errors import UserError
from freezetune.tensorboard import MISSING, TensorBoardObserver, require
from freezetune.testing import assert_one_line_error, tiny_run_config
from freezetune.training import resume, train


def events(out: Path):
    """Everything TensorBoard shows of run folder ``out`` (its ``tensorboard`` folder)."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    loaded = accumulator.EventAccumulator(
        str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}
    )
    loaded.Reload()
    return loaded


def scalars(loaded, tag: str) -> dict[int, float]:
    points = loaded.Scalars(tag)
    assert len({p.step for p in points}) == len(points), f"{tag}: a step drawn twice"
    return {p.step: p.value for p in points}


def texts(loaded, tag: str) -> list[str]:
    return [e.tensor_proto.string_val[0].decode() for e in loaded.Tensors(f"{tag}/text_summary")]


def records(out: Path, event: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


@pytest.fixture(scope="module")
def gradual_run(tiny_bert, tmp_path_factory) -> Path:
    """2 epochs of 4 steps, one more unit thawed every step, evaluated every 2 steps."""
    pytest.importorskip("tensorboard")
    out = tmp_path_factory.mktemp("tb") / "gradual"
    train_options = {"epochs": 2, "eval_every": 2, "report_to": "tensorboard"}
    train(tiny_run_config(tiny_bert, out, "gradual:steps=1", train=train_options))
    return out


def test_loss_and_learning_rates_at_every_step(gradual_run):
    loaded = events(gradual_run)
    assert sorted(scalars(loaded, "train/loss")) == list(range(1, 9))
    tags = loaded.Tags()["scalars"]
    units = ["embeddings", "block.0", "block.1", "block.2", "head"]
    assert {f"train/lr/{u}" for u in units} <= set(tags)
    head_lr = scalars(loaded, "train/lr/head")
    assert sorted(head_lr) == list(range(1, 9)) and all(lr > 0 for lr in head_lr.values())


def test_dev_metrics_at_every_evaluation(gradual_run):
    loaded, evals = events(gradual_run), records(gradual_run, "eval")
    assert [r["step"] for r in evals] == [2, 4, 6, 8]
    for name in ("accuracy", "loss"):
        drawn = scalars(loaded, f"dev/{name}")
        assert drawn == pytest.approx({r["step"]: r[name] for r in evals})
    assert scalars(loaded, "train/epoch") == pytest.approx({2: 0.5, 4: 1.0, 6: 1.5, 8: 2.0})
    assert set(scalars(loaded, "time/wall_s")) == {2, 4, 6, 8}
    assert not any(tag in loaded.Tags()["scalars"] for tag in ("dev/step", "dev/epoch"))


def test_freezing_scalars_follow_the_timeline(gradual_run):
    loaded, timeline = events(gradual_run), records(gradual_run, "freeze")
    assert len(timeline) > 2  # gradual: a change at (nearly) every step
    frozen_units = scalars(loaded, "freezing/frozen_units")
    trainable = scalars(loaded, "freezing/trainable_params")
    assert frozen_units == {r["step"]: r["frozen_units"] for r in timeline}
    assert trainable == {r["step"]: r["trainable_params"] for r in timeline}
    assert texts(loaded, "freezing/trainable")[0] == timeline[0]["trainable"]


def test_the_resolved_config_is_text(gradual_run):
    (text,) = texts(events(gradual_run), "config")
    config = json.loads((gradual_run / "run_config.json").read_text())
    start = json.loads((gradual_run / "metrics.jsonl").read_text().splitlines()[0])
    total = f"{start['total_steps']} optimizer steps"  # the start record reaches observers too
    assert text.startswith(f"{total}\n\n```yaml\n") and text.endswith("\n```")
    assert "freeze: gradual:steps=1" in text and "report_to: tensorboard" in text
    assert f"name: {config['model']['name']}" in text


def test_cache_hit_rate_when_frozen_states_are_cached(tiny_bert, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "bottom2"
    train_options = {"epochs": 2, "report_to": "tensorboard"}
    train(tiny_run_config(tiny_bert, out, "bottom:2", train=train_options))
    # epoch 1 computes every batch's frozen prefix, epoch 2 reads all of them back
    assert scalars(events(out), "cache/hit_rate") == pytest.approx({4: 0.0, 8: 0.5})


def test_a_resumed_run_draws_every_step_once(tiny_bert, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "resumed"
    options = {"epochs": 2, "save_every": 1, "keep_checkpoints": 10, "report_to": "tensorboard"}
    train(tiny_run_config(tiny_bert, out, "bottom:1", train=options))
    before = scalars(events(out), "train/loss")
    # as if stopped after step 3's checkpoint, having written curves up to step 8
    (out / "result.json").unlink()
    for folder in (out / "checkpoints").glob("step-*"):
        if int(folder.name.removeprefix("step-")) > 3:
            shutil.rmtree(folder)
    resume(out)
    loaded = events(out)
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert scalars(loaded, "train/loss") == pytest.approx(before)  # resume is exact
    assert sorted(scalars(loaded, "dev/accuracy")) == [4, 8]
    assert len(texts(loaded, "config")) == 1


def test_starting_afresh_drops_an_earlier_starts_curves(tmp_path):
    pytest.importorskip("tensorboard")
    for loss in (9.0, 1.0):
        observer = TensorBoardObserver(tmp_path, {"freeze": "full"})
        observer.on_record({"event": "freeze", "step": 0, "frozen_units": 0})
        observer.on_step(1, loss, {"head": 1e-3})
        observer.close()
    assert scalars(events(tmp_path), "train/loss") == {1: 1.0}


def test_a_skipped_batch_leaves_its_steps_loss_out(tmp_path):
    pytest.importorskip("tensorboard")
    observer = TensorBoardObserver(tmp_path, {})
    observer.on_step(1, 0.7, {})
    observer.on_record({"event": "skipped", "step": 1})
    observer.on_step(2, 0.0, {})
    observer.on_step(3, 0.6, {})
    observer.close()
    loaded = events(tmp_path)
    assert scalars(loaded, "train/loss") == pytest.approx({1: 0.7, 3: 0.6})
    assert scalars(loaded, "train/skipped_batch") == {2: 1.0}


def test_no_report_to_writes_no_tensorboard_folder(tiny_bert, tmp_path):
    out = tmp_path / "plain"
    train(tiny_run_config(tiny_bert, out, "head"))
    assert (out / "result.json").exists() and not (out / "tensorboard").exists()


def test_without_the_package_it_is_one_line_and_nothing_is_written(
    capsys, monkeypatch, tiny_bert, tmp_path
):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(UserError, match="pip install 'freezetune\\[tensorboard\\]'"):
        require()
    out = tmp_path / "out"
    argv = ["train", "--model", tiny_bert, "--max-train-samples", "32", "--no-progress"]
    code = main([*argv, "--report-to", "tensorboard", "--out", str(out)])
    assert assert_one_line_error(code, capsys.readouterr().err, alone=False) == MISSING
    assert not out.exists()
