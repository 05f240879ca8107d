"""The contrast report's records (``Estimate``, ``Point``, ``Side``, ``Contrast``; ``contrast.py``
computes them) and their rendering: one table per study, the two-panel plot, and the four files
(markdown, self-contained HTML, PNG, strict JSON)."""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from freezetune.records import atomic_write_text
from freezetune.report.html import CSS
from freezetune.report.html import _table as _table_html
from freezetune.report.markdown import _md_table
from freezetune.report.rules import SIGNAL_RULE, Signal

__all__ = [
    "CLAIM",
    "FILES",
    "NAMES",
    "NOTE",
    "Contrast",
    "Estimate",
    "Point",
    "Side",
    "plot",
    "table",
    "write",
]

CLAIM = "freezing helps in computer vision but hurts transformers"
NAMES = {"image": "images", "text": "text"}
FILES = ("contrast.md", "contrast.html", "contrast.png", "contrast.json")
HEADERS = ("train size", "strategy", "frozen params", "seeds", "{metric}", "% of full",
           "95% CI", "simultaneous 95% CI", "wall time / full", "95% CI")  # fmt: skip
NOTE = (
    "Frozen params = 1 - trainable_params / total_params as each run's result records them "
    "(a schedule, marked 'end': at the end of training). % of full = the main metric (best dev "
    "evaluation) / full fine-tuning's, same seed and training-set size; wall time / full: "
    "training + evaluation time, same pairing. Means over the paired seeds, 95% Student-t "
    "intervals. A side's verdict (strategies that freeze nothing do not count) picks from its "
    "m frozen strategies with at least 2 seeds, so it reads Bonferroni-simultaneous 95% "
    "intervals (each at level 1 - 0.05/m, the 'simultaneous 95% CI' column): helps if some "
    "frozen strategy's interval is above 100%, hurts if every one's is below, else costs "
    "nothing measurable; the deepest freeze not measurably below full is read from the same "
    f"intervals. {SIGNAL_RULE} A side below that cannot answer."
)


@dataclass(frozen=True)
class Estimate:
    """A mean over paired seeds and its 95% Student-t interval (NaN bounds under 2 seeds)."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class Point:
    """One strategy of one side: what it freezes, and its quality and time against full's."""

    strategy: str
    frozen: float | None  # 1 - trainable / total params, mean over its runs; None: unrecorded
    schedule: bool  # its freezing changes in training: ``frozen`` is at the end of training
    metric: float  # its main metric, mean over the paired seeds
    quality: Estimate  # % of full fine-tuning's metric, same seed
    wall: Estimate  # its wall time / full fine-tuning's, same seed
    joint: Estimate  # ``quality`` with the side's Bonferroni-simultaneous interval


@dataclass(frozen=True)
class Side:
    """One study at one training-set size, and what it says about freezing."""

    study: str  # the study folder's name
    label: str  # e.g. "fashion-mnist / effnet-lite0"
    modality: str  # "image", "text" or "unknown"
    train_size: int | None  # data.max_train_samples; None: the whole training split
    metric: str
    signal: Signal | None  # the trivial-baseline rule on full fine-tuning; None: no full
    points: tuple[Point, ...]  # full fine-tuning first, then by fraction frozen
    best: Point | None  # the frozen strategy the verdict names
    verdict: str  # one of VERDICTS, or "no reference", "no signal", "nothing frozen", "one seed"
    sentence: str


@dataclass(frozen=True)
class Contrast:
    """The contrast report: its sides, tables (one per study), verdict and files."""

    sides: tuple[Side, ...]
    tables: tuple[tuple[str, list[str], list[list[str]]], ...]  # (title, headers, cells)
    claim: str  # "holds", "does not hold" or "cannot tell"
    closing: str  # the closing line on the claim
    sentence: str  # every side's sentence, then the closing line
    files: tuple[Path, ...]  # FILES, in ``out``


def _ci(e: Estimate, fmt: str) -> str:
    return "—" if math.isnan(e.low) else f"[{format(e.low, fmt)}, {format(e.high, fmt)}]"


