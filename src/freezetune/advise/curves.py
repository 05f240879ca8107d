"""Predict an arm's final score from the prefix of its learning curve, with an interval.

A curve is a list of ``(x, y)``: ``x`` the fraction of the arm's full run done (0 < x <= 1),
``y`` its evaluation score (higher is better). The prediction is at ``x = 1``. Three members,
fitted by least squares (scipy) when the prefix has more points than parameters::

    pow3:  y = c - a * x**(-alpha)      a >= 0, 0.01 <= alpha <= 3   (Domhan et al. 2015)
    exp3:  y = c - a * exp(-b * x)      a >= 0, 0.1 <= b <= 50
    last:  y = mean of the last max(1, n // 3) points (the fallback; never extrapolates)

(log-power ``a / (1 + (x / e^b)^-c)`` is left out: it assumes positive scores, and MCC is
not.) Each member ``i`` gives a prediction ``mu_i`` (clipped to the metric's range) and a
variance ``v_i``: for pow3/exp3 the delta-method variance of ``f(1)`` under the fit's parameter
covariance, ``g' C g``, plus its residual variance ``s_i^2 = SSR_i / (n - p_i)`` (the final
evaluation is noisy too), plus ``(0.1 G)^2``, where ``G = max(0, slope) * ln(1 / x_last)`` is the
gain a straight line in ``ln x`` through the points would still add: the further the
extrapolation, the wider the interval (the delta method alone can be tiny on a clean prefix).
For ``last``, ``v = s^2 (1 + 1/m) + G^2`` with ``s`` the spread of the points. Members are weighted by Akaike weights,
``w_i ~ exp(-AIC_i / 2)``, ``AIC_i = n ln(SSR_i / n) + 2 p_i``, and combined as a mixture::

    mu = sum_i w_i mu_i          v = sum_i w_i (v_i + (mu_i - mu)^2)

*Prior from finished runs.* For each reference curve ``r`` (full curves from earlier studies,
reaching ``x = 1``) that was evaluated at or before ``x_last``, its remaining gain
``g_r = y_r(1) - y_r(x_last)`` (linear interpolation) is added to this arm's fitted value at
``x_last``. Gains are added rather than ratios multiplied, since a ratio explodes for scores
near 0 (MCC early in a run). The prior is ``mu_p = anchor + mean(g)``, ``v_p = var(g) (1 + 1/k)
+ s^2`` (``k`` references; with one, ``v_p = g^2 + s^2``). Fit ``f`` and prior ``p`` combine
by inverse variance, plus their disagreement::

    w_j ~ 1 / v_j      mu = sum_j w_j mu_j      v = 1 / sum_j (1 / v_j) + sum_j w_j (mu_j - mu)^2

The interval is ``mu +- z sqrt(v + seed_sd^2)``, ``z`` the normal quantile of ``level``:
``seed_sd`` is the seed-to-seed noise of a final score (measured on the finalists), which no
single curve shows. Everything is clipped to ``bounds`` (the metric's range) when given. One
point and no references means no idea of the noise: the interval is the whole range.

*Reach.* A prefix's shape says little about the rest of its run when the prefix is short (the
first ninth of a fine-tune is mostly learning-rate warmup, its curve flat at the trivial
baseline, which a fit reads as saturation): weighed against a prior, the fit's variance gets
``(0.25 (1 - x_last) w)^2`` more, ``w`` the metric's range (1 without bounds), so from an early
prefix the reference curves' remaining gains (same task and budget: an advise's own finished
runs first) carry the prediction, and from a late one the fit does.

>>> curve = [(k / 27, 0.9 - 0.05 * (k / 27) ** -0.5) for k in range(1, 10)]
>>> p = predict_final(curve, bounds=(0.0, 1.0))
>>> round(p.mean, 3), p.low <= 0.85 <= p.high, p.source
(0.85, True, 'fit')
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from freezetune.errors import UserError

__all__ = ["Member", "Prediction", "predict_final", "reference_prior"]

Point = tuple[float, float]

#: How uncertain a fitted curve's remaining gain is, as a share of the log-linear trend's gain
#: ``G`` (the extrapolation-distance term of pow3 and exp3).
KAPPA = 0.1
#: How much of the metric's range the part of a run still to come may move it, per unit of
#: that part (:func:`_reach`): 0.25 of the range from 1/9 of a run leaves an sd of 0.22.
REACH = 0.25
Bounds = tuple[float, float] | None


@dataclass(frozen=True)
class Member:
    """One estimate of the final score: its name, weight in the mixture, mean and variance."""

    name: str
    weight: float
    mean: float
    var: float


@dataclass(frozen=True)
class Prediction:
    """A final score: ``mean`` with a ``level`` interval ``[low, high]`` and its ``sd``;
    ``source`` says where it came from (``observed``, ``fit``, ``last``, ``prior``,
    ``fit+prior``) and ``members`` the estimates it combined."""

    mean: float
    low: float
    high: float
    sd: float
    level: float
    source: str
    members: tuple[Member, ...] = ()


@dataclass(frozen=True)
class _Shape:
    name: str
    f: Callable[..., np.ndarray]
    lower: tuple[float, ...]
    upper: tuple[float, ...]

    def guess(self, x: np.ndarray, y: np.ndarray) -> list[float]:
        rise = max(float(y[-1] - y[0]), 1e-3)
        if self.name == "pow3":
            return [float(y[-1]) + rise / 2, rise / 2, 0.5]
        return [float(y[-1]) + rise / 2, rise * 2, 3.0]


def _pow3(x: np.ndarray, c: float, a: float, alpha: float) -> np.ndarray:
    return c - a * np.power(x, -alpha)


def _exp3(x: np.ndarray, c: float, a: float, b: float) -> np.ndarray:
    return c - a * np.exp(-b * x)


SHAPES = (
    _Shape("pow3", _pow3, (-np.inf, 0.0, 0.01), (np.inf, np.inf, 3.0)),
    _Shape("exp3", _exp3, (-np.inf, 0.0, 0.1), (np.inf, np.inf, 50.0)),
)


def _clip(value: float, bounds: Bounds) -> float:
    return value if bounds is None else min(max(value, bounds[0]), bounds[1])


def _points(curve: Sequence[Point]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted by x, one point per x (the last given wins), checked."""
    by_x: dict[float, float] = {}
    for x, y in curve:
        if not (0 < x <= 1 and math.isfinite(y)):
            raise UserError(
                f"curve point ({x}, {y}) is not (fraction of the run in (0, 1], finite score); "
                "drop failed evaluations before predicting"
            )
        by_x[float(x)] = float(y)
    if not by_x:
        raise UserError("cannot predict a final score from an empty curve; evaluate the arm first")
    xs = sorted(by_x)
    return np.array(xs), np.array([by_x[x] for x in xs])


