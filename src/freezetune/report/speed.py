"""The answer to "what is cheapest to train and to run, and did distillation pay?", in words,
from the table's lines of one context (pure functions of them).

- **Best accuracy per second** is read as: the fastest among the strategies whose metric is
  not significantly below the most accurate one's (Welch's two-sided t-test against it,
  p >= ``ALPHA``; the most accurate itself included). Per training second, the fastest is the
  least wall time per run, a distilled student's counting its teacher's; per inference second,
  the most dev-set examples/s of the saved model. No ratio of accuracy to seconds is formed:
  a constant prediction would win it.
- **The Pareto front** of the metric against inference examples/s, by the means.
- **Distillation** is judged against the same student without a teacher (same model, blocks
  kept, freeze and settings; :class:`~freezetune.report.costs.Student`): the difference, its
  Welch 95% interval and p, said to have helped or hurt only when significant.

Nothing is said without data: no inference measured and no distilled run, no answer; no
undistilled twin, no comparison. Without signal (:mod:`freezetune.report.rules`), no strategy
is named best by accuracy; the speeds alone are given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from freezetune.report.costs import training_wall
from freezetune.report.rules import ALPHA
from freezetune.report.stats import pareto_front, welch_ci, welch_p
from freezetune.report.tables import Line

__all__ = ["Comparison", "SpeedAnswer", "compare_distilled", "speed_answer", "tied_with_best"]


@dataclass(frozen=True)
class Comparison:
    """A distilled student against the same student trained without a teacher."""

    distilled: str  # label
    plain: str  # label
    diff: float  # distilled mean - plain mean (metric units)
    ci: tuple[float, float]  # Welch's 95% interval of the difference (NaN under 2 seeds)
    p_value: float | None  # Welch's two-sided t-test; None under 2 seeds a side
    verdict: str  # "helped", "hurt", "no significant difference" or "untested"


@dataclass(frozen=True)
class SpeedAnswer:
    sentences: tuple[str, ...]
    best: str | None  # the most accurate line (by the mean)
    tied: tuple[str, ...]  # not significantly below it (itself included); () untestable
    fastest_train: str | None  # among ``tied``: the least training wall time
    fastest_inference: str | None  # among ``tied``: the most inference examples/s
    front: tuple[str, ...]  # metric vs inference examples/s Pareto front, slowest first
    comparisons: tuple[Comparison, ...] = ()


def _x100(value: float) -> str:
    return f"{100 * value:.1f}"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _names(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + f" and {labels[-1]}"


def tied_with_best(lines: list[Line]) -> tuple[Line, list[Line] | None]:
    """The most accurate line and those Welch's test cannot put below it (itself first);
    None when nothing can be tested (one seed)."""
    best = max(lines, key=lambda line: line.mean)
    tested = [(x, welch_p(x.values, best.values)) for x in lines if x is not best]
    if not any(p is not None for _, p in tested):
        return best, None
    return best, [best, *(x for x, p in tested if p is not None and p >= ALPHA)]


def _train_s(line: Line) -> float:
    return training_wall(line.wall, line.student, line.cost)


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


def _runs(line: Line) -> str:
    """E.g. "bottom:4, 2,400 examples/s (2.40x full), batch-1 latency p50 3.1 ms, 10,000
    parameters"."""
    ref = line.reference == line.label
    vs = f" ({line.inference_speedup:.2f}x full)" if line.inference_speedup and not ref else ""
    params = f", {line.cost.params:,} parameters" if line.cost.params is not None else ""
    latency = line.cost.latency
    p50 = f", batch-1 latency p50 {latency:.3g} ms" if not math.isnan(latency) else ""
    return f"{line.label}, {_rate(line.cost.speed)} examples/s{vs}{p50}{params}"


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
    train: Line | None  # the fastest of ``tied`` to train (None: nothing is ranked)
    infer: Line | None  # the fastest of ``tied`` at inference (None: none measured)


def _fastest(group: list[Line]) -> tuple[Line, Line | None]:
    """The least training wall time and the most inference examples/s in ``group``."""
    measured = [x for x in group if x.cost.measured]
    return min(group, key=_train_s), max(measured, key=lambda x: x.cost.speed, default=None)


