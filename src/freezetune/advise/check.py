"""``freezetune advise --check STUDY``: how an advise compares with a study that ran the same
arms x seeds to the end. Pure functions of ``advice.json`` and the study's rows; no torch.

Arms match by strategy (its label with any ``lr=`` setting removed) and learning rate: a study
labels ``"full"`` at its ``lrs`` axis' rate (the ``lr`` column) or ``"head (lr=0.001)"`` (an
override); an advise arm names its ``strategy`` and ``lr``. Every advise arm must have a
succeeded study run (an arm advise saw fail may have none), or :func:`check_advice` refuses in
one line before computing anything. A run's score is the best evaluation of the main metric
(the saved model, as the study report scores it); an arm's is the mean over its seeds.

What it measures, and how, is in :mod:`~.check_measures`: ranking (Spearman, beside the
study's noise ceiling), the pick's regret, calibration, cost, and two baselines computed from
the study's own curves. Scores are in points (1 point = 0.01 of the metric).

>>> from freezetune.advise.advice import Advice, ArmResult, Score
>>> from freezetune.study.store import RunRow
>>> def row(label, seed, score):
...     best = {"accuracy": score, "step": 10}
...     return RunRow(f"{label}{seed}", label, label, seed, 1e-4, None, "succeeded",
...                   result={"best": best, "train_time_s": 10.0, "wall_time_s": 11.0})
>>> rows = [row(s, seed, v + seed / 100) for s, v in [("full", 0.8), ("bottom:3", 0.7),
...         ("head", 0.6)] for seed in range(3)]
>>> arms = tuple(ArmResult(s, s, s, s, 1e-4, 10, 10, 1, "stopped", (), Score(v, v - .1, v + .1,
...              0.01, "fit")) for s, v in [("full", 0.81), ("bottom:3", 0.71), ("head", 0.61)])
>>> check = check_advice(Advice("a", arms, optimize="accuracy", pick="full"), rows)
>>> check.spearman, check.regret, check.within
(1.0, 0.0, 1.0)
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from freezetune.advise.advice import Advice, ArmResult, finite_json
from freezetune.advise.check_measures import (
    BaselineCheck,
    baselines,
    bootstrap,
    calibration,
    mean_ci,
    median,
    noise_ceiling,
    regret,
    spearman,
)
from freezetune.advise.references import Reference, without_lr
from freezetune.errors import UserError
from freezetune.study.store import RunRow

__all__ = ["ArmCheck", "BaselineCheck", "Check", "check_advice", "score_of"]

NAN = math.nan
FIX = ("check against a study that ran every advise arm (strategy x lr) x seeds to the end, "
       "or run `freezetune study` with those strategies and lrs")  # fmt: skip


@dataclass(frozen=True)
class ArmCheck:
    """One arm, advise against the study. ``predicted``, ``low``, ``high``: advise's score and
    80% interval (None: it failed); ``seeds``/``values``: the study's score per seed, ``mean``
    and 95% t interval ``ci``; ``time_predicted`` (advise) and ``time_measured`` (the study's
    mean training seconds); ``inference``: seconds per example (advise's, else the study's);
    ``first``: (seed, the study's score at advise's first rung) where it evaluated by then;
    ``fraction``: that rung's share of the run."""

    id: str
    label: str
    status: str
    family: str
    lr: float
    predicted: float | None
    low: float | None
    high: float | None
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    mean: float
    ci: tuple[float, float]
    time_predicted: float | None
    time_measured: float
    inference: float | None = None
    first: tuple[tuple[int, float], ...] = ()
    fraction: float | None = None

    @property
    def pruned(self) -> bool:
        return self.status == "stopped"

    @property
    def time_error(self) -> float | None:
        """|predicted - measured| / measured training time (None: not predicted)."""
        if self.time_predicted is None or not self.time_measured > 0:
            return None
        return abs(self.time_predicted - self.time_measured) / self.time_measured


