"""The contrast report: "freezing helps in computer vision but hurts transformers", answered
from two or more studies' measurements (e.g. fashion-mnist on EfficientNet-Lite0, sst2 on MiniLM).

Each study, at each training-set size, is a *side*. Per strategy it shows the fraction of
parameters frozen (``1 - trainable_params / total_params`` as the run's result records it: for
a schedule, at the end of training), its main metric as % of the same study's full fine-tuning
at the same size and seed, and its wall time over full's (paired by seed: mean and 95%
Student-t CI over seeds). A side's verdict picks from its m frozen strategies (with >= 2
seeds), so it reads Bonferroni-simultaneous intervals (each at level 1 - 0.05/m: all m hold
together with 95% probability; :func:`widen`): "helps" when some frozen strategy's interval lies
above 100 (named: the one with the highest lower end), "hurts" when every one's lies below
(named: the highest mean), else "costs nothing measurable" (named: the highest mean among those
whose interval reaches 100). The sentence also names the deepest freeze not measurably below
full, by the same intervals. A side whose full fine-tuning does not clear the trivial baseline
(:func:`rules.signal`) cannot answer, and with one seed no CI can be given. The closing line
weighs the sides.

>>> _verdict(Estimate(103.1, 100.4, 105.8, 3)), _verdict(Estimate(99.0, 95.0, 101.0, 3))
('helps', 'costs nothing measurable')
>>> wide = widen(Estimate(100.0, 99.0, 101.0, 3), 2)  # t: 6.21 instead of 4.30
>>> round(wide.low, 2), round(wide.high, 2)
(98.56, 101.44)
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from scipy import stats

from freezetune.config import RunConfig
from freezetune.errors import UserError
from freezetune.modality import modality_of
from freezetune.report.contrast_render import (
    CLAIM,
    FILES,
    NAMES,
    Contrast,
    Estimate,
    Point,
    Side,
    plot,
    table,
    write,
)
from freezetune.report.costs import student_of
from freezetune.report.rules import signal
from freezetune.report.stats import mean_ci, simultaneous
from freezetune.report.tables import main_metric, run_metric, summarize
from freezetune.study.baseline import ensure_baselines
from freezetune.study.store import RunRow, open_store, read_rows

__all__ = [
    "CLAIM",
    "FILES",
    "VERDICTS",
    "Contrast",
    "Estimate",
    "Point",
    "Side",
    "contrast",
    "widen",
]

VERDICTS = ("helps", "costs nothing measurable", "hurts")
EXPECTED = {"image": "helps", "text": "hurts"}  # what the folklore predicts, per modality
CONTRARY = {"image": "hurts", "text": "helps"}


def _estimate(values: list[float]) -> Estimate:
    mean, _, low, high = mean_ci(values)
    return Estimate(mean, low, high, len(values))


def widen(e: Estimate, m: int) -> Estimate:
    """``e``'s 95% Student-t interval made one of ``m`` Bonferroni-simultaneous 95% intervals
    (level 1 - 0.05/m, same mean, std and degrees of freedom)."""
    if m <= 1 or e.n < 2 or math.isnan(e.low):
        return e
    t95 = float(stats.t.ppf(0.975, e.n - 1))
    t = float(stats.t.ppf((1 + simultaneous(0.95, m)) / 2, e.n - 1))
    return Estimate(e.mean, e.mean - (e.mean - e.low) * t / t95,
                    e.mean + (e.high - e.mean) * t / t95, e.n)  # fmt: skip


def _read(folder: Path) -> list[RunRow]:
    """A study's succeeded runs; refused: not a study, or no succeeded full fine-tuning."""
    if not (folder / "results.sqlite").is_file():
        raise UserError(
            f"{folder} is not a study folder (no results.sqlite); pass folders that "
            "`freezetune study` wrote, e.g. runs/default"
        )
    with contextlib.closing(open_store(folder / "results.sqlite")) as conn:
        found = read_rows(conn)
    metric = main_metric(found)
    rows = [r for r in found if r.status == "succeeded" and run_metric(r, metric) is not None]
    if not any(_is_full(r) for r in rows):
        raise UserError(
            f"study {folder} has no succeeded full fine-tuning run, the reference of every "
            "comparison; add full to its --strategies and run `freezetune study` again"
        )
    return rows


