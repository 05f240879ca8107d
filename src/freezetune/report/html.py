"""``report.html``: one self-contained page (inline CSS, PNGs as data URIs, no scripts, nothing
fetched). Every string from the data is escaped.

>>> page = render_html("demo", summary, answers, {"pareto": png})  # doctest: +SKIP
>>> "data:image/png;base64," in page  # doctest: +SKIP
True
"""

from __future__ import annotations

import base64
from html import escape

from freezetune.report.answer import KEEP, Answer
from freezetune.report.cells import INFERENCE, TEACHER, columns, table_cells
from freezetune.report.plots import PLOTS
from freezetune.report.rules import DISAGREE, SIGNAL_RULE
from freezetune.report.tables import Summary

__all__ = ["SPEED_TITLE", "method_note", "render_html"]

#: the heading of the answer's part about training and inference cost
SPEED_TITLE = "Training and inference cost"

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1.2em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.answer { background: #f4f8fb; border-left: 4px solid #3b7dd8; padding: 0.6em 1.1em; }
.answer p.headline { font-weight: 600; }
.answer h4 { margin: 0.9em 0 0.2em; font-size: 1em; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: right; }
td { white-space: nowrap; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
tr.ref td { background: #fffbe6; }
tr.baseline td { background: #f3f3f3; color: #555; font-style: italic; }
tr.below td { background: #fdeeee; }
table.failures td { text-align: left; white-space: normal; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.note { color: #555; font-size: 0.9em; }
"""


def _table(
    headers: list[str], rows: list[list[str]], classes: list[str] | None = None, kind: str = ""
) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{escape(classes[i])}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
    table = f'<table class="{escape(kind)}">' if kind else "<table>"
    return f"{table}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _answers(answers: list[Answer]) -> str:
    parts = []
    for answer in answers:
        title = f"<h3>{escape(answer.context)}</h3>" if answer.context else ""
        sentences = "".join(f"<p>{escape(s)}</p>" for s in answer.sentences)
        if answer.speed is not None:
            sentences += f"<h4>{escape(SPEED_TITLE)}</h4>"
            sentences += "".join(f"<p>{escape(s)}</p>" for s in answer.speed.sentences)
        parts.append(
            f'<div class="answer">{title}<p class="headline">{escape(answer.headline)}</p>'
            f"{sentences}</div>"
        )
    return "\n".join(parts)


def _figures(images: dict[str, bytes]) -> str:
    parts = []
    for name, png in images.items():
        caption = PLOTS[name][1] if name in PLOTS else name
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    return "\n".join(parts)


def _failures(summary: Summary) -> str:
    rows = [
        [row.strategy, str(row.seed), row.run_id, row.error or "unknown error"]
        for row in summary.rows
        if row.status == "failed"
    ]
    if not rows:
        return ""
    headers = ["strategy", "seed", "run", "error"]
    return "<h2>Failed runs</h2>" + _table(headers, rows, kind="failures")


def render_html(
    name: str, summary: Summary, answers: list[Answer], images: dict[str, bytes]
) -> str:
    """The whole report page as one string."""
    headers, cells, classes = table_cells(summary)
    facts = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in summary.facts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>freezetune study {escape(name)}</title><style>{CSS}</style></head>
<body>
<h1>Does freezing hurt, and what does it save? Study <code>{escape(name)}</code></h1>
<dl class="facts">{facts}</dl>
<h2>Answer</h2>
{_answers(answers)}
<h2>Strategies</h2>
{_table(headers, cells, classes)}
<p class="note">{escape(method_note(summary))}</p>
<h2>Plots</h2>
{_figures(images)}
{_failures(summary)}
</body></html>
"""


def method_note(summary: Summary) -> str:
    """How every number of the table is computed, and the rules the answer follows."""
    return (
        f"{summary.metric} is the best dev-set evaluation of each run (the saved model), x100. "
        "Mean ± sample std over seeds; 95% CI from Student's t. Δ and % compare with the full "
        "fine-tuning line in the same context (highlighted); p is Welch's two-sided t-test "
        "against it. The trivial baseline (grey row) is a constant prediction scored by the "
        "same metric code on the same dev examples: the majority class for classification "
        "(MCC 0), the labels' mean for regression (Pearson and Spearman 0). % of full's gain = "
        "(score - baseline) / (full - baseline): the share of what full fine-tuning learned "
        "beyond the baseline that a strategy keeps, with Fieller's 95% CI (seed noise on both "
        f"sides); rows below the baseline are marked. The answer's thresholds (keeps >= "
        f"{KEEP:.0%}) use the gain when the baseline is known, and say so where it and raw % "
        f"disagree by more than {100 * DISAGREE:.0f} points. {SIGNAL_RULE} "
        "Wall time = training + evaluation (model loading excluded); speedup = full "
        "wall time / this wall time. Frozen units count the embeddings as 1 (for schedules: "
        "at the end of training). Rows are ordered by frozen units." + _cost_note(summary)
    )


def _cost_note(summary: Summary) -> str:
    """How the inference and teacher columns are computed, when the table shows them."""
    shown, note = columns(summary), ""
    if TEACHER in shown:
        note += (
            " Wall time incl. teacher = a distilled student's wall time + its teacher's "
            "(teacher_wall_time_s), mean over seeds."
        )
    if INFERENCE[0] in shown:
        note += (
            " Inference is measured on each run's saved model in the run's process right after "
            "training, warmed up, under torch.inference_mode() with the thread count recorded: "
            "examples/s is one pass over the dev set at the eval batch size (padding excluded "
            "from the clock), latency p50 the median over single dev examples (batch 1), params "
            "the saved model's; inference speedup = this examples/s / full's. Means over seeds; "
            "the speeds compare rows of this study, not machines."
        )
    return note