@dataclass(frozen=True)
class Check:
    """What ``advise --check`` measures (see the module docstring); regrets in points, shares
    in 0..1, times in seconds; NaN/None where a measure cannot be computed."""

    advice: str
    study: str
    metric: str
    optimize: str
    tolerance: float
    arms: tuple[ArmCheck, ...]
    spearman: float
    spearman_ci: tuple[float, float]
    noise_ceiling: float
    pick: str | None
    verdict: str
    best_eligible: str
    best: str
    regret: float | None
    regret_best: float | None
    pick_in_ci: bool | None
    above_baseline: bool | None
    baseline: float | None
    within: float
    within_pruned: float
    coverage: float
    coverage_pruned: float
    coverage_runs_pruned: float
    advise_wall_s: float
    advise_train_s: float
    study_wall_s: float
    study_elapsed_s: float | None
    cost_ratio: float
    time_error: float
    time_error_pruned: float
    baselines: tuple[BaselineCheck, ...] = ()
    notes: tuple[str, ...] = ()

    def arm(self, arm_id: str) -> ArmCheck:
        return next(a for a in self.arms if a.id == arm_id)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (NaN as None)."""
        return finite_json(dataclasses.asdict(self))

    def markdown(self) -> str:
        """A short table per arm, the measures in sentences, and the baselines' table."""
        return _markdown(self)


def _f(value: float | None, spec: str = ".1f", scale: float = 100.0, unit: str = "") -> str:
    """A number for the report (points by default); "-" when there is none."""
    ok = value is not None and math.isfinite(value)
    return format(scale * value, spec) + unit if ok else "-"  # type: ignore[operator]


def _pct(share: float | None) -> str:
    return _f(share, ".0f", unit="%")


def _s(seconds: float | None) -> str:
    return _f(seconds, ",.0f", 1.0)


def _arm_lines(check: Check) -> list[str]:
    lines = ["| arm | status | advise (80% interval) | study mean (95% CI), n | train s: advise "
             "/ study |", "|---|---|---|---|---|"]  # fmt: skip
    for a in check.arms:
        advise = "-" if a.predicted is None else f"{_f(a.predicted)} [{_f(a.low)}, {_f(a.high)}]"
        study = f"{_f(a.mean)} [{_f(a.ci[0])}, {_f(a.ci[1])}], {len(a.values)}"
        pick = " **(pick)**" if a.id == check.pick else ""
        lines.append(f"| {a.label}{pick} | {a.status} | {advise} | {study} | "
                     f"{_s(a.time_predicted)} / {_s(a.time_measured)} |")  # fmt: skip
    return lines


def _pick_sentence(c: Check) -> str:
    eligible = c.arm(c.best_eligible)
    rule = f"optimize {c.optimize}, tolerance {100 * c.tolerance:g} point(s)"
    if c.pick is None:
        return (f"**Pick**: advise abstained ({c.verdict}); the study's own pick ({rule}) is "
                f"{eligible.label} at {_f(eligible.mean)}.")  # fmt: skip
    inside = {True: "inside", False: "outside", None: "no interval for"}[c.pick_in_ci]
    base = "" if c.above_baseline is None else (
        f" It is {'above' if c.above_baseline else 'NOT above'} the trivial baseline "
        f"({_f(c.baseline)}).")  # fmt: skip
    return (f"**Pick**: {c.arm(c.pick).label} at {_f(c.arm(c.pick).mean)}; the best eligible "
            f"arm (the study's own pick, {rule}) is {eligible.label} at {_f(eligible.mean)}: "
            f"regret {_f(c.regret, scale=1)} points, {inside} its 95% CI; "
            f"{_f(c.regret_best, scale=1)} points below the best mean ({c.arm(c.best).label})."
            f"{base}")  # fmt: skip


def _markdown(c: Check) -> str:
    low, high = c.spearman_ci
    n = sum(a.predicted is not None for a in c.arms)
    span = "" if c.study_elapsed_s is None else f"; {_s(c.study_elapsed_s)} s start to end"
    lines = [f"## advise {c.advice} against study {c.study} ({c.metric}, points)", "",
             *_arm_lines(c), "",
             f"- **Ranking**: Spearman {_f(c.spearman, '.2f', 1)} over {n} arms (bootstrap 95% "
             f"CI {_f(low, '.2f', 1)} to {_f(high, '.2f', 1)}, arms resampled) against a noise "
             f"ceiling of {_f(c.noise_ceiling, '.2f', 1)} (each seed against the others' mean).",
             f"- {_pick_sentence(c)}",
             f"- **Calibration**: {_pct(c.within)} of arms within 3 points "
             f"({_pct(c.within_pruned)} of pruned arms); the 80% intervals cover "
             f"{_pct(c.coverage)} of the study means, finalists' observed scores included "
             f"({_pct(c.coverage_pruned)} of pruned arms' means, "
             f"{_pct(c.coverage_runs_pruned)} of their single runs).",
             f"- **Cost**: advise {_s(c.advise_wall_s)} s against the study's "
             f"{_s(c.study_wall_s)} s of run wall time ({_pct(c.cost_ratio)}{span}); training "
             f"time predicted within a median {_pct(c.time_error)} ({_pct(c.time_error_pruned)} "
             "on pruned arms).", "",
             "| method | pick | regret (points) | vs best mean | training s |",
             "|---|---|---|---|---|"]  # fmt: skip
    rows: list[tuple[str, str | None, float | None, float | None, float | None]]
    rows = [("advise", c.pick, c.regret, c.regret_best, c.advise_train_s)]
    rows += [(b.name, b.pick, b.regret, b.regret_best, b.cost_s) for b in c.baselines]
    for name, pick, lost, best, cost in rows:
        label = c.arm(pick).label if pick else ("abstains" if name == "advise" else "n/a")
        lines.append(f"| {name} | {label} | {_f(lost, scale=1)} | {_f(best, scale=1)} | "
                     f"{_s(cost)} |")  # fmt: skip
    lines += ["", *(f"- {b.name}: {b.note}." for b in c.baselines), *(f"- {n}." for n in c.notes)]
    return "\n".join(lines) + "\n"