def _is_full(row: RunRow) -> bool:
    return row.freeze == "full" and student_of(row.config).plain


def _names(row: RunRow) -> tuple[str, str]:
    """(modality, "task / model") of a run, from its config."""
    data, model = row.config.get("data") or {}, row.config.get("model") or {}
    task = data.get("task") or Path(str(data.get("train_file") or "?")).name
    try:
        modality = modality_of(RunConfig.from_dict(row.config)).name
    except (ValueError, TypeError):  # UserError is a ValueError
        modality = "unknown"
    return modality, f"{task} / {Path(str(model.get('name') or '?')).name}"


def _number(row: RunRow, key: str) -> float:
    """A number of the run's result (NaN where it recorded none)."""
    value = (row.result or {}).get(key)
    return float(value) if isinstance(value, int | float) else math.nan


def _frozen(row: RunRow) -> float:
    """1 - trainable / total parameters, as the result records them (NaN: unrecorded)."""
    total = _number(row, "total_params")
    return 1 - _number(row, "trainable_params") / total if total > 0 else math.nan


def _point(label: str, runs: list[RunRow], fulls: dict[int, RunRow], metric: str) -> Point:
    """``runs`` (one strategy) paired by seed with full fine-tuning's ``fulls``."""
    paired = [(r, fulls[r.seed]) for r in runs if r.seed in fulls]
    values = [(run_metric(r, metric) or 0.0, run_metric(f, metric) or 0.0) for r, f in paired]
    walls = [_number(r, "wall_time_s") / _number(f, "wall_time_s") for r, f in paired]
    fractions = [x for r in runs if not math.isnan(x := _frozen(r))]
    quality = _estimate([100 * v / f for v, f in values if f])
    return Point(
        label,
        statistics.fmean(fractions) if fractions else None,
        any(r.timeline for r in runs),
        statistics.fmean(v for v, _ in values) if values else math.nan,
        quality,
        _estimate([w for w in walls if math.isfinite(w)]),
        quality,
    )


def _points(rows: list[RunRow], fulls: list[RunRow], metric: str) -> tuple[Point, ...]:
    """Full fine-tuning's point, then every other strategy's by fraction frozen; a strategy
    run at several learning rates gets one point per rate."""
    by_seed = {r.seed: r for r in reversed(fulls)}  # the first run of each seed
    lrs: dict[str, set[float]] = {}
    for r in rows:
        lrs.setdefault(r.strategy, set()).add(r.lr)
    groups: dict[str, list[RunRow]] = {}
    for r in rows:
        if not _is_full(r):
            label = r.strategy + (f" lr={r.lr:g}" if len(lrs[r.strategy]) > 1 else "")
            groups.setdefault(label, []).append(r)
    others = [_point(label, runs, by_seed, metric) for label, runs in groups.items()]
    others.sort(key=lambda p: (p.frozen is None, p.frozen or 0.0, p.strategy))
    return (_point(fulls[0].strategy, fulls, by_seed, metric), *others)


def _verdict(quality: Estimate) -> str:
    if quality.low > 100:
        return "helps"
    return "hurts" if quality.high < 100 else "costs nothing measurable"


def _simultaneous(points: tuple[Point, ...]) -> tuple[Point, ...]:
    """The points with their Bonferroni-simultaneous intervals over the frozen strategies with
    >= 2 seeds (the ones a verdict picks from: all of the side's other points but full's)."""
    m = sum(1 for p in points[1:] if p.quality.n >= 2 and p.frozen != 0)
    return tuple(replace(p, joint=widen(p.quality, m)) for p in points)


