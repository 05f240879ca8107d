"""Aggregate stored runs into one table line per strategy: pure functions of the rows.

A *line* is the runs of one strategy that differ only in their seed. When a setting other than
the seed varies inside a strategy (an ``lrs`` or ``train_sizes`` axis, or a study re-run with a
changed spec), each value gets its own line, labelled e.g. ``full n_train=500``. Each line is
compared with the full fine-tuning line in the same context (same settings but the learning rate;
the same lr if there is one, else the best full line), and with the trivial baseline of its dev
examples (:mod:`freezetune.study.baseline`, passed in as data): "% of full's gain" is
``(score - baseline) / (full - baseline)``, with Fieller's 95% interval (and so is the raw
``mean / full's mean``). Welch's p against full is also given Holm-adjusted over the lines
compared with that full line, the family the answer's verdicts pick from. Full fine-tuning means
of the whole model, without a teacher; a cut or distilled student is compared with it, and
carries its inference cost and teacher time (:mod:`freezetune.report.costs`). Lines that are the
same model at inference share one inference figure, pooled over all their runs.

>>> summarize([]).lines
()
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from freezetune.report.costs import Cost, Student, cost_of, model_key, pool, student_of
from freezetune.report.facts import flat, study_facts
from freezetune.report.stats import NAN, holm, mean_ci, pareto_front, ratio_ci, welch_p
from freezetune.study.baseline import Baseline, baseline_key
from freezetune.study.spec import SHORT_KEYS
from freezetune.study.store import RunRow

__all__ = [
    "BaselineLine",
    "Line",
    "Summary",
    "gain_of",
    "main_metric",
    "mean_ci",
    "pareto_front",
    "relative_ci",
    "run_metric",
    "study_facts",
    "summarize",
    "welch_p",
]

IGNORED_KEYS = ("train.seed", "freeze")
STATIC_PREFIX = re.compile(r"^(full|head|embeddings|bottom:\d+)$")
WHOLE = Student(None, None, None, False)  # a run of the whole model without a teacher


@dataclass(frozen=True)
class Line:
    """One strategy in one context, aggregated over its seeds (succeeded runs only)."""

    label: str
    strategy: str
    freeze: str
    context: tuple[tuple[str, Any], ...]  # the settings that tell this line's context apart
    values: tuple[float, ...]  # the main metric of each succeeded seed
    walls: tuple[float, ...]  # wall time (train + eval) of each succeeded seed, seconds
    n_failed: int
    errors: tuple[str, ...]
    frozen_units: int | None
    num_blocks: int | None
    trainable_params: int | None
    total_params: int | None
    peak_rss_mb: float | None
    mean: float = NAN
    std: float = NAN
    ci: tuple[float, float] = (NAN, NAN)
    wall: float = NAN
    reference: str | None = None  # label of the full fine-tuning line it is compared with
    diff: float | None = None  # mean - reference mean (metric units)
    relative: float | None = None  # mean / reference mean
    relative_ci: tuple[float, float] = (NAN, NAN)  # Fieller's 95% interval of ``relative``
    speedup: float | None = None  # reference wall time / this wall time
    p_value: float | None = None  # Welch's t-test against the reference
    p_adjusted: float | None = None  # the same, Holm-adjusted over the lines compared with it
    baseline: float | None = None  # the trivial baseline on its seeds' dev examples (mean)
    gain: float | None = None  # (mean - baseline) / (reference mean - reference baseline)
    gain_ci: tuple[float, float] = (NAN, NAN)  # Fieller's 95% interval of the gain
    student: Student = WHOLE  # which model it trains, with a teacher or not
    cost: Cost = field(default_factory=Cost)  # inference cost and teacher time
    inference: Cost = field(default_factory=Cost)  # pooled over every line of the same model
    same_model: tuple[str, ...] = ()  # the other lines that are the same model at inference
    inference_speedup: float | None = None  # pooled examples/s / the reference's

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def static_prefix(self) -> bool:
        """A plain ``full``/``bottom:K``/``head`` spec with no settings of its own."""
        plain = bool(STATIC_PREFIX.match(self.freeze)) and self.strategy == self.freeze
        return plain and self.student.plain

    @property
    def is_full(self) -> bool:
        """Full fine-tuning of the whole model without a teacher: the reference."""
        return self.freeze == "full" and self.student.plain

    @property
    def below_baseline(self) -> bool:
        """Its mean scores below the trivial baseline of its dev examples."""
        return self.baseline is not None and self.n > 0 and self.mean < self.baseline


@dataclass(frozen=True)
class BaselineLine:
    """The trivial baseline of one full fine-tuning line's context: a row of the table."""

    reference: str  # the full line's label
    value: float  # the main metric, mean over the seeds' dev examples
    metrics: dict[str, float]  # every metric of the task (and MSE for regression), same mean
    describe: str  # e.g. "always predicting the majority class ('1')"
    kind: str  # "majority" or "mean"
    examples: int

    @property
    def label(self) -> str:
        context = self.reference.removeprefix("full").strip()
        return "trivial baseline" + (f" {context}" if context else "")


