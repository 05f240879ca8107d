"""Final-score predictions from prefix curves: known curves, coverage, priors, refusals."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from freezetune.advise.curves import predict_final
from freezetune.errors import UserError

NOISE, SEED_SD = 0.01, 0.005


def synthetic(rng: np.random.Generator, kind: int) -> Callable[[float], float]:
    """A saturating curve in the fraction of the run: pow3 (kind 0) or exp3 (kind 1)."""
    c = rng.uniform(0.75, 0.95)
    if kind == 0:
        a, alpha = rng.uniform(0.01, 0.06), rng.uniform(0.3, 1.0)
        return lambda x: c - a * x**-alpha
    a, b = rng.uniform(0.2, 0.5), rng.uniform(2, 8)
    return lambda x: c - a * math.exp(-b * x)


def trial(
    rng: np.random.Generator, kind: int, until: float, points: int, refs: int
) -> tuple[object, float]:
    """A noisy prefix up to ``until``, its noisy final score, and the prediction."""
    f = synthetic(rng, kind)
    xs = [until * j / points for j in range(1, points + 1)]
    curve = [(x, f(x) + rng.normal(0, NOISE)) for x in xs]
    final = f(1.0) + rng.normal(0, NOISE) + rng.normal(0, SEED_SD)
    references = []
    for _ in range(refs):
        g = synthetic(rng, kind)
        references.append([(j / 27, g(j / 27) + rng.normal(0, NOISE)) for j in range(1, 28)])
    prediction = predict_final(curve, seed_sd=SEED_SD, references=references, bounds=(0, 1))
    return prediction, final


def coverage(until: float, points: int, refs: int, n: int = 120) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    hits, errors = 0, []
    for i in range(n):
        p, final = trial(rng, i % 2, until, points, refs)
        hits += p.low <= final <= p.high  # type: ignore[attr-defined]
        errors.append(abs(p.mean - final))  # type: ignore[attr-defined]
    return hits / n, float(np.median(errors))


def test_80_percent_intervals_cover_70_to_90_percent_of_noisy_curves() -> None:
    covered, error = coverage(until=1 / 3, points=9, refs=0)
    assert 0.7 <= covered <= 0.9
    assert error < 0.03


def test_reference_curves_help_a_short_prefix_and_stay_calibrated() -> None:
    alone_cover, alone_error = coverage(until=1 / 9, points=3, refs=0, n=60)
    with_cover, with_error = coverage(until=1 / 9, points=3, refs=5, n=60)
    assert with_error < alone_error / 2
    assert with_cover >= 0.7 and alone_cover >= 0.7


def test_a_known_curve_is_recovered_and_the_interval_widens_with_distance() -> None:
    def f(x: float) -> float:
        return 0.9 - 0.04 * x**-0.6

    exact = predict_final([(k / 27, f(k / 27)) for k in range(1, 10)], seed_sd=0.01)
    assert exact.mean == pytest.approx(0.86, abs=1e-3) and exact.source == "fit"
    wiggle = np.random.default_rng(5).normal(0, 0.005, 9)  # the same noise on both prefixes
    long = predict_final([(k / 27, f(k / 27) + wiggle[k - 1]) for k in range(1, 10)], seed_sd=0.01)
    short = predict_final([(k / 81, f(k / 81) + wiggle[k - 1]) for k in range(1, 10)], seed_sd=0.01)
    assert long.low < 0.86 < long.high and short.low < 0.86 < short.high
    assert short.high - short.low > long.high - long.low
    assert (exact.high - exact.low) / 2 >= 1.28 * 0.01  # the seed noise is always inside


def test_observed_finals_and_bounds() -> None:
    done = predict_final([(0.5, 0.7), (1.0, 0.8)], seed_sd=0.02, level=0.95)
    assert done.source == "observed" and done.mean == 0.8
    assert done.high - done.low == pytest.approx(2 * 1.96 * 0.02, rel=1e-3)
    capped = predict_final([(0.5, 0.99), (1.0, 1.0)], seed_sd=0.05, bounds=(0.0, 1.0))
    assert capped.high == 1.0 and capped.low < 1.0
    one = predict_final([(0.1, 0.6)], bounds=(0.0, 1.0))
    assert one.source == "last" and (one.low, one.mean, one.high) == (0.0, 0.6, 1.0)


def test_flat_and_falling_curves_predict_their_level() -> None:
    flat = [(k / 27, 0.8 + 0.002 * (-1) ** k) for k in range(1, 10)]
    assert predict_final(flat).mean == pytest.approx(0.8, abs=0.005)
    falling = [(k / 27, 0.8 - 0.01 * k) for k in range(1, 10)]
    assert predict_final(falling).mean <= 0.8


def test_same_inputs_same_prediction() -> None:
    rng = np.random.default_rng(3)
    curve = [(k / 27, 0.8 - 0.05 / k + rng.normal(0, 0.01)) for k in range(1, 8)]
    refs = [[(k / 27, 0.7 + 0.005 * k) for k in range(1, 28)]]
    assert predict_final(curve, references=refs) == predict_final(curve, references=refs)


@pytest.mark.parametrize(
    ("curve", "options", "message"),
    [
        ([], {}, "empty curve"),
        ([(0.0, 0.5)], {}, "fraction of the run"),
        ([(0.5, math.nan)], {}, "finite score"),
        ([(0.5, 0.5)], {"level": 1.0}, "level"),
        ([(0.5, 0.5)], {"seed_sd": -1.0}, "seed_sd"),
    ],
)
def test_bad_curves_are_refused(curve: list, options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        predict_final(curve, **options)