def table(sides: list[Side]) -> tuple[str, list[str], list[list[str]]]:
    """One study's table: a row per training-set size and strategy."""
    first = sides[0]
    kind = NAMES.get(first.modality, "unknown modality").capitalize()
    title = f"{kind}: {first.label} (study {first.study})"
    cells = []
    for side in sides:
        for i, p in enumerate(side.points):
            frozen = "—" if p.frozen is None else f"{p.frozen:.1%}" + (" (end)" * p.schedule)
            ref = i == 0
            cells.append([
                f"{side.train_size:,}" if side.train_size else "all", p.strategy, frozen,
                str(p.quality.n), "—" if math.isnan(p.metric) else f"{100 * p.metric:.1f}",
                "—" if math.isnan(p.quality.mean) else f"{p.quality.mean:.1f}%",
                "ref" if ref else _ci(p.quality, ".1f"),
                "ref" if ref else _ci(p.joint, ".1f"),
                "—" if math.isnan(p.wall.mean) else f"{p.wall.mean:.2f}x",
                "ref" if ref else _ci(p.wall, ".2f"),
            ])  # fmt: skip
    return title, [h.format(metric=first.metric) for h in HEADERS], cells


def plot(sides: Sequence[Side]) -> bytes:
    """Two panels over the fraction frozen: % of full quality, and wall time / full's (what
    freezes nothing but full fine-tuning, e.g. a cut student, is in the tables only)."""
    fig = Figure(figsize=(12, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    quality, wall = fig.subplots(1, 2)
    for side in sides:
        shown = sorted((p for p in side.points if p.quality.n and (p is side.points[0] or
                        (p.frozen or 0.0) > 0)), key=lambda p: p.frozen or 0.0)  # fmt: skip
        xs = [100 * (p.frozen or 0.0) for p in shown]
        name = f"{side.label}, n_train={side.train_size or 'all'}"
        for ax, ests in ((quality, [p.quality for p in shown]), (wall, [p.wall for p in shown])):
            low = [0.0 if math.isnan(e.low) else e.mean - e.low for e in ests]
            high = [0.0 if math.isnan(e.high) else e.high - e.mean for e in ests]
            ax.errorbar(xs, [e.mean for e in ests], yerr=[low, high], marker="o", capsize=3,
                        label=name)  # fmt: skip
    for ax, level, what in ((quality, 100.0, "% of full fine-tuning's metric"),
                            (wall, 1.0, "wall time / full fine-tuning's")):  # fmt: skip
        ax.axhline(level, color="grey", linestyle="--", linewidth=1)
        ax.set(xlabel="parameters frozen (%)", ylabel=what)
        ax.grid(True, alpha=0.3)
    quality.legend(fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _markdown(result: Contrast, png: str) -> str:
    out = [f"# Contrast: {CLAIM}?", "", "## Answer", ""]
    out += [f"- {s.sentence}" for s in result.sides] + ["", f"**{result.closing}**", ""]
    for title, headers, cells in result.tables:
        out += [f"## {title}", "", _md_table(headers, cells), ""]
    return "\n".join(
        [*out, f"![% of full quality and wall-time ratio vs fraction frozen]({png})", "", NOTE, ""]
    )


def _html(result: Contrast, png: bytes) -> str:
    sides = "".join(f"<p>{escape(s.sentence)}</p>" for s in result.sides)
    tables = "".join(f"<h2>{escape(t)}</h2>{_table_html(h, c)}" for t, h, c in result.tables)
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>freezetune contrast</title>
<style>{CSS}</style></head><body><h1>Contrast: {escape(CLAIM)}?</h1><h2>Answer</h2>
<div class="answer">{sides}<p class="headline">{escape(result.closing)}</p></div>
{tables}<figure><img src="data:image/png;base64,{image}" alt="{escape(CLAIM)}"><figcaption>
% of full fine-tuning's quality and wall-time ratio vs fraction frozen, 95% CIs as error bars
</figcaption></figure>
<p class="note">{escape(NOTE)}</p></body></html>
"""


def _plain(value: Any) -> Any:
    """``value`` with NaN and infinities as None, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, list | tuple) else value


def write(result: Contrast, out: Path, png: bytes) -> None:
    """The four files (readable by all, like the study report's)."""
    out.mkdir(parents=True, exist_ok=True)
    numbers = {"claim": CLAIM, "verdict": result.claim, "sentence": result.sentence,
               "sides": [asdict(s) for s in result.sides], "note": NOTE}  # fmt: skip
    atomic_write_text(result.files[0], _markdown(result, FILES[2]))
    atomic_write_text(result.files[1], _html(result, png))
    result.files[2].write_bytes(png)
    atomic_write_text(result.files[3], json.dumps(_plain(numbers), indent=1) + "\n")
    for path in result.files:
        path.chmod(0o644)
