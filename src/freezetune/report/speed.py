"""The answer to "what is cheapest to train and to run, and did distillation pay?", in words,
from the table's lines of one context (pure functions of them).

- **Best accuracy per second** is read as: the fastest among the strategies whose metric is
  not significantly below the most accurate one's (Welch's two-sided t-test against it,
  Holm-adjusted over the others, p >= ``ALPHA``; the most accurate itself included) and that
  keep >= 90% of full fine-tuning by their 95% CI (:func:`~freezetune.report.rules.holds`:
  with few seeds, "not significantly below" alone admits much worse strategies). No ratio of
  accuracy to seconds is formed: a constant prediction would win it.
- **A training-time winner** is named only when its time is below every rival's beyond the
  run-to-run noise the study measured: Welch's t-test on the seeds' wall times (a distilled
  student's counting its teacher's), Holm-adjusted over the rivals, p < ``ALPHA``
  (:func:`least_training`). Otherwise the strategies within that noise are listed.
- **An inference winner** is named only between different models: strategies that are the same
  model at inference (:func:`~freezetune.report.costs.model_key`) share one pooled figure and
  are said to be one model; between models, the same noise rule on the runs' examples/s.
- **The Pareto front** of the metric against inference examples/s, by the means.
- **Distillation** is judged against the same student without a teacher
  (:mod:`freezetune.report.distillation`).

Nothing is said without data: no inference measured and no distilled run, no answer; no
undistilled twin, no comparison. Without signal (:mod:`freezetune.report.rules`), no strategy
is named best by accuracy; the speeds alone are given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from freezetune.report.costs import model_key, training_wall, training_walls
from freezetune.report.distillation import Comparison, compare_distilled, distillation
from freezetune.report.rules import ALPHA, KEEP, holds
from freezetune.report.stats import holm, least, pareto_front, welch_p
from freezetune.report.tables import Line

__all__ = [
    "Comparison",
    "SpeedAnswer",
    "compare_distilled",
    "least_training",
    "speed_answer",
    "tied_with_best",
]


@dataclass(frozen=True)
class SpeedAnswer:
    sentences: tuple[str, ...]
    best: str | None  # the most accurate line (by the mean)
    tied: tuple[str, ...]  # not significantly below it, keeping KEEP of full; () untestable
    fastest_train: str | None  # among ``tied``: the least training time, beyond the noise
    fastest_inference: str | None  # among ``tied``: the fastest model, beyond the noise
    front: tuple[str, ...]  # metric vs inference examples/s Pareto front, slowest first
    comparisons: tuple[Comparison, ...] = ()
    bullets: tuple[str, ...] = ()  # the verdicts among ``sentences``: inference, distillation
    inference: str = ""  # the inference verdict among them ("": nothing measured)


def _x100(value: float) -> str:
    return f"{100 * value:.1f}"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _names(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + f" and {labels[-1]}"


def tied_with_best(lines: list[Line]) -> tuple[Line, list[Line] | None]:
    """The most accurate line and those Welch's test, Holm-adjusted over the others, cannot
    put below it (itself first); None when nothing can be tested (one seed)."""
    best = max(lines, key=lambda line: line.mean)
    others = [x for x in lines if x is not best]
    found = holm([welch_p(x.values, best.values) for x in others])
    if not any(p is not None for p in found):
        return best, None
    return best, [best, *(x for x, p in zip(others, found, strict=True) if p is not None
                          and p >= ALPHA)]  # fmt: skip


def _train_s(line: Line) -> float:
    return training_wall(line.wall, line.student, line.cost)


def _train_runs(line: Line) -> tuple[float, ...]:
    walls = training_walls(line.walls, line.student, line.cost)
    return tuple(x for x in walls if math.isfinite(x))


def least_training(lines: list[Line]) -> tuple[Line, list[Line]]:
    """The line with the least mean training time, and the others not slower than it beyond
    the run-to-run noise (Welch on the seeds' times, Holm-adjusted; untestable counts as not
    slower). No others: a winner."""
    best, within = least([_train_runs(x) for x in lines], ALPHA)
    return lines[best], [lines[i] for i in within]


def _trains(line: Line, full: Line | None) -> str:
    """E.g. "bottom:4, 40.0 s per run (2.53x faster than full fine-tuning's 101.0 s)"."""
    seconds, teacher = _train_s(line), ""
    if seconds != line.wall:
        teacher = f" with its teacher's training ({line.wall:.1f} s without)"
    vs = ""
    if full is not None and line is not full and seconds > 0:
        ratio = full.wall / seconds
        faster = "faster" if ratio > 1 else "slower" if ratio < 1 else "as fast"
        shown = ratio if ratio >= 1 else 1 / ratio
        vs = f" ({shown:.2f}x {faster} than full fine-tuning's {full.wall:.1f} s)"
    return f"{line.label}, {seconds:.1f} s per run{teacher}{vs}"


def _within(best: Line, within: list[Line]) -> str:
    """E.g. "bottom:3 (19.6 s) and bottom:4 (19.9 s)"."""
    return _names([f"{x.label} ({_train_s(x):.1f} s)" for x in (best, *within)])


def _train_clause(group: list[Line], full: Line | None) -> tuple[str, Line | None]:
    """The training-time verdict over ``group`` (a clause), and its winner if there is one."""
    best, within = least_training(group)
    if len(group) == 1:  # nothing to be faster than: no claim about noise
        return f"{_trains(best, full)}, the only one eligible", best
    if not within:
        return f"{_trains(best, full)}, beyond the run-to-run noise", best
    if all(len(_train_runs(x)) < 2 for x in group):
        return (
            f"the least training time is {_trains(best, full)}, but with one run per strategy "
            "the run-to-run noise is unmeasured, so none is named fastest"
        ), None
    return f"no single fastest: {_within(best, within)} are within run-to-run noise", None


def _runs(line: Line) -> str:
    """E.g. "bottom:4, 2,400 examples/s (2.40x full), batch-1 latency p50 3.1 ms, 10,000
    parameters" (the figures of its model, pooled over every run of that model)."""
    ref = line.reference == line.label
    vs = f" ({line.inference_speedup:.2f}x full)" if line.inference_speedup and not ref else ""
    params = f", {line.inference.params:,} parameters" if line.inference.params is not None else ""
    latency = line.inference.latency
    p50 = f", batch-1 latency p50 {latency:.3g} ms" if not math.isnan(latency) else ""
    return f"{line.label}, {_rate(line.inference.speed)} examples/s{vs}{p50}{params}"


