"""The rules that keep a study's answer honest, as functions any report can reuse (the study
report; later a contrast report over two studies).

- **Retention is measured above the trivial baseline.** ``% of full's gain`` =
  ``(score - baseline) / (full - baseline)``: the share of what full fine-tuning learned beyond a
  constant prediction that a strategy keeps. Thresholds ("keeps >= 90%") use it whenever the
  baseline is known; raw ``% of full`` is shown beside it.
- **No answer without signal.** Strategies are ranked only when the lower end of full
  fine-tuning's 95% CI clears the baseline by at least ``max(MARGIN, gain / 2)``: 2 points, and
  half of full's own gain (so the seeds' noise is at most half of what there is to keep, and a
  share of that gain means something). Under that, the answer says it cannot tell strategies
  apart, why, and what would help.
- **A threshold holds for its interval, not only its point.** "Keeps >= 90%" is claimed only
  where the lower end of the share's 95% interval (Fieller's, :func:`retention_ci`) clears it
  (:func:`confirmed`); a point above with an interval reaching below is said to be unconfirmed.
- **Verdicts that pick from several strategies survive the picking.** "Indistinguishable from"
  and "significantly different from" full fine-tuning read Welch's p Holm-adjusted over the
  strategies compared with it; a contrast's helps / hurts / costs-nothing rule reads
  Bonferroni-simultaneous intervals over the strategies it picks from (:data:`MULTIPLE`).
- **Two readings that disagree are pointed out** (by more than ``DISAGREE``), and so are lines
  that score below the baseline, and a full fine-tuning that closed less than ``LITTLE`` of the
  way from the baseline to a perfect score (:func:`headroom`): there was little to keep.

>>> signal(0.83, 0.813, 0.513, 3).clear, signal(0.83, 0.815, 0.812, 3).clear
(True, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from freezetune.report.tables import Line

__all__ = [
    "ALPHA",
    "DISAGREE",
    "HELP",
    "KEEP",
    "LITTLE",
    "MARGIN",
    "MULTIPLE",
    "PERFECT",
    "SIGNAL_RULE",
    "Signal",
    "below_baseline",
    "confirmed",
    "disagreements",
    "headroom",
    "holds",
    "keeps",
    "retention",
    "retention_ci",
    "signal",
]

ALPHA = 0.05  # significance level of every test the answer makes (Welch's two-sided t-test)
KEEP = 0.90  # share of full fine-tuning's quality (its gain, when known) a freeze must keep
MARGIN = 0.02  # metric units: full's CI must clear the baseline by >= 2 points ...
NOISE_SHARE = 0.5  # ... and by >= half of full's gain over it
DISAGREE = 0.10  # raw % of full vs % of full's gain: say so past 10 points
LITTLE = 0.25  # full closing under a quarter of the way from the baseline to 1.0: little
PERFECT = 1.0  # the best score of every metric (accuracy, F1, MCC, Pearson, Spearman)

SIGNAL_RULE = (
    f"Strategies are ranked only when the lower end of full fine-tuning's 95% CI is above the "
    f"trivial baseline by at least {100 * MARGIN:g} points and by at least "
    f"{NOISE_SHARE:.0%} of full's gain over it."
)
MULTIPLE = (
    "The answer's verdicts survive the choices they pick from: 'indistinguishable from' and "
    "'significantly different from' full fine-tuning read Welch's p Holm-adjusted over the "
    "strategies compared with it in the same context (p (Holm)), not the uncorrected p; a "
    f"'keeps >= {KEEP:.0%}' claim needs the lower end of its 95% CI above {KEEP:.0%} (above it "
    "by the point estimate alone, it is said to be unconfirmed)."
)
HELP = (
    "What would help: more training data (--max-train-samples), more epochs, a stronger "
    "model, or more seeds to narrow full fine-tuning's interval."
)


@dataclass(frozen=True)
class Signal:
    """Whether a study's full fine-tuning learned enough, beyond its baseline, to rank by."""

    clear: bool  # rank strategies (also when the baseline is unknown: the old answer)
    known: bool  # the baseline is known
    gain: float | None  # full's mean - baseline (metric units)
    clearance: float | None  # full's CI lower end - baseline (None with one seed)
    needed: float | None  # what the clearance must reach
    reason: str  # one sentence, "" when clear and nothing to add


