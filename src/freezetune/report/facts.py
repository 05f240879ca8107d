"""The study's size and setting for the top of its report, from the stored rows: each value
listed once (several when they vary). Pure functions of the rows.

>>> flat({"a": {"b": 1, "c": [2, 3]}})
{'a.b': 1, 'a.c': (2, 3)}
"""

from __future__ import annotations

from typing import Any

from freezetune.study.store import STATUSES, RunRow

__all__ = ["flat", "study_facts"]


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = tuple(value) if isinstance(value, list) else value
    return out


def _fact(values: list[Any], none: str | None = None) -> str:
    """Each distinct value once; ``None`` shows as ``none`` (e.g. "all") or is left out."""
    shown = ["" if v is None and none is None else none if v is None else str(v) for v in values]
    unique = [v for v in dict.fromkeys(shown) if v]
    return ", ".join(unique) if unique else "?"


def study_facts(rows: list[RunRow]) -> tuple[tuple[str, str], ...]:
    """The study's size and setting, each value listed once (several when they vary)."""
    flats = [flat(r.config) for r in rows if r.config.get("model")]
    done = [r.result for r in rows if r.result]
    status = [r.status for r in rows]
    precision = ["bf16" if f.get("train.bf16") else "fp32" for f in flats]
    return (
        ("model", _fact([f.get("model.name") for f in flats])),
        ("task", _fact([f.get("data.task") for f in flats])),
        ("train examples", _fact([r.get("train_examples") for r in done])),
        ("eval examples", _fact([f.get("data.max_eval_samples") for f in flats], "all")),
        ("epochs", _fact([f.get("train.epochs") for f in flats])),
        ("seeds", _fact(sorted({r.seed for r in rows}))),
        ("precision", _fact(precision)),
        ("max length", _fact([f.get("data.max_length") for f in flats])),
        ("batch size", _fact([f.get("train.batch_size") for f in flats])),
        ("learning rate", _fact(sorted({r.lr for r in rows}))),
        ("runs", ", ".join(f"{status.count(s)} {s}" for s in STATUSES if s in status)),
        ("git", _fact([r.get("git") for r in done])),
        ("cpus", _fact([(r.get("machine") or {}).get("cpus") for r in done])),
        *_inference_fact([r.get("inference") for r in done]),
    )


def _inference_fact(found: list[Any]) -> tuple[tuple[str, str], ...]:
    """How the saved models' inference was measured, each setting once (none: no fact)."""
    shown = [f"{m.get('threads')} threads, batch {m.get('batch_size')}, "
             f"{'bf16' if m.get('bf16') else 'fp32'}, {m.get('device')}"
             for m in found if isinstance(m, dict)]  # fmt: skip
    return (("inference measured with", _fact(shown)),) if shown else ()
