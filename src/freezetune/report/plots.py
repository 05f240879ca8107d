"""The report's figures as PNG bytes: pure functions of the summary (matplotlib, Agg backend).

Each returns ``None`` when the study has nothing to show for it (e.g. no adaptive strategy).
Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas, never pyplot, so nothing
global (backend, open figures) is touched.

>>> png = plot_pareto(summary)  # doctest: +SKIP
>>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"  # doctest: +SKIP
True
"""

from __future__ import annotations

import io
import math
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from freezetune.records import freeze_state
from freezetune.report.tables import Line, Summary, pareto_front

__all__ = [
    "PLOTS",
    "plot_curves",
    "plot_depth",
    "plot_inference",
    "plot_pareto",
    "plot_timeline",
    "render_plots",
]

SIZE = (7.5, 4.6)


def _figure(size: tuple[float, float] = SIZE) -> tuple[Figure, Any]:
    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    return fig, ax


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _err(value: float) -> float:
    return 0.0 if math.isnan(value) else 100 * value


def _baselines(ax: Any, summary: Summary, references: set[str] | None = None) -> None:
    """A dashed horizontal line per trivial baseline (of the given full lines' contexts)."""
    drawn: set[float] = set()
    many = len({round(100 * b.value, 6) for b in summary.baselines}) > 1
    for floor in summary.baselines:
        value = round(100 * floor.value, 6)
        if (references is not None and floor.reference not in references) or value in drawn:
            continue
        what = "majority class" if floor.kind == "majority" else "mean prediction"
        label = f"{floor.label if many else 'trivial baseline'} ({what})"
        ax.axhline(value, color="grey", linestyle="--", linewidth=1.2, label=label)
        drawn.add(value)


def _tick(units: int, blocks: int | None) -> str:
    if units == 0:
        return "none"
    if blocks is not None and units > blocks:
        return "body\n(head)"
    return "emb" if units == 1 else f"emb+{units - 1}"


def plot_depth(summary: Summary) -> bytes | None:
    """Main metric vs frozen prefix, mean ± std over seeds, one series per context."""
    lines = [line for line in summary.lines if line.static_prefix and line.n]
    if len({line.frozen_units for line in lines}) < 2:
        return None
    fig, ax = _figure()
    series: dict[str, list[Line]] = {}
    for line in lines:
        series.setdefault(line.reference or "", []).append(line)
    for ref, group in series.items():
        group = sorted(group, key=lambda line: line.frozen_units or 0)
        ax.errorbar(
            [line.frozen_units for line in group],
            [100 * line.mean for line in group],
            yerr=[_err(line.std) for line in group],
            marker="o",
            capsize=4,
            label=ref.removeprefix("full").strip() or None,
        )
    _baselines(ax, summary, set(series))
    ticks = sorted({line.frozen_units or 0 for line in lines})
    ax.set_xticks(ticks, [_tick(u, lines[0].num_blocks) for u in ticks])
    ax.set_xlabel("frozen prefix (embeddings + first K blocks)")
    ax.set_ylabel(f"{summary.metric} (x100)")
    ax.set_title(f"{summary.metric} vs frozen blocks (mean ± std over seeds)")
    if len(series) > 1 or summary.baselines:
        ax.legend()
    return _png(fig)


def plot_pareto(summary: Summary) -> bytes | None:
    """Each strategy's metric vs wall time (± std); the Pareto front as a step line."""
    lines = [line for line in summary.lines if line.n and not math.isnan(line.wall)]
    if not lines:
        return None
    fig, ax = _figure()
    for i, line in enumerate(sorted(lines, key=lambda line: line.wall)):
        xerr = _std(list(line.walls))
        ax.errorbar(line.wall, 100 * line.mean, xerr=xerr, yerr=_err(line.std), fmt="o", capsize=3)
        offset = (5, 6 if i % 2 == 0 else -13)  # alternate above/below: neighbours stay legible
        ax.annotate(line.label, (line.wall, 100 * line.mean), textcoords="offset points",
                    xytext=offset, fontsize=8)  # fmt: skip
    front = [lines[i] for i in pareto_front([(line.wall, line.mean) for line in lines])]
    xs, ys = [line.wall for line in front], [100 * line.mean for line in front]
    ax.step(xs, ys, where="post", color="black", alpha=0.6)
    ax.plot(xs, ys, "s", mfc="none", ms=12, color="black", alpha=0.6, label="Pareto front")
    _with_teachers(ax, lines)
    _baselines(ax, summary)
    ax.set_xlabel("wall time per run, s (train + eval)")
    ax.set_ylabel(f"{summary.metric} (x100)")
    ax.set_title(f"{summary.metric} vs cost (mean ± std over seeds)")
    ax.legend(loc="lower right")
    return _png(fig)


def _with_teachers(ax: Any, lines: list[Line]) -> None:
    """A distilled student's wall time counting its teacher's: a hollow point, dotted to the
    student's own."""
    taught = [x for x in lines if not math.isnan(x.cost.wall_with_teacher)]
    for i, line in enumerate(taught):
        y = 100 * line.mean
        ax.plot([line.wall, line.cost.wall_with_teacher], [y, y], ":", color="grey")
        ax.plot(line.cost.wall_with_teacher, y, "o", mfc="none", color="grey",
                label="incl. the teacher's training" if i == 0 else None)  # fmt: skip


