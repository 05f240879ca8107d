"""The cells of advise's tables and facts, as strings: pure functions of an :class:`Advice`.

Scores are shown in points (the metric x100, one decimal), with their 80% interval; times in
s/min/h; inference in ms per example. Arms are ordered best first: by score mean, arms without
a score (failed) last, ties in the order the arms were given. Rungs count from 1 here
(``ArmResult.rung`` counts from 0, as :mod:`~.halving` does).

>>> from freezetune.advise.advice import ArmResult, Score
>>> arm = ArmResult("a", "head (lr=0.001)", "head", "head", 1e-3, 90, 10, 0, "stopped",
...                 ((10, 0.7),), Score(0.75, 0.7, 0.8, 0.02, "fit"))
>>> status(arm), score_cell(arm.score), source(arm.score)
('stopped at rung 1, step 10 of 90', '75.0 [70.0, 80.0]', 'predicted (fit)')
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from freezetune.advise.advice import Advice, ArmResult, Score

__all__ = [
    "NOTE",
    "OPTIMIZE",
    "PICK",
    "arm_rows",
    "best_arm",
    "duration",
    "facts",
    "inference_by_architecture",
    "inference_note",
    "lr_rows",
    "mean_of",
    "plan_text",
    "points",
    "ranked",
    "score_cell",
    "source",
    "status",
    "tolerance",
]

#: how each ``--optimize`` choice reads in a sentence
OPTIMIZE = {"train": "training time", "inference": "inference cost", "accuracy": "score"}
#: the marker on the pick's row
PICK = "★"
#: the sentence a table's reader needs when the arms share one model at inference
SAME_MODEL = "every frozen variant is the same model at inference"

NOTE = (
    "Scores are the dev metric x100. Observed (finalists, which ran to the end): the mean over "
    "their seeds with an 80% interval. Predicted (arms stopped at a rung): the final score "
    "predicted from the arm's own prefix curve (fit: a learning-curve fit; prior: the curves "
    "of finished runs; last: its last evaluations; fit+prior: both, by inverse variance), with "
    "an 80% interval that includes the seed noise measured on the finalists. Within tolerance: "
    "the arm's score (observed or predicted) is within the tolerance of the best observed score "
    "(a predicted arm is a candidate, trained to its end before it is recommended). Training time "
    "counts the optimizer's steps, not evaluation or saving: measured up to the step the arm "
    "reached, predicted for its whole run (measured: it ran to the end; own: from its own "
    "phases; sibling: a later epoch's speed measured on the same strategy at another rate; "
    "uncached: no later epoch seen). Inference is measured once per architecture, in ms per "
    "example: every frozen variant of a model is that model at inference. Rungs count from 1."
)


def points(value: float) -> str:
    """A score in points: ``points(0.8512) == '85.1'``."""
    return f"{100 * value:.1f}" if math.isfinite(value) else "?"


def tolerance(advice: Advice) -> str:
    """The tolerance in words: ``1 point``, ``0.5 points``."""
    value = 100 * advice.tolerance
    return f"{value:g} point{'' if value == 1 else 's'}"


def duration(seconds: float) -> str:
    """``duration(42.0) == '42.0 s'``, ``duration(600) == '10.0 min'``, ``duration(7200) == '2.0 h'``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def mean_of(arm: ArmResult) -> float | None:
    """The arm's final score mean; None when it has none (or NaN)."""
    if arm.score is None or not math.isfinite(arm.score.mean):
        return None
    return arm.score.mean


def ranked(advice: Advice) -> list[ArmResult]:
    """The arms, best first."""
    order = {arm.id: i for i, arm in enumerate(advice.arms)}

    def key(arm: ArmResult) -> tuple[bool, float, int]:
        mean = mean_of(arm)
        return (mean is None, -(mean or 0.0), order[arm.id])

    return sorted(advice.arms, key=key)


def best_arm(advice: Advice) -> ArmResult | None:
    """The best-scoring arm (None when no arm has a score)."""
    first = next(iter(ranked(advice)), None)
    return first if first is not None and mean_of(first) is not None else None


def score_cell(score: Score | None) -> str:
    if score is None:
        return "—"
    return f"{points(score.mean)} [{points(score.low)}, {points(score.high)}]"


def source(score: Score | None) -> str:
    """Where a score comes from: ``observed over 3 seeds`` or ``predicted (fit+prior)``."""
    if score is None:
        return "—"
    if score.source == "observed":
        return f"observed over {score.n} seed{'s' if score.n != 1 else ''}"
    return f"predicted ({score.source})"


def status(arm: ArmResult) -> str:
    if arm.status == "finalist":
        return "finalist"
    if arm.status == "trained":
        return f"stopped at rung {arm.rung + 1}, then trained to the end as the pick"
    if arm.status == "failed":
        error = (arm.error or "unknown error").strip().splitlines()
        first = error[0] if error else "unknown error"
        return f"failed at step {arm.reached}: " + (
            first if len(first) <= 100 else first[:99] + "…"
        )
    return f"stopped at rung {arm.rung + 1}, step {arm.reached} of {arm.budget}"


def _times(arm: ArmResult) -> tuple[str, str]:
    """(predicted for the whole run, measured up to the step reached)."""
    time = arm.train_time
    if time is None:
        return "—", "—"
    return (
        f"{duration(time.predicted)} ({time.source})",
        f"{duration(time.measured)} to step {arm.reached}",
    )


def _architecture(arm: ArmResult) -> str:
    """The key of the model an arm is at inference (its own id when no architecture is named)."""
    return arm.architecture or f"arm {arm.id}"