@dataclass(frozen=True)
class Summary:
    metric: str  # the task's main metric, e.g. accuracy
    lines: tuple[Line, ...]  # ordered: context, then frozen units
    facts: tuple[tuple[str, str], ...]  # the study's size, for the top of the report
    rows: tuple[RunRow, ...]
    baselines: tuple[BaselineLine, ...] = field(default=())  # one per full line whose is known

    def baseline_for(self, line: Line) -> BaselineLine | None:
        """The trivial baseline of ``line``'s context (that of its full fine-tuning line)."""
        return next((b for b in self.baselines if b.reference == line.reference), None)


def run_metric(row: RunRow, metric: str, which: str = "best") -> float | None:
    """The main metric of a succeeded run: the best eval (the saved model) or the final one."""
    record = (row.result or {}).get(which) or {}
    value = record.get(metric)
    return float(value) if isinstance(value, int | float) else None


def _setting(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that tell runs apart: a teacher counts only as there or not (a study may
    give each seed its own teacher folder)."""
    found = flat(config)
    if found.get("distill.teacher") is not None:
        found["distill.teacher"] = True
    return found


def _varying(rows: list[RunRow]) -> list[str]:
    flats = [_setting(r.config) for r in rows]
    keys = sorted({k for f in flats for k in f} - set(IGNORED_KEYS))
    return [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]


def _show(key: str, value: Any) -> str:
    shown = f"{value:g}" if isinstance(value, float) else value
    return f"{SHORT_KEYS.get(key, key)}={shown}"


def _group(rows: list[RunRow]) -> tuple[dict[tuple, list[RunRow]], dict[str, list[str]]]:
    """Rows by (strategy, context); and, per strategy, the keys that vary inside it."""
    by_strategy: dict[str, list[RunRow]] = {}
    for row in rows:
        by_strategy.setdefault(row.strategy, []).append(row)
    own = {strategy: _varying(group) for strategy, group in by_strategy.items()}
    context_keys = sorted({k for keys in own.values() for k in keys})
    groups: dict[tuple, list[RunRow]] = {}
    for row in rows:
        setting = _setting(row.config)
        context = tuple((k, setting.get(k)) for k in context_keys)
        groups.setdefault((row.strategy, context), []).append(row)
    return groups, own


def _first(rows: list[RunRow], key: str) -> Any:
    return next((r.result[key] for r in rows if r.result and r.result.get(key) is not None), None)


def _done(rows: list[RunRow], metric: str) -> list[RunRow]:
    return [r for r in rows if r.status == "succeeded" and run_metric(r, metric) is not None]


def _found(rows: list[RunRow], baselines: Mapping[str, Baseline]) -> list[Baseline] | None:
    """The baseline of each run's dev examples; None if any is unknown."""
    found = [baselines.get(baseline_key(r.config) or "") for r in rows]
    return [b for b in found if b is not None] if rows and all(found) else None


def _floor(found: list[Baseline] | None, metric: str) -> float | None:
    values = [b.metrics.get(metric) for b in found or ()]
    floats = [float(v) for v in values if isinstance(v, int | float)]
    return statistics.fmean(floats) if floats and len(floats) == len(values) else None


def _line(
    key: tuple, rows: list[RunRow], own: list[str], metric: str, baselines: Mapping[str, Baseline]
) -> Line:
    strategy, context = key
    done = _done(rows, metric)
    values = tuple(run_metric(r, metric) or 0.0 for r in done)
    walls = tuple(float((r.result or {}).get("wall_time_s", NAN)) for r in done)
    failed = [r for r in rows if r.status == "failed"]
    label = " ".join([strategy, *(_show(k, v) for k, v in context if k in own)])
    mean, std, low, high = mean_ci(values)
    rss = [float(r.result["peak_rss_mb"]) for r in done if r.result and "peak_rss_mb" in r.result]
    return Line(
        label=label,
        strategy=strategy,
        freeze=rows[0].freeze,
        context=context,
        values=values,
        walls=walls,
        n_failed=len(failed),
        errors=tuple(dict.fromkeys(r.error or "unknown error" for r in failed)),
        frozen_units=_first(done, "frozen_units"),
        num_blocks=_first(done, "num_blocks"),
        trainable_params=_first(done, "trainable_params"),
        total_params=_first(done, "total_params"),
        peak_rss_mb=statistics.fmean(rss) if rss else None,
        mean=mean,
        std=std,
        ci=(low, high),
        wall=statistics.fmean(walls) if walls else NAN,
        baseline=_floor(_found(done, baselines), metric),
        student=student_of(rows[0].config),
        cost=cost_of(done),
    )


def _reference(line: Line, fulls: list[Line]) -> Line | None:
    """The full fine-tuning line in the same context: same lr if there is one, else the best."""
    same = [f for f in fulls if f.n and _without_lr(f.context) == _without_lr(line.context)]
    exact = [f for f in same if f.context == line.context]
    if exact:
        return exact[0]
    return max(same, key=lambda f: f.mean, default=None)


def _without_lr(context: tuple) -> tuple:
    return tuple((k, v) for k, v in context if k != "optim.lr")


def gain_of(line: Line, ref: Line) -> tuple[float | None, tuple[float, float]]:
    """``line``'s share of ``ref``'s gain over the trivial baseline, and Fieller's 95% interval
    of it (seed noise on both sides, independent, t with min(n) - 1 df; NaN under 2 seeds).
    None when a baseline is unknown or ``ref`` does not beat its baseline."""
    if line.baseline is None or ref.baseline is None or not ref.mean > ref.baseline:
        return None, (NAN, NAN)
    above, full = line.mean - line.baseline, ref.mean - ref.baseline
    if line is ref:
        return 1.0, (NAN, NAN)
    if min(line.n, ref.n) < 2:
        return above / full, (NAN, NAN)
    var_a, var_b = line.std**2 / line.n, ref.std**2 / ref.n
    return above / full, ratio_ci(above, var_a, full, var_b, min(line.n, ref.n) - 1)


def relative_ci(line: Line, ref: Line) -> tuple[float, float]:
    """Fieller's 95% interval of ``line.mean / ref.mean`` (as :func:`gain_of`'s, without the
    baseline); NaN under 2 seeds a side and for the reference itself."""
    if line is ref or min(line.n, ref.n) < 2:
        return NAN, NAN
    var_a, var_b = line.std**2 / line.n, ref.std**2 / ref.n
    return ratio_ci(line.mean, var_a, ref.mean, var_b, min(line.n, ref.n) - 1)


def _compare(line: Line, ref: Line | None) -> Line:
    if ref is None or not line.n:
        return line
    gain, gain_ci = gain_of(line, ref)
    speeds = line.inference.speed, ref.inference.speed
    return dataclasses.replace(
        line,
        reference=ref.label,
        diff=line.mean - ref.mean,
        relative=line.mean / ref.mean if ref.mean else None,
        relative_ci=relative_ci(line, ref) if ref.mean else (NAN, NAN),
        speedup=ref.wall / line.wall if line.wall > 0 else None,
        p_value=None if line is ref else welch_p(line.values, ref.values),
        gain=gain,
        gain_ci=gain_ci,
        inference_speedup=speeds[0] / speeds[1] if speeds[1] > 0 and speeds[0] > 0 else None,
    )


def _describe(found: list[Baseline]) -> str:
    """What the baseline predicts; the seeds' dev subsets may disagree on the majority."""
    shown = list(dict.fromkeys(b.predicts.removeprefix("class ") for b in found))
    if len(shown) == 1:
        return found[0].describe
    if found[0].kind == "mean":
        return f"always predicting the mean of each seed's dev labels ({', '.join(shown)})"
    return f"always predicting the majority class of each seed's dev subset ({' or '.join(shown)})"


def _baseline_line(
    full: Line, rows: list[RunRow], baselines: Mapping[str, Baseline]
) -> BaselineLine | None:
    found = _found(rows, baselines)
    if not found or full.baseline is None:
        return None
    names = sorted({k for b in found for k in b.metrics})
    metrics = {k: v for k in names if (v := _floor(found, k)) is not None}
    return BaselineLine(
        full.label, full.baseline, metrics, _describe(found), found[0].kind, found[0].examples
    )


def _order(line: Line) -> tuple:
    context = tuple(
        (0, v, "") if isinstance(v, int | float) else (1, 0, str(v))
        for _, v in _without_lr(line.context)
    )
    units = line.frozen_units if line.frozen_units is not None else 10**9
    return (context, units, line.label)


def main_metric(rows: list[RunRow]) -> str:
    """The task's main metric, as the runs recorded it."""
    return next((r.result["main_metric"] for r in rows if r.result), "accuracy")


def _baseline_facts(found: list[BaselineLine], metric: str) -> tuple[tuple[str, str], ...]:
    if not found:
        return (("trivial baseline", "unknown (not computed: the dev data was not found)"),)
    shown = [f"{b.describe}: {metric} {100 * b.value:.1f} on {b.examples} dev examples" +
             (f" ({b.reference})" if len(found) > 1 else "") for b in found]  # fmt: skip
    return (("trivial baseline", "; ".join(dict.fromkeys(shown))),)


def _same_models(lines: list[Line]) -> list[Line]:
    """Each measured line with the inference figure of its model (:func:`model_key`): every
    run of every line that is that model at inference, pooled."""
    groups: dict[tuple, list[Line]] = {}
    for line in lines:
        if line.cost.measured:
            groups.setdefault(model_key(line.student, line.cost), []).append(line)
    out = []
    for line in lines:
        group = groups.get(model_key(line.student, line.cost), []) if line.cost.measured else []
        out.append(dataclasses.replace(
            line,
            inference=pool([x.cost for x in group]) if group else line.cost,
            same_model=tuple(x.label for x in group if x is not line),
        ))  # fmt: skip
    return out


def _holm(lines: list[Line]) -> list[Line]:
    """Each line's Welch p Holm-adjusted over the lines compared with the same full line."""
    adjusted: dict[str, float | None] = {}
    for ref in {line.reference for line in lines if line.reference}:
        family = [x for x in lines if x.reference == ref and x.label != ref]
        found = holm([x.p_value for x in family])
        adjusted.update(zip((x.label for x in family), found, strict=True))
    return [dataclasses.replace(x, p_adjusted=adjusted.get(x.label)) for x in lines]


def summarize(rows: list[RunRow], baselines: Mapping[str, Baseline] | None = None) -> Summary:
    """One line per strategy (and context), compared with full fine-tuning and, where
    ``baselines`` (by :func:`~freezetune.study.baseline.baseline_key`) know the runs' dev
    examples, with the trivial baseline; in table order."""
    metric, baselines = main_metric(rows), baselines or {}
    groups, own = _group(rows)
    lines = [_line(key, group, own[key[0]], metric, baselines) for key, group in groups.items()]
    lines = _same_models(lines)
    fulls = [line for line in lines if line.is_full]
    lines = _holm(sorted((_compare(line, _reference(line, fulls)) for line in lines), key=_order))
    found = [
        _baseline_line(line, _done(groups[(line.strategy, line.context)], metric), baselines)
        for line in lines
        if line.reference == line.label
    ]
    floors = tuple(b for b in found if b is not None)
    facts = study_facts(rows) + _baseline_facts(list(floors), metric)
    return Summary(metric, tuple(lines), facts, tuple(rows), floors)