def plot_inference(summary: Summary) -> bytes | None:
    """Each strategy's metric vs its saved model's inference examples/s (± std over the runs of
    the same model: strategies that are one model at inference share one pooled figure); the
    Pareto front (faster and more accurate is better) as a step line."""
    lines = [line for line in summary.lines if line.n and line.inference.measured]
    if not lines:
        return None
    fig, ax = _figure((SIZE[0], SIZE[1] + 0.25 * ((len(lines) + 3) // 2)))  # legend below
    colors = _colors([line.label for line in lines])
    for line in lines:  # strategies of one model run at about one speed: a legend, not labels
        xerr = _std(list(line.inference.examples_per_s))
        ax.errorbar(line.inference.speed, 100 * line.mean, xerr=xerr, yerr=_err(line.std), fmt="o",
                    capsize=3, color=colors[line.label], label=line.label)  # fmt: skip
    found = pareto_front([(-line.inference.speed, line.mean) for line in lines])
    front = sorted((lines[i] for i in found), key=lambda line: line.inference.speed)
    xs, ys = [line.inference.speed for line in front], [100 * line.mean for line in front]
    ax.step(xs, ys, where="pre", color="black", alpha=0.6)
    ax.plot(xs, ys, "s", mfc="none", ms=12, color="black", alpha=0.6, label="Pareto front")
    _baselines(ax, summary)
    ax.set_xlabel("inference examples/s of the saved model (dev set, eval batch size)")
    ax.set_ylabel(f"{summary.metric} (x100)")
    ax.set_title(f"{summary.metric} vs inference speed (mean ± std over seeds)")
    ax.margins(x=0.08)
    fig.legend(fontsize=8, loc="outside lower center", ncols=2)
    return _png(fig)


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _colors(labels: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(dict.fromkeys(labels))}


def _changes(timeline: list[dict[str, Any]]) -> bool:
    return len({freeze_state(e) for e in timeline}) > 1


def plot_timeline(summary: Summary) -> bytes | None:
    """Units frozen vs optimizer step for the runs whose freezing changed during training."""
    rows = [row for row in summary.rows if row.status == "succeeded" and _changes(row.timeline)]
    if not rows:
        return None
    fig, ax = _figure()
    colors = _colors([row.strategy for row in rows])
    seen: set[str] = set()
    for row in rows:
        steps = [event.get("step", 0) for event in row.timeline]
        units = [event.get("frozen_units", 0) for event in row.timeline]
        end = (row.result or {}).get("steps", steps[-1])
        ax.step([*steps, end], [*units, units[-1]], where="post", color=colors[row.strategy],
                label=None if row.strategy in seen else row.strategy, alpha=0.8)  # fmt: skip
        seen.add(row.strategy)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("units frozen (embeddings = 1)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("freezing timeline of adaptive strategies (one line per seed)")
    ax.legend()
    return _png(fig)


def plot_curves(summary: Summary) -> bytes | None:
    """Dev metric vs training wall time, one line per seed, one color per strategy."""
    rows = [row for row in summary.rows if row.status == "succeeded" and row.curve]
    if not rows:
        return None
    fig, ax = _figure()
    colors = _colors([row.strategy for row in rows])
    seen: set[str] = set()
    for row in rows:
        points = [(e.get("train_time_s"), e.get(summary.metric)) for e in row.curve]
        points = [(t, 100 * v) for t, v in points if t is not None and v is not None]
        if not points:
            continue
        ax.plot(*zip(*points, strict=True), marker=".", color=colors[row.strategy],
                label=None if row.strategy in seen else row.strategy, alpha=0.8)  # fmt: skip
        seen.add(row.strategy)
    _baselines(ax, summary)
    ax.set_xlabel("training wall time, s (evaluation excluded)")
    ax.set_ylabel(f"dev {summary.metric} (x100)")
    ax.set_title("learning curves (one line per seed)")
    ax.legend(fontsize=8)
    return _png(fig)


#: name -> (function, caption); the order of the report.
PLOTS = {
    "depth": (
        plot_depth,
        "Main metric vs number of frozen blocks (static prefix specs); dashed: the trivial "
        "baseline.",
    ),
    "pareto": (
        plot_pareto,
        "Metric vs wall time; the line is the Pareto front; dashed: the trivial baseline; "
        "hollow (when there are distilled students): wall time counting the teacher's.",
    ),
    "inference": (
        plot_inference,
        "Metric vs the saved model's inference examples/s (measured alike in every run; a "
        "ratio between rows, not an absolute speed; strategies that are the same model at "
        "inference share one figure, pooled over their runs); the line is the Pareto front; "
        "dashed: the trivial baseline.",
    ),
    "timeline": (plot_timeline, "Freezing timeline of adaptive strategies."),
    "curves": (plot_curves, "Learning curves: dev metric vs training wall time."),
}


def render_plots(summary: Summary) -> dict[str, bytes]:
    """Every plot that has something to show, by name."""
    figures = {name: fn(summary) for name, (fn, _) in PLOTS.items()}
    return {name: png for name, png in figures.items() if png is not None}