def _best(frozen: list[Point]) -> tuple[Point | None, str]:
    """The side's named frozen strategy and its verdict (the module's rule, on the simultaneous
    intervals): choosing by the mean alone would let the noisiest strategy hide one whose
    whole interval is above full's."""
    sized = [p for p in frozen if p.joint.n >= 2]
    if not sized:
        best = max(frozen, key=lambda p: p.quality.mean, default=None)
        return best, "nothing frozen" if best is None else "one seed"
    helping = [p for p in sized if p.joint.low > 100]
    if helping:
        return max(helping, key=lambda p: p.joint.low), "helps"
    reaching = [p for p in sized if p.joint.high >= 100] or sized
    best = max(reaching, key=lambda p: p.quality.mean)
    return best, _verdict(best.joint)


def _m(side: Side) -> str:
    """E.g. ", simultaneous over 3 frozen strategies" (nothing when there is one)."""
    m = sum(1 for p in side.points[1:] if p.joint.n >= 2 and p.frozen != 0)
    return f", simultaneous over {m} frozen strategies" if m > 1 else ""


def _deepest(side: Side) -> str:
    """ ", the deepest freeze not measurably below full: ..." when it is not the named one."""
    fine = [p for p in side.points[1:] if p.joint.n >= 2 and p.joint.high >= 100]
    deepest = max(fine, key=lambda p: (p.frozen or 0.0, p.quality.mean), default=None)
    if deepest is None or deepest is side.best:
        return ""
    q = deepest.joint
    return (f"; the deepest freeze not measurably below full is {deepest.strategy} "
            f"({_share(deepest.frozen)} of parameters frozen, {q.mean:.1f}%, 95% CI "
            f"{q.low:.1f}-{q.high:.1f}{_m(side)})")  # fmt: skip


def _share(fraction: float | None) -> str:
    """A fraction of parameters: "an unrecorded share", "0.5%", "80%", "99.6%"."""
    if fraction is None:
        return "an unrecorded share"
    return f"{fraction:.0%}" if 0.1 <= fraction <= 0.9 else f"{fraction:.1%}"


def _size(size: int | None) -> str:
    return f"{size:,} training examples" if size else "the whole training split"


def _sentence(side: Side, floor: str) -> str:
    """The side's verdict in words; ``floor`` describes its trivial baseline."""
    head = f"{_where(side)[0].upper()}{_where(side)[1:]}"
    sig, best, full = side.signal, side.best, side.points[0] if side.points else None
    if sig is None or full is None:
        return f"{head}: no full fine-tuning run succeeded here, so nothing can be compared."
    if not sig.clear:
        return (f"{head}: this side cannot answer: {floor} and "
                f"{sig.reason} (full fine-tuning: {side.metric} {100 * full.metric:.1f}).")  # fmt: skip
    unknown = "" if sig.known else " (its trivial baseline is unknown, so not checked against it)"
    if best is None:
        return f"{head}: only full fine-tuning succeeded; no frozen strategy to compare{unknown}."
    end = " at the end of training" if best.schedule else ""
    q, w = best.joint, best.wall
    reached = (f"the best frozen strategy, {best.strategy} ({_share(best.frozen)} of parameters "
               f"frozen{end}), reaches {q.mean:.1f}% of full fine-tuning")  # fmt: skip
    if q.n < 2:
        return f"{head}: {reached} with one seed: no CI can be given, so no verdict{unknown}."
    time = f" in {w.mean:.2f}x its wall time" if w.n else ""
    return (f"{head}: {reached} (95% CI {q.low:.1f}-{q.high:.1f}{_m(side)}; {q.n} seeds){time}: "
            f"freezing {side.verdict} here{_deepest(side)}{unknown}.")  # fmt: skip


