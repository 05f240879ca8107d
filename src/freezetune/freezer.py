"""Apply a policy's decision, record it and say it: one :class:`Freezer` for every loop.

freezetune's own loop (``loop.py``) and the Trainer callback
(``integrations/transformers.py``) both ask a policy what is frozen (``freezing.frozen_now``:
a number of leading units, or a set of units); what follows is the same in both and lives
here: make the model say so (``requires_grad``, eval() modes), drop the optimizer state the
policy asks to drop, add one record to the timeline, print the canonical line. So the two
write identical ``freeze_timeline`` records and stderr lines, to the bit.

>>> from transformers import BertConfig, BertForSequenceClassification
>>> from freezetune.freezing import parse_freeze
>>> from freezetune.units import split_units
>>> config = BertConfig(vocab_size=9, hidden_size=8, num_hidden_layers=2,
...                     num_attention_heads=2, intermediate_size=8)
>>> model = BertForSequenceClassification(config)
>>> freezer = Freezer(model, split_units(model), parse_freeze("gradual"), FreezeLog(), main=False)
>>> freezer.update(3, step=0)["frozen_units"], freezer.update(3, step=1)
(3, None)
>>> freezer.update(frozenset({0, 2}), step=2)["frozen"]  # not a leading run: named
['embeddings', 'block.1']
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from freezetune.freezing import FreezeSpec, apply_frozen, frozen_parameters, set_train_modes
from freezetune.freezing.base import leading_run, optimizer_resets
from freezetune.units import Units, count_params, trainable_line

__all__ = ["FreezeLog", "FreezeRecords", "Freezer", "frozen_of"]


class FreezeRecords(Protocol):
    """Where a :class:`Freezer` keeps what it did (``LoopState`` is one: a checkpoint keeps it)."""

    frozen_units: int | None  # leading units frozen now; None before the first decision
    frozen_set: list[int] | None  # every frozen unit, when they are not the leading ones
    trainable: str  # the "trainable params: ..." line of the current freezing
    timeline: list[dict[str, Any]]  # one record per change


@dataclass
class FreezeLog:
    """A plain :class:`FreezeRecords`, for a loop that has no state of its own to keep it in."""

    frozen_units: int | None = None
    frozen_set: list[int] | None = None
    trainable: str = ""
    timeline: list[dict[str, Any]] = field(default_factory=list)


def frozen_of(log: FreezeRecords) -> frozenset[int] | None:
    """The units ``log`` says are frozen now; None before the first decision."""
    if log.frozen_units is None:
        return None
    if log.frozen_set is not None:
        return frozenset(log.frozen_set)
    return frozenset(range(log.frozen_units))


class Freezer:
    """Freezes the units of ``model`` it is told to (a leading run, or a set), and records
    each change in ``log``.

    ``main``: this process prints the line (under DDP only rank 0 does). ``optimizer`` and
    ``policy``: at each change, the state ``optimizer`` keeps for the units the policy's
    ``reset_optimizer_state`` names is dropped (``freezing.base.optimizer_resets``). The
    freezer keeps no state of its own: everything is in ``log`` (and the optimizer), so
    restoring ``log`` restores the freezer.
    """

    def __init__(
        self,
        model: nn.Module,
        units: Units,
        spec: FreezeSpec,
        log: FreezeRecords,
        main: bool,
        optimizer: torch.optim.Optimizer | None = None,
        policy: object = None,
    ):
        self.model, self.units, self.spec, self.log, self.main = model, units, spec, log, main
        self.optimizer, self.resets = optimizer, optimizer_resets(policy)

    @property
    def frozen(self) -> frozenset[int]:
        """The units frozen now (none before the first decision)."""
        return frozen_of(self.log) or frozenset()

    def update(
        self, frozen: int | frozenset[int], step: int, training: bool = True
    ) -> dict[str, Any] | None:
        """Freeze ``frozen`` (that many leading units, or those unit indices) if that is a
        change at ``step``: apply it, add its record to the timeline, print the canonical line
        and return the record (None when nothing changed). ``training``: the model's mode to
        keep for the units that train."""
        log, chosen = self.log, _as_set(frozen)
        if chosen == frozen_of(log):
            return None
        leading = leading_run(chosen)
        log.frozen_units = leading
        log.frozen_set = None if len(chosen) == leading else sorted(chosen)
        self.apply(chosen, training)
        self._reset_optimizer_state()
        log.trainable = trainable_line(self.model)
        record: dict[str, Any] = {"event": "freeze", "step": step, "frozen_units": leading}
        if log.frozen_set is not None:  # say which, when they are not the leading ones
            record["frozen"] = [self.units.names[i] for i in log.frozen_set]
        record["trainable_params"] = count_params(self.model)[0]
        record["trainable"] = log.trainable
        log.timeline.append(record)
        if self.main:
            print(f"step {step}: {self._said(record)}; {log.trainable}", file=sys.stderr)
        return record

    def apply(self, frozen: int | frozenset[int], training: bool = True) -> None:
        """Make ``frozen`` (that many leading units, or those indices) frozen (requires_grad,
        eval()); no record, no optimizer change."""
        apply_frozen(self.model, frozen_parameters(self.units, self.spec, frozen))
        set_train_modes(self.model, self.units, frozen, training, self.spec.train_bn)

    def reapply(self, training: bool = True) -> None:
        """Apply what ``log`` says is frozen, silently: for a restored run, whose change was
        recorded (and whose optimizer state was dropped) before it stopped."""
        frozen = frozen_of(self.log)
        if frozen is not None:
            self.apply(frozen, training)

    def set_modes(self, training: bool = True) -> None:
        """Put the frozen units back in eval() after something called ``model.train()``."""
        set_train_modes(self.model, self.units, self.frozen, training, self.spec.train_bn)

    def _reset_optimizer_state(self) -> None:
        """Drop the optimizer state of the units the policy resets at each change (LISA's
        middle blocks: they start afresh when sampled again, as in LMFlow)."""
        if self.optimizer is None or not self.resets:
            return
        names = {name for i in self.resets for name in self.units.units[i].params}
        for name, param in self.model.named_parameters():
            if name in names:
                self.optimizer.state.pop(param, None)

    def _said(self, record: dict[str, Any]) -> str:
        """``3 units frozen`` (a leading run) or ``2 units frozen (block.0, block.2)``."""
        if "frozen" not in record:
            return f"{record['frozen_units']} units frozen"
        return f"{len(record['frozen'])} units frozen ({', '.join(record['frozen'])})"


def _as_set(frozen: int | frozenset[int]) -> frozenset[int]:
    return frozenset(range(frozen)) if isinstance(frozen, int) else frozenset(frozen)