def _pts(value: float) -> str:
    return f"{100 * value:.1f} points"


def signal(mean: float, ci_low: float, baseline: float | None, n: int) -> Signal:
    """Apply the signal rule to full fine-tuning's mean and CI lower end over ``n`` seeds."""
    if baseline is None:
        return Signal(True, False, None, None, None, "")
    gain = mean - baseline
    needed = max(MARGIN, NOISE_SHARE * gain)
    if gain <= 0:
        return Signal(False, True, gain, None, needed, "full fine-tuning does not beat it")
    if n < 2 or math.isnan(ci_low):
        clear = gain >= MARGIN
        why = (
            "with one seed its noise is unknown; run at least 3 seeds to check the answer"
            if clear
            else f"full fine-tuning beats it by only {_pts(gain)}"
        )
        return Signal(clear, True, gain, None, MARGIN, why)
    clearance = ci_low - baseline
    if clearance >= needed:
        return Signal(True, True, gain, clearance, needed, "")
    why = (
        "full fine-tuning's 95% CI reaches down to it"
        if clearance <= 0
        else f"full fine-tuning's 95% CI clears it by only {_pts(clearance)}, under the "
        f"{_pts(needed)} required"
    )
    return Signal(False, True, gain, clearance, needed, why)


def headroom(mean: float, baseline: float | None) -> float | None:
    """The share of the way from the baseline to a perfect score that ``mean`` covers.

    >>> round(headroom(0.137, 0.0), 3), round(headroom(0.83, 0.513), 2)
    (0.137, 0.65)
    """
    if baseline is None or baseline >= PERFECT:
        return None
    return (mean - baseline) / (PERFECT - baseline)


def retention(line: Line) -> float | None:
    """The share of full fine-tuning a line keeps, as thresholds read it: of full's gain over
    the baseline when known, else the raw ratio."""
    return line.gain if line.gain is not None else line.relative


def retention_ci(line: Line) -> tuple[float, float]:
    """The 95% interval of :func:`retention`: of the gain when the baseline is known, else of
    the raw ratio (NaN: under 2 seeds)."""
    return line.gain_ci if line.gain is not None else line.relative_ci


def holds(line: Line, keep: float = KEEP) -> bool:
    """Whether ``line`` keeps ``keep`` of full fine-tuning by its interval, not only its point
    (full fine-tuning itself keeps all of itself)."""
    if line.reference == line.label:
        return True
    share = retention(line)
    return share is not None and share >= keep and retention_ci(line)[0] >= keep


def confirmed(lines: list[Line], keep: float = KEEP) -> list[Line]:
    """The lines of :func:`keeps` whose interval's lower end also clears ``keep``."""
    return [line for line in keeps(lines, keep) if holds(line, keep)]


def keeps(lines: list[Line], keep: float = KEEP) -> list[Line]:
    """The lines (with a known depth) that keep at least ``keep`` of full fine-tuning."""
    return [
        line
        for line in lines
        if (share := retention(line)) is not None
        and share >= keep
        and line.frozen_units is not None
    ]


def disagreements(lines: list[Line], by: float = DISAGREE) -> list[Line]:
    """The lines whose raw % of full and % of full's gain differ by more than ``by``."""
    return [
        line
        for line in lines
        if line.gain is not None
        and line.relative is not None
        and abs(line.relative - line.gain) > by
    ]


def below_baseline(lines: list[Line]) -> list[Line]:
    """The lines whose mean scores below the trivial baseline of their dev examples."""
    return [line for line in lines if line.below_baseline]
