"""What the training loop carries from step to step: the part of a run a checkpoint must keep.

The loop's other members (model, optimizer, policy, caches) persist themselves; this dataclass
holds everything else, so the checkpoint format is written down in one place instead of being
whatever attributes the loop happens to have.

>>> s = LoopState(step=3, frozen_units=2, examples=24)
>>> again = LoopState()
>>> again.load_state_dict(s.state_dict())
>>> again == s
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["LoopState"]


@dataclass
class LoopState:
    """Counters, clocks and records of one run's training so far.

    ``best_weights`` is not in :meth:`state_dict`: tensors travel as safetensors, never through
    the pickled state, so a checkpoint stores them in a file of their own.
    """

    step: int = 0  # optimizer steps finished
    frozen_units: int | None = None  # leading units frozen now; None before the first step
    frozen_set: list[int] | None = None  # every frozen unit, when not only leading ones (LISA)
    trainable: str = ""  # the "trainable params: ..." line of the current freezing
    timeline: list[dict[str, Any]] = field(default_factory=list)  # one record per change
    best: dict[str, Any] | None = None  # the best eval record so far
    last: dict[str, Any] = field(default_factory=dict)  # the latest eval record
    train_time: float = 0.0  # seconds in training steps (evaluation and saving left out)
    eval_time: float = 0.0  # seconds in evaluation
    examples: int = 0  # training examples seen (all ranks together)
    best_weights: dict[str, torch.Tensor] = field(default_factory=dict)  # of ``best``

    def state_dict(self) -> dict[str, Any]:
        """Every field but ``best_weights``, as plain values (``torch.load(weights_only=True)``)."""
        return {
            "step": self.step,
            "frozen_units": self.frozen_units,
            "frozen_set": self.frozen_set,
            "trainable": self.trainable,
            "timeline": self.timeline,
            "best": self.best,
            "last": self.last,
            "train_time": self.train_time,
            "eval_time": self.eval_time,
            "examples": self.examples,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Set every field ``state_dict`` wrote; a missing one raises KeyError (but
        ``frozen_set``, which checkpoints of prefix-only runs written before it lack)."""
        self.step = state["step"]
        self.frozen_units = state["frozen_units"]
        self.frozen_set = state.get("frozen_set")
        self.trainable = state["trainable"]
        self.timeline = state["timeline"]
        self.best = state["best"]
        self.last = state["last"]
        self.train_time = state["train_time"]
        self.eval_time = state["eval_time"]
        self.examples = state["examples"]