def _fit(shape: _Shape, x: np.ndarray, y: np.ndarray) -> tuple[float, Member, float] | None:
    """(AIC, member with weight 0, fitted value at x_last), or None if the fit fails."""
    n, p = len(x), len(shape.lower)
    if n <= p:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            guess = shape.guess(x, y)
            bounds = (shape.lower, shape.upper)
            params, cov = curve_fit(shape.f, x, y, p0=guess, bounds=bounds, maxfev=5000)
    except (RuntimeError, ValueError):
        return None
    ssr = float(np.sum((y - shape.f(x, *params)) ** 2))
    grad = np.array([_partial(shape, params, i) for i in range(p)])
    var = float(grad @ cov @ grad) + ssr / (n - p)
    if not math.isfinite(var):
        return None
    aic = n * math.log(max(ssr / n, 1e-12)) + 2 * p
    at_last = float(shape.f(x[-1:], *params)[0])
    return aic, Member(shape.name, 0.0, float(shape.f(np.ones(1), *params)[0]), var), at_last


def _partial(shape: _Shape, params: np.ndarray, i: int) -> float:
    """d f(1) / d params[i], by central differences."""
    h = 1e-6 * max(1.0, abs(float(params[i])))
    up, down = params.copy(), params.copy()
    up[i] += h
    down[i] -= h
    return float((shape.f(np.ones(1), *up) - shape.f(np.ones(1), *down))[0] / (2 * h))


