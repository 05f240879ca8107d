"""Apply a policy's decision, record it and say it: one :class:`Freezer` for every loop.

freezetune's own loop (``loop.py``) and the Trainer callback
(``integrations/transformers.py``) both ask a policy how many leading units are frozen; what
follows is the same in both and lives here: make the model say so (``requires_grad``, eval()
modes), add one record to the timeline, print the canonical line. So the two write identical
``freeze_timeline`` records and stderr lines, to the bit.

>>> from transformers import BertConfig, BertForSequenceClassification
>>> from freezetune.freezing import parse_freeze
>>> from freezetune.units import split_units
>>> config = BertConfig(vocab_size=9, hidden_size=8, num_hidden_layers=2,
...                     num_attention_heads=2, intermediate_size=8)
>>> model = BertForSequenceClassification(config)
>>> freezer = Freezer(model, split_units(model), parse_freeze("gradual"), FreezeLog(), main=False)
>>> freezer.update(3, step=0)["frozen_units"], freezer.update(3, step=1)
(3, None)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from freezetune.freezing import FreezeSpec, apply_frozen, frozen_parameters, set_train_modes
from freezetune.units import Units, count_params, trainable_line

__all__ = ["FreezeLog", "FreezeRecords", "Freezer"]


class FreezeRecords(Protocol):
    """Where a :class:`Freezer` keeps what it did (``LoopState`` is one: a checkpoint keeps it)."""

    frozen_units: int | None  # leading units frozen now; None before the first decision
    trainable: str  # the "trainable params: ..." line of the current freezing
    timeline: list[dict[str, Any]]  # one record per change


@dataclass
class FreezeLog:
    """A plain :class:`FreezeRecords`, for a loop that has no state of its own to keep it in."""

    frozen_units: int | None = None
    trainable: str = ""
    timeline: list[dict[str, Any]] = field(default_factory=list)


class Freezer:
    """Freezes the first N units of ``model`` when told N, and records each change in ``log``.

    ``main``: this process prints the line (under DDP only rank 0 does). The freezer keeps no
    state of its own: everything is in ``log``, so restoring ``log`` restores the freezer.
    """

    def __init__(
        self, model: nn.Module, units: Units, spec: FreezeSpec, log: FreezeRecords, main: bool
    ):
        self.model, self.units, self.spec, self.log, self.main = model, units, spec, log, main

    def update(self, frozen_units: int, step: int, training: bool = True) -> dict[str, Any] | None:
        """Freeze ``frozen_units`` leading units if that is a change at ``step``: apply it, add
        its record to the timeline, print the canonical line and return the record (None when
        nothing changed). ``training``: the model's mode to keep for the units that train."""
        log = self.log
        if frozen_units == log.frozen_units:
            return None
        log.frozen_units = frozen_units
        self.apply(frozen_units, training)
        log.trainable = trainable_line(self.model)
        record = {
            "event": "freeze",
            "step": step,
            "frozen_units": frozen_units,
            "trainable_params": count_params(self.model)[0],
            "trainable": log.trainable,
        }
        log.timeline.append(record)
        if self.main:
            print(f"step {step}: {frozen_units} units frozen; {log.trainable}", file=sys.stderr)
        return record

    def apply(self, frozen_units: int, training: bool = True) -> None:
        """Make the first ``frozen_units`` units frozen (requires_grad, eval()); no record: for
        a restored run, whose change was recorded before it stopped."""
        apply_frozen(self.model, frozen_parameters(self.units, self.spec, frozen_units))
        set_train_modes(self.model, self.units, frozen_units, training, self.spec.train_bn)

    def set_modes(self, training: bool = True) -> None:
        """Put the frozen units back in eval() after something called ``model.train()``."""
        frozen = self.log.frozen_units or 0
        set_train_modes(self.model, self.units, frozen, training, self.spec.train_bn)
