"""What ``freezetune advise`` writes: ``advice.json``, ``advice.md``, ``advice.html`` and
``plots/curves.png``, all from one :class:`~freezetune.advise.advice.Advice` (pure functions
but :func:`write_advice`). The answer comes first (:func:`headline`): the pick with its score,
interval and training time against the best-scoring arm's, or "no signal"; then one row per
arm, best first, the chosen learning rate per strategy, how the pick's trained model loads, and
the curves. The page is self-contained and escapes every string, like the study's report
(:mod:`freezetune.report.html`, whose CSS and table helpers it reuses). No torch here.

>>> written = write_advice("runs/advise-sst2", advice)  # doctest: +SKIP
>>> written.headline  # doctest: +SKIP
'Train bottom:3 (lr=0.0003): accuracy 85.2 (80% interval 84.6 to 85.8, observed over 3 seeds), ...'
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from html import escape
from pathlib import Path

from freezetune.advise.advice import Advice, ArmResult
from freezetune.advise.cells import (
    NOTE,
    OPTIMIZE,
    arm_rows,
    best_arm,
    duration,
    facts,
    inference_by_architecture,
    inference_note,
    lr_rows,
    points,
    source,
    tolerance,
)
from freezetune.advise.plot import CAPTION, plot_curves
from freezetune.records import atomic_write_bytes, atomic_write_text
from freezetune.report.html import CSS
from freezetune.report.html import _table as _html_table
from freezetune.report.markdown import _md_table

__all__ = [
    "FILES",
    "Written",
    "headline",
    "load_code",
    "render_html",
    "render_markdown",
    "write_advice",
]

#: what :func:`write_advice` writes into the advise folder
FILES = ("advice.json", "advice.md", "advice.html", "plots/curves.png")
#: how a run folder of each modality loads: the module that registers freezetune's classes
#: with transformers' Auto classes, and the pipeline's task (README, "train")
LOADERS = {
    "text": ("freezetune.classifier", "text-classification"),
    "image": ("freezetune.vision.models", "image-classification"),
}
NO_SIGNAL = "no arm's score clears the trivial baseline clearly enough to rank the arms"
EXTRA_CSS = """
tr.pick td { background: #eaf6ea; font-weight: 600; }
tr.stopped td { color: #555; }
pre { background: #f6f6f6; padding: 0.6em 0.9em; overflow-x: auto; }
"""


@dataclass(frozen=True)
class Written:
    """The files :func:`write_advice` wrote, and the answer in one paragraph."""

    json: Path
    markdown: Path
    html: Path
    plot: Path
    headline: str


def _sentence(text: str, capital: bool = True) -> str:
    text = text.strip()
    if not text:
        return ""
    first = text[0].upper() if capital else text[0]
    return first + text[1:] + ("" if text[-1] in ".!?" else ".")


def _time(arm: ArmResult) -> str:
    time = arm.train_time
    if time is None:
        return "training time unknown"
    if time.source == "measured":
        return f"{duration(time.predicted)} of training (measured)"
    return f"{duration(time.predicted)} of training (predicted: {time.source})"


def _versus(advice: Advice, pick: ArmResult) -> str:
    """How the pick compares with the best-scoring arm: training time, and inference when
    that is what advise optimizes."""
    best = best_arm(advice)
    if best is None or best.id == pick.id:
        return "; it is also the best-scoring arm"
    score = best.score
    assert score is not None  # best_arm only answers arms with a score
    text = f"; the best-scoring arm, {best.label}, scores {points(score.mean)} ({source(score)})"
    ours, theirs = pick.train_time, best.train_time
    if ours and theirs and ours.predicted > 0 and theirs.predicted > 0:
        ratio = theirs.predicted / ours.predicted
        how = f"{ratio:.2g}x faster" if ratio >= 1 else f"{1 / ratio:.2g}x slower"
        text += f" with {duration(theirs.predicted)} of training: the pick trains {how}"
    figures = inference_by_architecture(advice)
    mine, other = (figures.get(a.architecture or f"arm {a.id}") for a in (pick, best))
    if advice.optimize == "inference" and mine and other:
        text += f", and infers in {1000 * mine:.3g} ms per example against {1000 * other:.3g}"
    return text


def headline(advice: Advice) -> str:
    """The answer in one paragraph: the pick (its score with interval and seeds, its training
    time against the best-scoring arm's, why it is the pick) or the abstention, then what
    inference cost can and cannot tell apart."""
    note = _sentence(inference_note(advice))
    if advice.pick is None or advice.verdict != "pick":
        why = _sentence(advice.why or NO_SIGNAL, capital=False)
        return " ".join(filter(None, [f"No signal: {why}", "No arm is recommended.", note]))
    pick = advice.arm(advice.pick)
    score = pick.score
    said = "score unknown" if score is None else (
        f"{advice.metric} {points(score.mean)} (80% interval {points(score.low)} to "
        f"{points(score.high)}, {source(score)})"
    )  # fmt: skip
    if score is not None and score.high == score.low:  # one seed and no other measured noise
        said = f"{advice.metric} {points(score.mean)} ({source(score)}; its noise not measured)"
    first = f"Train {pick.label}: {said}, {_time(pick)}{_versus(advice, pick)}."
    rule = "" if advice.optimize == "accuracy" else (
        f"It is the arm with the least {OPTIMIZE.get(advice.optimize, advice.optimize)} whose "
        f"score is within {tolerance(advice)} of the best observed score (costs within 10% are "
        "ties, won by the higher score)."
    )  # fmt: skip
    return " ".join(filter(None, [first, _sentence(advice.why) or rule, note]))


def load_code(advice: Advice) -> str:
    """The Python lines that load the pick's trained run ("" when none was trained).

    >>> print(load_code(Advice(name="x", run="runs/a/pick")))
    import freezetune.classifier  # registers freezetune's classes with transformers' Auto classes
    from transformers import pipeline
    pipeline("text-classification", model="runs/a/pick")
    """
    if not advice.run:
        return ""
    module, task = LOADERS.get(advice.modality, LOADERS["text"])
    return (
        f"import {module}  # registers freezetune's classes with transformers' Auto classes\n"
        f"from transformers import pipeline\n"
        f"pipeline({json.dumps(task)}, model={json.dumps(str(advice.run))})"
    )


def _using(advice: Advice, quote: str = "") -> str:
    if not advice.run:
        return "No model was trained: advise recommends no arm."
    return (
        f"The pick's run folder {quote}{advice.run}{quote} is a normal freezetune run (result.json, "
        "metrics.jsonl and the model in Hugging Face format); load it with:"
    )


def render_markdown(advice: Advice, plot: str = "plots/curves.png") -> str:
    """``advice.md``; ``plot`` is the curves' PNG relative to it."""
    out = [f"# freezetune advise `{advice.name}`: what to train, at what cost", ""]
    out += [f"- **{key}**: {value}" for key, value in facts(advice)]
    out += ["", "## Answer", "", f"**{headline(advice)}**", ""]
    headers, rows, _ = arm_rows(advice)
    out += ["## Arms (best first)", "", _md_table(headers, rows), ""]
    headers, rows = lr_rows(advice)
    out += ["## Chosen learning rate per strategy", "", _md_table(headers, rows), ""]
    out += ["## The trained model", "", _using(advice, "`"), ""]
    code = load_code(advice)
    out += ["```python", code, "```", ""] if code else []
    out += ["## Curves", "", f"![{CAPTION}]({plot})", "", "## Method", "", NOTE, ""]
    return "\n".join(out)


def render_html(advice: Advice, png: bytes) -> str:
    """``advice.html``: one self-contained page (the curves inline as a data URI)."""
    headers, rows, classes = arm_rows(advice)
    lr_headers, lrs = lr_rows(advice)
    listed = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts(advice))
    code = load_code(advice)
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>freezetune advise {escape(advice.name)}</title><style>{CSS}{EXTRA_CSS}</style></head>
<body>
<h1>What to train, at what cost: advise <code>{escape(advice.name)}</code></h1>
<dl class="facts">{listed}</dl>
<h2>Answer</h2>
<div class="answer"><p class="headline">{escape(headline(advice))}</p></div>
<h2>Arms (best first)</h2>
{_html_table(headers, rows, classes)}
<h2>Chosen learning rate per strategy</h2>
{_html_table(lr_headers, lrs)}
<h2>The trained model</h2>
<p>{escape(_using(advice))}</p>
{f"<pre><code>{escape(code)}</code></pre>" if code else ""}
<h2>Curves</h2>
<figure><img src="data:image/png;base64,{image}" alt="{escape(CAPTION)}">
<figcaption>{escape(CAPTION)}</figcaption></figure>
<h2>Method</h2>
<p class="note">{escape(NOTE)}</p>
</body></html>
"""


def write_advice(folder: str | Path, advice: Advice) -> Written:
    """Write ``advice.json``, ``advice.md``, ``advice.html`` and ``plots/curves.png`` into
    ``folder`` (created if missing), each atomically: a reader sees the old file or the new
    one. ``Advice.from_dict(json.loads(advice.json))`` gives ``advice`` back."""
    folder = Path(folder)
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    written = Written(
        json=folder / FILES[0],
        markdown=folder / FILES[1],
        html=folder / FILES[2],
        plot=folder / FILES[3],
        headline=headline(advice),
    )
    png = plot_curves(advice)
    atomic_write_bytes(written.plot, png)
    atomic_write_text(written.json, advice.to_json() + "\n")
    atomic_write_text(written.markdown, render_markdown(advice, FILES[3]))
    atomic_write_text(written.html, render_html(advice, png))
    for path in (written.json, written.markdown, written.html, written.plot):
        path.chmod(0o644)  # readable like the study's report (temp files are 0600)
    return written