def _key(strategy: str, lr: float) -> tuple[str, str]:
    return without_lr(strategy), f"{lr:.6g}"


def score_of(row: RunRow, metric: str) -> float | None:
    """A run's score: its best evaluation of ``metric`` (the saved model), as
    ``report.tables.run_metric(row, metric, "best")`` reads it (not imported: that package
    loads torch)."""
    value = ((row.result or {}).get("best") or {}).get(metric)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _same_task(advice: Advice, rows: Sequence[RunRow], study: str) -> None:
    """Refuse a study of another task or model (where advice.json names them)."""
    for what, want, path in (("task", advice.task, ("data", "task")),
                             ("model", advice.model, ("model", "name"))):  # fmt: skip
        found = sorted({str((r.config.get(path[0]) or {}).get(path[1])) for r in rows})
        if want and found and want not in found:
            raise UserError(f"advise {advice.name} ran {what} {want}, study {study} ran "
                            f"{', '.join(found)}; {FIX}")  # fmt: skip


def _match(advice: Advice, rows: Sequence[RunRow], study: str) -> dict[str, list[RunRow]]:
    """Each advise arm's succeeded study runs; refuses in one line on the first arm missing."""
    by_key: dict[tuple[str, str], list[RunRow]] = {}
    for row in rows:
        by_key.setdefault(_key(row.strategy, row.lr), []).append(row)
    size = advice.plan.get("train_size")
    out = {}
    for arm in advice.arms:
        found = by_key.get(_key(arm.strategy, arm.lr))
        done = [r for r in found or () if r.status == "succeeded"
                and score_of(r, advice.metric) is not None
                and (size is None or r.train_size == size)]  # fmt: skip
        if found is None or (not done and arm.status != "failed"):
            what = "no run" if found is None else f"no succeeded run scored by {advice.metric}"
            raise UserError(f"advise arm {arm.label!r} ({without_lr(arm.strategy)} at lr "
                            f"{arm.lr:g}) has {what} in study {study}; {FIX}")  # fmt: skip
        sizes = sorted({r.train_size or 0 for r in done})
        if len(sizes) > 1:
            raise UserError(f"study {study} runs arm {arm.label!r} at train sizes "
                            f"{sizes}; check against a study of one train size")  # fmt: skip
        out[arm.id] = done
    return out


def _first(arm: ArmResult, rows: Sequence[RunRow], advice: Advice) -> tuple[float | None, tuple]:
    """The first rung's share of the run (``plan["first_steps"][id]`` over the arm's budget,
    else ``plan["fractions"][0]``) and, per seed, the study's best evaluation at or before
    that share of its run (the best of them: advise's rungs score the best so far)."""
    steps = (advice.plan.get("first_steps") or {}).get(arm.id)
    fractions = advice.plan.get("fractions") or ()
    if steps is not None and arm.budget > 0:
        fraction = min(1.0, steps / arm.budget)
    elif fractions:
        fraction = float(fractions[0])
    else:
        return None, ()
    out = []
    for row in rows:
        evals = [e for e in row.curve if e.get("event", "eval") == "eval"
                 and isinstance(e.get(advice.metric), int | float)]  # fmt: skip
        total = (row.result or {}).get("steps") or max((e.get("step", 0) for e in evals), default=0)
        seen = [e for e in evals if e.get("step", 0) <= fraction * total + 1e-9]
        if seen:  # the best evaluation so far, as advise's rungs score an arm
            out.append((row.seed, max(float(e[advice.metric]) for e in seen)))
    return fraction, tuple(sorted(out))


