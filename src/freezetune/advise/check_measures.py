"""The measures ``advise --check`` computes over its arms (:class:`Measured`: advise's score
and interval beside the study's per-seed scores), and the baselines it holds advise against.

Measures (scores in points: 1 point = 0.01 of the metric):

- *ranking*: Spearman between advise's per-arm scores (observed for finalists, predicted for
  pruned arms) and the study's means, with a bootstrap 95% interval (arms resampled, 2000
  times, seed 0; percentiles). Beside it the *noise ceiling*: for each seed ``s``, Spearman
  between the arms' scores at ``s`` alone and their means over the other seeds, averaged over
  ``s`` (3 seeds: each seed against the other two). It is how well one part of the study
  predicts another, so it understates how well a 3-seed mean predicts another 3-seed mean.
- *regret*: the study's mean of advise's pick against that of the *best eligible* arm: the
  arm the study itself picks under advise's rule (``optimize`` = ``accuracy``: the best mean;
  ``train`` / ``inference``: the cheapest arm within ``tolerance`` of the best mean, by mean
  training seconds / advise's seconds per example per architecture, ties to the faster
  training). Also whether the pick's mean lies in that arm's 95% t interval over seeds, its
  regret against the best mean, and whether it beats the trivial baseline. A negative regret:
  the pick scores above the best eligible arm (and costs more). An abstention (no pick) is
  reported as such.
- *calibration*: the share of arms advise scores within 3 points of the study mean, and the
  share of study means inside advise's 80% intervals (finalists' observed scores included;
  pruned arms alone too, and for them each seed's score against the interval, which is what
  a prediction with seed noise promises).
- *cost*: advise's wall time against the sum of the wall times of the study's runs of advise's
  arms (train + eval, as result.json holds them: the cost of running them one after another;
  started -> finished as a cross-check, which adds loading), and the median absolute % error
  of advise's predicted training seconds against the study's mean per arm. The baselines'
  table compares training seconds: advise's measured ones (summed over its arms) against the
  baselines' estimates.
- *baselines* from the study's own curves, no extra training:

  - *first rung, keep the top K* (K = 1, 3; Egele et al. 2023 find "train each for one epoch,
    keep the top K" matches fancier multi-fidelity methods at ~10x less compute): on one seed,
    rank every arm by its score at advise's first rung (the study's last evaluation at or
    before that share of its run), run the top K to the end on every seed, keep the one
    advise's rule picks among them by their study means. Done for each seed that evaluated
    every arm by its first rung, regret and cost averaged over those seeds. Cost: every arm's
    first rung (its share of the study's mean training seconds) plus the rest of the K runs
    and their other seeds.
  - *zero-probe prior*: the arm whose references predict the best final (its own strategy's
    on the same task and model, else its family's: :func:`~.references.prior_scores`), no
    training at all; references that are the study's own runs (same run id) are left out.

>>> from types import SimpleNamespace as Arm
>>> arms = [Arm(id="a", mean=0.80, time_measured=100.0, inference=None),
...         Arm(id="b", mean=0.795, time_measured=40.0, inference=None)]
>>> rule_pick(arms, "train", 0.01).id, rule_pick(arms, "accuracy", 0.01).id
('b', 'a')
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
from scipy import stats

from freezetune.advise.advice import OPTIMIZE, Advice
from freezetune.advise.answer import cheapest
from freezetune.advise.references import Reference, prior_scores
from freezetune.errors import UserError

__all__ = [
    "NEAR",
    "OPTIMIZE",
    "RESAMPLES",
    "TOP_K",
    "BaselineCheck",
    "Measured",
    "baselines",
    "bootstrap",
    "calibration",
    "first_rung",
    "mean_ci",
    "median",
    "noise_ceiling",
    "regret",
    "rule_pick",
    "spearman",
    "zero_probe",
]

TOP_K = (1, 3)
NEAR = 0.03  # "predicted within 3 points"
RESAMPLES = 2000  # bootstrap resamples of the arms
NAN = math.nan


class Measured(Protocol):
    """What the measures read of an arm (``check.ArmCheck`` has it): ``predicted`` / ``low``
    / ``high`` advise's score and 80% interval (None: none), the study's ``values`` per seed
    in ``seeds`` and their ``mean`` with a 95% interval ``ci``; mean training seconds,
    inference seconds per example; (seed, score) at the first rung and its ``fraction``."""

    @property
    def id(self) -> str: ...
    @property
    def predicted(self) -> float | None: ...
    @property
    def low(self) -> float | None: ...
    @property
    def high(self) -> float | None: ...
    @property
    def pruned(self) -> bool: ...
    @property
    def seeds(self) -> tuple[int, ...]: ...
    @property
    def values(self) -> tuple[float, ...]: ...
    @property
    def mean(self) -> float: ...
    @property
    def ci(self) -> tuple[float, float]: ...
    @property
    def time_measured(self) -> float: ...
    @property
    def inference(self) -> float | None: ...
    @property
    def first(self) -> tuple[tuple[int, float], ...]: ...
    @property
    def fraction(self) -> float | None: ...


M = TypeVar("M", bound=Measured)


@dataclass(frozen=True)
class BaselineCheck:
    """One baseline: its ``pick`` (an arm id; the most frequent over seeds, each seed's in
    ``picks``), its ``regret`` against the best eligible arm and ``regret_best`` against the
    best mean (points, averaged over seeds), its training ``cost_s`` and a ``note`` on how it
    was computed, or why it could not be (then the rest is None)."""

    name: str
    pick: str | None
    regret: float | None
    regret_best: float | None
    cost_s: float | None
    note: str = ""
    picks: tuple[str, ...] = ()


def _finite(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else math.inf


def rule_pick(arms: Sequence[M], optimize: str, tolerance: float) -> M:
    """The arm advise's rule picks among ``arms`` by their measured means: ``accuracy``, the
    best mean (the first on ties); ``train`` / ``inference``, the cheapest arm (mean training
    seconds / seconds per example; ties to the faster training, then the better mean) whose
    mean is within ``tolerance`` of the best, costs within 10% tied (:func:`~.answer.cheapest`)."""
    if optimize not in OPTIMIZE:
        raise UserError(f"optimize {optimize!r} is not one of {', '.join(OPTIMIZE)}; "
                        "re-run advise, its advice.json is damaged")  # fmt: skip
    best = max(arms, key=lambda a: a.mean)
    if optimize == "accuracy":
        return best
    near = [a for a in arms if a.mean >= best.mean - tolerance - 1e-12]
    cost = (lambda a: a.inference) if optimize == "inference" else (lambda a: a.time_measured)
    return cheapest(near, lambda a: _finite(cost(a)), lambda a: a.mean)  # advise's own rule


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (average ranks for ties); NaN below 3 pairs or when one side is flat."""
    if len(x) < 3:
        return NAN
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return NAN
    return float(np.corrcoef(rx, ry)[0, 1])


