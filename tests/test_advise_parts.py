"""advise's torch-free parts: the spec and its arms, the evaluation steps, training-time
predictions, and the answer's rules (pick, tolerance, abstention, inference)."""

from __future__ import annotations

import math

import pytest

from freezetune.advise.answer import ArmFacts, answer, seed_noise
from freezetune.advise.context import eval_steps
from freezetune.advise.costs import later_ratio, predict_time
from freezetune.advise.halving import Halving
from freezetune.advise.spec import AdviseSpec
from freezetune.errors import UserError


def test_arms_are_strategies_at_their_family_rates_with_their_own_lr_kept():
    spec = AdviseSpec.from_dict({
        "name": "a", "strategies": ["full", {"freeze": "head", "optim.lr": 5e-3}, "lora"],
    })  # fmt: skip
    arms = spec.arms(hidden_size=768, eval_at=(3, 7))
    assert [a.strategy for a in arms] == [
        "full (lr=2e-05)", "full (lr=5e-05)", "full (lr=0.0001)", "head (lr=0.005)",
        "lora (lr=0.0001)", "lora (lr=0.0003)", "lora (lr=0.001)",
    ]  # fmt: skip
    assert all(a.seed == 0 and a.config["train"]["eval_at"] == [3, 7] for a in arms)
    study = spec.matching_study(768, (3, 7), seeds=(0, 1, 2))
    assert {r.run_id for r in study.grid() if r.seed == 0} == {a.run_id for a in arms}


def test_a_study_yaml_with_an_advise_section_is_a_study_and_an_advise():
    from freezetune.study.spec import StudySpec

    data = {"name": "x", "strategies": ["full"], "seeds": [0, 1],
            "advise": {"lrs": "one", "tolerance": 0.5, "optimize": "accuracy"}}  # fmt: skip
    assert len(StudySpec.from_dict(data).grid()) == 2  # a study ignores advise:
    spec = AdviseSpec.from_dict(data)
    assert (spec.lrs, spec.tolerance, spec.optimize, spec.seeds) == ("one", 0.5, "accuracy", 3)


@pytest.mark.parametrize(
    ("advise", "needle"),
    [
        ({"tolerance": -1}, "--tolerance -1.0 must be >= 0"),
        ({"tolerance": "much"}, "--tolerance must be a number"),
        ({"optimize": "speed"}, "--optimize 'speed'"),
        ({"seeds": 0}, "--seeds must be a whole number >= 1"),
        ({"eta": 1}, "--eta must be a whole number >= 2"),
        ({"lrs": "1e-4,x"}, "'x' is not a learning rate"),
        ({"wat": 1}, "unknown advise key wat"),
    ],
)
def test_bad_advise_settings_are_refused(advise, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace("+", r"\+")):
        AdviseSpec.from_dict({"name": "x", "strategies": ["full"], "advise": advise})


def test_a_teacher_in_the_grid_is_refused_with_the_fix():
    with pytest.raises(UserError, match=r"set distill\.teacher to a finished run folder"):
        AdviseSpec.from_dict(
            {
                "name": "x",
                "strategies": [
                    "full",
                    {"freeze": "full", "distill.student_layers": 1, "distill.teacher": "@full"},
                ],
            }
        )


def test_evaluations_land_on_every_rung_step_and_four_inside_the_first():
    plan = Halving.of({"a": 126, "b": 126, "c": 126, "d": 126}, first=1 / 9)
    steps = eval_steps(plan)
    rungs = [plan.steps("a", k) for k in range(3)]
    assert rungs == [14, 42, 126]
    assert set(rungs[:-1]) <= set(steps) and len([s for s in steps if s <= 14]) == 4
    assert max(steps) < 126  # the last rung ends with the epoch-end evaluation


def test_time_prediction_uses_a_siblings_later_epoch_speed():
    # 10 steps an epoch, 2 epochs; the sibling's second epoch ran at a fifth of the first's cost
    sibling = [(5, 5.0), (10, 10.0), (15, 11.0), (20, 12.0)]
    assert later_ratio(sibling, 10) == 0.2
    stopped = [(2, 2.5), (4, 4.5)]  # 1 s a step after a 0.5 s start-up
    got = predict_time(stopped, budget=20, per_epoch=10, ratio=0.2)
    assert got.source == "sibling" and math.isclose(got.predicted, 4.5 + 6 * 1.0 + 10 * 0.2)
    alone = predict_time(stopped, budget=20, per_epoch=10, ratio=None)
    assert alone.source == "uncached" and math.isclose(alone.predicted, 4.5 + 16 * 1.0)
    done = predict_time(sibling, budget=20, per_epoch=10, ratio=None)
    assert (done.predicted, done.source) == (12.0, "measured")