def _unranked(lines: list[Line], metric: str, signal: bool | None, full: Line | None) -> _Ranking:
    """No signal or no seeds to test: the speeds alone, and why nothing is named best."""
    best, _ = tied_with_best(lines)
    train, infer = _fastest(lines)
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
    fast = f"the fastest to train is {_trains(train, full)}"
    fast += f", and the fastest at inference {_runs(infer)}" if infer else ""
    return _Ranking([f"{why}; by speed alone, {fast}."], best, None, None, None)


def _ranking(lines: list[Line], metric: str, signal: bool | None, full: Line | None) -> _Ranking:
    best, tied = tied_with_best(lines)
    if signal is False or tied is None:
        return _unranked(lines, metric, signal, full)
    members = (
        f"{best.label} alone, every other strategy being significantly below it"
        if len(tied) == 1
        else _names([x.label for x in tied])
    )
    train, infer = _fastest(tied)
    taught = any(x.student.distilled for x in tied)
    said = [
        f"Best {metric} per second is read here as the fastest among the strategies whose "
        f"{metric} is not significantly below that of the most accurate, {best.label} "
        f"({_x100(best.mean)}; Welch's two-sided t-test against it, p >= {ALPHA}): {members}.",
        "Per training second"
        + (" (a distilled student's time counting its teacher's)" if taught else "")
        + f": {_trains(train, full)}.",
    ]
    if infer is not None:
        said.append(f"Per inference second: {_runs(infer)}.")
    return _Ranking(said, best, tied, train, infer)


def _front(lines: list[Line], metric: str) -> tuple[list[str], list[Line]]:
    measured = [x for x in lines if x.cost.measured and not math.isnan(x.mean)]
    if len(measured) < 2:
        return [], []
    front = [measured[i] for i in pareto_front([(-x.cost.speed, x.mean) for x in measured])]
    front.reverse()  # pareto_front sorts by cost (-speed): fastest first; show slowest first
    listed = ", ".join(f"{x.label} ({_x100(x.mean)} at {_rate(x.cost.speed)}/s)" for x in front)
    return [
        f"On the Pareto front of {metric} against inference examples/s (by the means: no other "
        f"strategy is at least as fast and at least as accurate): {listed}."
    ], front


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


def _seeds(n: int) -> str:
    return f"{n} seed" + ("s" if n != 1 else "")


def _pts(value: float) -> str:
    return f"{100 * value:+.1f}"


def _compared(c: Comparison, d: Line, u: Line, metric: str) -> list[str]:
    def score(x: Line) -> str:
        return _x100(x.mean) + (f" ± {100 * x.std:.1f}" if x.n > 1 else "")

    said = (
        f"Distillation against plain fine-tuning of the same student, "
        f"{d.student.describe()} with freeze {d.freeze}: {d.label} scores {metric} {score(d)} "
        f"({_seeds(d.n)}) against {score(u)} ({_seeds(u.n)}) for {u.label}, {_pts(c.diff)} points"
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
    return [said, f"The distilled student trained in {cost}; without a teacher, {u.wall:.1f} s."]


def _distillation(lines: list[Line], metric: str) -> tuple[list[str], list[Comparison]]:
    plain = {(x.student.twin, x.freeze, x.context): x for x in lines if not x.student.distilled}
    said, found = [], []
    for d in (x for x in lines if x.student.distilled):
        u = plain.get((d.student.twin, d.freeze, d.context))
        if u is None:
            said.append(
                f"No run of this study fine-tunes {d.student.describe()} without a teacher "
                f"(with freeze {d.freeze} and the same settings), so distillation's effect on "
                f"{d.label} is not measured."
            )
            continue
        found.append(compare_distilled(d, u))
        said += _compared(found[-1], d, u, metric)
    return said, found


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
    distil_said, comparisons = _distillation(done, metric)
    head = [_measurement(measured)] if measured else []
    return SpeedAnswer(
        sentences=tuple(head + ranked.sentences + front_said + distil_said),
        best=ranked.best.label,
        tied=tuple(x.label for x in ranked.tied or ()),
        fastest_train=ranked.train.label if ranked.train else None,
        fastest_inference=ranked.infer.label if ranked.infer else None,
        front=tuple(x.label for x in front),
        comparisons=tuple(comparisons),
    )
