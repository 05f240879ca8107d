"""The study answer's verdicts that pick from several strategies, each held to a rule that
survives the picking (:mod:`freezetune.report.rules`):

- **Indistinguishable from / significantly different from full fine-tuning**: Welch's
  two-sided t-test against full, Holm-adjusted over the strategies compared with it
  (:attr:`Line.p_adjusted <freezetune.report.tables.Line>`).
- **The deepest freeze that keeps >= 90%** of full fine-tuning's gain (of its score when the
  baseline is unknown) is claimed only where the share's 95% interval clears 90%; a deeper
  freeze whose point estimate is above 90% is named as unconfirmed.
- **The cheapest to train without a measurable loss**: among the strategies not significantly
  worse than full (indistinguishable, or significantly better) that keep >= 90% by their
  interval, and full itself, the least training time, named
  only when it is below every other's beyond the run-to-run noise
  (:func:`~freezetune.report.speed.least_training`).

>>> describe_units(3, 6), describe_units(7, 6)
('embeddings + 2 of 6 blocks frozen', 'the whole body frozen')
"""

from __future__ import annotations

import math
from collections.abc import Callable

from freezetune.report.costs import training_wall
from freezetune.report.rules import ALPHA, KEEP, confirmed, keeps, retention, retention_ci
from freezetune.report.speed import least_training
from freezetune.report.tables import Line

__all__ = ["CHEAPEST_RULE", "cheapest", "deepest", "describe_units", "tests", "trains"]

CHEAPEST_RULE = (
    "Cheapest to train without a measurable loss: among the strategies not significantly worse "
    "than full fine-tuning (indistinguishable from it or significantly better) whose 95% CI "
    f"keeps >= {KEEP:.0%} (and full itself), the least training "
    "time per run, named only when Welch's t-test on the seeds' wall times puts it below every "
    f"other's (Holm-adjusted, p < {ALPHA}): the run-to-run noise the study measured. The same "
    "rule names a fastest model at inference, and only between different models: strategies "
    "that are the same model at inference share one pooled figure."
)


def describe_units(units: int | None, blocks: int | None) -> str:
    """Say what a frozen prefix of ``units`` units means for a model of ``blocks`` blocks."""
    if units is None or blocks is None:
        return "frozen units unknown"
    if units == 0:
        return "nothing frozen"
    if units > blocks:
        return "the whole body frozen"
    return (
        "embeddings frozen" if units == 1 else f"embeddings + {units - 1} of {blocks} blocks frozen"
    )


def _pts(value: float) -> str:
    return f"{100 * value:+.1f} points"


def _p(value: float | None) -> str:
    return "p untested" if value is None else "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def _ci(ci: tuple[float, float], sep: str = " (", end: str = ")") -> str:
    """E.g. " (95% CI 89.6% to 98.1%)": one decimal, so that an end near the threshold shows
    on its side of it ("" under 2 seeds)."""
    if any(math.isnan(x) for x in ci):
        return ""
    if any(math.isinf(x) for x in ci):
        return f"{sep}95% CI unbounded{end}"
    return f"{sep}95% CI {ci[0]:.1%} to {ci[1]:.1%}{end}"


def tests(full: Line, others: list[Line]) -> tuple[str | None, list[str], list[Line]]:
    """The verdict of Welch's tests against full (Holm-adjusted), the sentences that qualify
    it, and the strategies indistinguishable from full."""
    tested = [line for line in others if line.p_adjusted is not None]
    if not tested:
        return (
            None,
            [
                "With one seed per strategy, whether a strategy differs from full fine-tuning can't "
                "be tested; run at least 3 seeds."
            ],
            [],
        )
    same = [x for x in tested if x.p_adjusted is not None and x.p_adjusted >= ALPHA]
    differ = [x for x in tested if x not in same]
    m = len(tested)
    family = (
        f"Welch's two-sided t-test, Holm-adjusted over the {m} "
        f"strateg{'y' if m == 1 else 'ies'} compared with it"
    )
    listed = ", ".join(f"{x.label} ({_p(x.p_adjusted)})" for x in same)
    said = (
        f"Indistinguishable from full fine-tuning ({family}, p >= {ALPHA}): {listed}"
        if same
        else f"None is indistinguishable from full fine-tuning ({family}, p >= {ALPHA})"
    )
    if differ:
        listed = ", ".join(f"{x.label} ({_pts(x.diff or 0.0)}, {_p(x.p_adjusted)})" for x in differ)
        said += f"; significantly different (p < {ALPHA}): {listed}"
    more = []
    untested = [line.label for line in others if line.n and line.p_adjusted is None]
    if untested:
        more.append(f"Not tested (fewer than 2 seeds): {', '.join(untested)}.")
    more.append(
        f"With {full.n} seeds the test has little power: indistinguishable does not mean equal."
    )
    return said + ".", more, same


