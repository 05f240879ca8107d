"""LISA as a freezetune plugin: ``--freeze lisa:k=2,every=50``.

Pan et al., NeurIPS 2024, "LISA: Layerwise Importance Sampling for Memory-Efficient Large
Language Model Fine-Tuning" (arXiv 2403.17919): the embeddings and the head always train;
every ``every`` steps, ``k`` of the middle blocks are sampled uniformly to train and the other
blocks are frozen. The optimizer state of every middle block is dropped at each switch, as
LMFlow's ``LISATrainer`` rebuilds its optimizer keeping only the always-trained groups' state
(freezetune drops it when the sampled set changes: a draw of the same blocks keeps theirs).

The draw of period ``p`` is a pure function of ``(seed, p)``, so the policy keeps no state: a
resumed run draws what the uninterrupted one drew. ``seed`` defaults to the run's seed, so a
study's seeds also vary the sampled blocks.

>>> from freezetune.freezing.base import Progress
>>> lisa = Lisa(num_blocks=6, k=2, every=50, seed=0)
>>> frozen = lisa.frozen_set(Progress(0, 200, 100))
>>> len(frozen), 0 in frozen, 7 in frozen  # 4 of the 6 blocks; embeddings and head train
(4, False, False)
>>> frozen == lisa.frozen_set(Progress(49, 200, 100))  # the same set until step 50
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from freezetune.errors import UserError
from freezetune.freezing import PolicyPlugin, RunShape
from freezetune.freezing.base import Progress, Stateless, leading_run
from freezetune.freezing.registry import check_range

__all__ = ["PLUGIN", "Lisa", "LisaOptions", "lisa"]


@dataclass(frozen=True)
class LisaOptions:
    """``lisa[:k=2,every=50,seed=S]``."""

    k: int = field(default=2, metadata={"help": "middle blocks sampled to train"})
    every: int = field(default=50, metadata={"help": "steps between two samplings"})
    seed: int | None = field(default=None, metadata={"help": "sampling seed (the run's seed)"})

    def __post_init__(self) -> None:
        check_range("k", self.k, 1, float("inf"))
        check_range("every", self.every, 1, float("inf"))
        check_range("seed", self.seed if self.seed is not None else 0, 0, float("inf"))


@dataclass
class Lisa(Stateless):
    """Every ``every`` steps, ``k`` of ``num_blocks`` blocks train (a ``UnitSelector``).

    Units are ``[embeddings, block_0, ..., block_{L-1}, head]``: block ``b`` is unit ``b + 1``.
    Stateless: each period's draw is a function of ``(seed, period)``, nothing to checkpoint.
    """

    num_blocks: int
    k: int
    every: int
    seed: int
    name: str = "lisa"
    #: units whose AdamW state is dropped at each switch: every block (freezetune reads it)
    reset_optimizer_state: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        self.reset_optimizer_state = frozenset(range(1, self.num_blocks + 1))

    def sampled(self, period: int) -> list[int]:
        """The blocks (0-based) that train in period ``period``: ``k``, uniformly, seeded.

        >>> Lisa(6, 2, 50, seed=0).sampled(3) == Lisa(6, 2, 50, seed=0).sampled(3)
        True
        """
        draw = random.Random(f"lisa/{self.seed}/{period}")  # str seeds: the same everywhere
        return sorted(draw.sample(range(self.num_blocks), self.k))

    def frozen_set(self, progress: Progress) -> frozenset[int]:
        """The units frozen at ``progress``: the blocks not sampled for its period."""
        sampled = self.sampled(progress.step // self.every)
        return frozenset(b + 1 for b in range(self.num_blocks) if b not in sampled)

    def frozen_units(self, progress: Progress) -> int:
        return leading_run(self.frozen_set(progress))  # 0: the embeddings always train


def lisa(options: LisaOptions, run: RunShape) -> Lisa:
    """LISA sized to the model: ``k`` must leave at least one block frozen."""
    if run.num_blocks < 2:
        raise UserError(f"lisa samples among blocks and this model has {run.num_blocks}; use full")
    if options.k >= run.num_blocks:
        raise UserError(
            f"k={options.k} trains all {run.num_blocks} blocks, which is full fine-tuning; "
            f"use k <= {run.num_blocks - 1}, or full"
        )
    seed = options.seed if options.seed is not None else run.seed
    return Lisa(run.num_blocks, options.k, options.every, seed)


PLUGIN = PolicyPlugin(lisa, LisaOptions, positional="k")
