"""Aggregate stored runs into one table line per strategy: pure functions of the rows.

A *line* is the runs of one strategy that differ only in their seed. When a setting other than
the seed varies inside a strategy (an ``lrs`` or ``train_sizes`` axis, or a study re-run with a
changed spec), each value gets its own line, labelled e.g. ``full n_train=500``. Each line is
compared with the full fine-tuning line in the same context (same settings but the learning rate;
the same lr if there is one, else the best full line).

>>> [round(x, 4) for x in mean_ci([0.8, 0.9, 1.0])]  # mean, std, 95% Student-t interval
[0.9, 0.1, 0.6516, 1.1484]
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
import statistics
from dataclasses import dataclass
from typing import Any

from scipy import stats

from freezetune.study.spec import SHORT_KEYS
from freezetune.study.store import STATUSES, RunRow

__all__ = [
    "Line",
    "Summary",
    "mean_ci",
    "pareto_front",
    "results_csv",
    "run_metric",
    "study_facts",
    "summarize",
    "table_cells",
    "welch_p",
]

NAN = float("nan")
IGNORED_KEYS = ("train.seed", "freeze")
STATIC_PREFIX = re.compile(r"^(full|head|embeddings|bottom:\d+)$")


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
    units_frozen: int | None
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
    speedup: float | None = None  # reference wall time / this wall time
    p_value: float | None = None  # Welch's t-test against the reference

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def static_prefix(self) -> bool:
        """A plain ``full``/``bottom:K``/``head`` spec with no settings of its own."""
        return bool(STATIC_PREFIX.match(self.freeze)) and self.strategy == self.freeze


@dataclass(frozen=True)
class Summary:
    metric: str  # the task's main metric, e.g. accuracy
    lines: tuple[Line, ...]  # ordered: context, then frozen units
    facts: tuple[tuple[str, str], ...]  # the study's size, for the top of the report
    rows: tuple[RunRow, ...]


def mean_ci(values: list[float] | tuple[float, ...], level: float = 0.95) -> tuple:
    """Mean, sample std and the Student-t confidence interval (NaN where n < 2)."""
    if not values:
        return NAN, NAN, NAN, NAN
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, NAN, NAN, NAN
    std = statistics.stdev(values)
    half = float(stats.t.ppf((1 + level) / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return mean, std, mean - half, mean + half


def welch_p(a: tuple[float, ...], b: tuple[float, ...]) -> float | None:
    """Two-sided Welch's t-test p-value; None when either side has fewer than 2 values.

    >>> welch_p((1.0, 1.0), (1.0, 1.0)), welch_p((1.0,), (2.0, 3.0))
    (1.0, None)
    """
    if len(a) < 2 or len(b) < 2:
        return None
    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (less or equal cost, more or equal value,
    one strictly), by increasing cost.

    >>> pareto_front([(1.0, 0.8), (2.0, 0.9), (3.0, 0.85), (0.5, 0.5)])
    [3, 0, 1]
    """
    front = []
    for i, (cost, value) in enumerate(points):
        dominated = any(
            c <= cost and v >= value and (c < cost or v > value)
            for j, (c, v) in enumerate(points)
            if j != i
        )
        if not dominated and not (math.isnan(cost) or math.isnan(value)):
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def run_metric(row: RunRow, metric: str, which: str = "best") -> float | None:
    """The main metric of a succeeded run: the best eval (the saved model) or the final one."""
    record = (row.result or {}).get(which) or {}
    value = record.get(metric)
    return float(value) if isinstance(value, int | float) else None


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = tuple(value) if isinstance(value, list) else value
    return out


def _varying(rows: list[RunRow]) -> list[str]:
    flats = [_flat(r.config) for r in rows]
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
        flat = _flat(row.config)
        context = tuple((k, flat.get(k)) for k in context_keys)
        groups.setdefault((row.strategy, context), []).append(row)
    return groups, own


def _first(rows: list[RunRow], key: str) -> Any:
    return next((r.result[key] for r in rows if r.result and r.result.get(key) is not None), None)


def _line(strategy: str, context: tuple, rows: list[RunRow], own: list[str], metric: str) -> Line:
    done = [r for r in rows if r.status == "succeeded" and run_metric(r, metric) is not None]
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
        units_frozen=_first(done, "units_frozen"),
        num_blocks=_first(done, "num_blocks"),
        trainable_params=_first(done, "trainable_params"),
        total_params=_first(done, "total_params"),
        peak_rss_mb=statistics.fmean(rss) if rss else None,
        mean=mean,
        std=std,
        ci=(low, high),
        wall=statistics.fmean(walls) if walls else NAN,
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


def _compare(line: Line, ref: Line | None) -> Line:
    if ref is None or not line.n:
        return line
    return dataclasses.replace(
        line,
        reference=ref.label,
        diff=line.mean - ref.mean,
        relative=line.mean / ref.mean if ref.mean else None,
        speedup=ref.wall / line.wall if line.wall > 0 else None,
        p_value=None if line is ref else welch_p(line.values, ref.values),
    )