def trains(line: Line) -> float:
    """Its training wall time; a distilled student's counts its teacher's."""
    return training_wall(line.wall, line.student, line.cost)


def cheapest(full: Line, same: list[Line]) -> tuple[str | None, Line | None]:
    """The cheapest to train without a measurable loss (:data:`CHEAPEST_RULE`): the sentence
    and the strategy (None when none is named, or it is full fine-tuning itself)."""
    if not same:
        return None, None
    eligible = confirmed(same)
    if not eligible:
        return (
            "No strategy is known to train without a measurable loss (not significantly worse "
            f"than full fine-tuning and keeping >= {KEEP:.0%} by its 95% CI), so none is named "
            "cheapest.",
            None,
        )
    best, within = least_training([full, *eligible])
    if within:
        listed = [f"{x.label} ({trains(x):.1f} s)" for x in (best, *within)]
        shown = ", ".join(listed[:-1]) + f" and {listed[-1]}"
        return (
            f"No single cheapest to train without a measurable loss: {shown} are within the "
            "run-to-run noise of each other.",
            None,
        )
    if best is full:
        return (
            f"Full fine-tuning trains fastest ({full.wall:.1f} s per run), beyond the run-to-run "
            "noise: no freeze without a measurable loss saves time here.",
            None,
        )
    seconds = trains(best)
    teacher = " counting its teacher's training" if seconds != best.wall else ""
    return (
        f"Cheapest to train without a measurable loss: {best.label}, {seconds:.1f} s per "
        f"run{teacher} against {full.wall:.1f} s for full fine-tuning "
        f"({full.wall / seconds:.2f}x faster), beyond the run-to-run noise.",
        best,
    )


def _deepest_of(lines: list[Line], share: Callable[[Line], float | None]) -> Line | None:
    """The line with the most units frozen (ties: the larger share), None if none."""
    return max(lines, key=lambda x: (x.frozen_units or 0, share(x) or 0.0), default=None)


def _share(line: Line) -> str:
    """E.g. "95.6% of full's gain, 95% CI 89.1% to 101.8%" (of full's score, baseline unknown)."""
    if line.gain is not None:
        return f"{line.gain:.1%} of full's gain{_ci(line.gain_ci, ', ', '')}"
    return f"{(line.relative or 0):.1%} of full{_ci(line.relative_ci, ', ', '')}"


def _shares(line: Line) -> str:
    """E.g. "bottom:4 (embeddings + 4 of 6 blocks frozen): 95.6% of full's gain (95% CI 89.1%
    to 101.8%), 98.3% of full, -1.4 points"."""
    what = describe_units(line.frozen_units, line.num_blocks)
    rel = f"{(line.relative or 0):.1%} of full"
    if line.gain is not None:
        shares = f"{line.gain:.1%} of full's gain{_ci(line.gain_ci)}, {rel}"
    else:
        shares = f"{rel}{_ci(line.relative_ci)}"
    return f"{line.label} ({what}): {shares}, {_pts(line.diff or 0.0)}"


def deepest(full: Line, others: list[Line], metric: str) -> tuple[str, Line | None, Line | None]:
    """The deepest-freeze verdict; the deepest freeze whose interval clears :data:`KEEP`, and
    the deepest whose point estimate does (None: none)."""
    what = f"{metric} gain over the trivial baseline" if full.gain is not None else metric
    point = _deepest_of(keeps(others), retention)
    if point is None:
        return f"No freeze keeps {KEEP:.0%} of full fine-tuning's {what}.", None, None
    sure = _deepest_of(confirmed(others), retention)
    if sure is point:
        return (
            f"The deepest freeze that keeps >= {KEEP:.0%} of full fine-tuning's {what} is "
            f"{_shares(point)}.",
            sure,
            point,
        )
    why = (
        "with one seed there is no interval"
        if math.isnan(retention_ci(point)[0])
        else f"its interval reaches below {KEEP:.0%}"
    )
    then = (
        f"The deepest freeze whose 95% CI clears {KEEP:.0%} is {_shares(sure)}."
        if sure is not None
        else f"No freeze's 95% CI clears {KEEP:.0%}."
    )
    return (
        f"By its point estimate, {point.label} keeps >= {KEEP:.0%} of full fine-tuning's "
        f"{what} ({_share(point)}), but the data cannot confirm it: {why}. {then}",
        sure,
        point,
    )
