"""Did distillation pay? A distilled student against the same student trained without a teacher
(same model, blocks kept, freeze and settings; :class:`~freezetune.report.costs.Student`): the
difference, its Welch 95% interval and p, said to have helped or hurt only when significant.
It is one planned comparison per distilled strategy, so its p is not adjusted.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from freezetune.report.rules import ALPHA
from freezetune.report.stats import welch_ci, welch_p
from freezetune.report.tables import Line

__all__ = ["Comparison", "compare_distilled", "distillation"]


@dataclass(frozen=True)
class Comparison:
    """A distilled student against the same student trained without a teacher."""

    distilled: str  # label
    plain: str  # label
    diff: float  # distilled mean - plain mean (metric units)
    ci: tuple[float, float]  # Welch's 95% interval of the difference (NaN under 2 seeds)
    p_value: float | None  # Welch's two-sided t-test; None under 2 seeds a side
    verdict: str  # "helped", "hurt", "no significant difference" or "untested"


def compare_distilled(distilled: Line, plain: Line) -> Comparison:
    """``distilled`` against ``plain``, the same student without a teacher."""
    diff, low, high = welch_ci(distilled.values, plain.values)
    p = welch_p(distilled.values, plain.values)
    verdict = (
        "untested"
        if p is None
        else "no significant difference"
        if p >= ALPHA or diff == 0
        else "helped"
        if diff > 0
        else "hurt"
    )
    return Comparison(distilled.label, plain.label, diff, (low, high), p, verdict)


def _x100(value: float) -> str:
    return f"{100 * value:.1f}"


def _seeds(n: int) -> str:
    return f"{n} seed" + ("s" if n != 1 else "")


def _pts(value: float) -> str:
    return f"{100 * value:+.1f}"


def _compared(c: Comparison, d: Line, u: Line, metric: str, named: bool) -> list[str]:
    """The verdict and cost sentences; ``named``: say which distilled line (several distil
    the same student, e.g. with different objectives)."""

    def score(x: Line) -> str:
        return _x100(x.mean) + (f" ± {100 * x.std:.1f}" if x.n > 1 else "")

    which = f" ({d.label})" if named else ""
    said = (
        f"Distillation{which} against the same student without a teacher ({d.student.describe()}, "
        f"freeze {d.freeze}): {metric} {score(d)} ({_seeds(d.n)}) against {score(u)} "
        f"({_seeds(u.n)}), {_pts(c.diff)} points"
    )
    if c.verdict == "untested":
        said += "; with fewer than 2 seeds on a side the difference can't be tested."
    else:
        said += (
            f" (95% CI {_pts(c.ci[0])} to {_pts(c.ci[1])}; Welch p = {c.p_value:.3g}): "
            + {
                "helped": "distillation helped, significantly.",
                "hurt": "distillation hurt, significantly.",
                "no significant difference": "no significant difference either way "
                f"(p >= {ALPHA}; with few seeds the test has little power).",
            }[c.verdict]
        )
    teacher = d.cost.wall_with_teacher
    cost = (
        f"{d.wall:.1f} s, {teacher:.1f} s counting its teacher's training"
        if not math.isnan(teacher)
        else f"{d.wall:.1f} s (its teacher's training time is not recorded)"
    )
    student = f"The distilled student{which}"
    return [said, f"{student} trained in {cost}; without a teacher, {u.wall:.1f} s."]


def distillation(lines: list[Line], metric: str) -> tuple[list[str], list[str], list[Comparison]]:
    """Every distilled line against its undistilled twin: all sentences, the verdicts among
    them (one per comparison), and the comparisons."""
    plain = {(x.student.twin, x.freeze, x.context): x for x in lines if not x.student.distilled}
    said: list[str] = []
    verdicts: list[str] = []
    found: list[Comparison] = []
    distilled = [x for x in lines if x.student.distilled]
    twins = Counter((x.student.twin, x.freeze, x.context) for x in distilled)
    for d in distilled:
        u = plain.get((d.student.twin, d.freeze, d.context))
        if u is None:
            said.append(
                f"No run of this study fine-tunes {d.student.describe()} without a teacher "
                f"(with freeze {d.freeze} and the same settings), so distillation's effect on "
                f"{d.label} is not measured."
            )
            continue
        found.append(compare_distilled(d, u))
        pair = _compared(found[-1], d, u, metric, twins[d.student.twin, d.freeze, d.context] > 1)
        said += pair
        verdicts.append(pair[0])
    return said, verdicts, found
