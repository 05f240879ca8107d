"""The report's tables as text: the strategies table (for Markdown and HTML, with the trivial
baseline as a row of its own), ``strategies.csv`` (the same lines as plain numbers) and
``results.csv`` (one line per run). Pure functions of the summary and rows.

>>> _num(0.8312, ".1f", 100), _num(None, ".1f"), _pct_ci((-math.inf, math.inf))
('83.1', '—', 'unbounded')
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from typing import Any

from freezetune.report.tables import BaselineLine, Line, Summary, main_metric, run_metric
from freezetune.study.baseline import Baseline, baseline_key
from freezetune.study.store import RunRow

__all__ = ["BELOW", "CSV_FIELDS", "results_csv", "strategies_csv", "table_cells"]

#: Appended to the label of a line whose mean is below the trivial baseline.
BELOW = " (below baseline)"

CSV_FIELDS = (
    "run_id", "strategy", "freeze", "seed", "lr", "train_size", "status", "error",
    "main_metric", "best", "final", "baseline", "above_baseline", "units_frozen", "num_blocks",
    "wall_time_s", "train_time_s", "eval_time_s", "train_examples_per_s", "peak_rss_mb",
    "trainable_params", "total_params", "steps", "train_examples", "started_at", "finished_at",
    "attempts", "git",
)  # fmt: skip


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


HEADERS = (
    "strategy", "frozen units", "seeds", "{metric} mean ± std", "95% CI", "Δ vs full (points)",
    "% of full", "% of full's gain", "gain 95% CI", "p (Welch)", "wall time s", "speedup",
    "trainable params", "peak RSS MB", "failed",
)  # fmt: skip


def _line_cells(line: Line) -> list[str]:
    std = f" ± {_num(line.std, '.1f', 100)}" if line.n > 1 else ""
    ci = f"[{_num(line.ci[0], '.1f', 100)}, {_num(line.ci[1], '.1f', 100)}]"
    is_ref = line.reference == line.label
    p = "ref" if is_ref else _num(line.p_value, ".3f")
    return [
        line.label + (BELOW if line.below_baseline else ""),
        "—" if line.units_frozen is None else str(line.units_frozen),
        str(line.n),
        _num(line.mean, ".1f", 100) + std if line.n else "—",
        ci if line.n > 1 else "—",
        _num(line.diff, "+.1f", 100),
        _num(line.relative, ".1%"),
        _num(line.gain, ".1%"),
        "ref" if is_ref and line.gain is not None else _pct_ci(line.gain_ci),
        p if line.n else "—",
        _num(line.wall, ".1f"),
        _num(line.speedup, ".2f") + ("x" if line.speedup is not None else ""),
        "—" if line.trainable_params is None else f"{line.trainable_params:,}",
        _num(line.peak_rss_mb, ".0f"),
        str(line.n_failed) if line.n_failed else "",
    ]


def _baseline_cells(floor: BaselineLine, full: Line) -> list[str]:
    cells = ["—"] * len(HEADERS)
    cells[0] = f"{floor.label}: {floor.describe}"
    cells[3] = _num(floor.value, ".1f", 100)
    cells[5] = _num(floor.value - full.mean, "+.1f", 100)
    cells[6] = _num(floor.value / full.mean if full.mean else None, ".1%")
    cells[7] = "0.0%" if full.gain is not None else "—"
    cells[-1] = ""
    return cells


def table_cells(summary: Summary) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, formatted cells (metric values x100) and a CSS class per row ("ref",
    "baseline", "below" or "") of the main table, for Markdown and HTML. Each context's trivial
    baseline is a row just above its full fine-tuning line."""
    headers = [h.format(metric=summary.metric) for h in HEADERS]
    cells, classes = [], []
    for line in summary.lines:
        floor = summary.baseline_for(line) if line.reference == line.label else None
        if floor is not None:
            cells.append(_baseline_cells(floor, line))
            classes.append("baseline")
        cells.append(_line_cells(line))
        is_ref = line.reference == line.label
        classes.append("ref" if is_ref else "below" if line.below_baseline else "")
    return headers, cells, classes


STRATEGY_FIELDS = (
    "label", "strategy", "freeze", "reference", "is_baseline", "units_frozen", "seeds", "mean",
    "std", "ci_low", "ci_high", "baseline", "diff", "relative", "gain", "gain_ci_low",
    "gain_ci_high", "below_baseline", "p_welch", "wall_time_s", "speedup", "trainable_params",
    "peak_rss_mb", "failed",
)  # fmt: skip


def _strategy_record(line: Line) -> dict[str, Any]:
    return {
        "label": line.label, "strategy": line.strategy, "freeze": line.freeze,
        "reference": line.reference, "is_baseline": False, "units_frozen": line.units_frozen,
        "seeds": line.n, "mean": line.mean, "std": line.std, "ci_low": line.ci[0],
        "ci_high": line.ci[1], "baseline": line.baseline, "diff": line.diff,
        "relative": line.relative, "gain": line.gain, "gain_ci_low": line.gain_ci[0],
        "gain_ci_high": line.gain_ci[1], "below_baseline": line.below_baseline,
        "p_welch": line.p_value, "wall_time_s": line.wall, "speedup": line.speedup,
        "trainable_params": line.trainable_params, "peak_rss_mb": line.peak_rss_mb,
        "failed": line.n_failed,
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
