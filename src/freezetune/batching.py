"""Turn examples into padded batches in an order that depends only on (seed, epoch).

`tokenize` makes features, `Collator` pads a batch of them, and `make_loader` builds the
`DataLoader`. Its order comes from `EpochSampler` alone, or, as one rank of a data-parallel
job, from `ShardedBatches`: every rank draws the same global order and takes its slice of each
global batch, or, when frozen-prefix caching is on, keeps a fixed shard of the data so its
cache stays its own. Nothing here joins a process group: the rank and world come in as numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from freezetune.errors import UserError
from freezetune.tasks import Example, TaskInfo

__all__ = [
    "Collator",
    "EpochSampler",
    "Feature",
    "ShardedBatches",
    "make_loader",
    "rank_share_loader",
    "set_epoch",
    "token_lengths",
    "tokenize",
]

Feature = dict[str, Any]
"""One tokenized example: input_ids, attention_mask, [token_type_ids], labels (int or float)."""


def token_lengths(features: Sequence[Feature]) -> list[int] | None:
    """Token counts of tokenized features; None for fixed-shape inputs (images).

    >>> token_lengths([{"input_ids": [1, 2, 3]}]), token_lengths([{"pixel_values": None}])
    ([3], None)
    """
    if not features or "input_ids" not in features[0]:
        return None
    return [len(f["input_ids"]) for f in features]


def tokenize(
    examples: Sequence[Example], tokenizer: Any, max_length: int = 128, batch_size: int = 1000
) -> list[Feature]:
    """Tokenize (pairs when 2 texts) with truncation and no padding; add the labels.

    >>> features = tokenize([Example(("a b",), 1)], tokenizer)  # doctest: +SKIP
    >>> features[0]["input_ids"], features[0]["labels"]  # doctest: +SKIP
    ([101, 1037, 1038, 102], 1)
    """
    features: list[Feature] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        columns = [list(texts) for texts in zip(*(ex.texts for ex in chunk), strict=True)]
        encoded = tokenizer(*columns, truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoded]
        for i, example in enumerate(chunk):
            features.append(
                {
                    **{k: list(encoded[k][i]) for k in keys},
                    "labels": example.label,
                    "index": start + i,
                }  # position in the split: the activation cache's key
            )
    return features


@dataclass(frozen=True)
class Collator:
    """Pad a batch to its longest item and return tensors (float labels for regression).

    >>> batch = [{"input_ids": [5, 6], "attention_mask": [1, 1], "labels": 1},
    ...          {"input_ids": [7], "attention_mask": [1], "labels": 0}]
    >>> Collator(pad_token_id=0)(batch)["input_ids"]
    tensor([[5, 6],
            [7, 0]])
    """

    pad_token_id: int
    is_regression: bool = False

    @classmethod
    def for_task(cls, tokenizer: Any, task: TaskInfo) -> Collator:
        """The collator for `task` that pads with the tokenizer's pad token."""
        if tokenizer.pad_token_id is None:
            raise UserError(
                "the tokenizer has no pad token; use a model whose tokenizer defines one"
            )
        return cls(int(tokenizer.pad_token_id), task.is_regression)

    def __call__(self, features: Sequence[Feature]) -> dict[str, torch.Tensor]:
        """The padded batch: long tensors, labels, and each feature's ``index`` if it has one."""
        width = max(len(f["input_ids"]) for f in features)
        batch = {}
        for key in (k for k in features[0] if k not in ("labels", "index")):
            pad = self.pad_token_id if key == "input_ids" else 0
            rows = [list(f[key]) + [pad] * (width - len(f[key])) for f in features]
            batch[key] = torch.tensor(rows, dtype=torch.long)
        dtype = torch.float32 if self.is_regression else torch.long
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=dtype)
        if "index" in features[0]:
            batch["index"] = torch.tensor([f["index"] for f in features], dtype=torch.long)
        return batch


