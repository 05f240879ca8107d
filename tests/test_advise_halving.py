"""Successive halving as a pure policy: rung arithmetic, known winners, resume, determinism."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable

import pytest

from freezetune.advise.halving import (
    FAILED,
    PROMOTED,
    STOPPED,
    Halving,
    Row,
    first_fraction,
)
from freezetune.errors import UserError

Curve = Callable[[float], float]


def pow3(c: float, a: float, alpha: float) -> Curve:
    return lambda x: c - a * x**-alpha


def simulate(
    plan: Halving, curves: dict[Hashable, Curve], evals_per_rung: int = 3
) -> tuple[list[Row], list]:
    """Run the plan to the end: every action evaluates a few times inside its rung."""
    rows: list[Row] = []
    decisions = []
    while True:
        decision = plan.decide(rows)
        decisions.append(decision)
        rows += decision.rows
        if decision.done:
            return rows, decisions
        for action in decision.run:
            rows += observe(plan, curves, action, evals_per_rung)


def observe(plan: Halving, curves, action, evals: int) -> list[Row]:
    span = action.run_to - action.resume_from
    steps = sorted({action.resume_from + max(1, span * i // evals) for i in range(1, evals + 1)})
    budget = plan.budgets[action.arm]
    return [Row(action.arm, action.rung, s, curves[action.arm](s / budget)) for s in steps]


def test_rung_arithmetic_eta3() -> None:
    plan = Halving.of(dict.fromkeys(range(27), 81), eta=3, first=1 / 27)
    assert plan.sizes == (27, 9, 3, 1)
    assert [plan.steps(0, k) for k in range(4)] == [3, 9, 27, 81]
    assert Halving.of(dict.fromkeys(range(9), 90), first=1 / 9).sizes == (9, 3, 1)
    assert Halving.of(dict.fromkeys(range(27), 90), first=1 / 9).sizes == (27, 9, 1)
    three = Halving.of(dict.fromkeys(range(27), 90), first=1 / 9, finalists=3)
    assert three.sizes == (27, 9, 3)
    assert first_fraction(27) == pytest.approx(1 / 27)
    assert first_fraction(9) == pytest.approx(1 / 9)
    assert first_fraction(2) == pytest.approx(1 / 3)


def test_rungs_are_prefixes_of_each_arms_own_budget() -> None:
    plan = Halving.of({"long": 100, "short": 10, "tiny": 2}, first=1 / 9)
    assert [plan.steps("long", k) for k in range(3)] == [12, 34, 100]
    assert [plan.steps("short", k) for k in range(3)] == [2, 4, 10]
    assert [plan.steps("tiny", k) for k in range(3)] == [1, 2, 2]


def test_the_best_final_score_survives_27_arms() -> None:
    rng = random.Random(0)
    finals = rng.sample(range(50, 95), 27)
    curves = {f"arm{i}": pow3(f / 100, 0.02, 0.5) for i, f in enumerate(finals)}
    plan = Halving.of(dict.fromkeys(curves, 81), first=1 / 27)
    rows, decisions = simulate(plan, curves)
    best = max(curves, key=lambda arm: curves[arm](1.0))
    assert decisions[-1].done and decisions[-1].finalists == (best,)
    assert sum(r.kind == PROMOTED for r in rows) == 9 + 3 + 1
    assert len(decisions[-1].stopped) == 26
    first_rung = [r.step for r in rows if r.kind in (PROMOTED, STOPPED) and r.rung == 0]
    assert first_rung == [3] * 27


def test_crossing_curves_keep_the_arm_leading_at_the_rung() -> None:
    # "fast" leads early, "slow" overtakes later: halving keeps what the rung shows.
    curves = {"fast": pow3(0.80, 0.01, 1.0), "slow": pow3(0.95, 0.10, 1.0), "bad": pow3(0.5, 0, 1)}
    plan = Halving.of(dict.fromkeys(curves, 90), first=1 / 9)
    _, decisions = simulate(plan, curves)
    assert decisions[-1].finalists == ("fast",)


def test_resume_after_a_kill_anywhere_equals_the_uninterrupted_run() -> None:
    curves = {i: pow3(0.6 + 0.03 * ((i * 7) % 9), 0.05, 0.7) for i in range(9)}
    plan = Halving.of(dict.fromkeys(curves, 45), first=1 / 9)
    rows, decisions = simulate(plan, curves)
    for cut in range(len(rows) + 1):
        stored = list(rows[:cut])  # killed after `cut` rows reached the store
        fresh = Halving.of(dict.fromkeys(curves, 45), first=1 / 9)
        while not (decision := fresh.decide(stored)).done:
            stored += decision.rows
            for action in decision.run:
                # an exact resume re-evaluates the same steps to the same scores
                stored += [r for r in observe(fresh, curves, action, 3) if r not in stored]
        stored += decision.rows
        assert [r for r in stored if r.kind != "observed"] == [
            r for r in rows if r.kind != "observed"
        ], cut
        assert decision == decisions[-1]


def test_stored_decisions_are_kept_even_if_later_rows_disagree() -> None:
    plan = Halving.of({"a": 9, "b": 9}, first=1 / 3)
    rows = [Row("a", 0, 3, 0.9), Row("b", 0, 3, 0.5)]
    rows += plan.decide(rows).rows
    late = [*rows, Row("b", 0, 3, 0.99)]  # a re-evaluation after the decision
    assert plan.decide(late).run == plan.decide(rows).run
    assert [a.arm for a in plan.decide(late).run] == ["a"]


def test_same_rows_in_any_order_give_the_same_decision() -> None:
    curves = {i: pow3(0.5 + 0.04 * i, 0.03, 0.5) for i in range(9)}
    plan = Halving.of(dict.fromkeys(curves, 27), first=1 / 9)
    rows, _ = simulate(plan, curves)
    shuffled = list(rows)
    random.Random(1).shuffle(shuffled)
    assert plan.decide(shuffled) == plan.decide(rows)
    assert simulate(plan, curves)[0] == rows


def test_ties_go_to_the_cheaper_then_the_earlier_arm() -> None:
    plan = Halving.of({"x": 90, "y": 60, "z": 60}, first=1 / 3)
    rows = [Row(arm, 0, plan.steps(arm, 0), 0.5) for arm in "xyz"]
    promoted = [r.arm for r in plan.decide(rows).rows if r.kind == PROMOTED]
    assert promoted == ["y"]


def test_failed_and_nan_arms_are_pruned_first_and_never_promoted() -> None:
    plan = Halving.of(dict.fromkeys("abcd", 9), first=1 / 3, finalists=3)
    assert plan.sizes == (4, 3)
    rows = [
        Row("a", 0, 3, math.nan),
        Row("b", 0, 1, None, FAILED),
        Row("c", 0, 3, 0.1),
        Row("d", 0, 3, 0.2),
    ]
    decision = plan.decide(rows)
    assert [(r.arm, r.kind, r.score) for r in decision.rows] == [
        ("d", PROMOTED, 0.2),
        ("c", PROMOTED, 0.1),
        ("a", STOPPED, None),
        ("b", STOPPED, None),
    ]
    rows += [*decision.rows, Row("c", 1, 9, 0.3), Row("d", 1, 5, None, FAILED)]
    done = plan.decide(rows)
    assert done.done and done.finalists == ("c",)
    assert done.stopped == (("a", 0), ("b", 0), ("d", 1))


def test_all_failed_ends_with_no_finalists() -> None:
    plan = Halving.of({"a": 9, "b": 9}, first=1 / 3)
    decision = plan.decide([Row("a", 0, 1, None, FAILED), Row("b", 0, 3, math.inf)])
    assert decision.done and decision.finalists == () and len(decision.stopped) == 2


def test_best_rung_score_uses_the_best_evaluation_of_the_prefix() -> None:
    rows = [Row("a", 0, 1, 0.9), Row("a", 0, 3, 0.2), Row("b", 0, 3, 0.5)]
    last = Halving.of({"a": 9, "b": 9}, first=1 / 3).decide(rows)
    best = Halving.of({"a": 9, "b": 9}, first=1 / 3, rung_score="best").decide(rows)
    assert [a.arm for a in last.run] == ["b"] and [a.arm for a in best.run] == ["a"]


def test_bad_plans_and_foreign_rows_are_refused() -> None:
    with pytest.raises(UserError, match="eta"):
        Halving.of({"a": 9}, eta=1)
    with pytest.raises(UserError, match="first rung"):
        Halving.of({"a": 9}, first=1.0)
    with pytest.raises(UserError, match="budget"):
        Halving.of({"a": 0})
    with pytest.raises(UserError, match="same arms"):
        Halving.of({"a": 9}).decide([Row("zz", 0, 1, 0.5)])
    plan = Halving.of(dict.fromkeys("abc", 9), first=1 / 3)
    seen = [Row("a", 0, 3, 0.5), Row("b", 0, 3, 0.6), Row("c", 0, 3, 0.4)]
    with pytest.raises(UserError, match="differs"):
        plan.decide([*seen, Row("a", 0, 3, 0.5, PROMOTED)])
    with pytest.raises(UserError, match="did not reach"):
        plan.decide([*seen, Row("a", 1, 3, 0.5, PROMOTED)])


def test_a_partial_write_of_a_decision_is_completed() -> None:
    plan = Halving.of(dict.fromkeys("abc", 9), first=1 / 3)
    seen = [Row("a", 0, 3, 0.5), Row("b", 0, 3, 0.6), Row("c", 0, 3, 0.4)]
    whole = plan.decide(seen)
    part = plan.decide([*seen, whole.rows[0]])
    assert part.rows == whole.rows[1:] and part.run == whole.run