def _trend_gain(x: np.ndarray, y: np.ndarray) -> float:
    """``G``: what a straight line in ``ln x`` through the points still adds up to ``x = 1``."""
    if len(x) < 2:
        return 0.0
    slope = float(np.polyfit(np.log(x), y, 1)[0])
    return max(0.0, slope) * math.log(1 / x[-1])


def _last(x: np.ndarray, y: np.ndarray) -> tuple[float, Member]:
    """The fallback: the mean of the last third, widened by the trend it ignores."""
    n = len(x)
    m = max(1, n // 3)
    if n == 1:
        return 0.0, Member("last", 0.0, float(y[-1]), math.inf)
    ssr = float(np.sum((y - y.mean()) ** 2))
    spread = ssr / (n - 1)
    gain = _trend_gain(x, y)
    aic = n * math.log(max(ssr / n, 1e-12)) + 2
    return aic, Member("last", 0.0, float(y[-m:].mean()), spread * (1 + 1 / m) + gain**2)


def _mixture(members: Sequence[Member]) -> tuple[float, float]:
    """Mean and variance of a weighted mixture (weights sum to 1)."""
    members = [m for m in members if m.weight > 0]  # 0 x inf would be NaN
    mean = sum(m.weight * m.mean for m in members)
    var = sum(m.weight * (m.var + (m.mean - mean) ** 2) for m in members)
    return mean, var


def _weighted(members: list[Member], scores: list[float]) -> list[Member]:
    """Members with weights ``~ exp(-score / 2)`` (scores are AICs), summing to 1."""
    best = min(scores)
    raw = [math.exp(-(s - best) / 2) for s in scores]
    total = sum(raw)
    return [Member(m.name, r / total, m.mean, m.var) for m, r in zip(members, raw, strict=True)]


def _fit_members(x: np.ndarray, y: np.ndarray, bounds: Bounds) -> tuple[list[Member], float]:
    """The weighted members and the mixture's fitted value at ``x_last`` (the prior's anchor)."""
    aic, last = _last(x, y)
    fits = [fit for shape in SHAPES if (fit := _fit(shape, x, y)) is not None]
    distance = (KAPPA * _trend_gain(x, y)) ** 2
    members = [last, *(replace(fit[1], var=fit[1].var + distance) for fit in fits)]
    members = [replace(m, mean=_clip(m.mean, bounds)) for m in members]
    weighted = _weighted(members, [aic, *(fit[0] for fit in fits)])
    anchors = [float(y[-1]), *(fit[2] for fit in fits)]
    anchor = sum(m.weight * a for m, a in zip(weighted, anchors, strict=True))
    return weighted, anchor


def reference_prior(
    x_last: float, anchor: float, references: Sequence[Sequence[Point]], noise_var: float
) -> Member | None:
    """The final score the reference curves' remaining gains give from ``anchor`` at
    ``x_last`` (None if no reference was evaluated that early).

    >>> refs = [[(0.1, 0.5), (1.0, 0.8)], [(0.1, 0.6), (1.0, 0.8)]]
    >>> m = reference_prior(0.1, 0.55, refs, 0.0)
    >>> round(m.mean, 3), round(m.var, 4)
    (0.8, 0.0075)
    """
    gains = []
    for ref in references:
        rx, ry = _points(ref)
        if rx[0] <= x_last and rx[-1] == 1.0:
            gains.append(float(ry[-1] - np.interp(x_last, rx, ry)))
    if not gains:
        return None
    k = len(gains)
    spread = float(np.var(gains, ddof=1)) * (1 + 1 / k) if k > 1 else gains[0] ** 2
    return Member("prior", 0.0, anchor + float(np.mean(gains)), spread + noise_var)


def _noise_var(y: np.ndarray) -> float:
    """Evaluation noise: from successive differences of the points (0 with one point)."""
    if len(y) < 2:
        return 0.0
    return float(np.mean(np.diff(y) ** 2) / 2)


def predict_final(
    curve: Sequence[Point],
    *,
    seed_sd: float = 0.0,
    level: float = 0.8,
    references: Sequence[Sequence[Point]] = (),
    bounds: Bounds = None,
) -> Prediction:
    """The final score (at ``x = 1``) of a run whose curve so far is ``curve``, with a
    ``level`` interval; see the module docstring for the formulas.

    >>> predict_final([(0.5, 0.7), (1.0, 0.8)], seed_sd=0.01).source
    'observed'
    >>> p = predict_final([(0.1, 0.5)], references=[[(0.1, 0.6), (0.5, 0.7), (1.0, 0.75)]])
    >>> round(p.mean, 3), round(p.sd, 3), p.source
    (0.65, 0.15, 'prior')
    """
    if not 0 < level < 1 or seed_sd < 0 or not math.isfinite(seed_sd):
        raise UserError(f"level must be in (0, 1) and seed_sd >= 0, got {level}, {seed_sd}")
    x, y = _points(curve)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    if x[-1] == 1.0:
        return _interval(float(y[-1]), 0.0, seed_sd, z, level, "observed", (), bounds)
    members, anchor = _fit_members(x, y, bounds)
    fit_mean, fit_var = _mixture(members)
    source = "fit" if any(m.name != "last" and m.weight > 0 for m in members) else "last"
    prior = reference_prior(float(x[-1]), anchor, references, _noise_var(y))
    if prior is None:
        return _interval(fit_mean, fit_var, seed_sd, z, level, source, tuple(members), bounds)
    prior = Member("prior", 0.0, _clip(prior.mean, bounds), prior.var)
    fitted = Member(source, 0.0, fit_mean, fit_var + _reach(float(x[-1]), bounds))
    both = _weighted([fitted, prior], [_log_var(fit_var), _log_var(prior.var)])
    mean, _ = _mixture(both)
    var = 1 / sum(1 / max(m.var, 1e-24) for m in both)
    var += sum(m.weight * (m.mean - mean) ** 2 for m in both)
    label = "prior" if both[0].weight == 0 else f"{source}+prior"
    return _interval(mean, var, seed_sd, z, level, label, (*members, prior), bounds)


def _reach(x_last: float, bounds: Bounds) -> float:
    """``(REACH (1 - x_last) w)^2``: what a prefix cannot tell about the rest of its run (an
    early prefix is mostly warmup), ``w`` the metric's range (1 without bounds)."""
    width = 1.0 if bounds is None else bounds[1] - bounds[0]
    return (REACH * (1 - x_last) * width) ** 2


def _log_var(var: float) -> float:
    """An "AIC" that makes :func:`_weighted` weigh by inverse variance: ``2 ln v``."""
    return math.inf if not math.isfinite(var) else 2 * math.log(max(var, 1e-24))


def _interval(
    mean: float,
    var: float,
    seed_sd: float,
    z: float,
    level: float,
    source: str,
    members: tuple[Member, ...],
    bounds: Bounds,
) -> Prediction:
    sd = math.sqrt(var + seed_sd**2)
    low, high = mean - z * sd, mean + z * sd
    mean, low, high = _clip(mean, bounds), _clip(low, bounds), _clip(high, bounds)
    return Prediction(mean, low, high, sd, level, source, members)
