"""The plain-language answer to "does freezing hurt, and what does it save?", from the table.

Per context (usually the whole study): how far full fine-tuning got above the trivial baseline
(a constant prediction) and whether that is signal enough to rank anything
(:mod:`freezetune.report.rules`); then which strategies Welch's t-test, Holm-adjusted, cannot
tell apart from full fine-tuning, the cheapest of them to train beyond the run-to-run noise, the
deepest freeze that keeps >= 90% of full fine-tuning's gain over the baseline by its 95% CI (the
yardstick of Lee et al. 2019, arXiv 1911.03090, read above the floor;
:mod:`freezetune.report.verdicts`), whether the metric falls as more blocks freeze (Spearman's
rank correlation over the static ``bottom:K`` runs), and which strategies score below the
baseline. When the runs measured their saved model's inference or distilled a student, the
answer adds what is cheapest to train and to run, and whether distillation paid
(:mod:`freezetune.report.speed`).

An answer reads at a glance: a headline, then at most :data:`BULLETS` short bullets, each a
verdict with its number (:attr:`Answer.bullets`); every other sentence (caveats, the rules'
details) is in :attr:`Answer.details`, which the reports put under the table.

>>> describe_units(3, 6), describe_units(7, 6)
('embeddings + 2 of 6 blocks frozen', 'the whole body frozen')
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from scipy import stats

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
    signal,
)
from freezetune.report.speed import SpeedAnswer, speed_answer
from freezetune.report.tables import BaselineLine, Line, Summary
from freezetune.report.verdicts import cheapest, deepest, describe_units, tests, trains

__all__ = ["ALPHA", "BULLETS", "KEEP", "Answer", "answer_study", "describe_units", "trend"]

BULLETS = 5  # the most bullets under an answer's headline

#: bullet kinds, most important first: which ones stay when there are more than BULLETS
PRIORITY = ("tests", "cheapest", "inference", "distillation", "reach", "trend", "below")
#: the order they are shown in
ORDER = ("reach", "tests", "cheapest", "inference", "distillation", "trend", "below")


@dataclass(frozen=True)
class Answer:
    context: str  # "" for the whole study, else e.g. "n_train=500"
    headline: str
    sentences: tuple[str, ...]
    indistinguishable: tuple[str, ...]  # labels, Welch p >= ALPHA (Holm-adjusted)
    cheapest: str | None  # the least training time without a measurable loss, beyond noise
    deepest: str | None  # the most units frozen whose CI keeps >= KEEP of full quality
    spearman: tuple[float, float] | None  # (rho, p) of metric vs frozen units
    signal: bool | None = None  # enough signal to rank; None: the baseline is unknown
    below: tuple[str, ...] = ()  # labels scoring below the trivial baseline
    disagree: tuple[str, ...] = ()  # labels whose raw % and % of gain differ by > DISAGREE
    speed: SpeedAnswer | None = None  # training and inference cost, distillation; None: no data
    deepest_point: str | None = None  # the most units frozen keeping >= KEEP by the point
    bullets: tuple[str, ...] = ()  # at most BULLETS verdicts, from sentences and speed's

    @property
    def details(self) -> tuple[str, ...]:
        """Every sentence of the answer and its speed part that is neither a bullet nor in the
        headline."""
        more = self.speed.sentences if self.speed else ()
        said = (*self.bullets, self.headline)
        return tuple(s for s in (*self.sentences, *more) if not any(s in x for x in said))


def _pts(value: float) -> str:
    return f"{100 * value:+.1f} points"


def _x100(value: float) -> str:
    return f"{100 * value:.1f}"


def trend(lines: list[Line]) -> tuple[float, float, int] | None:
    """Spearman (rho, p, n) of the metric vs frozen units over the runs of static prefix specs;
    None with fewer than 3 distinct depths; NaNs when the metric never changes."""
    xs = [line.frozen_units for line in lines if line.static_prefix for _ in line.values]
    ys = [v for line in lines if line.static_prefix for v in line.values]
    if len(set(xs)) < 3:
        return None
    if len(set(ys)) < 2:  # the rank correlation is undefined
        return math.nan, math.nan, len(xs)
    rho, p = stats.spearmanr(xs, ys)
    return float(rho), float(p), len(xs)


def _deepest_of(lines: list[Line]) -> Line | None:
    """The line with the most units frozen (ties: the larger raw share), None if none."""
    return max(lines, key=lambda x: (x.frozen_units or 0, x.relative or 0.0), default=None)


def _disagree(others: list[Line], floor: BaselineLine, deep: Line | None) -> str:
    """One sentence when raw % of full and % of full's gain tell different stories: some line's
    two readings differ by more than DISAGREE, or the raw ratio would name another freeze."""
    found = disagreements(others)
    raw = [x for x in others if (x.relative or 0.0) >= KEEP and x.frozen_units is not None]
    raw_deep = _deepest_of(raw)
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
    seeds = f"{full.n} seed" + ("s" if full.n != 1 else "")
    reached = f"Full fine-tuning reaches {metric} {_x100(full.mean)}{std} ({seeds})"
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


Candidates = dict[str, str]  # bullet kind (PRIORITY) -> its sentence


def _no_signal(
    context: str, lines: list[Line], floor: BaselineLine, sig: Signal, bullets: Candidates
) -> tuple[Answer, Candidates]:
    """The answer that ranks nothing: why, and what would help."""
    full = next(line for line in lines if line.reference == line.label)
    ci = f", 95% CI [{_x100(full.ci[0])}, {_x100(full.ci[1])}]" if full.n > 1 else ""
    headline = (
        f"This study cannot tell strategies apart: the trivial baseline ({floor.describe}) "
        f"scores {_x100(floor.value)} and {sig.reason} (full fine-tuning: "
        f"{_x100(full.mean)}{ci})."
    )
    said = (*bullets.values(), SIGNAL_RULE, HELP)
    below = tuple(line.label for line in below_baseline(lines))
    found = Answer(context, headline, said, (), None, None, None, signal=False, below=below)
    return found, bullets


def _headline(full: Line, others: list[Line], same: list[Line], cheap: Line | None,
              deep: str) -> str:  # fmt: skip
    if not others:
        return "Only full fine-tuning succeeded: nothing to compare."
    if not any(line.p_adjusted is not None for line in others):
        return f"One seed each: can't test the differences. {deep}"
    speedup = full.wall / trains(cheap) if cheap and trains(cheap) > 0 else 0.0
    return (
        f"{len(same)} of {len(others)} strateg{'y is' if len(others) == 1 else 'ies are'} "
        f"indistinguishable from full fine-tuning (Welch p >= {ALPHA}, Holm-adjusted)"
        + (f"; cheapest: {cheap.label} (speedup {speedup:.2f}x)" if cheap else "")
        + f". {deep}"
    )


def _answer(
    context: str, lines: list[Line], metric: str, floor: BaselineLine | None
) -> tuple[Answer, Candidates]:
    full = next((line for line in lines if line.reference == line.label), None)
    if full is None:
        text = "No full fine-tuning run succeeded, so nothing can be compared with it."
        return Answer(context, text, (text,), (), None, None, None), {}
    others = [line for line in lines if line is not full and line.reference == full.label]
    sig = signal(full.mean, full.ci[0], full.baseline if floor else None, full.n)
    below = _below(lines, floor, metric)
    sentences = _full_sentences(full, floor, metric, sig)
    if not sig.clear and floor is not None:
        said = {"reach": " ".join(sentences), **({"below": below} if below else {})}
        return _no_signal(context, lines, floor, sig, said)
    bullets = {"reach": sentences[0], **({"below": below} if below else {})}
    verdict, caveats, same = tests(full, others)
    better = [x for x in others if x not in same and x.p_adjusted is not None and (x.diff or 0) > 0]
    cheap_text, cheap = cheapest(full, [*same, *better])  # not significantly worse than full
    deep_text, deep, point = deepest(full, others, metric)
    disagree = _disagree(others, floor, point) if floor else ""
    found = trend(lines)
    trend_text = _trend_sentence(found, metric)
    bullets.update({"tests": verdict or "", "cheapest": cheap_text or ""})
    bullets["trend"] = trend_text if found is not None else ""
    sentences += [*([verdict] if verdict else []), *caveats, *([cheap_text] if cheap_text else [])]
    sentences += [deep_text, *(text for text in (disagree, below) if text), trend_text]
    answer = Answer(
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
        deepest_point=point.label if point else None,
    )
    return answer, {k: v for k, v in bullets.items() if v}


def _bullets(found: Candidates, speed: SpeedAnswer | None) -> tuple[str, ...]:
    """At most BULLETS verdicts: the most important kinds (PRIORITY), shown in ORDER."""
    found = dict(found)
    if speed is not None:
        distilled = [x for x in speed.bullets if x != speed.inference]
        found.update({"inference": speed.inference} if speed.inference else {})
        found.update({"distillation": " ".join(distilled)} if distilled else {})
    kept = sorted(found, key=PRIORITY.index)[:BULLETS]
    return tuple(found[kind] for kind in ORDER if kind in kept)


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
        found, candidates = _answer(context, lines, summary.metric, floors.get(label or ""))
        speed = speed_answer(lines, summary.metric, found.signal)
        bullets = _bullets(candidates, speed)
        answers.append(dataclasses.replace(found, speed=speed, bullets=bullets))
    return answers
