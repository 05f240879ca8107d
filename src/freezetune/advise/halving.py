"""Synchronous successive halving over arms whose rungs are prefixes of their full runs.

An *arm* is one strategy x learning rate with a total budget of ``budget`` optimizer steps
(arms may differ). Every arm starts its full-budget run (same warmup/decay horizon, same freeze
schedule); rung ``k`` stops it at step ``steps(arm, k)``, and the best continue *from their
checkpoint* to the next rung, until the finalists reach their full budget (REFERENCE.md
section 8; Jamieson & Talwalkar 2016, https://arxiv.org/abs/1502.07943). Rungs, with ``K``
promotions, first rung fraction ``r_0`` and ``n`` arms::

    K        = max(1, round(log(1 / r_0) / log(eta)))      # 1/9 and eta 3 -> 2
    r_k      = r_0 ** ((K - k) / K)                          # 1/9, 1/3, 1: r_K = 1 exactly
    steps    = min(budget, max(1, ceil(r_k * budget)))      # strictly increasing over k
    n_0      = n;   n_k = max(finalists, ceil(n_{k-1} / eta))  for 0 < k < K;   n_K = finalists

(all counts capped by the previous one). The last cut keeps exactly ``finalists`` arms: pick
``r_0 = first_fraction(n, eta, finalists)`` when every cut should be 1/eta.

The policy is a pure function of *rows*, the plain records a store keeps (:class:`Row`):
observations (``observed``: an arm's score at a step, several per rung allowed; ``failed``: the
arm crashed or diverged) and decisions (``promoted`` / ``stopped`` at rung ``k``).
:meth:`Halving.decide` replays them and answers what to run next and which decision rows to
store. A stored decision is never recomputed, so a killed advise that feeds its rows back gets
the same state and the same next actions. Store one :class:`Decision`'s rows in one
transaction. Ranking: failed arms and NaN scores last (never promoted), then higher score,
then the smaller budget, then the order the arms were given in: same rows, same answer.

>>> plan = Halving.of({"a": 90, "b": 90, "c": 90}, eta=3, first=1 / 9)
>>> plan.sizes, [plan.steps("a", k) for k in range(3)]
((3, 1, 1), [10, 30, 90])
>>> first = plan.decide([])
>>> [(a.arm, a.run_to) for a in first.run]
[('a', 10), ('b', 10), ('c', 10)]
>>> seen = [Row(arm, 0, 10, score) for arm, score in [("a", 0.7), ("b", 0.8), ("c", 0.6)]]
>>> after = plan.decide(seen)
>>> [(r.arm, r.kind) for r in after.rows], [(a.arm, a.resume_from, a.run_to) for a in after.run]
([('b', 'promoted'), ('a', 'stopped'), ('c', 'stopped')], [('b', 10, 30)])
>>> plan.decide([*seen, *after.rows]).run == after.run  # resumed: same next actions
True
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from freezetune.errors import UserError

__all__ = [
    "FAILED",
    "OBSERVED",
    "PROMOTED",
    "STOPPED",
    "Action",
    "Arm",
    "Decision",
    "Halving",
    "Row",
    "first_fraction",
]

OBSERVED, FAILED, PROMOTED, STOPPED = "observed", "failed", "promoted", "stopped"
KINDS = (OBSERVED, FAILED, PROMOTED, STOPPED)
RUNG_SCORES = ("last", "best")


@dataclass(frozen=True)
class Arm:
    """One arm: a hashable id (a strategy x lr label) and its full run's optimizer steps."""

    id: Hashable
    budget: int


@dataclass(frozen=True)
class Row:
    """One stored record. ``observed``: ``score`` at optimizer ``step`` (``rung`` = the rung
    the arm was running toward); ``failed``: the arm crashed or diverged (``score`` None);
    ``promoted`` / ``stopped``: the decision taken at ``rung`` (``step`` and ``score`` = the
    arm's rung step and rung score, for the record)."""

    arm: Hashable
    rung: int
    step: int
    score: float | None = None
    kind: str = OBSERVED


@dataclass(frozen=True)
class Action:
    """Train ``arm`` from its checkpoint at ``resume_from`` (0: from scratch) up to
    ``run_to`` steps of its full-budget run, and evaluate at ``run_to``."""

    arm: Hashable
    rung: int
    resume_from: int
    run_to: int


@dataclass(frozen=True)
class Decision:
    """What :meth:`Halving.decide` answers: the arms to run now (in parallel if you like),
    the decision rows to store before running them, every arm stopped so far with its rung
    (in decision order), and once ``done`` the finalists, best first."""

    run: tuple[Action, ...] = ()
    rows: tuple[Row, ...] = ()
    stopped: tuple[tuple[Hashable, int], ...] = ()
    finalists: tuple[Hashable, ...] = ()
    done: bool = False
    rung: int = 0


