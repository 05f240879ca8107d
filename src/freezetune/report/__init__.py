"""Reports of a study: tables, plots, HTML and the plain-language answer, all computed from the
rows in ``results.sqlite`` (pure functions; :func:`write_report` is the only one that writes).
Where the runs measured their saved model's inference, or distilled a student, the report adds
those costs and what they answer (:mod:`freezetune.report.speed`).

>>> written = write_report("runs/default")  # doctest: +SKIP
>>> written.headline  # doctest: +SKIP
'3 of 4 strategies are indistinguishable from full fine-tuning (Welch p >= 0.05, Holm-adjusted); ...'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from freezetune.errors import UserError
from freezetune.records import atomic_write_text
from freezetune.report.answer import Answer, answer_study
from freezetune.report.cells import results_csv, strategies_csv
from freezetune.report.html import render_html
from freezetune.report.markdown import render_markdown
from freezetune.report.plots import PLOTS, render_plots
from freezetune.report.speed import SpeedAnswer
from freezetune.report.tables import BaselineLine, Line, Summary, summarize
from freezetune.study.baseline import Baseline, ensure_baselines
from freezetune.study.store import RunRow, open_store, read_rows

__all__ = [
    "Answer",
    "BaselineLine",
    "Line",
    "SpeedAnswer",
    "Summary",
    "WrittenReport",
    "answer_study",
    "build_report",
    "render_html",
    "render_markdown",
    "summarize",
    "write_report",
]


@dataclass(frozen=True)
class WrittenReport:
    html: Path
    markdown: Path
    csv: Path  # results.csv: one line per run
    plots: tuple[Path, ...]
    headline: str
    strategies: Path  # strategies.csv: the table, one line per strategy and baseline


def build_report(
    rows: list[RunRow], baselines: Mapping[str, Baseline] | None = None
) -> tuple[Summary, list[Answer], dict[str, bytes]]:
    """Everything a report shows, from the stored rows and the trivial baselines of their dev
    examples (by context key; none known: the report says so): table, answers and PNG plots."""
    summary = summarize(rows, baselines)
    return summary, answer_study(summary), render_plots(summary)


def _read(folder: Path) -> list[RunRow]:
    db = folder / "results.sqlite"
    if not db.is_file():
        raise UserError(f"{folder} holds no results.sqlite; run `freezetune study` there first")
    conn = open_store(db)
    try:
        rows = read_rows(conn)
    finally:
        conn.close()
    if not rows:
        raise UserError(f"study {folder} has no runs yet; run `freezetune study` first")
    return rows


def _write_plots(folder: Path, images: dict[str, bytes]) -> tuple[Path, ...]:
    (folder / "plots").mkdir(exist_ok=True)
    plots = []
    for name in PLOTS:  # a plot with nothing to show now must not linger from an earlier report
        path = folder / "plots" / f"{name}.png"
        path.unlink(missing_ok=True)
        if name in images:
            path.write_bytes(images[name])
            plots.append(path)
    return tuple(plots)


def write_report(folder: str | Path) -> WrittenReport:
    """Read ``folder/results.sqlite`` (and the trivial baselines in ``folder/baseline.json``,
    computed from the runs' configs and saved there if missing and the data is at hand), and
    write results.csv, strategies.csv, report.md, plots/*.png and report.html into ``folder``.
    Run it again at any time (``freezetune report DIR``) to re-render an existing study."""
    folder = Path(folder)
    rows = _read(folder)
    baselines = ensure_baselines(folder, [row.config for row in rows])
    summary, answers, images = build_report(rows, baselines)
    paths = WrittenReport(
        html=folder / "report.html",
        markdown=folder / "report.md",
        csv=folder / "results.csv",
        plots=_write_plots(folder, images),
        headline=" ".join(a.headline if not a.context else f"[{a.context}] {a.headline}"
                          for a in answers),
        strategies=folder / "strategies.csv",
    )  # fmt: skip
    atomic_write_text(paths.csv, results_csv(rows, baselines))
    atomic_write_text(paths.strategies, strategies_csv(summary))
    relative = {name: f"plots/{name}.png" for name in images}
    atomic_write_text(paths.markdown, render_markdown(folder.name, summary, answers, relative))
    atomic_write_text(paths.html, render_html(folder.name, summary, answers, images))
    for path in (paths.csv, paths.strategies, paths.markdown, paths.html):
        path.chmod(0o644)  # readable like the plots, e.g. by a web server (temp files are 0600)
    return paths
