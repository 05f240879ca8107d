"""``advise --check`` on synthetic studies whose answers are known."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from scipy import stats

from freezetune.advise.advice import Advice, ArmResult, Score, TrainTime, read_advice
from freezetune.advise.check import check_advice, score_of
from freezetune.advise.check_measures import noise_ceiling
from freezetune.advise.references import Reference
from freezetune.errors import UserError
from freezetune.study.store import RunRow

SPREAD = (-0.01, 0.0, 0.01)  # seed 0, 1, 2 around each arm's mean
LRS = {"full": 1e-4, "bottom:3": 1e-4, "head": 1e-3}
LABELS = {"head": "head (lr=0.001)"}  # the study labels head's own rate


def study(
    means: dict[str, float],
    *,
    spread: tuple[float, ...] = SPREAD,
    times: dict[str, float] | None = None,
    first: dict[str, float] | None = None,
    status: str = "succeeded",
) -> list[RunRow]:
    """Runs of 90 steps, evaluated at step 10 (``first``: the score there, default mean -
    0.1) and 90 (the best); training seconds ``times`` (default 100), wall = train + 1."""
    rows = []
    for name, mean in means.items():
        for seed, offset in enumerate(spread):
            score = mean + offset
            early = (first or {}).get(name, mean - 0.1) + offset
            train = (times or {}).get(name, 100.0)
            result = {"main_metric": "accuracy", "steps": 90, "best": {"accuracy": score},
                      "train_time_s": train, "wall_time_s": train + 1}  # fmt: skip
            curve = [{"event": "eval", "step": 10, "accuracy": early},
                     {"event": "eval", "step": 90, "accuracy": score}]  # fmt: skip
            rows.append(RunRow(
                f"{name}-{seed}", LABELS.get(name, name), name, seed, LRS.get(name, 1e-4), None,
                status, config={"data": {"task": "sst2"}, "model": {"name": "m"}},
                result=result if status == "succeeded" else None, curve=curve,
                started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:02:00+00:00",
            ))  # fmt: skip
    return rows


def advice(
    predicted: dict[str, float],
    pick: str | None,
    *,
    finalists: tuple[str, ...] = (),
    half: float = 0.02,
    times: dict[str, float] | None = None,
    **fields: object,
) -> Advice:
    """An advise over ``predicted``'s arms (ids = strategies), stopped at step 10 of 90 unless
    a finalist, with an 80% interval of +- ``half``."""
    arms = []
    for name, score in predicted.items():
        done = name in finalists
        time = TrainTime(10.0, (times or {}).get(name, 100.0), "own")
        arms.append(ArmResult(
            name, LABELS.get(name, name), name, name, LRS.get(name, 1e-4), 90, 90 if done else 10,
            1 if done else 0, "finalist" if done else "stopped", ((10, score - 0.1),),
            Score(score, score - half, score + half, 0.01, "observed" if done else "fit"),
            family="head" if name == "head" else "full", train_time=time,
        ))  # fmt: skip
    plan = {"first_steps": dict.fromkeys(predicted, 10)}
    defaults: dict = {"task": "sst2", "model": "m", "optimize": "accuracy", "plan": plan}
    return Advice("adv", tuple(arms), pick=pick, **{**defaults, **fields})  # type: ignore[arg-type]


MEANS = {"full": 0.85, "bottom:3": 0.83, "head": 0.70}


def test_perfect_predictions_rank_perfectly_with_no_regret() -> None:
    check = check_advice(advice(MEANS, "full"), study(MEANS))
    assert check.spearman == pytest.approx(1.0)
    assert check.spearman_ci == pytest.approx((1.0, 1.0))
    assert check.regret == pytest.approx(0.0) and check.regret_best == pytest.approx(0.0)
    assert (check.best_eligible, check.best, check.pick_in_ci) == ("full", "full", True)
    assert check.within == 1.0 and check.coverage == 1.0


def test_a_reversed_ranking_has_spearman_minus_one() -> None:
    reversed_ = {"full": 0.70, "bottom:3": 0.78, "head": 0.85}
    check = check_advice(advice(reversed_, "head"), study(MEANS))
    assert check.spearman == pytest.approx(-1.0)
    assert check.regret == pytest.approx(15.0)
    assert check.within == 0.0 and check.above_baseline is None


def test_a_pick_two_points_below_the_best_regrets_two_points() -> None:
    check = check_advice(advice(MEANS, "bottom:3", baseline=0.5), study(MEANS))
    assert check.regret == pytest.approx(2.0) and check.regret_best == pytest.approx(2.0)
    assert check.pick_in_ci is True  # full: 85 +- 4.30 * 1 / sqrt(3) = [82.5, 87.5]
    assert check.above_baseline is True
    tight = check_advice(advice(MEANS, "bottom:3"), study(MEANS, spread=(-0.002, 0, 0.002)))
    assert tight.pick_in_ci is False and tight.regret == pytest.approx(2.0)


def test_the_best_eligible_arm_follows_advise_s_rule() -> None:
    means = {"full": 0.85, "bottom:3": 0.845, "head": 0.70}
    times = {"full": 100.0, "bottom:3": 60.0, "head": 10.0}
    rows = study(means, times=times)
    cheap = check_advice(advice(means, "bottom:3", optimize="train"), rows)
    assert (cheap.best_eligible, cheap.best) == ("bottom:3", "full")
    assert cheap.regret == pytest.approx(0.0) and cheap.regret_best == pytest.approx(0.5)
    costly = check_advice(advice(means, "full", optimize="train"), rows)
    assert costly.regret == pytest.approx(-0.5)  # above the best eligible arm, at a higher cost
    wide = check_advice(advice(means, "head", optimize="train", tolerance=0.2), rows)
    assert wide.best_eligible == "head" and wide.regret == pytest.approx(0.0)


def test_inference_cost_ties_go_to_the_better_score_as_in_advise() -> None:
    means = {"full": 0.85, "bottom:3": 0.845, "head": 0.80}
    rows = study(means, times={"full": 100.0, "bottom:3": 60.0, "head": 10.0})
    base = advice(means, "full", optimize="inference")
    arms = tuple(replace(a, inference=0.01) for a in base.arms)  # one architecture
    check = check_advice(replace(base, arms=arms), rows)
    assert check.best_eligible == "full" and check.regret == pytest.approx(0.0)


def test_an_abstention_is_reported_as_such() -> None:
    check = check_advice(advice(MEANS, None, verdict="no signal"), study(MEANS))
    assert check.pick is None and check.regret is None and check.pick_in_ci is None
    assert "advise abstained (no signal)" in check.markdown()
    assert "| advise | abstains |" in check.markdown()


def test_the_noise_ceiling_is_each_seed_against_the_others_mean() -> None:
    means = {"full": 0.85, "bottom:3": 0.84, "head": 0.83, "bottom:1": 0.82}
    spreads = {"full": (0.0, -0.03, 0.01), "bottom:3": (0.02, 0.0, -0.01),
               "head": (-0.02, 0.03, 0.0), "bottom:1": (0.01, 0.0, 0.02)}  # fmt: skip
    rows = [r for name in means for r in study({name: means[name]}, spread=spreads[name])]
    check = check_advice(advice(means, "full"), rows)
    values = {n: [means[n] + o for o in spreads[n]] for n in means}
    expected = statistics.fmean(
        stats.spearmanr([v[s] for v in values.values()],
                        [statistics.fmean(v[:s] + v[s + 1 :]) for v in values.values()])[0]
        for s in range(3)
    )  # fmt: skip
    assert check.noise_ceiling == pytest.approx(expected)
    assert check_advice(advice(MEANS, "full"), study(MEANS)).noise_ceiling == pytest.approx(1.0)


def test_the_noise_ceiling_needs_several_seeds() -> None:
    check = check_advice(advice(MEANS, "full"), study(MEANS, spread=(0.0,)))
    assert math.isnan(check.noise_ceiling) and check.pick_in_ci is None
    assert math.isnan(noise_ceiling([]))


def test_the_bootstrap_interval_is_fixed_and_holds_the_estimate() -> None:
    means = {"full": 0.85, "bottom:3": 0.84, "head": 0.70, "bottom:1": 0.80, "bottom:5": 0.75}
    guess = {"full": 0.84, "bottom:3": 0.86, "head": 0.72, "bottom:1": 0.74, "bottom:5": 0.78}
    one = check_advice(advice(guess, "full"), study(means))
    two = check_advice(advice(guess, "full"), study(means))
    assert one.spearman == pytest.approx(stats.spearmanr(list(guess.values()),
                                                         list(means.values()))[0])  # fmt: skip
    assert one.spearman_ci == two.spearman_ci
    assert -1 <= one.spearman_ci[0] <= one.spearman <= one.spearman_ci[1] <= 1


def test_calibration_counts_arms_within_3_points_and_inside_their_intervals() -> None:
    means = {"full": 0.85, "bottom:3": 0.83, "head": 0.70, "bottom:1": 0.80}
    guess = {"full": 0.85, "bottom:3": 0.848, "head": 0.745, "bottom:1": 0.75}
    check = check_advice(advice(guess, "full", finalists=("full",), half=0.03), study(means))
    assert check.within == 0.5  # off by 0, 1.8, 4.5, 5 points
    assert check.within_pruned == pytest.approx(1 / 3)
    assert check.coverage == 0.5  # the 80% interval is +- 3 points
    assert check.coverage_pruned == pytest.approx(1 / 3)
    # bottom:3's runs 82-84 inside [81.8, 87.8]; head's 69-71 and bottom:1's 79-81 outside
    assert check.coverage_runs_pruned == pytest.approx(3 / 9)


def test_costs_compare_wall_times_and_predicted_training_times() -> None:
    times = {"full": 100.0, "bottom:3": 80.0, "head": 20.0}
    predicted = {"full": 110.0, "bottom:3": 80.0, "head": 10.0}
    check = check_advice(advice(MEANS, "full", times=predicted, wall_s=120.0),
                         study(MEANS, times=times))  # fmt: skip
    assert check.study_wall_s == pytest.approx(3 * (101 + 81 + 21))
    assert check.cost_ratio == pytest.approx(120 / (3 * 203))
    assert check.study_elapsed_s == pytest.approx(9 * 120)
    assert check.time_error == pytest.approx(0.1)  # errors 10%, 0%, 50%
    assert check.advise_train_s == pytest.approx(30.0)


def test_first_rung_top_k_ranks_on_each_seed_and_costs_its_runs() -> None:
    times = {"full": 90.0, "bottom:3": 45.0, "head": 9.0}
    first = {"full": 0.5, "bottom:3": 0.6, "head": 0.4}  # bottom:3 leads at the first rung
    check = check_advice(advice(MEANS, "full"), study(MEANS, times=times, first=first))
    top1, top3, _ = check.baselines
    assert (top1.pick, top1.picks) == ("bottom:3", ("bottom:3",) * 3)
    assert top1.regret == pytest.approx(2.0) and top1.regret_best == pytest.approx(2.0)
    probe = (90 + 45 + 9) / 9  # every arm's first 10 of 90 steps
    assert top1.cost_s == pytest.approx(probe + (3 - 1 / 9) * 45)
    assert top3.pick == "full" and top3.regret == pytest.approx(0.0)
    assert top3.cost_s == pytest.approx(probe + (3 - 1 / 9) * (90 + 45 + 9))


def test_first_rung_needs_the_plan_and_an_evaluation_by_the_rung() -> None:
    check = check_advice(advice(MEANS, "full", plan={}), study(MEANS))
    assert check.baselines[0].regret is None and "first_steps" in check.baselines[0].note
    late = advice(MEANS, "full", plan={"first_steps": dict.fromkeys(MEANS, 5)})
    note = check_advice(late, study(MEANS)).baselines[1].note
    assert "eval_every" in note
    by_fraction = advice(MEANS, "full", plan={"fractions": [1 / 9, 1 / 3, 1.0]})
    assert check_advice(by_fraction, study(MEANS)).baselines[0].pick == "full"


def _ref(strategy: str, family: str, lr: float, final: float, run_id: str = "") -> Reference:
    return Reference(strategy, strategy, family, lr, "sst2", "m", "text", ((1.0, final),), final,
                     "test", run_id=run_id)  # fmt: skip


def test_the_zero_probe_prior_picks_from_references_alone() -> None:
    refs = [_ref("head (lr=0.001)", "head", 1e-3, 0.9), _ref("full", "full", 1e-4, 0.8),
            _ref("full", "full", 1e-4, 0.99, run_id="full-0")]  # fmt: skip
    check = check_advice(advice(MEANS, "full"), study(MEANS), references=refs)
    prior = check.baselines[-1]
    assert (prior.name, prior.pick, prior.cost_s) == ("zero-probe prior", "head", 0.0)
    assert prior.regret == pytest.approx(15.0)
    assert any("1 reference run(s) are the study's own" in n for n in check.notes)
    assert check_advice(advice(MEANS, "full"), study(MEANS)).baselines[-1].regret is None


def test_study_labels_with_their_own_lr_match_arms_by_strategy_and_lr() -> None:
    rows = study(MEANS)
    assert {r.strategy for r in rows} == {"full", "bottom:3", "head (lr=0.001)"}
    check = check_advice(advice(MEANS, "full"), rows)
    assert check.arm("head").values == pytest.approx((0.69, 0.70, 0.71))


def _refusal(adv: Advice, rows: list[RunRow], *needles: str) -> str:
    with pytest.raises(UserError) as err:
        check_advice(adv, rows, study="s1")
    message = str(err.value)
    assert "\n" not in message, message
    assert all(n in message for n in needles), message
    return message


def test_an_advise_arm_missing_from_the_study_is_refused_in_one_line() -> None:
    rows = study({"full": 0.85, "bottom:3": 0.83})
    _refusal(advice(MEANS, "full"), rows, "'head (lr=0.001)'", "head at lr 0.001", "no run",
             "study s1", "freezetune study")  # fmt: skip
    other_lr = [replace(r, lr=3e-4) if r.strategy == "bottom:3" else r for r in study(MEANS)]
    _refusal(advice(MEANS, "full"), other_lr, "'bottom:3'", "lr 0.0001")


def test_an_arm_whose_study_runs_all_failed_is_refused() -> None:
    rows = study({"full": 0.85, "bottom:3": 0.83}) + study({"head": 0.7}, status="failed")
    _refusal(advice(MEANS, "full"), rows, "'head (lr=0.001)'", "no succeeded run")


def test_an_arm_that_failed_in_advise_and_in_the_study_is_left_out() -> None:
    base = advice(MEANS, "full")
    head = replace(base.arm("head"), status="failed", score=None)
    adv = replace(base, arms=(*base.arms[:2], head))
    rows = study({"full": 0.85, "bottom:3": 0.83}) + study({"head": 0.7}, status="failed")
    check = check_advice(adv, rows)
    assert [a.id for a in check.arms] == ["full", "bottom:3"]
    assert any("failed in advise and in the study" in n for n in check.notes)


def test_study_arms_advise_did_not_run_are_left_out_with_a_note() -> None:
    rows = study({**MEANS, "bottom:1": 0.9})
    check = check_advice(advice(MEANS, "full"), rows)
    assert check.best == "full" and len(check.arms) == 3
    assert "1 study strategy x lr pair(s) advise did not run: left out" in check.notes


def test_another_task_or_several_train_sizes_are_refused() -> None:
    _refusal(advice(MEANS, "full", task="mrpc"), study(MEANS), "task mrpc", "sst2")
    rows = study(MEANS) + [replace(r, run_id=r.run_id + "b", train_size=500) for r in study(MEANS)]
    _refusal(advice(MEANS, "full"), rows, "train sizes")
    plan = {"train_size": 500, "first_steps": dict.fromkeys(MEANS, 10)}
    assert check_advice(advice(MEANS, "full", plan=plan), rows).arm("full").seeds == (0, 1, 2)


def test_the_check_is_json_and_markdown() -> None:
    refs = [_ref("full", "full", 1e-4, 0.8)]
    check = check_advice(advice(MEANS, "full", wall_s=60.0), study(MEANS), references=refs)
    data = json.loads(json.dumps(check.to_dict(), allow_nan=False))
    assert data["regret"] == 0.0 and data["arms"][0]["id"] == "full"
    text = check.markdown()
    assert "| full **(pick)** | stopped | 85.0 [83.0, 87.0] | 85.0 [82.5, 87.5], 3 |" in text
    assert "Spearman 1.00 over 3 arms" in text and "first rung, top 1" in text
    assert "| zero-probe prior | full | 0.0 | 0.0 | 0 |" in text


def test_an_advice_json_round_trip_checks_the_same(tmp_path: Path) -> None:
    adv = advice(MEANS, "bottom:3", finalists=("bottom:3",))
    (tmp_path / "advice.json").write_text(adv.to_json(), "utf-8")
    back = read_advice(tmp_path)
    assert check_advice(back, study(MEANS)).to_dict() == check_advice(adv, study(MEANS)).to_dict()


def test_a_run_s_score_is_what_the_study_report_reads() -> None:
    from freezetune.report.tables import run_metric

    for row in study(MEANS)[:3]:
        assert score_of(row, "accuracy") == run_metric(row, "accuracy", "best")
    assert score_of(RunRow("x", "full", "full", 0, 1e-4, None, "failed"), "accuracy") is None


def test_the_check_imports_without_torch() -> None:
    code = "import sys, freezetune.advise.check; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
