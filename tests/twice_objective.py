"""A two-pass objective (R-Drop's shape) registered by code at import, for the tests: a
study's run processes import this module to know it (``plugins.code_modules``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from freezetune.objectives import OBJECTIVES, register_objective

#: the batch keys each loss call saw, before and after its two forwards
CALLS: list[tuple[str, ...]] = []


@dataclass(frozen=True)
class TwiceOptions:
    weight: float = field(default=0.5, metadata={"help": "weight of the second pass"})


class Twice:
    """A two-pass objective (R-Drop's shape): the task loss of two forwards of one batch."""

    name = "twice"

    def __init__(self, options: TwiceOptions, calls: list[tuple[str, ...]]) -> None:
        self.weight, self.calls = options.weight, calls

    def prepare(self) -> float:
        return 0.0

    def loss(self, forward, batch):
        keys = tuple(sorted(batch))
        first = forward(batch)
        second = forward(batch)  # the batch is whole again: forward did not consume it
        self.calls.append(keys + tuple(sorted(batch)))
        return (1 - self.weight) * first.loss + self.weight * second.loss, second

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def summary(self):
        return {"objective": "twice", "weight": self.weight}


def register() -> None:
    """Register ``twice`` (again, after a test unregistered it)."""
    if "twice" not in OBJECTIVES:
        register_objective(
            "twice", lambda options, context: Twice(options, CALLS), options=TwiceOptions
        )


register()
