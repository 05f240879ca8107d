"""The plain-language answer to "does freezing hurt, and what does it save?", from the table.

Per context (usually the whole study): which strategies Welch's t-test cannot tell apart from
full fine-tuning, the cheapest of them, the deepest freeze that keeps >= 90% of full
fine-tuning's quality (the yardstick of Lee et al. 2019, arXiv 1911.03090), and whether the metric
falls as more blocks freeze (Spearman's rank correlation over the static ``bottom:K`` runs).

>>> describe_units(3, 6), describe_units(7, 6)
('embeddings + 2 of 6 blocks frozen', 'the whole body frozen')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

from freezetune.report.tables import Line, Summary

__all__ = ["ALPHA", "Answer", "answer_study", "describe_units", "trend"]

ALPHA = 0.05
KEEP = 0.90  # share of full fine-tuning's quality a freeze must keep


@dataclass(frozen=True)
class Answer:
    context: str  # "" for the whole study, else e.g. "n_train=500"
    headline: str
    sentences: tuple[str, ...]
    indistinguishable: tuple[str, ...]  # labels, Welch p >= ALPHA
    cheapest: str | None  # the least wall time among them
    deepest: str | None  # the most units frozen with >= KEEP of full quality
    spearman: tuple[float, float] | None  # (rho, p) of metric vs frozen units


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


def trend(lines: list[Line]) -> tuple[float, float, int] | None:
    """Spearman (rho, p, n) of the metric vs frozen units over the runs of static prefix specs;
    None with fewer than 3 distinct depths; NaNs when the metric never changes."""
    xs = [line.units_frozen for line in lines if line.static_prefix for _ in line.values]
    ys = [v for line in lines if line.static_prefix for v in line.values]
    if len(set(xs)) < 3:
        return None
    if len(set(ys)) < 2:  # the rank correlation is undefined
        return math.nan, math.nan, len(xs)
    rho, p = stats.spearmanr(xs, ys)
    return float(rho), float(p), len(xs)


def _tests(full: Line, others: list[Line], metric: str) -> tuple[list[str], list[Line]]:
    tested = [line for line in others if line.p_value is not None]
    if not tested:
        return [
            "With one seed per strategy, whether a strategy differs from full fine-tuning can't "
            "be tested; run at least 3 seeds."
        ], []
    same = [line for line in tested if line.p_value is not None and line.p_value >= ALPHA]
    differ = [line for line in tested if line not in same]
    out = []
    if same:
        listed = ", ".join(f"{line.label} (p = {line.p_value:.2f})" for line in same)
        out.append(
            f"Statistically indistinguishable from full fine-tuning (Welch's two-sided t-test, "
            f"unequal variances, p >= {ALPHA}): {listed}."
        )
    if differ:
        listed = ", ".join(f"{line.label} ({_pts(line.diff or 0.0)})" for line in differ)
        out.append(f"Significantly different from full fine-tuning (p < {ALPHA}): {listed}.")
    untested = [line.label for line in others if line.n and line.p_value is None]
    if untested:
        out.append(f"Not tested (fewer than 2 seeds): {', '.join(untested)}.")
    out.append(
        f"With {full.n} seeds the test has little power: indistinguishable does not mean equal."
    )
    return out, same


def _cheapest(full: Line, same: list[Line]) -> tuple[str | None, Line | None]:
    if not same:
        return None, None
    best = min(same, key=lambda line: line.wall)
    verdict = "faster" if best.wall < full.wall else "not faster"
    return (
        f"The cheapest of them is {best.label}: {best.wall:.1f} s against {full.wall:.1f} s for "
        f"full fine-tuning ({(best.speedup or 0):.2f}x, {verdict}).",
        best,
    )


def _deepest(full: Line, others: list[Line], metric: str) -> tuple[str, Line | None]:
    keep = [
        line
        for line in others
        if line.relative is not None and line.relative >= KEEP and line.units_frozen is not None
    ]
    if not keep:
        return f"No freeze keeps {KEEP:.0%} of full fine-tuning's {metric}.", None
    deep = max(keep, key=lambda line: (line.units_frozen or 0, line.relative or 0))
    return (
        f"The deepest freeze that keeps >= {KEEP:.0%} of full fine-tuning's {metric} is "
        f"{deep.label} ({describe_units(deep.units_frozen, deep.num_blocks)}): "
        f"{(deep.relative or 0):.1%} of full, {_pts(deep.diff or 0.0)}.",
        deep,
    )


def _trend_sentence(found: tuple[float, float, int] | None, metric: str) -> str:
    if found is None:
        return "Too few depths (bottom:K specs) to say whether the metric falls as blocks freeze."
    rho, p, n = found
    if math.isnan(rho):
        return f"{metric.capitalize()} is the same at every depth ({n} runs)."
    shown = f"Spearman rho = {rho:+.2f}, p = {p:.3g}, over {n} runs"
    if p < ALPHA and rho < 0:
        return f"Yes, {metric} drops as more blocks freeze ({shown})."
    if p < ALPHA:
        return f"{metric.capitalize()} rises as more blocks freeze ({shown})."
    return f"No clear trend of {metric} with the number of frozen blocks ({shown})."


def _answer(context: str, lines: list[Line], metric: str) -> Answer:
    full = next((line for line in lines if line.reference == line.label), None)
    if full is None:
        text = "No full fine-tuning run succeeded, so nothing can be compared with it."
        return Answer(context, text, (text,), (), None, None, None)
    others = [line for line in lines if line is not full and line.reference == full.label]
    std = f" ± {100 * full.std:.1f}" if full.n > 1 else ""
    sentences = [f"Full fine-tuning reaches {metric} {100 * full.mean:.1f}{std} ({full.n} seeds)."]
    tests, same = _tests(full, others, metric)
    cheap_text, cheap = _cheapest(full, same)
    deep_text, deep = _deepest(full, others, metric)
    found = trend(lines)
    sentences += [*tests, *([cheap_text] if cheap_text else []), deep_text]
    sentences.append(_trend_sentence(found, metric))
    if not others:
        headline = "Only full fine-tuning succeeded: nothing to compare."
    elif not any(line.p_value is not None for line in others):
        headline = f"One seed each: can't test the differences. {deep_text}"
    else:
        headline = (
            f"{len(same)} of {len(others)} strateg{'y is' if len(others) == 1 else 'ies are'} "
            f"indistinguishable from full fine-tuning (Welch p >= {ALPHA})"
            + (f"; cheapest: {cheap.label} (speedup {(cheap.speedup or 0):.2f}x)" if cheap else "")
            + f". {deep_text}"
        )
    return Answer(
        context=context,
        headline=headline,
        sentences=tuple(sentences),
        indistinguishable=tuple(line.label for line in same),
        cheapest=cheap.label if cheap else None,
        deepest=deep.label if deep else None,
        spearman=found[:2] if found and not math.isnan(found[0]) else None,
    )


def answer_study(summary: Summary) -> list[Answer]:
    """One answer per full fine-tuning line (usually one; one per training-set size or lr when
    the study varies them), each over the lines compared with it."""
    groups: dict[str | None, list[Line]] = {}
    for line in summary.lines:
        if line.n:  # strategies that never succeeded show up in the table's failures only
            groups.setdefault(line.reference, []).append(line)
    return [
        _answer((label or "").removeprefix("full").strip(), lines, summary.metric)
        for label, lines in groups.items()
    ]
