"""Frozen-prefix caching: the cached path equals the uncached one, for every family it allows."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from freezetune import RunConfig, train
from freezetune.cache import PrefixCache, check_cacheable
from freezetune.classifier import FreezetuneConfig, FreezetuneForSequenceClassification
from freezetune.families import FAMILIES
from freezetune.modality import TEXT
from freezetune.testing import (
    EPS_BF16,
    TINY_CONFIG,
    assert_relatively_close,
    assert_runs_alike,
    reordering_tolerance,
    tiny_config,
)
from freezetune.units import split_units

#: every family whose record allows caching is checked here against the uncached path
CACHEABLE = sorted(name for name, family in FAMILIES.items() if family.cacheable)

#: a cached forward adds what the plain one adds, over other shapes (stored states, trimmed
#: padding), so maybe in another order (freezetune.testing.reordering_tolerance): the widest sum
#: of the tiny models is an MLP's 4 x hidden (GPT-2's); from level 2 up, at most 2 blocks of
#: 8 sums in sequence (Q, K, V, scores, weighted sum, output, up, down) and the head's 2 run on
#: stored states: 2.7e-4 of the logits' norm. Another example's states change them by 30-150%,
#: a block skipped by 0.6% (a tiny random BERT's blocks are near identities) to 30%.
FORWARD = reordering_tolerance(
    4 * TINY_CONFIG["hidden_size"], 8 * (TINY_CONFIG["num_hidden_layers"] - 1) + 2
)


def tiny_classifier(family: str) -> FreezetuneForSequenceClassification:
    torch.manual_seed(0)
    encoder = AutoModel.from_config(tiny_config(family))
    pooling = "last" if FAMILIES[family].causal else "mean"
    head = FreezetuneConfig(encoder=encoder.config, pooling=pooling, num_labels=2)
    return FreezetuneForSequenceClassification(head, encoder=encoder).eval()


def padded_batch(lengths: list[int], width: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 60, (len(lengths), width), generator=g)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    return {
        "input_ids": ids * mask,
        "attention_mask": mask,
        "labels": torch.tensor([0, 1, 1][: len(lengths)]),
        "index": torch.arange(len(lengths)),
    }


@pytest.mark.parametrize("family", CACHEABLE)
@pytest.mark.parametrize("level", [2, 3, 4, 5])  # 5 = everything but the head frozen
def test_cached_forward_equals_uncached(family, level):
    model = tiny_classifier(family)
    units = split_units(model)
    assert check_cacheable(model, units) is None
    lengths = [9, 5, 7]
    batch = padded_batch(lengths, 9)
    with torch.no_grad():
        expected = model(**{k: v for k, v in batch.items() if k != "index"})
        cache = PrefixCache(model, units, lengths, shapes=TEXT)
        first = cache.forward(dict(batch), level)  # computes and stores
        second = cache.forward(dict(batch), level)  # starts above the frozen blocks
    assert (cache.misses, cache.hits) == (1, 1)
    assert_relatively_close(first.logits, expected.logits, FORWARD, "logits, storing")
    assert_relatively_close(second.logits, expected.logits, FORWARD, "logits, from the cache")
    assert_relatively_close(second.loss, expected.loss, FORWARD, "loss, from the cache")


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_wider_padding_does_not_change_cached_results(family):
    model = tiny_classifier(family)
    units = split_units(model)
    cache = PrefixCache(model, units, [9, 5, 7], shapes=TEXT)
    with torch.no_grad():
        cache.forward(padded_batch([9, 5, 7], 9), 3)
        narrow = padded_batch([9, 5, 7], 9)
        wide = padded_batch([9, 5, 7], 12)
        wide["input_ids"][:, :9] = narrow["input_ids"]
        expected = model(**{k: v for k, v in wide.items() if k != "index"})
        got = cache.forward(wide, 3)
    assert cache.hits == 1
    assert_relatively_close(got.logits, expected.logits, FORWARD, "logits, wider padding")


@pytest.mark.parametrize("family", ["bert", "deberta-v2", "llama"])
def test_advancing_the_cache_equals_recomputing_it(family):
    model = tiny_classifier(family)
    units = split_units(model)
    lengths = [9, 5, 7]
    batch = padded_batch(lengths, 9)
    advanced, fresh = (
        PrefixCache(model, units, lengths, shapes=TEXT),
        PrefixCache(model, units, lengths, shapes=TEXT),
    )
    with torch.no_grad():
        advanced.forward(dict(batch), 2)
        advanced.set_level(4)  # run only blocks 1 and 2 on the stored states
        fresh.forward(dict(batch), 4)
    assert advanced.store.level == 4 and advanced.store.filled.all()
    assert_relatively_close(advanced.store.data, fresh.store.data, FORWARD, "stored states")
    with torch.no_grad():
        out = advanced.forward(dict(batch), 4)
        expected = model(**{k: v for k, v in batch.items() if k != "index"})
    assert advanced.hits == 1
    assert_relatively_close(out.logits, expected.logits, FORWARD, "logits, advanced")


def test_thawing_drops_the_cache():
    model = tiny_classifier("bert")
    cache = PrefixCache(model, split_units(model), [9, 5, 7], shapes=TEXT)
    with torch.no_grad():
        cache.forward(padded_batch([9, 5, 7], 9), 4)
    cache.set_level(3)
    assert cache.store.level == 3 and not cache.store.filled.any()


def test_memory_mapped_cache_in_bfloat16(tmp_path):
    model = tiny_classifier("bert")
    units = split_units(model)
    cache = PrefixCache(model, units, [9, 5, 7], "bfloat16", tmp_path / "c.npy", 0, shapes=TEXT)
    batch = padded_batch([9, 5, 7], 9)
    with torch.no_grad():
        expected = model(**{k: v for k, v in batch.items() if k != "index"})
        cache.forward(dict(batch), 3)
        got = cache.forward(dict(batch), 3)
    assert (tmp_path / "c.npy").stat().st_size > 9 * 32 * 2
    assert cache.store.data.dtype == torch.bfloat16
    # stored in bfloat16, each state is off by at most EPS_BF16 / 2 of itself; block 2 and the
    # head carry a relative error through about unchanged (LayerNorm rescales it away), so the
    # logits are off by ~EPS_BF16 / 2 of their norm: bounded by 4 x that, 1.6% (float32's
    # rounding adds at most FORWARD, 2.7e-4). Another example's states change the logits by 30-150%.
    assert_relatively_close(got.logits, expected.logits, 2 * EPS_BF16, "logits, bfloat16 cache")


def test_albert_is_refused_with_a_reason():
    encoder = AutoModel.from_config(tiny_config("albert"))
    model = FreezetuneForSequenceClassification(
        FreezetuneConfig(encoder=encoder.config, pooling="cls", num_labels=2), encoder=encoder
    )
    assert "shares weights" in check_cacheable(model, split_units(model))


def wrap(encoder: torch.nn.Module) -> FreezetuneForSequenceClassification:
    head = FreezetuneConfig(encoder=encoder.config, pooling="cls", num_labels=2)
    return FreezetuneForSequenceClassification(head, encoder=encoder)


def test_deberta_conv_after_block_0_is_refused():
    model = wrap(AutoModel.from_config(tiny_config("deberta-v2", conv_kernel_size=3)))
    assert check_cacheable(model, split_units(model)) == (
        "encoder.encoder.conv runs after block 0, so a cache cannot start above it"
    )


@pytest.mark.parametrize("family", ["qwen3", "deberta", "mpnet"])
def test_families_not_verified_are_refused(family):
    model = wrap(AutoModel.from_config(tiny_config(family)))
    assert check_cacheable(model, split_units(model)) == (
        f"caching is not verified for {family} models"
    )


TIMES = ("train_time_s", "wall_time_s")


def run(tiny_bert, tmp_path, freeze, cache, epochs=3, name="", **train_opts):
    return train(
        RunConfig.from_dict(
            {
                "model": {"name": tiny_bert},
                "data": {
                    "task": "sst2",
                    "max_train_samples": 48,
                    "max_eval_samples": 16,
                    "max_length": 24,
                },
                "train": {
                    "epochs": epochs,
                    "batch_size": 16,
                    "progress": False,
                    "cache": cache,
                    **train_opts,
                },
                "optim": {"lr": 1e-3},
                "freeze": freeze,
                "out": str(tmp_path / f"{name}{freeze}-{cache}".replace(":", "")),
            }
        )
    ).to_dict()


@pytest.mark.parametrize("freeze", ["bottom:2", "head", "progressive"])
def test_cached_training_matches_uncached_training(tiny_bert, tmp_path, freeze):
    epochs = 8 if freeze == "progressive" else 3  # progressive freezes late in training
    cached = run(tiny_bert, tmp_path, freeze, True, epochs)
    plain = run(tiny_bert, tmp_path, freeze, False, epochs)
    assert cached["cache"]["train"]["hits"] > 0 and plain["cache"] is None
    # batches of 16 x 24 tokens, 48 / 16 = 3 steps an epoch at lr 1e-3: the loss curve and the
    # weights within what the reordered sums of S steps explain (freezetune.testing); one step
    # more or less, or a frozen block that trains, moves a tensor by 5-10% of its norm
    name = freeze.replace(":", "")
    alike = {"summands": 16 * 24, "steps": 3 * epochs, "lr": 1e-3}
    assert_runs_alike(tmp_path / f"{name}-True", tmp_path / f"{name}-False", **alike)


def test_spilled_cache_trains_like_ram_and_is_removed_after(tiny_bert, tmp_path):
    ram = run(tiny_bert, tmp_path, "bottom:2", True)
    shared = tmp_path / "shared-cache"  # e.g. set once in a study's base config
    spilled = run(
        tiny_bert, tmp_path, "bottom:2", True, name="spill-", cache_budget_mb=0, cache_dir=shared
    )
    assert spilled["cache"]["train"]["file"].startswith(str(shared / "spill-bottom2-True-"))
    assert spilled["final"] == {**ram["final"], **{k: spilled["final"][k] for k in TIMES}}
    assert not any(shared.rglob("*.npy")), "the spilled cache outlived its run"


def test_advancing_keeps_each_module_in_its_mode():
    from freezetune.freezing import set_train_modes

    model = tiny_classifier("bert")
    units = split_units(model)
    set_train_modes(model, units, 2, True)  # embeddings + block 0 frozen (eval), rest train
    cache = PrefixCache(model, units, [9, 5, 7], shapes=TEXT)
    with torch.no_grad():
        cache.forward(padded_batch([9, 5, 7], 9), 2)
    set_train_modes(model, units, 4, True)
    cache.set_level(4)
    assert cache.store.level == 4
    assert not model.encoder.embeddings.training and not model.encoder.encoder.layer[2].training
    assert model.classifier.training and model.dropout.training