def bootstrap(x: Sequence[float], y: Sequence[float], seed: int = 0) -> tuple[float, float]:
    """The 95% percentile interval of Spearman's rho over resampled arms (flat resamples
    dropped)."""
    n = len(x)
    if n < 3:
        return NAN, NAN
    idx = np.random.default_rng(seed).integers(0, n, (RESAMPLES, n))
    rx = stats.rankdata(np.asarray(x)[idx], axis=1)
    ry = stats.rankdata(np.asarray(y)[idx], axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    norm = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    ok = norm > 0
    rho = (rx * ry).sum(axis=1)[ok] / norm[ok]
    if not len(rho):
        return NAN, NAN
    low, high = np.percentile(rho, [2.5, 97.5])
    return float(low), float(high)


def noise_ceiling(arms: Sequence[Measured]) -> float:
    """Spearman between each seed's scores and the other seeds' means, averaged over seeds."""
    rhos = []
    for seed in sorted({s for a in arms for s in a.seeds}):
        alone, rest = [], []
        for a in arms:
            if seed in a.seeds and len(a.seeds) > 1:
                i = a.seeds.index(seed)
                alone.append(a.values[i])
                rest.append(statistics.fmean(a.values[:i] + a.values[i + 1 :]))
        rho = spearman(alone, rest)
        if math.isfinite(rho):
            rhos.append(rho)
    return statistics.fmean(rhos) if rhos else NAN


def mean_ci(values: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """Mean and 95% Student-t interval (NaN bounds below 2 values)."""
    mean = statistics.fmean(values) if values else NAN
    if len(values) < 2:
        return mean, (NAN, NAN)
    half = float(stats.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return mean, (mean - half, mean + half)


def median(values: Sequence[float | None]) -> float:
    """The median of the values that are not None (NaN: none)."""
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else NAN


def _share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else NAN


def calibration(arms: Sequence[Measured]) -> dict[str, Any]:
    """Shares of arms predicted within :data:`NEAR` of the study mean and of study means (and
    pruned arms' single runs) inside advise's interval; NaN where no arm counts."""
    scored = [a for a in arms if a.predicted is not None]
    pruned = [a for a in scored if a.pruned]

    def near(a: Measured) -> bool:
        return abs((a.predicted or 0.0) - a.mean) <= NEAR + 1e-12

    def inside(a: Measured, value: float) -> bool:
        return a.low is not None and a.high is not None and a.low <= value <= a.high

    return {
        "within": _share([near(a) for a in scored]),
        "within_pruned": _share([near(a) for a in pruned]),
        "coverage": _share([inside(a, a.mean) for a in scored]),
        "coverage_pruned": _share([inside(a, a.mean) for a in pruned]),
        "coverage_runs_pruned": _share([inside(a, v) for a in pruned for v in a.values]),
    }


def regret(advice: Advice, arms: Sequence[Measured]) -> dict[str, Any]:
    """The pick against the best eligible arm and the best mean (points), whether it lies in
    the former's 95% interval and beats the trivial baseline (all None: it abstained)."""
    eligible = rule_pick(arms, advice.optimize, advice.tolerance)
    best = max(arms, key=lambda a: a.mean)
    out: dict[str, Any] = {"best_eligible": eligible.id, "best": best.id, "regret": None,
                           "regret_best": None, "pick_in_ci": None, "above_baseline": None}  # fmt: skip
    picked = next((a for a in arms if a.id == advice.pick), None)
    if picked is None:
        return out
    low, high = eligible.ci
    return {
        **out,
        "regret": 100 * (eligible.mean - picked.mean),
        "regret_best": 100 * (best.mean - picked.mean),
        "pick_in_ci": low <= picked.mean <= high if math.isfinite(low) else None,
        "above_baseline": None if advice.baseline is None else picked.mean > advice.baseline,
    }


def _unavailable(name: str, why: str) -> BaselineCheck:
    return BaselineCheck(name, None, None, None, None, why)


def _common_seeds(arms: Sequence[Measured]) -> list[int]:
    """The seeds on which every arm was evaluated by its first rung."""
    found = [{seed for seed, _ in a.first} for a in arms]
    return sorted(set.intersection(*found)) if found else []


def first_rung(advice: Advice, arms: Sequence[Measured], k: int) -> BaselineCheck:
    """The baseline that keeps the top ``k`` at the first rung, on the study's curves (see the
    module docstring)."""
    name = f"first rung, top {k}"
    if any(a.fraction is None for a in arms):
        return _unavailable(name, "advice.json's plan names no first rung (first_steps)")
    seeds = _common_seeds(arms)
    if not seeds:
        return _unavailable(
            name, "the study's curves have no evaluation by every arm's first rung; run it "
            "with train.eval_every at most the first rung's steps",
        )  # fmt: skip
    eligible = rule_pick(arms, advice.optimize, advice.tolerance)
    top = max(a.mean for a in arms)
    probe = sum((a.fraction or 0.0) * a.time_measured for a in arms)  # every arm's first rung
    picks, regrets, bests, costs = [], [], [], []
    for seed in seeds:
        at = {a.id: dict(a.first)[seed] for a in arms}
        kept = sorted(arms, key=lambda a: -at[a.id])[:k]  # stable: given order on ties
        chosen = rule_pick(kept, advice.optimize, advice.tolerance)
        picks.append(chosen.id)
        regrets.append(100 * (eligible.mean - chosen.mean))
        bests.append(100 * (top - chosen.mean))
        costs.append(probe + sum((len(a.values) - (a.fraction or 0.0)) * a.time_measured
                                 for a in kept))  # fmt: skip
    note = (f"ranked at the first rung on each of {len(seeds)} seed(s) alone; the top {k} "
            "run to the end on every seed, the pick by advise's rule; averaged over seeds")  # fmt: skip
    return BaselineCheck(
        name, Counter(picks).most_common(1)[0][0], statistics.fmean(regrets),
        statistics.fmean(bests), statistics.fmean(costs), note, tuple(picks),
    )  # fmt: skip


def zero_probe(
    advice: Advice, arms: Sequence[Measured], references: Sequence[Reference]
) -> BaselineCheck:
    """The arm whose references alone predict the best final (no training)."""
    name = "zero-probe prior"
    by_id = {a.id: a for a in advice.arms}
    scores = prior_scores([by_id[a.id] for a in arms], references, task=advice.task,
                          model=advice.model)  # fmt: skip
    ranked = [a for a in arms if math.isfinite(scores[a.id])]
    if not ranked:
        return _unavailable(name, f"no reference curve of any arm's family ({len(references)} "
                                  "given)")  # fmt: skip
    chosen = max(ranked, key=lambda a: scores[a.id])  # the first on ties
    eligible = rule_pick(arms, advice.optimize, advice.tolerance)
    top = max(a.mean for a in arms)
    missing = len(arms) - len(ranked)
    note = (f"the best mean final of each arm's own strategy's references, else its family's, "
            f"at the nearest lr, from {len(references)} reference run(s)"
            + (f"; {missing} arm(s) with none ranked last" if missing else ""))  # fmt: skip
    return BaselineCheck(
        name, chosen.id, 100 * (eligible.mean - chosen.mean), 100 * (top - chosen.mean), 0.0,
        note, (chosen.id,),
    )  # fmt: skip


def baselines(
    advice: Advice, arms: Sequence[Measured], references: Sequence[Reference]
) -> tuple[BaselineCheck, ...]:
    """Every baseline: first rung top K for each K in :data:`TOP_K`, then the prior."""
    return (*(first_rung(advice, arms, k) for k in TOP_K), zero_probe(advice, arms, references))