def _models(group: list[Line]) -> list[list[Line]]:
    """The measured lines of ``group`` by the model they are at inference, most accurate first
    within each."""
    models: dict[tuple, list[Line]] = {}
    for x in sorted(group, key=lambda x: -x.mean):
        if x.inference.measured:
            models.setdefault(model_key(x.student, x.cost), []).append(x)
    return list(models.values())


def _inference(group: list[Line], who: str) -> tuple[str, Line | None]:
    """The inference verdict over ``group`` (``who`` names it), and its winner if any."""
    models = _models(group)
    if not models:
        return "", None
    if len(models) == 1:
        one = models[0][0].inference
        params = f"{one.params:,} parameters; " if one.params is not None else ""
        return (
            f"At inference, {who} {'are' if len(models[0]) > 1 else 'is'} one model "
            f"({params}{_rate(one.speed)} examples/s, pooled over its "
            f"{len(one.examples_per_s)} runs): no inference winner.",
            None,
        )
    best, within = least([tuple(-v for v in m[0].inference.examples_per_s) for m in models])
    top = models[best][0]
    same = [x.label for x in models[best][1:]]
    also = f" (the same model as {_names(same)})" if same else ""
    if not within:
        return (
            f"Per inference second: {_runs(top)}{also}, faster than every other model here "
            "beyond the run-to-run noise.",
            top,
        )
    rivals = [models[i][0] for i in within]
    listed = _names([f"{x.label} ({_rate(x.inference.speed)}/s)" for x in (top, *rivals)])
    return (
        f"Per inference second, no model is fastest beyond the run-to-run noise: {listed}.",
        None,
    )


def _measurement(lines: list[Line]) -> str:
    settings = list(dict.fromkeys(s for line in lines for s in line.cost.settings))
    shown = [f"{t} threads, batch {b}, {'bf16' if bf16 else 'fp32'}, {device}"
             for t, b, bf16, device in settings]  # fmt: skip
    text = (
        "Inference was measured on each run's saved model in the run's own process right after "
        f"training (warmed up, torch.inference_mode(), {'; '.join(shown) or 'settings unknown'}"
        "): examples/s over the dev set at the eval batch size, latency over single dev "
        "examples. The speeds compare rows of this study; they are not absolute claims."
    )
    if len(settings) > 1:
        text += " Caution: the runs were measured with different settings, so their speeds "
        text += "do not compare cleanly."
    return text


