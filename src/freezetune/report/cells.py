"""The report's tables as text: the strategies table (accuracy, for Markdown and HTML, with the
trivial baseline as a row of its own), the costs table (time, memory, inference),
``strategies.csv`` (the same lines as plain numbers) and ``results.csv`` (one line per run).
Pure functions of the summary and rows. Two tables, so that each fits a laptop's screen.

The costs table shows the inference columns when some run measured its saved model (one pooled
figure per model at inference, named in its own column), and the wall time counting the
teacher's when some run distilled; a row without the data shows "—".

>>> _num(0.8312, ".1f", 100), _num(None, ".1f"), _pct_ci((-math.inf, math.inf))
('83.1', '—', 'unbounded')
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from typing import Any

from freezetune.report.costs import student_of
from freezetune.report.tables import BaselineLine, Line, Summary, main_metric, run_metric
from freezetune.study.baseline import Baseline, baseline_key
from freezetune.study.store import RunRow

__all__ = [
    "BELOW",
    "CSV_FIELDS",
    "columns",
    "cost_cells",
    "cost_columns",
    "results_csv",
    "strategies_csv",
    "table_cells",
]

#: Appended to the label of a line whose mean is below the trivial baseline.
BELOW = " (below baseline)"

CSV_FIELDS = (
    "run_id", "strategy", "freeze", "seed", "lr", "train_size", "status", "error",
    "main_metric", "best", "final", "baseline", "above_baseline", "frozen_units", "num_blocks",
    "wall_time_s", "train_time_s", "eval_time_s", "train_examples_per_s", "peak_rss_mb",
    "trainable_params", "total_params", "steps", "train_examples", "started_at", "finished_at",
    "attempts", "git", "inference_examples_per_s", "latency_ms_p50", "latency_ms_p90",
    "inference_params", "disk_mb", "inference_threads", "inference_batch_size", "student_layers",
    "teacher", "teacher_wall_time_s", "wall_time_incl_teacher_s",
)  # fmt: skip


def _cost_record(row: RunRow) -> dict[str, Any]:
    """A run's inference measurement and teacher, for ``results.csv`` (None: not recorded)."""
    measured, distill = row.inference or {}, row.distill or {}
    teacher_s, wall = distill.get("teacher_wall_time_s"), (row.result or {}).get("wall_time_s")
    total = None
    if isinstance(teacher_s, int | float) and isinstance(wall, int | float):
        total = float(wall) + float(teacher_s)
    return {
        "inference_examples_per_s": measured.get("examples_per_s"),
        "latency_ms_p50": measured.get("latency_ms_p50"),
        "latency_ms_p90": measured.get("latency_ms_p90"),
        "inference_params": measured.get("params"),
        "disk_mb": measured.get("disk_mb"),
        "inference_threads": measured.get("threads"),
        "inference_batch_size": measured.get("batch_size"),
        "student_layers": student_of(row.config).layers,
        "teacher": (row.config.get("distill") or {}).get("teacher"),
        "teacher_wall_time_s": teacher_s,
        "wall_time_incl_teacher_s": total,
    }