def arm(id_, label, status, finals=(), curve=((10, 0.8),), times=((100, 60.0),), **kw):
    strategy = label.split(" (")[0]
    fields = {"family": "full", "lr": 1e-4, "budget": 100, "per_epoch": 50, "rung": 0,
              "architecture": "m", **kw}  # fmt: skip
    return ArmFacts(id_, label, strategy, strategy, status=status, curve=tuple(curve),
                    times=tuple(times), seeds=tuple(enumerate(finals)), **fields)  # fmt: skip


def test_the_pick_is_the_cheapest_within_tolerance_of_the_best():
    best = arm("a", "full", "finalist", (0.90, 0.91, 0.92), ((100, 0.92),), ((100, 100.0),))
    cheap = arm("b", "bottom:3", "finalist", (0.90, 0.905, 0.91), ((100, 0.91),), ((100, 40.0),))
    bad = arm("c", "head", "finalist", (0.80,), ((100, 0.8),), ((100, 5.0),))
    got = answer("x", [best, cheap, bad], metric="accuracy", optimize="train", tolerance=0.01,
                 baseline=0.5)  # fmt: skip
    assert got.pick == "b" and got.verdict == "pick"
    assert [a.eligible for a in got.arms] == [True, True, False]
    accurate = answer("x", [best, cheap, bad], metric="accuracy", optimize="accuracy",
                      tolerance=0.01, baseline=0.5)  # fmt: skip
    assert accurate.pick == "a"
    strict = answer("x", [best, cheap, bad], metric="accuracy", optimize="train",
                    tolerance=0.0, baseline=0.5)  # fmt: skip
    assert strict.pick == "a"


def test_no_signal_when_the_best_finalist_does_not_clear_the_baseline():
    only = arm("a", "full", "finalist", (0.51, 0.52, 0.50), ((100, 0.52),))
    got = answer("x", [only], metric="accuracy", optimize="train", tolerance=0.01, baseline=0.5)
    assert got.pick is None and got.verdict == "no signal" and "full" in got.why


def test_pruned_arms_get_predictions_with_the_finalists_seed_noise():
    final = arm("a", "full", "finalist", (0.80, 0.84), ((100, 0.84),))
    assert math.isclose(seed_noise([final]), math.sqrt(0.0008))
    curve = [(k, 0.9 - 0.2 * (k / 100) ** -0.5 / 10) for k in (2, 4, 6, 8, 10)]
    pruned = arm("b", "bottom:3", "stopped", curve=curve, times=((10, 5.0),))
    got = answer("x", [final, pruned], metric="accuracy", optimize="train", tolerance=0.01)
    score = got.arm("b").score
    assert score is not None and score.source in ("fit", "last") and score.n == 1
    assert score.low < score.mean < score.high and score.sd >= seed_noise([final])


def test_one_architecture_is_said_to_be_one_model_at_inference():
    a = arm("a", "full", "finalist", (0.9, 0.91), ((100, 0.91),), inference=0.002)
    b = arm("b", "bottom:3", "finalist", (0.9, 0.905), ((100, 0.905),), inference=0.002)
    got = answer("x", [a, b], metric="accuracy", optimize="inference", tolerance=0.01)
    assert "same model at inference" in got.inference_note
    c = arm("c", "full (student=3)", "finalist", (0.9,), ((100, 0.9),), architecture="s")
    mixed = answer("x", [a, c], metric="accuracy", optimize="train", tolerance=0.01)
    assert mixed.inference_note == ""


def test_eval_at_is_a_list_of_steps_that_leaves_older_run_ids_alone():
    from freezetune.config import RunConfig, TrainConfig
    from freezetune.options import identity
    from freezetune.study.spec import config_hash

    config = RunConfig.from_dict({"train": {"eval_at": "5, 10"}})
    assert config.train.eval_at == (5, 10)
    assert [config.train.evaluates_at(s) for s in (5, 6, 10)] == [True, False, True]
    assert TrainConfig(eval_every=3).evaluates_at(6) and not TrainConfig().evaluates_at(7)
    for bad, needle in (("5,x", "must be an int"), ([0], "steps >= 1")):
        with pytest.raises(UserError, match=needle):
            RunConfig.from_dict({"train": {"eval_at": bad}})
    plain = identity(RunConfig())
    assert "eval_at" not in plain["train"]  # runs stored before it keep their run_ids
    assert config_hash(plain) != config_hash(identity(config))


def test_picks_and_wall_time_are_stored_across_calls(tmp_path):
    import time as clock

    from freezetune.advise.store import (
        ensure_table,
        read_picks,
        start_call,
        wall_seconds,
        write_pick,
    )
    from freezetune.study.store import open_store

    conn = open_store(tmp_path / "results.sqlite")
    ensure_table(conn)
    write_pick(conn, 0, "b")
    write_pick(conn, 1, "a")
    assert read_picks(conn) == ["b", "a"]
    for _ in range(2):  # two invocations, the second after a kill
        touch = start_call(conn)
        clock.sleep(0.05)
        touch()
    assert 0.1 <= wall_seconds(conn) < 5
    conn.close()
