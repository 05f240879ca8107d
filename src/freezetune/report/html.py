"""``report.html``: one self-contained page (inline CSS, PNGs as data URIs, no scripts, nothing
fetched). Every string from the data is escaped. The answer comes first, at a glance (a headline
and at most five bullets per context); then the strategies table and the costs table, each in a
container that scrolls sideways rather than running off a narrow window; then the method note
and the answer's details; then the plots.

>>> page = render_html("demo", summary, answers, {"pareto": png})  # doctest: +SKIP
>>> "data:image/png;base64," in page  # doctest: +SKIP
True
"""

from __future__ import annotations

import base64
from html import escape

from freezetune.report.answer import KEEP, Answer
from freezetune.report.cells import INFERENCE, TEACHER, cost_cells, cost_columns, table_cells
from freezetune.report.plots import PLOTS
from freezetune.report.rules import DISAGREE, MULTIPLE, SIGNAL_RULE
from freezetune.report.tables import Summary
from freezetune.report.verdicts import CHEAPEST_RULE

__all__ = ["DETAILS_TITLE", "SPEED_TITLE", "details", "method_note", "render_html"]

#: the heading of the answer's part about training and inference cost (in its details)
SPEED_TITLE = "Training and inference cost"
#: the heading of the answer's sentences that are not among its bullets
DETAILS_TITLE = "The answer in detail"

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1.2em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.answer { background: #f4f8fb; border-left: 4px solid #3b7dd8; padding: 0.6em 1.1em; }
.answer p.headline { font-weight: 600; }
.answer ul { margin: 0.3em 0 0.6em; padding-left: 1.3em; }
.details h4 { margin: 0.9em 0 0.2em; font-size: 1em; }
.details { color: #333; font-size: 0.92em; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: right; }
td { white-space: nowrap; }
td:first-child { white-space: normal; min-width: 9em; }
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
    """A table in a container that scrolls sideways when the table is wider than the page."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{escape(classes[i])}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
    table = f'<table class="{escape(kind)}">' if kind else "<table>"
    return (
        f'<div class="scroll">{table}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _items(sentences: tuple[str, ...] | list[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(s)}</li>" for s in sentences) + "</ul>"


def _answers(answers: list[Answer]) -> str:
    """Each answer at a glance: its headline and bullets."""
    parts = []
    for answer in answers:
        title = f"<h3>{escape(answer.context)}</h3>" if answer.context else ""
        bullets = _items(answer.bullets) if answer.bullets else ""
        parts.append(
            f'<div class="answer">{title}<p class="headline">{escape(answer.headline)}</p>'
            f"{bullets}</div>"
        )
    return "\n".join(parts)


def details(answer: Answer) -> tuple[list[str], list[str]]:
    """The answer's sentences that are not bullets: its own, and those of its speed part."""
    speed = answer.speed.sentences if answer.speed else ()
    own = [s for s in answer.details if s not in speed]
    return own, [s for s in answer.details if s in speed]


def _details(answers: list[Answer]) -> str:
    parts = []
    for answer in answers:
        own, speed = details(answer)
        title = f"<h4>{escape(answer.context)}</h4>" if answer.context and len(answers) > 1 else ""
        more = f"<h4>{escape(SPEED_TITLE)}</h4>{_items(speed)}" if speed else ""
        parts.append(f"{title}{_items(own) if own else ''}{more}")
    return f'<h3>{escape(DETAILS_TITLE)}</h3><div class="details">{"".join(parts)}</div>'


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
    cost_headers, costs, cost_classes = cost_cells(summary)
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
<h2>Costs</h2>
{_table(cost_headers, costs, cost_classes)}
<h2>Method</h2>
<p class="note">{escape(method_note(summary))}</p>
{_details(answers)}
<h2>Plots</h2>
{_figures(images)}
{_failures(summary)}
</body></html>
"""


def method_note(summary: Summary) -> str:
    """How every number of the tables is computed, and the rules the answer follows."""
    return (
        f"{summary.metric} is the best dev-set evaluation of each run (the saved model), x100. "
        "Mean ± sample std over seeds; 95% CI from Student's t. Δ and % compare with the full "
        "fine-tuning line in the same context (highlighted); p (Welch) is Welch's two-sided "
        "t-test (unequal variances) against it, p (Holm) the same p Holm-adjusted (step-down) "
        "over the strategies compared with that full line. The trivial baseline (grey row) is a "
        "constant prediction scored by the same metric code on the same dev examples: the "
        "majority class for classification (MCC 0), the labels' mean for regression (Pearson "
        "and Spearman 0). "
        "% of full's gain = (score - baseline) / (full - baseline): the share of what full "
        "fine-tuning learned beyond the baseline that a strategy keeps, with Fieller's 95% CI "
        "(seed noise on both sides); rows below the baseline are marked. The answer's "
        f"thresholds (keeps >= {KEEP:.0%}) use the gain when the baseline is known (else the "
        f"raw %, with its own Fieller CI), and say so where the gain and raw % disagree by more "
        f"than {100 * DISAGREE:.0f} points. {MULTIPLE} {SIGNAL_RULE} {CHEAPEST_RULE} "
        "Wall time = training + evaluation (model loading excluded); speedup = full "
        "wall time / this wall time. Frozen units count the embeddings as 1 (for schedules: "
        "at the end of training). Rows are ordered by frozen units." + _cost_note(summary)
    )


def _cost_note(summary: Summary) -> str:
    """How the inference and teacher columns are computed, when the costs table shows them."""
    shown, note = cost_columns(summary), ""
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
            "the saved model's; inference speedup = this examples/s / full's. Strategies that "
            "are the same model at inference (frozen variants of one architecture, LoRA merged, "
            "a student with or without its teacher) show one figure, pooled over all their "
            "runs; the model-at-inference column names the model and how many rows share it. "
            "The speeds compare rows of this study, not machines."
        )
    return note