def results_csv(
    rows: list[RunRow] | tuple[RunRow, ...], baselines: Mapping[str, Baseline] | None = None
) -> str:
    """One CSV line per run: its grid cell, status and headline numbers, with the trivial
    baseline of its dev examples (empty when unknown) and how far its best score is above it."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    metric = main_metric(list(rows))
    for row in rows:
        result = row.result or {}
        record = {k: getattr(row, k, None) for k in CSV_FIELDS if hasattr(row, k)}
        record.update({k: result.get(k) for k in CSV_FIELDS if k in result})
        best = run_metric(row, metric)
        found = (baselines or {}).get(baseline_key(row.config) or "")
        floor = found.metrics.get(metric) if found else None
        record.update(
            main_metric=metric,
            best=best,
            final=run_metric(row, metric, "final"),
            baseline=floor,
            above_baseline=None if best is None or floor is None else best - floor,
            **_cost_record(row),
        )
        writer.writerow(record)
    return buffer.getvalue()


def _num(value: float | None, fmt: str, scale: float = 1.0) -> str:
    if value is None or math.isnan(value):
        return "—"
    return format(scale * value, fmt)


def _pct_ci(ci: tuple[float, float]) -> str:
    if math.isnan(ci[0]) or math.isnan(ci[1]):
        return "—"
    if math.isinf(ci[0]) or math.isinf(ci[1]):
        return "unbounded"
    return f"[{ci[0]:.0%}, {ci[1]:.0%}]"


METRIC = "{metric} mean ± std"
TEACHER = "wall time incl. teacher s"
MODEL = "model at inference"
INFERENCE = ("inference examples/s", "inference speedup", "latency p50 ms (batch 1)", "params")
HEADERS = (
    "strategy", "frozen units", "seeds", METRIC, "95% CI", "Δ vs full (points)", "% of full",
    "% of full's gain", "gain 95% CI", "p (Welch)", "p (Holm)", "failed",
)  # fmt: skip
COSTS = (
    "strategy", "wall time s", TEACHER, "speedup", "trainable params", "peak RSS MB", MODEL,
    *INFERENCE,
)  # fmt: skip


def _times(x: float | None) -> str:
    return _num(x, ".2f") + ("x" if x is not None else "")


def _count(x: int | None) -> str:
    return "—" if x is None else f"{x:,}"


def _p(line: Line, value: float | None) -> str:
    if not line.n:
        return "—"
    return "ref" if line.reference == line.label else _num(value, ".3f")


def _line_cells(line: Line) -> dict[str, str]:
    std = f" ± {_num(line.std, '.1f', 100)}" if line.n > 1 else ""
    ci = f"[{_num(line.ci[0], '.1f', 100)}, {_num(line.ci[1], '.1f', 100)}]"
    is_ref = line.reference == line.label
    cells = [
        line.label + (BELOW if line.below_baseline else ""),
        "—" if line.frozen_units is None else str(line.frozen_units),
        str(line.n),
        _num(line.mean, ".1f", 100) + std if line.n else "—",
        ci if line.n > 1 else "—",
        _num(line.diff, "+.1f", 100),
        _num(line.relative, ".1%"),
        _num(line.gain, ".1%"),
        "ref" if is_ref and line.gain is not None else _pct_ci(line.gain_ci),
        _p(line, line.p_value),
        _p(line, line.p_adjusted),
        str(line.n_failed) if line.n_failed else "",
    ]
    return dict(zip(HEADERS, cells, strict=True))


def _model(line: Line) -> str:
    """E.g. "whole model (8 rows)": the model it is at inference, and how many rows share it."""
    if not line.inference.measured:
        return "—"
    shared = len(line.same_model) + 1
    return line.student.kind + (f" ({shared} rows)" if shared > 1 else "")


def _cost_cells(line: Line) -> dict[str, str]:
    cells = [
        line.label + (BELOW if line.below_baseline else ""),
        _num(line.wall, ".1f"),
        _num(line.cost.wall_with_teacher, ".1f"),
        _times(line.speedup),
        _count(line.trainable_params),
        _num(line.peak_rss_mb, ".0f"),
        _model(line),
        _num(line.inference.speed, ",.1f"),
        _times(line.inference_speedup),
        _num(line.inference.latency, ".2f"),
        _count(line.inference.params),
    ]
    return dict(zip(COSTS, cells, strict=True))


def _baseline_cells(floor: BaselineLine, full: Line) -> dict[str, str]:
    cells = dict.fromkeys(HEADERS, "—")
    cells[HEADERS[0]] = f"{floor.label}: {floor.describe}"
    cells[METRIC] = _num(floor.value, ".1f", 100)
    cells["Δ vs full (points)"] = _num(floor.value - full.mean, "+.1f", 100)
    cells["% of full"] = _num(floor.value / full.mean if full.mean else None, ".1%")
    cells["% of full's gain"] = "0.0%" if full.gain is not None else "—"
    cells["failed"] = ""
    return cells


def columns(summary: Summary) -> list[str]:
    """The strategies table's columns (accuracy)."""
    return list(HEADERS)


def cost_columns(summary: Summary) -> list[str]:
    """The costs table's columns: the inference ones when some line measured it, the wall time
    with the teacher's when some line has a teacher."""
    lines = summary.lines
    drop = set() if any(x.cost.measured for x in lines) else {MODEL, *INFERENCE}
    if not any(x.student.distilled for x in lines):
        drop.add(TEACHER)
    return [h for h in COSTS if h not in drop]