class EpochSampler(Sampler[int]):
    """Index sampler whose order depends only on (seed, epoch); call `set_epoch` each epoch.

    With group_by_length, consecutive runs of `batch_size` indices form batches of similar
    length, so a DataLoader with the same batch_size pads less.

    >>> sampler = EpochSampler(4, seed=0, shuffle=True)
    >>> sampler.set_epoch(1); sorted(sampler)
    [0, 1, 2, 3]
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        shuffle: bool = True,
        group_by_length: bool = False,
        lengths: Sequence[int] | None = None,
        batch_size: int = 1,
    ) -> None:
        if group_by_length and (lengths is None or len(lengths) != n):
            raise ValueError("group_by_length needs one length per example")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.group_by_length, self.lengths, self.batch_size = group_by_length, lengths, batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the next iteration's order for `epoch`."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = list(range(self.n))
        if self.shuffle:
            order = torch.randperm(self.n, generator=generator).tolist()
        if self.group_by_length:
            order = self._grouped(order, generator)
        return iter(order)

    def _grouped(self, order: list[int], generator: torch.Generator) -> list[int]:
        """`order` regrouped so that each run of `batch_size` indices has similar lengths."""
        lengths, size = cast(Sequence[int], self.lengths), self.batch_size
        # 1. Sort each mega-chunk of 50 batches by length, longest first. The chunks are a
        #    random slice of the data, so batches stay varied across epochs while each batch
        #    holds neighbours in length. Python's sort is stable, so ties keep the shuffle.
        mega = 50 * size
        grouped: list[int] = []
        for start in range(0, len(order), mega):
            grouped += sorted(order[start : start + mega], key=lambda i: -lengths[i])
        # 2. Cut into batches. Every mega-chunk is a multiple of batch_size, so only the very
        #    last batch can be short; it stays last so the DataLoader's batches line up.
        batches = [grouped[i : i + size] for i in range(0, len(grouped), size)]
        tail = batches.pop() if batches and len(batches[-1]) < size else []
        # 3. Shuffle the order of the full batches, then put the batch with the longest example
        #    first so an out-of-memory error shows up at step 1 rather than mid-epoch.
        if self.shuffle and batches:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        if batches:  # a batch's first index is its longest one (step 1 sorted descending)
            longest = max(range(len(batches)), key=lambda b: lengths[batches[b][0]])
            batches[0], batches[longest] = batches[longest], batches[0]
        return [i for batch in batches for i in batch] + tail


class ShardedBatches(Sampler[list[int]]):
    """This rank's batches: index lists whose union over ranks is one global batch.

    ``order`` is the single-process sampler (its ``set_epoch`` is forwarded). By default every
    rank walks that same order, cut into global batches of ``batch_size``, and takes slice
    ``rank`` of each: the run sees exactly the batches a single process would (a last global
    batch smaller than the number of ranks is dropped: some rank would get nothing).

    With ``fixed_shards`` each rank instead owns a fixed ``1/world`` of the examples (drawn once
    from ``seed``; the ``len % world`` left over sit out) and shuffles within it every epoch, so
    the frozen-prefix states it caches in epoch 1 are the ones it needs later.

    >>> batches = ShardedBatches(EpochSampler(6, shuffle=False), 4, rank=1, world=2)
    >>> list(batches)
    [[2, 3], [5]]
    """

    def __init__(
        self,
        order: EpochSampler,
        batch_size: int,
        rank: int,
        world: int,
        fixed_shards: bool = False,
        lengths: Sequence[int] | None = None,
    ) -> None:
        self.order, self.batch_size, self.rank, self.world = order, batch_size, rank, world
        self.local = batch_size // world
        self.shard: list[int] = []
        self.inner: EpochSampler | None = None
        if fixed_shards:
            n = order.n - order.n % world
            drawn = torch.randperm(order.n, generator=torch.Generator().manual_seed(order.seed))
            self.shard = drawn[:n].tolist()[rank::world]
            lens = [lengths[i] for i in self.shard] if lengths is not None else None
            self.inner = EpochSampler(
                len(self.shard),
                order.seed,
                order.shuffle,
                order.group_by_length,
                lens,
                self.local,
            )

    def set_epoch(self, epoch: int) -> None:
        """Forward `epoch` to the global order (and to this rank's shard order)."""
        self.order.set_epoch(epoch)
        if self.inner is not None:
            self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        if self.inner is not None:
            return -(-len(self.shard) // self.local)
        full, rest = divmod(self.order.n, self.batch_size)
        return full + (rest >= self.world)

    def __iter__(self) -> Iterator[list[int]]:
        if self.inner is not None:
            mine = [self.shard[i] for i in self.inner]
            for start in range(0, len(mine), self.local):
                yield mine[start : start + self.local]
            return
        order = list(self.order)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            if len(batch) < self.world:
                return
            n = len(batch)
            yield batch[self.rank * n // self.world : (self.rank + 1) * n // self.world]


def make_loader(
    features: Sequence[Feature],
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    collate: Any,
    group_by_length: bool = False,
    drop_last: bool = False,
    rank: int = 0,
    world: int = 1,
    fixed_shards: bool = False,
) -> DataLoader:
    """A DataLoader over `features` whose order depends only on (seed, epoch).

    Alone (``world == 1``) its sampler is an `EpochSampler` (loader.sampler); as rank ``rank``
    of ``world`` it yields this rank's slice of each global batch of ``batch_size``
    (`ShardedBatches`, loader.batch_sampler; ``drop_last`` does not apply there). Call
    `set_epoch` on whichever has it (`set_epoch(loader, epoch)`).

    >>> loader = make_loader(
    ...     features, batch_size=32, shuffle=True, seed=0, collate=Collator(0)
    ... )  # doctest: +SKIP
    >>> set_epoch(loader, epoch)  # doctest: +SKIP
    """
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1 (got {batch_size}); pass a positive number")
    lengths = token_lengths(features) or [1] * len(features)  # images: all alike
    sampler = EpochSampler(len(features), seed, shuffle, group_by_length, lengths, batch_size)
    if world > 1:
        shards = ShardedBatches(sampler, batch_size, rank, world, fixed_shards, lengths)
        return DataLoader(
            cast("Dataset[Feature]", features),
            batch_sampler=shards,
            collate_fn=collate,
            num_workers=0,
            generator=torch.Generator().manual_seed(seed),  # or it draws from the global RNG
        )
    return DataLoader(
        cast("Dataset[Feature]", features),
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        drop_last=drop_last,
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )


def rank_share_loader(
    features: Sequence[Feature], *, batch_size: int, collate: Any, rank: int = 0, world: int = 1
) -> DataLoader:
    """Rank ``rank``'s share of ``features`` (every ``world``-th, from ``rank``), in order: what
    one process scores of the dev set, or runs the teacher over, under DDP or alone."""
    return make_loader(
        features[rank::world], batch_size=batch_size, shuffle=False, seed=0, collate=collate
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Give the loader's sampler its epoch (a new, reproducible order every epoch)."""
    owner = loader.batch_sampler if hasattr(loader.batch_sampler, "set_epoch") else loader.sampler
    owner.set_epoch(epoch)  # type: ignore[union-attr]
