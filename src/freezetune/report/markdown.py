"""``report.md``: the same answer (headline and bullets), tables, method note and the answer's
details as the HTML page, plots linked as files.

>>> print(_md_table(["a", "b"], [["1", "2"]]))
| a | b |
|---|---|
| 1 | 2 |
"""

from __future__ import annotations

from freezetune.report.answer import Answer
from freezetune.report.cells import cost_cells, table_cells
from freezetune.report.html import DETAILS_TITLE, SPEED_TITLE, details, method_note
from freezetune.report.plots import PLOTS
from freezetune.report.tables import Summary

__all__ = ["render_markdown"]


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([row(headers), "|" + "---|" * len(headers), *(row(r) for r in rows)])


def _details(answers: list[Answer]) -> list[str]:
    out = [f"### {DETAILS_TITLE}", ""]
    for answer in answers:
        own, speed = details(answer)
        if answer.context and len(answers) > 1:
            out += [f"#### {answer.context}", ""]
        out += [*(f"- {s}" for s in own), ""] if own else []
        out += [f"*{SPEED_TITLE}*", "", *(f"- {s}" for s in speed), ""] if speed else []
    return out


def render_markdown(
    name: str, summary: Summary, answers: list[Answer], plots: dict[str, str]
) -> str:
    """The report as Markdown; ``plots`` maps plot names to relative PNG paths."""
    out = [f"# Study `{name}`: does freezing hurt, and what does it save?", ""]
    out += [f"- **{key}**: {value}" for key, value in summary.facts]
    out += ["", "## Answer", ""]
    for answer in answers:
        if answer.context:
            out += [f"### {answer.context}", ""]
        out += [f"**{answer.headline}**", "", *(f"- {s}" for s in answer.bullets), ""]
    headers, cells, _ = table_cells(summary)
    out += ["## Strategies", "", _md_table(headers, cells), ""]
    headers, cells, _ = cost_cells(summary)
    out += ["## Costs", "", _md_table(headers, cells), ""]
    out += ["## Method", "", method_note(summary), "", *_details(answers)]
    if plots:
        out += ["## Plots", ""]
        out += [f"![{PLOTS[n][1] if n in PLOTS else n}]({path})" for n, path in plots.items()]
        out.append("")
    failed = [r for r in summary.rows if r.status == "failed"]
    if failed:
        rows = [[r.strategy, str(r.seed), r.run_id, r.error or "unknown error"] for r in failed]
        out += ["## Failed runs", "", _md_table(["strategy", "seed", "run", "error"], rows), ""]
    return "\n".join(out)