def _side(study: str, rows: list[RunRow], baselines: dict, size: int | None) -> Side:
    """One study at one training-set size (its full reference: the best lr's, if several)."""
    modality, label = _names(rows[0])
    metric = main_metric(rows)
    summary = summarize(rows, baselines)
    refs = [x for x in summary.lines if x.is_full and x.n]
    side = Side(study, label, modality, size, metric, None, (), None, "no reference", "")
    if not refs:
        return replace(side, sentence=_sentence(side, ""))
    ref = max(refs, key=lambda x: x.mean)
    floor = summary.baseline_for(ref)
    sig = signal(ref.mean, ref.ci[0], ref.baseline if floor else None, ref.n)
    lr = dict(ref.context).get("optim.lr")
    fulls = [r for r in rows if r.strategy == ref.strategy and lr in (None, r.lr)]
    points = _simultaneous(_points(rows, fulls, metric))
    best, verdict = _best([p for p in points[1:] if p.quality.n and p.frozen != 0])
    verdict = verdict if sig.clear else "no signal"
    side = Side(study, label, modality, size, metric, sig, points, best, verdict, "")
    shown = (
        f"the trivial baseline ({floor.describe}) scores {100 * floor.value:.1f}" if floor else ""
    )
    return replace(side, sentence=_sentence(side, shown))


def _sides(folder: Path, rows: list[RunRow]) -> list[Side]:
    """The study's sides, one per training-set size (the whole split last)."""
    baselines = ensure_baselines(folder, [r.config for r in rows])
    sizes = sorted({r.train_size for r in rows}, key=lambda s: (s is None, s or 0))
    return [_side(folder.name, [r for r in rows if r.train_size == s], baselines, s) for s in sizes]


def _where(side: Side) -> str:
    """E.g. "images (fashion-mnist / effnet-lite0, 500 training examples)"."""
    kind = NAMES.get(side.modality, "unknown modality")
    return f"{kind} ({side.label}, {_size(side.train_size)})"


def _claim(sides: Sequence[Side]) -> tuple[str, str]:
    """ "holds", "does not hold" or "cannot tell", and the closing line that says why."""
    answered = [s for s in sides if s.verdict in VERDICTS and s.modality in EXPECTED]
    contrary = [s for s in answered if s.verdict == CONTRARY[s.modality]]
    opener = f'On the claim "{CLAIM}": '
    if contrary:
        listed = "; ".join(f"freezing {s.verdict} on {_where(s)}" for s in contrary)
        return "does not hold", f"{opener}the folklore does not hold here ({listed})."
    missing = [m for m in EXPECTED if not any(s.modality == m for s in answered)]
    weak = [s for s in answered if s.verdict != EXPECTED[s.modality]]
    if not missing and not weak:
        every = "freezing helps on every image side and hurts on every text side"
        return "holds", f"{opener}the folklore holds here: {every}."
    why = [f"no {m} study here can answer" for m in missing] + [
        f"on {_where(s)} freezing costs nothing measurable, where the folklore says it "
        f"{EXPECTED[s.modality]}"
        for s in weak
    ]
    return "cannot tell", f"{opener}the data cannot tell ({'; '.join(why)})."


def contrast(folders: Sequence[Path], out: Path) -> Contrast:
    """Read each study folder's succeeded runs, contrast them and write :data:`FILES` into
    ``out`` (created if needed). Every folder is checked before anything is written: fewer
    than two, one that is not a study, or one without a succeeded full fine-tuning run raises
    :class:`~freezetune.errors.UserError`."""
    if len(folders) < 2:
        raise UserError(
            "a contrast report needs at least two study folders, e.g. `freezetune report "
            "runs/fashion runs/default`; pass one more"
        )
    studies = [(Path(f), _read(Path(f))) for f in folders]
    groups = [_sides(folder, rows) for folder, rows in studies]
    sides = tuple(side for group in groups for side in group)
    claim, closing = _claim(sides)
    sentence = " ".join([*(s.sentence for s in sides), closing])
    files = tuple(Path(out) / name for name in FILES)
    result = Contrast(sides, tuple(map(table, groups)), claim, closing, sentence, files)
    write(result, Path(out), plot(sides))
    return result