def _css(line: Line) -> str:
    return "ref" if line.reference == line.label else "below" if line.below_baseline else ""


def table_cells(summary: Summary) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, formatted cells (metric values x100) and a CSS class per row ("ref",
    "baseline", "below" or "") of the strategies table, for Markdown and HTML. Each context's
    trivial baseline is a row just above its full fine-tuning line."""
    shown = columns(summary)
    headers = [h.format(metric=summary.metric) for h in shown]
    cells, classes = [], []
    for line in summary.lines:
        floor = summary.baseline_for(line) if line.reference == line.label else None
        if floor is not None:
            cells.append([_baseline_cells(floor, line)[h] for h in shown])
            classes.append("baseline")
        cells.append([_line_cells(line)[h] for h in shown])
        classes.append(_css(line))
    return headers, cells, classes


def cost_cells(summary: Summary) -> tuple[list[str], list[list[str]], list[str]]:
    """The costs table as :func:`table_cells` gives the strategies table (no baseline rows)."""
    shown = cost_columns(summary)
    cells = [[_cost_cells(line)[h] for h in shown] for line in summary.lines]
    return shown, cells, [_css(line) for line in summary.lines]


STRATEGY_FIELDS = (
    "label", "strategy", "freeze", "reference", "is_baseline", "frozen_units", "seeds", "mean",
    "std", "ci_low", "ci_high", "baseline", "diff", "relative", "gain", "gain_ci_low",
    "gain_ci_high", "below_baseline", "p_welch", "p_holm", "wall_time_s", "speedup",
    "trainable_params", "peak_rss_mb", "failed", "distilled", "student_layers",
    "wall_time_incl_teacher_s", "model_at_inference", "same_model_as",
    "inference_examples_per_s", "inference_speedup", "latency_ms_p50", "latency_ms_p90",
    "params", "disk_mb",
)  # fmt: skip


def _strategy_record(line: Line) -> dict[str, Any]:
    """A line as plain numbers; inference figures pooled over its model (as in the table)."""
    inference = line.inference
    return {
        "label": line.label, "strategy": line.strategy, "freeze": line.freeze,
        "reference": line.reference, "is_baseline": False, "frozen_units": line.frozen_units,
        "seeds": line.n, "mean": line.mean, "std": line.std, "ci_low": line.ci[0],
        "ci_high": line.ci[1], "baseline": line.baseline, "diff": line.diff,
        "relative": line.relative, "gain": line.gain, "gain_ci_low": line.gain_ci[0],
        "gain_ci_high": line.gain_ci[1], "below_baseline": line.below_baseline,
        "p_welch": line.p_value, "p_holm": line.p_adjusted, "wall_time_s": line.wall,
        "speedup": line.speedup, "trainable_params": line.trainable_params,
        "peak_rss_mb": line.peak_rss_mb, "failed": line.n_failed,
        "distilled": line.student.distilled, "student_layers": line.student.layers,
        "wall_time_incl_teacher_s": line.cost.wall_with_teacher,
        "model_at_inference": line.student.kind if inference.measured else None,
        "same_model_as": "; ".join(line.same_model),
        "inference_examples_per_s": inference.speed, "inference_speedup": line.inference_speedup,
        "latency_ms_p50": inference.latency, "latency_ms_p90": inference.latency_tail,
        "params": inference.params, "disk_mb": inference.disk_mb,
    }  # fmt: skip


def strategies_csv(summary: Summary) -> str:
    """The strategies table as plain numbers (metric units, shares as fractions, NaN or empty
    where unknown), one CSV line per strategy and one per trivial baseline."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=STRATEGY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for line in summary.lines:
        floor = summary.baseline_for(line) if line.reference == line.label else None
        if floor is not None:
            writer.writerow({
                "label": floor.label, "strategy": floor.describe, "reference": floor.reference,
                "is_baseline": True, "mean": floor.value, "baseline": floor.value,
                "diff": floor.value - line.mean, "gain": 0.0,
                "relative": floor.value / line.mean if line.mean else None,
            })  # fmt: skip
        writer.writerow(_strategy_record(line))
    return buffer.getvalue()
