"""Predict an arm's whole-run training time from the steps it really ran.

Each evaluation records the training seconds so far (``train_time_s``: evaluation and saving
left out), so an arm stopped at a rung has a measured time per step for the epochs it saw. The
rest of its run costs::

    rest = r_now * (steps left in this epoch) + r_later * (steps in later epochs)

``r_now``: this epoch's seconds per step, from the slope between its evaluations (the first
steps of a run also pay one-off costs: building the cache, a teacher's pass). ``r_later`` is
``r_now`` times the later-to-first epoch speed ratio measured on an arm of the *same strategy*
at another rate (a sibling) that ran past its first epoch: the frozen prefix's cached outputs
make later epochs of a frozen strategy several times faster, and the lr changes nothing about a
step's cost. Without such a sibling ``r_later = r_now`` (source ``uncached``: an over-estimate
for frozen strategies, said so in the report). An arm that ran to its end: ``measured``.

>>> points = [(7, 3.5), (14, 7.0), (63, 31.5), (70, 32.2), (126, 37.8)]
>>> later_ratio(points, 63)
0.2
>>> t = predict_time([(7, 4.0), (14, 7.5)], budget=126, per_epoch=63, ratio=0.2)
>>> round(t.predicted, 1), t.source
(38.3, 'sibling')
"""

from __future__ import annotations

from collections.abc import Sequence

from freezetune.advise.advice import TrainTime

__all__ = ["epoch_rate", "later_ratio", "predict_time", "time_points"]

Point = tuple[int, float]  # (optimizer step, training seconds so far)


def time_points(curve: Sequence[dict[str, object]]) -> list[Point]:
    """(step, train_time_s) of each evaluation record, by step."""
    found = {}
    for event in curve:
        step, seconds = event.get("step"), event.get("train_time_s")
        if isinstance(step, int) and isinstance(seconds, int | float) and step > 0:
            found[step] = float(seconds)
    return sorted(found.items())


def _rate(points: Sequence[Point], start: int, end: int) -> float | None:
    """Seconds per step between the first and last point in ``(start, end]`` (or from the
    segment's start when it holds one point and a point at ``start`` exists)."""
    inside = [p for p in points if start < p[0] <= end]
    before = [p for p in points if p[0] == start] or ([(0, 0.0)] if start == 0 else [])
    ends = inside if len(inside) >= 2 else before + inside
    if len(ends) < 2 or ends[-1][0] == ends[0][0]:
        return None
    return (ends[-1][1] - ends[0][1]) / (ends[-1][0] - ends[0][0])


def epoch_rate(points: Sequence[Point], per_epoch: int) -> float | None:
    """Seconds per step in the first epoch (None: fewer than two points in it)."""
    return _rate(points, 0, per_epoch)


def later_ratio(points: Sequence[Point], per_epoch: int) -> float | None:
    """Seconds per step in the epochs after the first over those in the first (None: the arm
    did not get past its first epoch)."""
    first = _rate(points, 0, per_epoch)
    later = _rate(points, per_epoch, points[-1][0]) if points else None
    if first is None or later is None or first <= 0:
        return None
    return round(max(later, 0.0) / first, 4)


def predict_time(
    points: Sequence[Point],
    *,
    budget: int,
    per_epoch: int,
    ratio: float | None,
    rate: float | None = None,
) -> TrainTime:
    """The arm's whole-run training seconds; ``ratio``: a sibling's :func:`later_ratio`;
    ``rate``: the first epoch's seconds per step measured over a longer stretch (a sibling's)."""
    if not points:
        return TrainTime(0.0, 0.0, "none")
    reached, measured = points[-1]
    if reached >= budget:
        return TrainTime(measured, measured, "measured")
    epoch_start = (reached - 1) // per_epoch * per_epoch
    epoch_end = min(budget, epoch_start + per_epoch)
    now = _rate(points, epoch_start, epoch_end) or measured / reached
    if epoch_start == 0 and rate is not None:
        now = rate
    own = later_ratio(points, per_epoch)
    later = own if own is not None else ratio
    source = "own" if own is not None else ("sibling" if ratio is not None else "uncached")
    if epoch_start > 0 and own is not None:  # already in a later epoch: now is its rate
        later = 1.0
    rest = now * (epoch_end - reached) + now * (later or 1.0) * (budget - epoch_end)
    return TrainTime(measured, measured + rest, source)