def _order(line: Line) -> tuple:
    context = tuple(
        (0, v, "") if isinstance(v, int | float) else (1, 0, str(v))
        for _, v in _without_lr(line.context)
    )
    units = line.units_frozen if line.units_frozen is not None else 10**9
    return (context, units, line.label)


def _fact(values: list[Any], none: str | None = None) -> str:
    """Each distinct value once; ``None`` shows as ``none`` (e.g. "all") or is left out."""
    shown = ["" if v is None and none is None else none if v is None else str(v) for v in values]
    unique = [v for v in dict.fromkeys(shown) if v]
    return ", ".join(unique) if unique else "?"


def study_facts(rows: list[RunRow]) -> tuple[tuple[str, str], ...]:
    """The study's size and setting, each value listed once (several when they vary)."""
    flats = [_flat(r.config) for r in rows if r.config.get("model")]
    done = [r.result for r in rows if r.result]
    status = [r.status for r in rows]
    precision = ["bf16" if f.get("train.bf16") else "fp32" for f in flats]
    return (
        ("model", _fact([f.get("model.name") for f in flats])),
        ("task", _fact([f.get("data.task") for f in flats])),
        ("train examples", _fact([r.get("train_examples") for r in done])),
        ("eval examples", _fact([f.get("data.max_eval_samples") for f in flats], "all")),
        ("epochs", _fact([f.get("train.epochs") for f in flats])),
        ("seeds", _fact(sorted({r.seed for r in rows}))),
        ("precision", _fact(precision)),
        ("max length", _fact([f.get("data.max_length") for f in flats])),
        ("batch size", _fact([f.get("train.batch_size") for f in flats])),
        ("learning rate", _fact(sorted({r.lr for r in rows}))),
        ("runs", ", ".join(f"{status.count(s)} {s}" for s in STATUSES if s in status)),
        ("git", _fact([r.get("git") for r in done])),
        ("cpus", _fact([(r.get("machine") or {}).get("cpus") for r in done])),
    )


def main_metric(rows: list[RunRow]) -> str:
    return next((r.result["main_metric"] for r in rows if r.result), "accuracy")


def summarize(rows: list[RunRow]) -> Summary:
    """One line per strategy (and context), compared with full fine-tuning, in table order."""
    metric = main_metric(rows)
    groups, own = _group(rows)
    lines = [_line(s, ctx, group, own[s], metric) for (s, ctx), group in groups.items()]
    fulls = [line for line in lines if line.freeze == "full"]
    lines = [_compare(line, _reference(line, fulls)) for line in lines]
    return Summary(metric, tuple(sorted(lines, key=_order)), study_facts(rows), tuple(rows))


CSV_FIELDS = (
    "run_id", "strategy", "freeze", "seed", "lr", "train_size", "status", "error",
    "main_metric", "best", "final", "units_frozen", "num_blocks", "wall_time_s",
    "train_time_s", "eval_time_s", "train_examples_per_s", "peak_rss_mb", "trainable_params",
    "total_params", "steps", "train_examples", "started_at", "finished_at", "attempts", "git",
)  # fmt: skip


def results_csv(rows: list[RunRow] | tuple[RunRow, ...]) -> str:
    """One CSV line per run: its grid cell, status and headline numbers."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    metric = main_metric(list(rows))
    for row in rows:
        result = row.result or {}
        record = {k: getattr(row, k, None) for k in CSV_FIELDS if hasattr(row, k)}
        record.update({k: result.get(k) for k in CSV_FIELDS if k in result})
        record.update(
            main_metric=metric, best=run_metric(row, metric), final=run_metric(row, metric, "final")
        )
        writer.writerow(record)
    return buffer.getvalue()


def _num(value: float | None, fmt: str, scale: float = 1.0) -> str:
    if value is None or math.isnan(value):
        return "—"
    return format(scale * value, fmt)


def table_cells(summary: Summary) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells of the main table (metric values x100), for md and html."""
    headers = [
        "strategy", "frozen units", "seeds", f"{summary.metric} mean ± std", "95% CI",
        "Δ vs full (points)", "% of full", "p (Welch)", "wall time s", "speedup",
        "trainable params", "peak RSS MB", "failed",
    ]  # fmt: skip
    cells = []
    for line in summary.lines:
        std = f" ± {_num(line.std, '.1f', 100)}" if line.n > 1 else ""
        ci = f"[{_num(line.ci[0], '.1f', 100)}, {_num(line.ci[1], '.1f', 100)}]"
        p = "ref" if line.reference == line.label else _num(line.p_value, ".3f")
        cells.append([
            line.label,
            "—" if line.units_frozen is None else str(line.units_frozen),
            str(line.n),
            _num(line.mean, ".1f", 100) + std if line.n else "—",
            ci if line.n > 1 else "—",
            _num(line.diff, "+.1f", 100),
            _num(line.relative, ".1%"),
            p if line.n else "—",
            _num(line.wall, ".1f"),
            _num(line.speedup, ".2f") + ("x" if line.speedup is not None else ""),
            "—" if line.trainable_params is None else f"{line.trainable_params:,}",
            _num(line.peak_rss_mb, ".0f"),
            str(line.n_failed) if line.n_failed else "",
        ])  # fmt: skip
    return headers, cells
