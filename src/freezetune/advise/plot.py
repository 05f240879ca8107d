"""``plots/curves.png``: every arm's learning curve up to where successive halving stopped it.

x is the fraction of the arm's own full run (its step over its budget, so arms of different
budgets line up at their rungs), y its dev score in points (x100). Finalists are bold, arms
stopped at a rung thin and faded, failed arms dotted; each curve ends in a marker where the arm
stopped (a star for the pick). At x = 1 (nudged apart) each stopped arm's *predicted* final
score with its 80% interval (a faint dashed link from where it stopped), and each finalist's observed mean over its seeds with its interval.
One colour per strategy (its learning rates share it); dotted verticals mark the rungs, the
dashed line the trivial baseline. Built like the study's figures (:mod:`freezetune.report.plots`:
a ``Figure`` on an Agg canvas, never pyplot).

>>> from freezetune.advise.advice import Advice
>>> plot_curves(Advice(name="empty"))[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

from typing import Any

from matplotlib.lines import Line2D

from freezetune.advise.advice import Advice, ArmResult
from freezetune.report.plots import SIZE, _colors, _figure, _png

__all__ = ["CAPTION", "plot_curves"]

CAPTION = (
    "Each arm's dev score vs the fraction of its full run, up to where it stopped (bold: "
    "finalists; thin: stopped at a rung; dotted: failed; star: the pick). At the right, hollow: "
    "a stopped arm's predicted final score with its 80% interval; filled: a finalist's mean over "
    "its seeds with its interval; a faint dashed link joins a stopped arm to its prediction. "
    "Dotted verticals: the rungs; dashed: the trivial baseline."
)

BOLD, THIN, FADED = 2.4, 1.0, 0.45  # finalists: bold, opaque; stopped arms: thin, faded
NUDGE = 0.05  # how far right of x = 1 the final-score bars spread


def _points(arm: ArmResult) -> tuple[list[float], list[float]]:
    budget = max(arm.budget, 1)
    return [s / budget for s, _ in arm.curve], [100 * v for _, v in arm.curve]


def _draw_arm(ax: Any, arm: ArmResult, color: Any, pick: bool) -> None:
    """One arm's curve and the marker where it stopped."""
    xs, ys = _points(arm)
    if not xs:
        return
    final = arm.status in ("finalist", "trained")
    ls = ":" if arm.status == "failed" else "-"
    ax.plot(xs, ys, ls, color=color, lw=BOLD if final else THIN, alpha=1.0 if final else FADED,
            zorder=3 if pick else 2)  # fmt: skip
    if pick:
        ax.plot(xs[-1], ys[-1], "*", color=color, ms=16, mec="black", zorder=5)
    elif arm.status == "failed":
        ax.plot(xs[-1], ys[-1], "X", color=color, ms=8, mec="black", alpha=0.8, zorder=4)
    else:
        ax.plot(xs[-1], ys[-1], "o", color=color, ms=6 if final else 4,
                alpha=1.0 if final else 0.75, zorder=4)  # fmt: skip


def _finals(ax: Any, arms: list[ArmResult], colors: dict[str, Any]) -> None:
    """Final scores at x = 1, nudged apart: predicted (hollow) or observed over seeds (filled)."""
    scored = [a for a in arms if a.score is not None and a.status != "failed"]
    for i, arm in enumerate(scored):
        score = arm.score
        assert score is not None
        x = 1 + NUDGE * (i + 1) / (len(scored) + 1)
        mean, low, high = 100 * score.mean, 100 * score.low, 100 * score.high
        yerr = [[max(mean - low, 0.0)], [max(high - mean, 0.0)]]
        observed = score.source == "observed"
        if not observed and arm.curve:  # a faint link from where it stopped to its prediction
            xs, ys = _points(arm)
            ax.plot([xs[-1], x], [ys[-1], mean], "--", color=colors[arm.strategy], lw=0.8,
                    alpha=0.3)  # fmt: skip
        ax.errorbar(x, mean, yerr=yerr, fmt="o", ms=4, capsize=2, color=colors[arm.strategy],
                    mfc=colors[arm.strategy] if observed else "white",
                    alpha=1.0 if observed else 0.7, zorder=3)  # fmt: skip


def _guides(ax: Any, advice: Advice) -> list[Line2D]:
    """Rung verticals and the trivial baseline; their legend entries."""
    handles = []
    fractions = [float(f) for f in advice.plan.get("fractions", ()) if 0 < float(f) < 1]
    for fraction in fractions:
        ax.axvline(fraction, color="grey", linestyle=":", linewidth=1)
    if fractions:
        handles.append(Line2D([], [], color="grey", ls=":", lw=1, label="rungs"))
    if advice.baseline is not None:
        ax.axhline(100 * advice.baseline, color="grey", linestyle="--", linewidth=1.2)
        handles.append(Line2D([], [], color="grey", ls="--", lw=1.2, label="trivial baseline"))
    return handles


def _legend(colors: dict[str, Any], guides: list[Line2D]) -> list[Line2D]:
    """One entry per strategy (colour), then what the line styles and markers mean."""
    grey = "dimgrey"
    return [
        *(Line2D([], [], color=c, lw=2.4, label=name) for name, c in colors.items()),
        Line2D([], [], color=grey, lw=BOLD, label="finalist (ran to the end)"),
        Line2D([], [], color=grey, lw=THIN, alpha=FADED, label="stopped at a rung"),
        Line2D([], [], color=grey, ls=":", lw=1, marker="X", label="failed"),
        Line2D([], [], color=grey, ls="none", marker="*", ms=12, label="the pick"),
        Line2D(
            [], [], color=grey, ls="none", marker="o", mfc="white", label="predicted final (80%)"
        ),
        Line2D([], [], color=grey, ls="none", marker="o", label="observed final (80%)"),
        *guides,
    ]


def plot_curves(advice: Advice) -> bytes:
    """The figure as PNG bytes (an empty frame with a note when no arm was evaluated yet)."""
    colors = _colors([arm.strategy for arm in advice.arms])
    handles = 7 + len(colors)
    fig, ax = _figure((SIZE[0], SIZE[1] + 0.22 * (-(-handles // 3))))  # legend below
    for arm in sorted(
        advice.arms, key=lambda a: (a.id == advice.pick, a.status in ("finalist", "trained"))
    ):
        _draw_arm(ax, arm, colors[arm.strategy], arm.id == advice.pick)
    _finals(ax, list(advice.arms), colors)
    guides = _guides(ax, advice)
    if not any(arm.curve for arm in advice.arms):
        ax.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1 + 1.4 * NUDGE)
    ax.set_xlabel("fraction of the arm's full run (optimizer steps / its budget)")
    ax.set_ylabel(f"dev {advice.metric} (x100)")
    ax.set_title(f"advise: {len(advice.arms)} arms, each up to where it was stopped")
    fig.legend(handles=_legend(colors, guides), fontsize=8, loc="outside lower center", ncols=3)
    return _png(fig)