def inference_by_architecture(advice: Advice) -> dict[str, float]:
    """One inference figure (s per example) per architecture: the mean of its arms' figures
    (the engine measures once per architecture, so they are equal; any spread is noise)."""
    seen: dict[str, list[float]] = defaultdict(list)
    for arm in advice.arms:
        if arm.inference is not None and math.isfinite(arm.inference):
            seen[_architecture(arm)].append(arm.inference)
    return {key: sum(values) / len(values) for key, values in seen.items()}


def _inference_cell(arm: ArmResult, figures: dict[str, float], named: bool) -> str:
    figure = figures.get(_architecture(arm))
    if figure is None:
        return "—"
    return f"{1000 * figure:.3g}" + (f" ({arm.architecture})" if named and arm.architecture else "")


def arm_rows(advice: Advice) -> tuple[list[str], list[list[str]], list[str]]:
    """The arms table: headers, one row per arm (best first), and each row's CSS class."""
    figures = inference_by_architecture(advice)
    named = len({arm.architecture for arm in advice.arms}) > 1
    headers = ["arm", "pick", "lr", "status", f"{advice.metric} [80%]", "score from",
               f"within {100 * advice.tolerance:g} pt", "train time, full run (predicted)",
               "train time, measured", "inference ms/example"]  # fmt: skip
    rows, classes = [], []
    for arm in ranked(advice):
        pick = arm.id == advice.pick
        predicted, measured = _times(arm)
        eligible = "—" if arm.status == "failed" else ("yes" if arm.eligible else "no")
        rows.append([arm.label, f"{PICK} pick" if pick else "", f"{arm.lr:g}", status(arm),
                     score_cell(arm.score), source(arm.score), eligible, predicted, measured,
                     _inference_cell(arm, figures, named)])  # fmt: skip
        classes.append(
            "pick" if pick else {"failed": "below", "stopped": "stopped"}.get(arm.status, "")
        )
    return headers, rows, classes


def lr_rows(advice: Advice) -> tuple[list[str], list[list[str]]]:
    """The chosen learning rate per strategy (its best-scoring lr), best strategy first."""
    chosen: dict[str, ArmResult] = {}
    for arm in ranked(advice):
        chosen.setdefault(arm.strategy, arm)
    rows = []
    for strategy, arm in chosen.items():
        tried = sorted({a.lr for a in advice.arms if a.strategy == strategy})
        best = mean_of(arm) is not None
        rows.append([strategy, f"{arm.lr:g}" if best else "— (every lr failed)",
                     score_cell(arm.score) if best else "—", source(arm.score) if best else "—",
                     ", ".join(f"{lr:g}" for lr in tried)])  # fmt: skip
    headers = ["strategy", "chosen lr", f"{advice.metric} [80%]", "score from", "lrs tried"]
    return headers, rows


def inference_note(advice: Advice) -> str:
    """The engine's sentence on inference cost, or one derived from the arms' architectures:
    arms of one architecture are one model at inference, so inference never ranks them."""
    if advice.inference_note:
        return advice.inference_note
    groups: dict[str, list[ArmResult]] = defaultdict(list)
    for arm in advice.arms:
        groups[_architecture(arm)].append(arm)
    if not any(len(arms) > 1 and arms[0].architecture for arms in groups.values()):
        return ""
    figures = inference_by_architecture(advice)
    if len(groups) == 1:
        (key,) = groups
        ms = f" ({1000 * figures[key]:.3g} ms per example)" if key in figures else ""
        return f"{SAME_MODEL.capitalize()}{ms}; inference cost does not separate them."
    each = ", ".join(f"{key} {1000 * value:.3g} ms" for key, value in figures.items())
    return f"{SAME_MODEL.capitalize()}; inference cost separates only the architectures" + (
        f" ({each} per example)." if each else "."
    )


def plan_text(plan: dict[str, Any]) -> str:
    """The halving plan in one line, from ``Advice.plan``'s ``eta``, ``fractions``, ``sizes``
    and ``cost_fraction`` (whichever are there)."""
    parts = []
    if "eta" in plan:
        parts.append(f"eta {plan['eta']} (the best 1/{plan['eta']} go on at each rung)")
    if plan.get("fractions"):
        rungs = ", ".join(f"{100 * float(f):.3g}%" for f in plan["fractions"])
        parts.append(f"rungs at {rungs} of each arm's steps")
    if plan.get("sizes"):
        parts.append("arms per rung " + " → ".join(str(n) for n in plan["sizes"]))
    if plan.get("cost_fraction") is not None:
        parts.append(
            f"{float(plan['cost_fraction']):.0%} of the steps of running every arm to the end"
        )
    return "; ".join(parts) or "not recorded"


def facts(advice: Advice) -> list[tuple[str, str]]:
    """What advise ran and measured, as (name, value) lines above the answer."""
    seeds = advice.seed_sd
    noise = (
        f"sd {points(seeds)} points between the seeds of a finalist's final score"
        if seeds > 0
        else "not measured (one seed per finalist)"
    )
    return [
        ("model", advice.model or "?"),
        ("task", advice.task or "?"),
        ("metric", advice.metric),
        (
            "optimize",
            f"{OPTIMIZE.get(advice.optimize, advice.optimize)} (--optimize {advice.optimize})",
        ),
        ("tolerance", f"{tolerance(advice)} of the best score"),
        ("seeds per finalist", str(advice.seeds)),
        ("arms", f"{len(advice.arms)} (strategy x learning rate)"),
        ("plan", plan_text(advice.plan)),
        ("seed noise", noise),
        ("trivial baseline", points(advice.baseline) if advice.baseline is not None else "unknown"),
        ("advise wall time", duration(advice.wall_s)),
        ("trained model", advice.run or "none"),
    ]