@dataclass(frozen=True)
class _Ranking:
    sentences: list[str]
    best: Line  # the most accurate, by the mean
    tied: list[Line] | None  # not significantly below it; None: nothing is ranked
    train: Line | None  # the fastest of ``tied`` to train, beyond the noise
    infer: Line | None  # the fastest model of ``tied`` at inference, beyond the noise
    inference: str  # the inference verdict ("" when nothing was measured)


def _unranked(lines: list[Line], metric: str, signal: bool | None, full: Line | None) -> _Ranking:
    """No signal or no seeds to test: the speeds alone, and why nothing is named best."""
    best, _ = tied_with_best(lines)
    seeds = (
        "per strategy"
        if all(x.n < 2 for x in lines)
        else "of it"
        if best.n < 2
        else "of each other strategy"
    )
    why = (
        f"This study cannot tell the strategies' {metric} apart (see above), so none is named "
        "the best per second"
        if signal is False
        else f"Which strategies are as accurate as the most accurate, {best.label} "
        f"({_x100(best.mean)}), can't be tested with one seed {seeds}"
    )
    clause, train = _train_clause(lines, full)
    fast = f"the fastest to train is {clause}" if train else clause
    inference, _ = _inference(lines, "every strategy here")
    said = [f"{why}; by speed alone, {fast}.", *([inference] if inference else [])]
    return _Ranking(said, best, None, None, None, inference)


def _ranking(lines: list[Line], metric: str, signal: bool | None, full: Line | None) -> _Ranking:
    best, tied = tied_with_best(lines)
    if signal is False or tied is None:
        return _unranked(lines, metric, signal, full)
    tied = [x for x in tied if x is best or holds(x)]
    members = (
        f"{best.label} alone, every other strategy being significantly below it or not "
        f"keeping {KEEP:.0%} of full fine-tuning by its CI"
        if len(tied) == 1
        else _names([x.label for x in tied])
    )
    taught = any(x.student.distilled for x in tied)
    clause, train = _train_clause(tied, full)
    inference, infer = _inference(tied, "the strategies as accurate as the most accurate")
    said = [
        f"Best {metric} per second is read here as the fastest among the strategies whose "
        f"{metric} is not significantly below that of the most accurate, {best.label} "
        f"({_x100(best.mean)}; Welch's two-sided t-test against it, Holm-adjusted, "
        f"p >= {ALPHA}) and that keep >= {KEEP:.0%} of full fine-tuning by their 95% CI: "
        f"{members}.",
        "Per training second"
        + (" (a distilled student's time counting its teacher's)" if taught else "")
        + f": {clause}.",
        *([inference] if inference else []),
    ]
    return _Ranking(said, best, tied, train, infer, inference)


def _front(lines: list[Line], metric: str) -> tuple[list[str], list[Line]]:
    measured = [x for x in lines if x.inference.measured and not math.isnan(x.mean)]
    if len(measured) < 2:
        return [], []
    front = [measured[i] for i in pareto_front([(-x.inference.speed, x.mean) for x in measured])]
    front.reverse()  # pareto_front sorts by cost (-speed): fastest first; show slowest first
    listed = ", ".join(
        f"{x.label} ({_x100(x.mean)} at {_rate(x.inference.speed)}/s)" for x in front
    )
    return [
        f"On the Pareto front of {metric} against inference examples/s (by the means: no other "
        f"strategy is at least as fast and at least as accurate): {listed}."
    ], front


def speed_answer(lines: list[Line], metric: str, signal: bool | None) -> SpeedAnswer | None:
    """The speed answer over one context's ``lines`` (``signal``: the context's signal rule;
    None when the baseline is unknown), or None when no line has inference data or a teacher."""
    done = [x for x in lines if x.n and not math.isnan(x.mean)]
    measured = [x for x in done if x.cost.measured]
    if not measured and not any(x.student.distilled for x in done):
        return None
    full = next((x for x in done if x.is_full and x.reference == x.label), None)
    ranked = _ranking(done, metric, signal, full)
    front_said, front = _front(done, metric) if ranked.tied is not None else ([], [])
    distil_said, verdicts, comparisons = distillation(done, metric)
    head = [_measurement(measured)] if measured else []
    return SpeedAnswer(
        sentences=tuple(head + ranked.sentences + front_said + distil_said),
        best=ranked.best.label,
        tied=tuple(x.label for x in ranked.tied or ()),
        fastest_train=ranked.train.label if ranked.train else None,
        fastest_inference=ranked.infer.label if ranked.infer else None,
        front=tuple(x.label for x in front),
        comparisons=tuple(comparisons),
        bullets=tuple(([ranked.inference] if ranked.inference else []) + verdicts),
        inference=ranked.inference,
    )
