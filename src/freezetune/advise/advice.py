"""What ``freezetune advise`` answers, as plain data: ``advice.json`` and what renders it.

An :class:`Advice` holds one :class:`ArmResult` per arm (a strategy at one learning rate):
its curve as far as it ran, its final score (measured over ``seeds`` for finalists, predicted
with an interval for pruned arms), its training time (measured up to where it stopped,
predicted for the whole run) and the inference cost of its architecture; then the pick and
why. Scores are in the metric's own units (accuracy 0..1); ``tolerance`` too (1 point = 0.01).
Torch-free: the report, ``--check`` and tests read it without training anything.

>>> arm = ArmResult("a1", "full (lr=0.0001)", "full", "full", 1e-4, 126, 126, 2, "finalist",
...                 ((14, 0.7), (126, 0.85)), Score(0.85, 0.84, 0.86, 0.005, "observed", 3))
>>> Advice.from_dict(Advice(name="x", arms=(arm,)).to_dict()).arms[0].score.mean
0.85
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["OPTIMIZE", "Advice", "ArmResult", "Score", "TrainTime", "finite_json", "read_advice"]

#: what ``--optimize`` may minimise: training time, inference cost, or the score itself
OPTIMIZE = ("train", "inference", "accuracy")
#: an arm's status: ran to its end through the halving (finalist), stopped at a rung, stopped
#: and then trained to its end as a pick (trained, one seed), or failed (crashed / diverged)
STATUSES = ("finalist", "stopped", "trained", "failed")


@dataclass(frozen=True)
class Score:
    """A final score: ``mean`` with an 80% interval ``[low, high]`` and its ``sd``. ``source``:
    ``observed`` (the arm ran to its end; ``n`` seeds) or how it was predicted (``fit``,
    ``last``, ``prior``, ``fit+prior``)."""

    mean: float
    low: float
    high: float
    sd: float
    source: str
    n: int = 1
    seeds: tuple[tuple[int, float], ...] = ()  # finalists: (seed, final score) per seed


@dataclass(frozen=True)
class TrainTime:
    """Training seconds (evaluation and saving left out): ``measured`` up to the step the arm
    reached, ``predicted`` for its whole run (``source`` says how: ``measured`` when it ran to
    its end, ``own`` from its own phases, ``sibling`` with a later epoch's speed measured on
    the same strategy at another rate, ``uncached`` when no later epoch was seen)."""

    measured: float
    predicted: float
    source: str


@dataclass(frozen=True)
class ArmResult:
    """One arm: ``id`` (its run id, the folder under ``runs/``), ``label`` (strategy and lr as
    a study labels it), its ``strategy`` (freeze spec plus its own settings but the lr),
    ``freeze`` spec, lr family (:mod:`~.lrs`), ``lr``, ``budget`` (optimizer steps of its full
    run), ``reached`` (the step it stopped at), ``rung`` (the last rung it reached),
    ``status``, ``curve`` ((step, score) per evaluation), final ``score``,
    ``train_time``, the ``inference`` cost of its architecture (seconds per example, or None:
    not measured) and that architecture's name."""

    id: str
    label: str
    strategy: str
    freeze: str
    lr: float
    budget: int
    reached: int
    rung: int
    status: str
    curve: tuple[tuple[int, float], ...]
    score: Score | None
    family: str = "full"
    train_time: TrainTime | None = None
    inference: float | None = None
    architecture: str = ""
    eligible: bool = False
    error: str | None = None


@dataclass(frozen=True)
class Advice:
    """The whole answer. ``pick``: the recommended arm's id (None when it abstains), ``why``:
    one sentence, ``verdict``: ``pick`` or ``no signal``; ``run``: the pick's trained run
    folder (``pipeline(run)`` loads it); ``baseline``: the trivial baseline's score (None:
    unknown); ``plan``: eta, rung fractions and sizes; ``wall_s``: advise's own wall time;
    ``modality``: what the model reads (``text``, ``image``: how the pick's run is loaded)."""

    name: str
    arms: tuple[ArmResult, ...] = ()
    model: str = ""
    task: str = ""
    metric: str = "accuracy"
    optimize: str = "train"
    tolerance: float = 0.01
    seeds: int = 3
    pick: str | None = None
    verdict: str = "pick"
    why: str = ""
    run: str | None = None
    baseline: float | None = None
    seed_sd: float = 0.0
    plan: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    inference_note: str = ""
    modality: str = "text"

    def arm(self, arm_id: str) -> ArmResult:
        return next(a for a in self.arms if a.id == arm_id)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Advice:
        arms = tuple(_arm(a) for a in data.get("arms", ()))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "arms": arms})

    def to_json(self) -> str:
        """Strict JSON: a NaN (a failed evaluation) is written as null."""
        return json.dumps(finite_json(self.to_dict()), indent=1, allow_nan=False)


def finite_json(value: Any) -> Any:
    """Plain data with every non-finite float as None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def _arm(data: dict[str, Any]) -> ArmResult:
    score = data.get("score")
    if score is not None:
        seeds = tuple((int(s), float(v)) for s, v in score.get("seeds", ()))
        score = Score(**{**score, "seeds": seeds})
    time = data.get("train_time")
    curve = tuple((int(s), math.nan if v is None else float(v)) for s, v in data.get("curve", ()))
    return ArmResult(
        **{
            **data,
            "score": score,
            "train_time": TrainTime(**time) if time else None,
            "curve": curve,
        }
    )


def read_advice(folder: str | Path) -> Advice:
    """The ``advice.json`` of an advise folder."""
    return Advice.from_dict(json.loads((Path(folder) / "advice.json").read_text("utf-8")))
