"""From what the arms did to the answer: a score per arm, the pick, or an abstention.

Finalists ran to their end over ``seeds`` seeds: their score is the mean of each seed's best
evaluation (as a study scores a run) with an 80% t interval. A pruned arm's score is predicted
from its best-so-far curve (:func:`~.curves.predict_final`: fitted curves, the remaining gains
of reference curves of its lr family, and the seed noise measured on the finalists).

The pick is the cheapest arm, by ``optimize`` (``train``: predicted training time;
``inference``: its architecture's measured seconds per example; ``accuracy``: the best
score), whose score is within ``tolerance`` of the best arm's; costs within 10% of the least
are ties, won by the higher score (so timing noise does not decide). It
abstains ("no signal") when the best finalist does not clear the trivial baseline under the
study's rule (:func:`freezetune.report.rules.signal`).

>>> a = ArmFacts("a", "full (lr=0.0001)", "full", "full", "full", 1e-4, 100, 50, "finalist", 2,
...              ((10, 0.6), (100, 0.9)), ((100, 50.0),), ((0, 0.9), (1, 0.88), (2, 0.89)))
>>> b = ArmFacts("b", "head (lr=0.001)", "head", "head", "head", 1e-3, 100, 50, "stopped", 0,
...              ((5, 0.5), (10, 0.55)), ((10, 1.0),))
>>> advice = answer("x", [a, b], metric="accuracy", optimize="train", tolerance=0.01)
>>> advice.pick, advice.arm("a").score.n, advice.arm("b").eligible
('a', 3, False)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import TypeVar

from freezetune.advise.advice import Advice, ArmResult, Score
from freezetune.advise.costs import epoch_rate, later_ratio, predict_time
from freezetune.advise.curves import predict_final
from freezetune.report.rules import Signal, signal
from freezetune.report.stats import mean_ci

__all__ = ["COST_NOISE", "ArmFacts", "answer", "best_so_far", "cheapest", "seed_noise"]

T = TypeVar("T")
LEVEL = 0.8
#: costs within 10% of the least are ties: a run's training time varies by about that much
COST_NOISE = 0.10
Curves = Sequence[Sequence[tuple[float, float]]]


@dataclass(frozen=True)
class ArmFacts:
    """What an arm did: ids and labels, its full run's ``budget`` and steps per epoch,
    status (``finalist`` / ``stopped`` / ``failed``), the last ``rung`` it reached, its seed-0
    ``curve`` ((step, score) per evaluation), ``times`` ((step, training seconds so far)),
    finalists' ``seeds`` ((seed, best score)), its ``architecture`` and that architecture's
    measured ``inference`` seconds per example (None: not measured)."""

    id: str
    label: str
    strategy: str
    freeze: str
    family: str
    lr: float
    budget: int
    per_epoch: int
    status: str
    rung: int
    curve: tuple[tuple[int, float], ...]
    times: tuple[tuple[int, float], ...]
    seeds: tuple[tuple[int, float], ...] = ()
    architecture: str = ""
    inference: float | None = None
    error: str | None = None


def seed_noise(arms: Sequence[ArmFacts]) -> float:
    """The pooled seed-to-seed SD of finalists' scores (0 with fewer than two seeds).

    >>> round(seed_noise([ArmFacts("a", "", "", "", "", 0, 1, 1, "finalist", 0, (), (),
    ...                            ((0, 0.80), (1, 0.82)))]), 4)
    0.0141
    """
    squares, dof = 0.0, 0
    for arm in arms:
        values = [v for _, v in arm.seeds]
        if len(values) >= 2:
            squares += statistics.variance(values) * (len(values) - 1)
            dof += len(values) - 1
    return math.sqrt(squares / dof) if dof else 0.0


def _bounds(metric: str) -> tuple[float, float]:
    return (0.0, 1.0) if metric in ("accuracy", "f1") else (-1.0, 1.0)


def best_so_far(curve: Sequence[tuple[int, float]], budget: int) -> list[tuple[float, float]]:
    """``(step / budget, best score so far)`` of (step, score) evaluations, NaNs left out.

    >>> best_so_far([(5, 0.6), (10, 0.5), (20, 0.7)], 20)
    [(0.25, 0.6), (0.5, 0.6), (1.0, 0.7)]
    """
    out: list[tuple[float, float]] = []
    for step, score in sorted(curve):
        if math.isfinite(score):
            best = max(score, out[-1][1]) if out else score
            out.append((min(1.0, step / budget), best))
    return out


def _finalist_score(arm: ArmFacts, seed_sd: float) -> Score:
    values = [v for _, v in arm.seeds]
    mean, sd, low, high = mean_ci(values, LEVEL)
    if len(values) < 2:  # one seed: the noise measured on the other finalists
        half = NormalDist().inv_cdf(0.5 + LEVEL / 2) * seed_sd
        sd, low, high = seed_sd, mean - half, mean + half
    return Score(mean, low, high, sd, "observed", len(values), arm.seeds)


def _score(arm: ArmFacts, seed_sd: float, metric: str, refs: Curves) -> Score | None:
    if arm.status == "failed":
        return None
    if arm.seeds:  # it ran to its end (a finalist, or a pick trained after the halving)
        return _finalist_score(arm, seed_sd)
    curve = best_so_far(arm.curve, arm.budget)
    if not curve:
        return None
    p = predict_final(curve, seed_sd=seed_sd, level=LEVEL, references=refs, bounds=_bounds(metric))
    return Score(p.mean, p.low, p.high, p.sd, p.source)


def _speeds(arms: Sequence[ArmFacts]) -> dict[str, tuple[float | None, float | None]]:
    """Per strategy (the lr changes nothing about a step's cost), from its arm that ran
    furthest: the first epoch's seconds per step, and the later-epoch speed ratio."""
    furthest: dict[str, ArmFacts] = {}
    for arm in arms:
        best = furthest.get(arm.strategy)
        if arm.times and (best is None or arm.times[-1][0] > best.times[-1][0]):
            furthest[arm.strategy] = arm
    return {
        strategy: (epoch_rate(arm.times, arm.per_epoch), later_ratio(arm.times, arm.per_epoch))
        for strategy, arm in furthest.items()
    }


def _cost(optimize: str, arm: ArmResult) -> float:
    """What ``optimize`` minimises (inf: unknown)."""
    if optimize == "accuracy":
        return -(arm.score.mean if arm.score else -math.inf)
    if optimize == "inference":
        return arm.inference if arm.inference is not None else math.inf
    known = arm.train_time is not None and arm.train_time.source != "none"
    return arm.train_time.predicted if known and arm.train_time else math.inf


def cheapest(items: Sequence[T], cost: Callable[[T], float], score: Callable[[T], float]) -> T:
    """The cheapest of ``items``; costs within :data:`COST_NOISE` of the least are ties
    (timings vary from run to run by about that much), won by the higher score, then order.

    >>> cheapest([("a", 100.0, 0.90), ("b", 95.0, 0.85), ("c", 150.0, 0.95)],
    ...          cost=lambda x: x[1], score=lambda x: x[2])[0]
    'a'
    """
    least = min(cost(a) for a in items)
    band = least + abs(least) * COST_NOISE if math.isfinite(least) else least
    return max((a for a in items if cost(a) <= band), key=score)


def _results(
    arms: Sequence[ArmFacts], metric: str, seed_sd: float, refs: Callable[[str], Curves]
) -> list[ArmResult]:
    speeds = _speeds(arms)
    out = []
    for arm in arms:
        rate, ratio = speeds.get(arm.strategy, (None, None))
        time = predict_time(
            arm.times, budget=arm.budget, per_epoch=arm.per_epoch, ratio=ratio, rate=rate
        )
        reached = max((s for s, _ in arm.curve), default=0)
        score = _score(arm, seed_sd, metric, refs(arm.family))
        out.append(
            ArmResult(
                arm.id,
                arm.label,
                arm.strategy,
                arm.freeze,
                arm.lr,
                arm.budget,
                reached,
                arm.rung,
                arm.status,
                tuple(arm.curve),
                score,
                family=arm.family,
                train_time=time,
                inference=arm.inference,
                architecture=arm.architecture,
                error=arm.error,
            )
        )
    return out


def answer(
    name: str,
    arms: Sequence[ArmFacts],
    *,
    metric: str,
    optimize: str,
    tolerance: float,
    baseline: float | None = None,
    references: Callable[[str], Curves] = lambda family: (),
    observed_only: bool = False,
) -> Advice:
    """The advice over ``arms`` (``tolerance`` in the metric's units: 0.01 = one point). The
    bar is the best *measured* score less ``tolerance`` (a prediction makes an arm a candidate,
    never raises the bar); ``observed_only``: pick among arms that ran to their end."""
    seed_sd = seed_noise(arms)
    results = _results(arms, metric, seed_sd, references)
    scored = [a for a in results if a.score is not None]
    advice = Advice(name, tuple(results), metric=metric, optimize=optimize, tolerance=tolerance,
                    baseline=baseline, seed_sd=seed_sd, inference_note=_inference_note(results))  # fmt: skip
    if not scored:
        return replace(advice, verdict="no signal", why="every arm failed")
    measured = [a for a in scored if a.score and a.score.source == "observed"]
    top = max(measured or scored, key=lambda a: a.score.mean if a.score else -math.inf)
    bar = (top.score.mean if top.score else 0.0) - tolerance - 1e-12  # predictions don't raise it
    eligible = {
        a.id for a in (measured if observed_only else scored) if a.score and a.score.mean >= bar
    }
    results = [replace(a, eligible=a.id in eligible) for a in results]
    lead = max(measured or scored, key=lambda a: (a.score.n, a.score.mean) if a.score else (0, 0))
    sig = _signal(lead, baseline)
    advice = replace(advice, arms=tuple(results))
    if not sig.clear:
        why = sig.reason.replace("full fine-tuning", f"the best finalist ({lead.label})")
        return replace(advice, verdict="no signal", why=why or "no arm clears the baseline")
    candidates = [a for a in results if a.eligible]
    if not candidates:
        return replace(advice, verdict="no signal", why="every arm that ran to its end failed")
    pick = cheapest(candidates, lambda a: _cost(optimize, a), _mean)
    return replace(advice, pick=pick.id, why=_why(pick, top, optimize, tolerance))


def _mean(arm: ArmResult) -> float:
    return arm.score.mean if arm.score else -math.inf


def _signal(lead: ArmResult, baseline: float | None) -> Signal:
    """The study's signal rule on the best finalist (its 95% CI low end over seeds)."""
    score = lead.score
    assert score is not None
    values = [v for _, v in score.seeds]
    low = mean_ci(values)[2]
    return signal(score.mean, low, baseline, max(len(values), 1))


def _why(pick: ArmResult, top: ArmResult, optimize: str, tolerance: float) -> str:
    if pick.id == top.id:
        return f"{pick.label} scores best, and nothing within {100 * tolerance:g} points is cheaper"
    what = {"train": "trains fastest", "inference": "is cheapest at inference",
            "accuracy": "scores best"}[optimize]  # fmt: skip
    return (f"{pick.label} {what} of the arms within {100 * tolerance:g} points of the best "
            f"({top.label})")  # fmt: skip


def _inference_note(results: Sequence[ArmResult]) -> str:
    archs = {a.architecture for a in results if a.score is not None}
    if len(archs) == 1:
        return ("every arm here is the same model at inference (frozen layers and merged LoRA "
                "change no shapes): inference cost does not separate them")  # fmt: skip
    return ""