def _arm_check(arm: ArmResult, rows: list[RunRow], advice: Advice) -> ArmCheck:
    rows = sorted(rows, key=lambda r: r.seed)
    values = tuple(score_of(r, advice.metric) or 0.0 for r in rows)  # _match kept scored rows
    mean, ci = mean_ci(values)
    times = [float((r.result or {}).get("train_time_s", NAN)) for r in rows]
    eps = [(r.inference or {}).get("examples_per_s") for r in rows]
    measured = [1 / e for e in eps if isinstance(e, int | float) and e > 0]
    fraction, first = _first(arm, rows, advice)
    score = arm.score
    return ArmCheck(
        arm.id, arm.label, arm.status, arm.family, arm.lr,
        score.mean if score else None, score.low if score else None,
        score.high if score else None, tuple(r.seed for r in rows), values, mean, ci,
        arm.train_time.predicted if arm.train_time else None,
        statistics.fmean(times) if times else NAN,
        arm.inference if arm.inference is not None else
        (statistics.fmean(measured) if measured else None), first, fraction,
    )  # fmt: skip


def _elapsed(rows: Sequence[RunRow]) -> float | None:
    """Sum of started -> finished over ``rows`` (None if any lacks them)."""
    try:
        spans = [datetime.fromisoformat(r.finished_at or "") -
                 datetime.fromisoformat(r.started_at or "") for r in rows]  # fmt: skip
    except ValueError:
        return None
    return sum(s.total_seconds() for s in spans)


def _costs(advice: Advice, arms: Sequence[ArmCheck], rows: Sequence[RunRow]) -> dict[str, Any]:
    walls = sum(float((r.result or {}).get("wall_time_s") or 0.0) for r in rows)
    train = sum(a.train_time.measured for a in advice.arms if a.train_time)
    return {
        "advise_wall_s": advice.wall_s,
        "advise_train_s": train,
        "study_wall_s": walls,
        "study_elapsed_s": _elapsed(rows),
        "cost_ratio": advice.wall_s / walls if walls > 0 else NAN,
        "time_error": median([a.time_error for a in arms]),
        "time_error_pruned": median([a.time_error for a in arms if a.pruned]),
    }


def check_advice(
    advice: Advice,
    rows: Sequence[RunRow],
    *,
    references: Sequence[Reference] = (),
    study: str = "the study",
) -> Check:
    """Compare ``advice`` with a study's ``rows`` that ran the same arms x seeds to the end
    (see the module docstring); ``references`` feed the zero-probe prior baseline (the study's
    own runs among them are left out). ``study`` names it in messages."""
    if advice.pick is not None and advice.pick not in {a.id for a in advice.arms}:
        raise UserError(f"advice {advice.name} picks {advice.pick!r}, none of its arms; "
                        "re-run advise, its advice.json is damaged")  # fmt: skip
    _same_task(advice, rows, study)
    matched = _match(advice, rows, study)
    arms = tuple(_arm_check(a, matched[a.id], advice) for a in advice.arms if matched[a.id])
    if not arms:
        raise UserError(f"no advise arm has a succeeded run in study {study}; nothing to check")
    scored = [a for a in arms if a.predicted is not None]
    x, y = [a.predicted or 0.0 for a in scored], [a.mean for a in scored]
    used = [r for found in matched.values() for r in found]
    own = {r.run_id for r in rows}
    kept = [r for r in references if r.run_id not in own]
    notes = [f"{len(advice.arms) - len(arms)} arm(s) failed in advise and in the study: left "
             "out"] if len(arms) < len(advice.arms) else []  # fmt: skip
    extra = {_key(r.strategy, r.lr) for r in rows} - {_key(a.strategy, a.lr) for a in advice.arms}
    if extra:
        notes.append(f"{len(extra)} study strategy x lr pair(s) advise did not run: left out")
    if len(kept) < len(references):
        notes.append(f"{len(references) - len(kept)} reference run(s) are the study's own: "
                     "left out of the prior")  # fmt: skip
    return Check(
        advice.name, study, advice.metric, advice.optimize, advice.tolerance, arms,
        spearman(x, y), bootstrap(x, y), noise_ceiling(arms),
        advice.pick, advice.verdict, baseline=advice.baseline,
        **regret(advice, arms), **calibration(arms), **_costs(advice, arms, used),
        baselines=baselines(advice, arms, kept), notes=tuple(notes),
    )  # fmt: skip
