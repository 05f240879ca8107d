"""The plain-language answer to "does freezing hurt, and what does it save?", from the table.

Per context (usually the whole study): how far full fine-tuning got above the trivial baseline
(a constant prediction) and whether that is signal enough to rank anything
(:mod:`freezetune.report.rules`); then which strategies Welch's t-test cannot tell apart from
full fine-tuning, the cheapest of them, the deepest freeze that keeps >= 90% of full
fine-tuning's gain over the baseline (the yardstick of Lee et al. 2019, arXiv 1911.03090, read
above the floor), whether the metric falls as more blocks freeze (Spearman's rank correlation
over the static ``bottom:K`` runs), and which strategies score below the baseline. When the
runs measured their saved model's inference or distilled a student, the answer adds what is
cheapest to train and to run, and whether distillation paid (:mod:`freezetune.report.speed`).

>>> describe_units(3, 6), describe_units(7, 6)
('embeddings + 2 of 6 blocks frozen', 'the whole body frozen')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from scipy import stats

from freezetune.report.costs import training_wall
from freezetune.report.rules import (
    ALPHA,
    DISAGREE,
    HELP,
    KEEP,
    LITTLE,
    SIGNAL_RULE,
    Signal,
    below_baseline,
    disagreements,
    headroom,
    keeps,
    retention,
    signal,
)
from freezetune.report.speed import SpeedAnswer, speed_answer
from freezetune.report.tables import BaselineLine, Line, Summary

__all__ = ["ALPHA", "KEEP", "Answer", "answer_study", "describe_units", "trend"]


@dataclass(frozen=True)
class Answer:
    context: str  # "" for the whole study, else e.g. "n_train=500"
    headline: str
    sentences: tuple[str, ...]
    indistinguishable: tuple[str, ...]  # labels, Welch p >= ALPHA
    cheapest: str | None  # the least wall time among them
    deepest: str | None  # the most units frozen with >= KEEP of full quality
    spearman: tuple[float, float] | None  # (rho, p) of metric vs frozen units
    signal: bool | None = None  # enough signal to rank; None: the baseline is unknown
    below: tuple[str, ...] = ()  # labels scoring below the trivial baseline
    disagree: tuple[str, ...] = ()  # labels whose raw % and % of gain differ by > DISAGREE
    speed: SpeedAnswer | None = None  # training and inference cost, distillation; None: no data


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


def _x100(value: float) -> str:
    return f"{100 * value:.1f}"


def _ci(ci: tuple[float, float]) -> str:
    if any(math.isnan(x) for x in ci):
        return ""
    if any(math.isinf(x) for x in ci):
        return " (95% CI unbounded)"
    return f" (95% CI {ci[0]:.0%} to {ci[1]:.0%})"


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


def _trains(line: Line) -> float:
    """Its training wall time; a distilled student's counts its teacher's."""
    return training_wall(line.wall, line.student, line.cost)


def _speedup(full: Line, line: Line) -> float:
    """Full fine-tuning's wall time over ``line``'s training time (0 when that is unknown)."""
    seconds = _trains(line)
    return full.wall / seconds if seconds > 0 else 0.0


def _cheapest(full: Line, same: list[Line]) -> tuple[str | None, Line | None]:
    if not same:
        return None, None
    best = min(same, key=_trains)
    seconds = _trains(best)
    teacher = " counting its teacher's training" if seconds != best.wall else ""
    verdict = "faster" if seconds < full.wall else "not faster"
    return (
        f"The cheapest of them is {best.label}: {seconds:.1f} s{teacher} against "
        f"{full.wall:.1f} s for full fine-tuning ({_speedup(full, best):.2f}x, {verdict}).",
        best,
    )


def _deepest_of(lines: list[Line], share: Callable[[Line], float | None]) -> Line | None:
    """The line with the most units frozen (ties: the larger share), None if none."""
    return max(lines, key=lambda x: (x.units_frozen or 0, share(x) or 0.0), default=None)


def _deepest(full: Line, others: list[Line], metric: str) -> tuple[str, Line | None]:
    by_gain = full.gain is not None
    what = f"{metric} gain over the trivial baseline" if by_gain else metric
    keep = keeps(others)
    if not keep:
        return f"No freeze keeps {KEEP:.0%} of full fine-tuning's {what}.", None
    deep = _deepest_of(keep, retention)
    assert deep is not None  # keep is not empty
    gain = f"{deep.gain:.1%} of full's gain{_ci(deep.gain_ci)}, " if by_gain else ""
    return (
        f"The deepest freeze that keeps >= {KEEP:.0%} of full fine-tuning's {what} is "
        f"{deep.label} ({describe_units(deep.units_frozen, deep.num_blocks)}): "
        f"{gain}{(deep.relative or 0):.1%} of full, {_pts(deep.diff or 0.0)}.",
        deep,
    )


def _disagree(others: list[Line], floor: BaselineLine, deep: Line | None) -> str:
    """One sentence when raw % of full and % of full's gain tell different stories: some line's
    two readings differ by more than DISAGREE, or the raw ratio would name another freeze."""
    found = disagreements(others)
    raw = [x for x in others if (x.relative or 0.0) >= KEEP and x.units_frozen is not None]
    raw_deep = _deepest_of(raw, lambda x: x.relative)
    other = raw_deep if raw_deep is not None and raw_deep is not deep else None
    if not found and other is None:
        return ""
    tail = (
        f"; by raw % the deepest freeze keeping {KEEP:.0%} would be {other.label} "
        f"({(other.relative or 0):.1%} of full, {(other.gain or 0):.1%} of its gain)"
        if other is not None
        else ""
    )
    listed = ", ".join(f"{x.label} ({x.relative:.1%} vs {x.gain:.1%})" for x in found)
    what = (
        f"Raw % of full and % of full's gain disagree by more than {100 * DISAGREE:.0f} points "
        f"for {listed}"
        if found
        else "Raw % of full and % of full's gain disagree"
    )
    return (
        f"{what}: the raw ratio counts the trivial baseline's {_x100(floor.value)} as kept, so "
        f"the {KEEP:.0%} threshold uses the gain{tail}."
    )


def _below(lines: list[Line], floor: BaselineLine | None, metric: str) -> str:
    """E.g. "The strategy head scores below always predicting the majority class ('0'): ..."."""
    found = below_baseline(lines)
    if not found or floor is None:
        return ""
    if len(found) == 1:
        return (
            f"The strategy {found[0].label} scores below {floor.describe}: {metric} "
            f"{_x100(found[0].mean)} against {_x100(floor.value)}."
        )
    names = ", ".join(x.label for x in found[:-1]) + f" and {found[-1].label}"
    listed = ", ".join(f"{x.label} {_x100(x.mean)}" for x in found)
    return (
        f"The strategies {names} score below {floor.describe} ({metric} "
        f"{_x100(floor.value)}): {listed}."
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


def _full_sentences(full: Line, floor: BaselineLine | None, metric: str, sig: Signal) -> list[str]:
    """What full fine-tuning reached, and how far above the trivial baseline."""
    std = f" ± {100 * full.std:.1f}" if full.n > 1 else ""
    reached = f"Full fine-tuning reaches {metric} {_x100(full.mean)}{std} ({full.n} seeds)"
    if floor is None or sig.gain is None:
        return [
            f"{reached}. The trivial baseline is unknown (its dev data was not found), so "
            "retention is the raw % of full fine-tuning."
        ]
    out = [
        f"{reached}; the trivial baseline, {floor.describe}, scores {_x100(floor.value)} on the "
        f"same {floor.examples} dev examples, so full fine-tuning gains "
        f"{_pts(sig.gain).lstrip('+')} over it."
    ]
    closed = headroom(full.mean, floor.value)
    if sig.clear and closed is not None and closed < LITTLE:
        out.append(
            f"That is little to keep: full fine-tuning covers only {closed:.0%} of the way from "
            "the baseline to a perfect score, so a point of noise moves a strategy's % of "
            "full's gain a lot."
        )
    if sig.clear and sig.reason:
        out.append(f"Signal: {sig.reason}.")
    return out


def _no_signal(
    context: str, lines: list[Line], floor: BaselineLine, sig: Signal, extra: list[str]
) -> Answer:
    """The answer that ranks nothing: why, and what would help."""
    full = next(line for line in lines if line.reference == line.label)
    ci = f", 95% CI [{_x100(full.ci[0])}, {_x100(full.ci[1])}]" if full.n > 1 else ""
    headline = (
        f"This study cannot tell strategies apart: the trivial baseline ({floor.describe}) "
        f"scores {_x100(floor.value)} and {sig.reason} (full fine-tuning: "
        f"{_x100(full.mean)}{ci})."
    )
    sentences = (*extra, SIGNAL_RULE, HELP)
    below = tuple(line.label for line in below_baseline(lines))
    return Answer(context, headline, sentences, (), None, None, None, signal=False, below=below)


def _headline(
    full: Line, others: list[Line], same: list[Line], cheap: Line | None, deep: str
) -> str:
    if not others:
        return "Only full fine-tuning succeeded: nothing to compare."
    if not any(line.p_value is not None for line in others):
        return f"One seed each: can't test the differences. {deep}"
    return (
        f"{len(same)} of {len(others)} strateg{'y is' if len(others) == 1 else 'ies are'} "
        f"indistinguishable from full fine-tuning (Welch p >= {ALPHA})"
        + (f"; cheapest: {cheap.label} (speedup {_speedup(full, cheap):.2f}x)" if cheap else "")
        + f". {deep}"
    )


def _answer(context: str, lines: list[Line], metric: str, floor: BaselineLine | None) -> Answer:
    full = next((line for line in lines if line.reference == line.label), None)
    if full is None:
        text = "No full fine-tuning run succeeded, so nothing can be compared with it."
        return Answer(context, text, (text,), (), None, None, None)
    others = [line for line in lines if line is not full and line.reference == full.label]
    sig = signal(full.mean, full.ci[0], full.baseline if floor else None, full.n)
    below = _below(lines, floor, metric)
    sentences = _full_sentences(full, floor, metric, sig)
    if not sig.clear and floor is not None:
        return _no_signal(context, lines, floor, sig, [*sentences, *([below] if below else [])])
    tests, same = _tests(full, others, metric)
    cheap_text, cheap = _cheapest(full, same)
    deep_text, deep = _deepest(full, others, metric)
    disagree = _disagree(others, floor, deep) if floor else ""
    found = trend(lines)
    sentences += [*tests, *([cheap_text] if cheap_text else []), deep_text]
    sentences += [text for text in (disagree, below) if text]
    sentences.append(_trend_sentence(found, metric))
    return Answer(
        context=context,
        headline=_headline(full, others, same, cheap, deep_text),
        sentences=tuple(sentences),
        indistinguishable=tuple(line.label for line in same),
        cheapest=cheap.label if cheap else None,
        deepest=deep.label if deep else None,
        spearman=found[:2] if found and not math.isnan(found[0]) else None,
        signal=sig.clear if sig.known else None,
        below=tuple(line.label for line in below_baseline(lines)) if floor else (),
        disagree=tuple(line.label for line in disagreements(others)),
    )


def answer_study(summary: Summary) -> list[Answer]:
    """One answer per full fine-tuning line (usually one; one per training-set size or lr when
    the study varies them), each over the lines compared with it and against the trivial
    baseline of its context (when known)."""
    groups: dict[str | None, list[Line]] = {}
    for line in summary.lines:
        if line.n:  # strategies that never succeeded show up in the table's failures only
            groups.setdefault(line.reference, []).append(line)
    floors = {b.reference: b for b in summary.baselines}
    answers = []
    for label, lines in groups.items():
        context = (label or "").removeprefix("full").strip()
        found = _answer(context, lines, summary.metric, floors.get(label or ""))
        speed = speed_answer(lines, summary.metric, found.signal)
        answers.append(dataclasses.replace(found, speed=speed))
    return answers
