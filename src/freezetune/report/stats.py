"""The report's statistics over seeds: mean and Student-t interval, Welch's t-test, Fieller's
interval for a ratio of means, Welch's interval for a difference of means, the Pareto front,
and the multiple-comparison corrections the answers' verdicts use: Holm's step-down adjusted
p-values (:func:`holm`), Bonferroni-simultaneous intervals (:func:`simultaneous`) and the
least of several noisy samples (:func:`least`). Pure functions of numbers.

>>> [round(x, 4) for x in mean_ci([0.8, 0.9, 1.0])]  # mean, std, 95% Student-t interval
[0.9, 0.1, 0.6516, 1.1484]
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy import stats

__all__ = [
    "NAN",
    "holm",
    "least",
    "mean_ci",
    "pareto_front",
    "ratio_ci",
    "simultaneous",
    "welch_ci",
    "welch_p",
]

NAN = float("nan")


def mean_ci(
    values: list[float] | tuple[float, ...], level: float = 0.95
) -> tuple[float, float, float, float]:
    """Mean, sample std and the Student-t confidence interval (NaN where n < 2)."""
    if not values:
        return NAN, NAN, NAN, NAN
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, NAN, NAN, NAN
    std = statistics.stdev(values)
    half = float(stats.t.ppf((1 + level) / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return mean, std, mean - half, mean + half


def welch_p(a: tuple[float, ...], b: tuple[float, ...]) -> float | None:
    """Two-sided Welch's t-test p-value (scipy's ``ttest_ind(equal_var=False)``, computed here
    so that a side that does not vary is exact); None when either side has fewer than 2 values.

    >>> welch_p((1.0, 1.0), (1.0, 1.0)), welch_p((1.0,), (2.0, 3.0))
    (1.0, None)
    """
    if len(a) < 2 or len(b) < 2:
        return None
    var_a, var_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if var_a + var_b == 0:
        return 1.0 if diff == 0 else 0.0
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    return float(2 * stats.t.sf(abs(diff) / math.sqrt(var_a + var_b), df))


def welch_ci(
    a: tuple[float, ...], b: tuple[float, ...], level: float = 0.95
) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` and its Welch interval (unequal variances, Welch-Satterthwaite
    degrees of freedom): the interval Welch's t-test inverts. NaN bounds when either side has
    fewer than 2 values; the difference itself when neither side varies.

    >>> [round(x, 3) for x in welch_ci((0.8, 0.9, 1.0), (0.8, 0.9, 1.0))]
    [0.0, -0.227, 0.227]
    """
    if not a or not b:
        return NAN, NAN, NAN
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, NAN, NAN
    var_a, var_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if var_a + var_b == 0:
        return diff, diff, diff
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    half = float(stats.t.ppf((1 + level) / 2, df)) * math.sqrt(var_a + var_b)
    return diff, diff - half, diff + half


def ratio_ci(
    a: float, var_a: float, b: float, var_b: float, df: int, level: float = 0.95
) -> tuple[float, float]:
    """Fieller's interval for ``a / b``, two independent means with variances ``var_a`` and
    ``var_b`` (of the means) and ``df`` degrees of freedom: every theta with
    ``(a - theta * b)**2 <= t**2 * (var_a + theta**2 * var_b)``. Unbounded, (-inf, inf), when
    ``b`` itself is not clearly away from 0 at that level.

    >>> [round(x, 3) for x in ratio_ci(9.0, 0.0, 10.0, 0.0, 2)]  # no noise: the ratio itself
    [0.9, 0.9]
    >>> ratio_ci(1.0, 0.1, 1.0, 1.0, 2)
    (-inf, inf)
    """
    if df < 1:
        return NAN, NAN
    t = float(stats.t.ppf((1 + level) / 2, df))
    q = b * b - t * t * var_b
    if q <= 0:
        return -math.inf, math.inf
    root = t * math.sqrt(a * a * var_b + q * var_a)  # >= 0 since q > 0
    return (a * b - root) / q, (a * b + root) / q


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (less or equal cost, more or equal value,
    one strictly), by increasing cost.

    >>> pareto_front([(1.0, 0.8), (2.0, 0.9), (3.0, 0.85), (0.5, 0.5)])
    [3, 0, 1]
    """
    front = []
    for i, (cost, value) in enumerate(points):
        dominated = any(
            c <= cost and v >= value and (c < cost or v > value)
            for j, (c, v) in enumerate(points)
            if j != i
        )
        if not dominated and not (math.isnan(cost) or math.isnan(value)):
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values over the family of the tests that were made (None:
    not tested, not counted, stays None). The i-th smallest of m p-values is multiplied by
    m - i (i from 0), running maxima keep the order, and 1 caps them: rejecting where the
    adjusted p < alpha keeps the chance of any false rejection under alpha.

    >>> [None if p is None else round(p, 3) for p in holm([0.01, 0.04, 0.03, None])]
    [0.03, 0.06, 0.06, None]
    >>> holm([0.5])
    [0.5]
    """
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def simultaneous(level: float, m: int) -> float:
    """The per-interval confidence level that makes ``m`` intervals hold together with
    probability >= ``level`` (Bonferroni).

    >>> round(simultaneous(0.95, 7), 5), simultaneous(0.95, 1)
    (0.99286, 0.95)
    """
    return 1 - (1 - level) / max(m, 1)


def least(samples: Sequence[Sequence[float]], alpha: float = 0.05) -> tuple[int, list[int]]:
    """The sample with the least mean, and the others it is *not* below beyond their noise:
    Welch's two-sided t-test of each other sample against it, Holm-adjusted over them, p >=
    ``alpha`` (or untestable: a sample of one). An empty second list means a clear winner.

    >>> least([(10.0, 11.0, 12.0), (5.0, 5.5, 6.0), (5.2, 5.9, 5.4)])
    (1, [2])
    >>> least([(10.0, 11.0, 12.0), (5.0, 5.5, 6.0)])
    (1, [])
    """
    means = [statistics.fmean(s) if s else math.inf for s in samples]
    best = min(range(len(samples)), key=lambda i: means[i])
    others = [i for i in range(len(samples)) if i != best]
    found = holm([welch_p(tuple(samples[i]), tuple(samples[best])) for i in others])
    return best, [i for i, p in zip(others, found, strict=True) if p is None or p >= alpha]