def first_fraction(n_arms: int, eta: int = 3, finalists: int = 1) -> float:
    """The first rung fraction with which every cut keeps 1/eta, ending at ``finalists``.

    >>> first_fraction(27), first_fraction(9), first_fraction(24, finalists=3)
    (0.037037037037037035, 0.1111111111111111, 0.1111111111111111)
    """
    rungs = max(1, math.ceil(math.log(max(n_arms / finalists, 1.0)) / math.log(eta) - 1e-9))
    return float(eta**-rungs)


@dataclass(frozen=True)
class Halving:
    """The plan: arms in a fixed order, eta, the first rung's fraction, the finalist count,
    and how a rung scores an arm (``last``: its evaluation at the rung step; ``best``: its
    best evaluation up to it)."""

    arms: tuple[Arm, ...]
    eta: int = 3
    first: float = 1 / 9
    finalists: int = 1
    rung_score: str = "last"
    budgets: dict[Hashable, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = [arm.id for arm in self.arms]
        if not ids or len(set(ids)) != len(ids):
            raise UserError(f"successive halving needs distinct arms, got {ids}")
        if any(not isinstance(a.budget, int) or a.budget < 1 for a in self.arms):
            raise UserError("every arm's budget must be a whole number of steps >= 1")
        if not isinstance(self.eta, int) or self.eta < 2:
            raise UserError(f"eta must be a whole number >= 2, got {self.eta!r}")
        if not 0 < self.first < 1:
            raise UserError(f"the first rung fraction must be in (0, 1), got {self.first!r}")
        if not isinstance(self.finalists, int) or self.finalists < 1:
            raise UserError(f"finalists must be a whole number >= 1, got {self.finalists!r}")
        if self.rung_score not in RUNG_SCORES:
            raise UserError(f"rung_score must be one of {RUNG_SCORES}, got {self.rung_score!r}")
        object.__setattr__(self, "budgets", {a.id: a.budget for a in self.arms})

    @classmethod
    def of(cls, budgets: Mapping[Hashable, int], **options: object) -> Halving:
        """A plan from ``{arm: budget}`` (in that order) and the other fields."""
        return cls(tuple(Arm(k, v) for k, v in budgets.items()), **options)  # type: ignore[arg-type]

    @property
    def promotions(self) -> int:
        """``K``: the number of cuts; rungs are ``0..K`` and rung ``K`` is the full budget."""
        return max(1, round(math.log(1 / self.first) / math.log(self.eta)))

    @property
    def fractions(self) -> tuple[float, ...]:
        """Each rung's fraction of the full run.

        >>> [round(f, 4) for f in Halving.of({"a": 10}, first=1 / 27).fractions]
        [0.037, 0.1111, 0.3333, 1.0]
        """
        last = self.promotions
        return tuple(self.first ** ((last - k) / last) for k in range(last + 1))

    @property
    def sizes(self) -> tuple[int, ...]:
        """How many arms each rung holds (fewer if arms fail).

        >>> Halving.of(dict.fromkeys(range(27), 81), first=1 / 27).sizes
        (27, 9, 3, 1)
        """
        sizes = [len(self.arms)]
        for k in range(1, self.promotions + 1):
            want = self.finalists if k == self.promotions else -(-sizes[-1] // self.eta)
            sizes.append(min(sizes[-1], max(self.finalists, want)))
        return tuple(sizes)

    def steps(self, arm: Hashable, rung: int) -> int:
        """Optimizer steps of ``arm``'s run at the end of ``rung`` (a prefix of its run)."""
        budget = self.budgets[arm]
        out = 0
        for k, fraction in enumerate(self.fractions[: rung + 1]):
            at = budget if k == self.promotions else math.ceil(fraction * budget - 1e-9)
            out = min(budget, max(at, out + 1, 1))
        return out

    def cost_fraction(self) -> float:
        """Steps the plan trains, over those of running every arm to the end (equal budgets,
        no failures): ``sum_k n_k (r_k - r_{k-1}) / n_0``.

        >>> round(Halving.of(dict.fromkeys(range(27), 81), first=1 / 27).cost_fraction(), 4)
        0.1111
        """
        gains = [b - a for a, b in zip((0.0, *self.fractions), self.fractions, strict=False)]
        return sum(n * g for n, g in zip(self.sizes, gains, strict=True)) / len(self.arms)

    def decide(self, rows: Iterable[Row]) -> Decision:
        """Replay ``rows`` (observations and stored decisions) and answer what comes next."""
        return _replay(self, _Index.of(self, rows))


@dataclass
class _Index:
    """Rows sorted by arm: observed scores by step, failed arms, stored decisions by rung."""

    scores: dict[Hashable, dict[int, float]]
    failed: set[Hashable]
    decided: dict[int, dict[Hashable, str]]

    @classmethod
    def of(cls, plan: Halving, rows: Iterable[Row]) -> _Index:
        index = cls({a.id: {} for a in plan.arms}, set(), {})
        for row in rows:
            if row.arm not in plan.budgets or row.kind not in KINDS:
                raise UserError(
                    f"stored row {row} names an arm or kind this plan lacks; resume with the "
                    "same arms, or start a new advise folder"
                )
            if row.kind == OBSERVED:
                score = math.nan if row.score is None else float(row.score)
                index.scores[row.arm][row.step] = score  # a repeated step: the last row wins
            elif row.kind == FAILED:
                index.failed.add(row.arm)
            else:
                index.decided.setdefault(row.rung, {})[row.arm] = row.kind
        return index

    def rung_score(self, plan: Halving, arm: Hashable, rung: int) -> float | None:
        """The arm's score at ``rung``: None while it has not reached the rung step, NaN if
        it failed or its score there is not finite."""
        at = plan.steps(arm, rung)
        seen = self.scores[arm]
        if arm in self.failed:
            return math.nan
        if at not in seen:
            return None
        if not math.isfinite(seen[at]):
            return math.nan
        if plan.rung_score == "last":
            return seen[at]
        return max(s for step, s in seen.items() if step <= at and math.isfinite(s))


def _ranked(plan: Halving, scores: Mapping[Hashable, float]) -> list[Hashable]:
    """Best first: finite scores before failures, higher score, smaller budget, given order."""
    order = {a.id: i for i, a in enumerate(plan.arms)}

    def key(arm: Hashable) -> tuple[bool, float, int, int]:
        score = scores[arm]
        bad = not math.isfinite(score)
        return (bad, 0.0 if bad else -score, plan.budgets[arm], order[arm])

    return sorted(scores, key=key)


def _check_stored(index: _Index, rung: int, alive: Sequence[Hashable]) -> dict[Hashable, str]:
    """The decisions stored for ``rung`` (maybe none, maybe part of them after a kill)."""
    stored = index.decided.get(rung, {})
    if not set(stored) <= set(alive):
        raise UserError(
            f"the stored decisions of rung {rung} name arms that did not reach it; resume with "
            "the same plan (arms, eta, first rung), or start a new advise folder"
        )
    return stored


def _decide_rung(
    plan: Halving, rung: int, known: dict[Hashable, float], stored: dict[Hashable, str]
) -> tuple[list[Hashable], list[Row]]:
    """Promote the best ``n_{rung+1}`` healthy arms; the rows a store still lacks (a partial
    write is completed if it agrees with the decision, refused if not)."""
    ranked = _ranked(plan, known)
    promoted = [arm for arm in ranked if math.isfinite(known[arm])][: plan.sizes[rung + 1]]
    rows = []
    for arm in ranked:
        kind = PROMOTED if arm in promoted else STOPPED
        if arm in stored and stored[arm] != kind:
            raise UserError(
                f"the stored decision on arm {arm!r} at rung {rung} differs from its rows' "
                "scores; resume with the same plan, or start a new advise folder"
            )
        score = known[arm] if math.isfinite(known[arm]) else None
        if arm not in stored:
            rows.append(Row(arm, rung, plan.steps(arm, rung), score, kind))
    return promoted, rows


def _replay(plan: Halving, index: _Index) -> Decision:
    """Walk the rungs: stored decisions are kept, the first undecided rung is decided once
    all its arms have a score, and the arms still short of a rung are the next actions."""
    alive = [a.id for a in plan.arms]
    new: list[Row] = []
    stopped: list[tuple[Hashable, int]] = []
    for rung in range(plan.promotions + 1):
        stored = _check_stored(index, rung, alive)
        if len(stored) == len(alive) and rung < plan.promotions:
            promoted = [arm for arm in alive if stored[arm] == PROMOTED]
        else:
            scores = {arm: index.rung_score(plan, arm, rung) for arm in alive}
            waiting = [arm for arm in alive if scores[arm] is None]
            if waiting:
                run = tuple(
                    Action(
                        arm, rung, plan.steps(arm, rung - 1) if rung else 0, plan.steps(arm, rung)
                    )
                    for arm in waiting
                )
                return Decision(run, tuple(new), tuple(stopped), rung=rung)
            known = {arm: s for arm, s in scores.items() if s is not None}
            if rung == plan.promotions:
                ranked = _ranked(plan, known)
                healthy = tuple(arm for arm in ranked if math.isfinite(known[arm]))
                failed = [(arm, rung) for arm in ranked if arm not in healthy]
                return Decision((), tuple(new), (*stopped, *failed), healthy, True, rung)
            promoted, rows = _decide_rung(plan, rung, known, stored)
            new += rows
        stopped += [(arm, rung) for arm in alive if arm not in promoted]
        alive = [arm for arm in alive if arm in promoted]  # keep the given order
        if not alive:
            return Decision((), tuple(new), tuple(stopped), (), True, rung)
    raise AssertionError("unreachable: the last rung returns")
