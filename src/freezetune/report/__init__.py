"""Reports of a study: tables, plots, HTML and the plain-language answer, all computed from the
rows in ``results.sqlite`` (pure functions; :func:`write_report` is the only one that writes).

>>> written = write_report("runs/default")  # doctest: +SKIP
>>> written.headline  # doctest: +SKIP
'3 of 4 strategies are indistinguishable from full fine-tuning (Welch p >= 0.05); ...'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from freezetune.errors import UserError
from freezetune.records import atomic_write_text
from freezetune.report.answer import Answer, answer_study
from freezetune.report.html import render_html
from freezetune.report.markdown import render_markdown
from freezetune.report.plots import PLOTS, render_plots
from freezetune.report.tables import Line, Summary, results_csv, summarize
from freezetune.study.store import RunRow, open_store, read_rows

__all__ = [
    "Answer",
    "Line",
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
    csv: Path
    plots: tuple[Path, ...]
    headline: str


def build_report(rows: list[RunRow]) -> tuple[Summary, list[Answer], dict[str, bytes]]:
    """Everything a report shows, from the stored rows: table, answers and PNG plots."""
    summary = summarize(rows)
    return summary, answer_study(summary), render_plots(summary)


def write_report(folder: str | Path) -> WrittenReport:
    """Read ``folder/results.sqlite`` and write results.csv, report.md, plots/*.png and
    report.html into ``folder``."""
    folder = Path(folder)
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
    summary, answers, images = build_report(rows)
    (folder / "plots").mkdir(exist_ok=True)
    plots = []
    for name in PLOTS:  # a plot with nothing to show now must not linger from an earlier report
        path = folder / "plots" / f"{name}.png"
        path.unlink(missing_ok=True)
        if name in images:
            path.write_bytes(images[name])
            plots.append(path)
    paths = WrittenReport(
        html=folder / "report.html",
        markdown=folder / "report.md",
        csv=folder / "results.csv",
        plots=tuple(plots),
        headline=" ".join(a.headline if not a.context else f"[{a.context}] {a.headline}"
                          for a in answers),
    )  # fmt: skip
    atomic_write_text(paths.csv, results_csv(rows))
    relative = {name: f"plots/{name}.png" for name in images}
    atomic_write_text(paths.markdown, render_markdown(folder.name, summary, answers, relative))
    atomic_write_text(paths.html, render_html(folder.name, summary, answers, images))
    for path in (paths.csv, paths.markdown, paths.html):
        path.chmod(0o644)  # readable like the plots, e.g. by a web server (temp files are 0600)
    return paths
