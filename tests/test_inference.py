"""Inference cost of a saved model (``measure_inference``) and the result fields that carry it.

Speeds depend on the machine and on what else runs, so nothing here asserts a number of
examples/s or milliseconds: only that they are there, positive and consistent.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from freezetune.batching import Collator, tokenize
from freezetune.classifier import FreezetuneForSequenceClassification
from freezetune.inference import count_model_params, load_saved, measure_inference, weight_bytes
from freezetune.models import load_model
from freezetune.records import _EXAMPLE, RunResult
from freezetune.tasks import Example
from freezetune.testing import assert_relatively_close, reordering_tolerance, tiny_run_config
from freezetune.training import prepare, train
from freezetune.units import split_units

KEYS = {
    "examples_per_s", "latency_ms_p50", "latency_ms_p90", "batch_size", "examples",
    "latency_samples", "warmup", "params", "disk_bytes", "disk_mb", "threads", "bf16", "device",
    "seconds",
}  # fmt: skip


@pytest.fixture(scope="module")
def features(tiny_bert) -> tuple[list[dict], Collator]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    examples = [Example((" ".join(["word"] * (1 + i % 7)),), i % 2) for i in range(20)]
    return tokenize(examples, tokenizer, max_length=24), Collator(tokenizer.pad_token_id)


class Recording:
    """A collator that remembers what it was asked to pad."""

    def __init__(self, collate: Collator):
        self.collate, self.calls = collate, []

    def __call__(self, batch):
        self.calls.append([f["index"] for f in batch])
        return self.collate(batch)


def test_measure_inference_on_a_saved_model(tiny_bert, features):
    feats, collate = features
    found = measure_inference(Path(tiny_bert), feats, collate, batch_size=8, bf16=False,
                              latency_samples=5, warmup=1)  # fmt: skip
    assert set(found) == KEYS
    assert found["examples_per_s"] > 0 and found["seconds"] > 0
    assert 0 < found["latency_ms_p50"] <= found["latency_ms_p90"]
    assert (found["batch_size"], found["examples"], found["latency_samples"]) == (8, 20, 5)
    assert found["threads"] == torch.get_num_threads() and found["device"] == "cpu"
    assert found["bf16"] is False
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)  # a native HF head
    assert found["params"] == sum(p.numel() for p in model.parameters())
    files = [p for p in Path(tiny_bert).iterdir() if p.suffix in (".safetensors", ".bin")]
    assert found["disk_bytes"] == sum(p.stat().st_size for p in files) > 0
    assert found["disk_mb"] == round(found["disk_bytes"] / 2**20, 3)
    json.dumps(found)  # plain JSON


def test_the_samples_are_all_features_in_batches_then_the_first_ones_alone(tiny_bert, features):
    feats, collate = features
    calls = []
    for _ in range(2):
        recording = Recording(collate)
        measure_inference(Path(tiny_bert), feats, recording, batch_size=8, bf16=True,
                          latency_samples=4)  # fmt: skip
        calls.append(recording.calls)
    assert calls[0] == calls[1]  # deterministic
    assert calls[0] == [list(range(0, 8)), list(range(8, 16)), list(range(16, 20)),
                        [0], [1], [2], [3]]  # fmt: skip
    many = measure_inference(Path(tiny_bert), feats[:3], collate, batch_size=2, bf16=True,
                             latency_samples=100, warmup=0)  # fmt: skip
    assert many["latency_samples"] == 3 and many["examples"] == 3 and many["bf16"] is True


def test_bad_arguments_name_the_value(tiny_bert, features):
    feats, collate = features
    with pytest.raises(ValueError, match="at least one feature"):
        measure_inference(Path(tiny_bert), [], collate, batch_size=8, bf16=False)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        measure_inference(Path(tiny_bert), feats, collate, batch_size=0, bf16=False)
    with pytest.raises(ValueError, match="latency_samples"):
        measure_inference(Path(tiny_bert), feats, collate, batch_size=8, bf16=False,
                          latency_samples=0)  # fmt: skip


def test_weight_files_only_count_the_top_level(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x" * 5)
    (tmp_path / "tokenizer.json").write_bytes(b"x" * 100)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "model.safetensors").write_bytes(b"x" * 1000)
    assert weight_bytes(tmp_path) == 15


def test_a_trained_lora_run_is_measured_merged(tiny_bert, tmp_path):
    config = tiny_run_config(tiny_bert, tmp_path / "run", "lora", train_samples=32)
    setup = prepare(config)
    result = train(setup)
    tokenizer = setup.loaded.processor
    feats = tokenize(setup.data.validation, tokenizer, max_length=config.data.max_length)
    collate = Collator.for_task(tokenizer, setup.data.task)
    found = measure_inference(result.out, feats, collate, batch_size=config.train.eval_batch_size,
                              bf16=config.train.bf16, latency_samples=4)  # fmt: skip
    model = load_saved(result.out, torch.device("cpu"))
    assert isinstance(model, FreezetuneForSequenceClassification) and not model.training
    plain = load_model(tiny_bert, num_labels=2).model  # the same classifier without adapters
    assert found["params"] == count_model_params(plain) < result.total_params
    assert found["examples"] == len(feats) and found["disk_bytes"] == weight_bytes(result.out)
    with torch.inference_mode():  # the saved model is the trained one: same predictions
        batch = {k: v for k, v in collate(feats[:4]).items() if k not in ("labels", "index")}
        setup.model.eval()
        got, expected = model(**batch).logits, setup.model(**batch).logits
    # merged (x(W + BA)) against adapted (xW + (xA)B): the same terms, summed in another order
    # (testing.reordering_tolerance), at most 4 x hidden each, 8 sums in sequence a block, 2 for
    # the head. Unmerged or untrained adapters would leave a whole LoRA update's difference.
    layers = split_units(model).num_blocks
    hidden = next(
        p for n, p in model.named_parameters() if n.endswith("word_embeddings.weight")
    ).shape[1]
    assert_relatively_close(got, expected, reordering_tolerance(4 * hidden, 8 * layers + 2))


def test_run_result_round_trips_inference_and_distill():
    data = copy.deepcopy(_EXAMPLE)
    data["inference"] = {"examples_per_s": 100.0, "latency_ms_p50": 2.0, "params": 100}
    data["distill"] = {"teacher": "runs/t", "teacher_wall_time_s": 9.5, "logits_time_s": 1.0}
    result = RunResult.from_dict(data)
    assert result.inference == data["inference"] and result.distill == data["distill"]
    assert result.to_dict() == data
    assert RunResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert list(result.to_dict())[-6:-4] == ["inference", "distill"]  # before the provenance


def test_old_result_files_read_without_inference_or_distill():
    old = {k: v for k, v in _EXAMPLE.items() if k not in ("inference", "distill")}
    result = RunResult.from_dict(old)
    assert result.inference is None and result.distill is None
    assert result.to_dict() == {**old, "inference": None, "distill": None} == _EXAMPLE
