"""advise's files from synthetic Advice objects: what is written, the pick, the abstention,
inference cost that cannot separate frozen variants, escaping, the JSON round trip, the plot."""

from __future__ import annotations

import dataclasses
import json
import stat
import subprocess
import sys
from pathlib import Path

from freezetune.advise.advice import Advice, ArmResult, Score, TrainTime, read_advice
from freezetune.advise.cells import arm_rows, lr_rows, ranked
from freezetune.advise.plot import plot_curves
from freezetune.advise.render import (
    FILES,
    headline,
    load_code,
    render_html,
    render_markdown,
    write_advice,
)

PNG = b"\x89PNG\r\n\x1a\n"
ARCH = "minilm-l6"
BAD_LABEL = "<b>lora</b> & co (lr=0.001)"


def _arm(arm_id: str, label: str, strategy: str, lr: float, **fields: object) -> ArmResult:
    base = ArmResult(arm_id, label, strategy, strategy, lr, 126, 126, 2, "finalist", (), None,
                     architecture=ARCH, inference=0.0012)  # fmt: skip
    return dataclasses.replace(base, **fields)


def _curve(budget: int, upto: int, top: float) -> tuple[tuple[int, float], ...]:
    return tuple((s, top - 0.2 * (1 - s / budget) ** 2) for s in range(7, upto + 1, 7))


def _observed(mean: float, n: int = 3) -> Score:
    seeds = tuple((seed, mean + 0.002 * (seed - 1)) for seed in range(n))
    return Score(mean, mean - 0.008, mean + 0.008, 0.006, "observed", n, seeds)


def advice(**fields: object) -> Advice:
    """Four arms of one architecture: two finalists (the cheaper one the pick), one arm
    stopped at the first rung with a predicted score, one failed with a hostile label."""
    arms = (
        _arm("a1", "full (lr=0.0001)", "full", 1e-4, curve=_curve(126, 126, 0.856),
             score=_observed(0.856), train_time=TrainTime(300.0, 300.0, "measured"),
             eligible=True),
        _arm("a2", "bottom:3 (lr=0.0003)", "bottom:3", 3e-4, curve=_curve(126, 126, 0.852),
             score=_observed(0.852), train_time=TrainTime(120.0, 120.0, "measured"),
             eligible=True, inference=0.00125),  # inference noise: must not separate the arms
        _arm("a3", "head (lr=0.001)", "head", 1e-3, reached=14, rung=0, status="stopped",
             curve=_curve(126, 14, 0.78), score=Score(0.78, 0.74, 0.82, 0.03, "fit+prior"),
             train_time=TrainTime(5.0, 45.0, "own")),
        _arm("a4", BAD_LABEL, "lora", 1e-3, reached=20, rung=0, status="failed",
             curve=((14, 0.5),), error="loss diverged (NaN)\nTraceback ..."),
        _arm("a5", "full (lr=0.001)", "full", 1e-3, reached=14, rung=0, status="stopped",
             curve=_curve(126, 14, 0.70), score=Score(0.70, 0.62, 0.78, 0.05, "fit"),
             train_time=TrainTime(14.0, 300.0, "sibling")),
    )  # fmt: skip
    base = Advice(
        name="sst2", arms=arms, model="minilm-l6", task="sst2", pick="a2", why="",
        run="runs/advise/a2", baseline=0.509, seed_sd=0.006, wall_s=1234.0,
        plan={"eta": 3, "fractions": [1 / 9, 1 / 3, 1.0], "sizes": [5, 2, 2]},
    )  # fmt: skip
    return dataclasses.replace(base, **fields)


def test_write_advice_writes_the_four_files_readable_by_all(tmp_path: Path) -> None:
    written = write_advice(tmp_path / "out", advice())
    paths = (written.json, written.markdown, written.html, written.plot)
    assert [p.relative_to(tmp_path / "out").as_posix() for p in paths] == list(FILES)
    for path in paths:
        assert path.is_file() and path.stat().st_size > 0
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert written.plot.read_bytes()[:8] == PNG
    assert written.headline == headline(advice())
    assert not list((tmp_path / "out").rglob(".*.tmp"))  # atomic writes leave no temp files
    assert (
        "![" in written.markdown.read_text()
        and "(plots/curves.png)" in written.markdown.read_text()
    )


def test_json_round_trips(tmp_path: Path) -> None:
    original = advice()
    written = write_advice(tmp_path, original)
    assert Advice.from_dict(json.loads(written.json.read_text())) == original
    assert read_advice(tmp_path) == original


def test_arms_are_best_first_and_the_pick_is_marked() -> None:
    assert [a.id for a in ranked(advice())] == ["a1", "a2", "a3", "a5", "a4"]  # failed last
    headers, rows, classes = arm_rows(advice())
    assert headers[:2] == ["arm", "pick"] and [r[1] for r in rows] == ["", "★ pick", "", "", ""]
    assert classes == ["", "pick", "stopped", "stopped", "below"]
    assert rows[2][3] == "stopped at rung 1, step 14 of 126"
    assert rows[2][4:7] == ["78.0 [74.0, 82.0]", "predicted (fit+prior)", "no"]
    assert rows[2][7:9] == ["45.0 s (own)", "5.0 s to step 14"]
    assert rows[1][4:7] == ["85.2 [84.4, 86.0]", "observed over 3 seeds", "yes"]
    assert rows[4][3] == "failed at step 20: loss diverged (NaN)"
    markdown = render_markdown(advice())
    assert "| bottom:3 (lr=0.0003) | ★ pick | 0.0003 | finalist | 85.2 [84.4, 86.0] |" in markdown
    assert '<tr class="pick"><td>bottom:3 (lr=0.0003)</td><td>★ pick</td>' in render_html(
        advice(), PNG
    )


def test_headline_states_the_pick_its_interval_and_its_time_against_the_best() -> None:
    text = headline(advice())
    assert text.startswith(
        "Train bottom:3 (lr=0.0003): accuracy 85.2 (80% interval 84.4 to 86.0, observed over 3 "
        "seeds), 2.0 min of training (measured); the best-scoring arm, full (lr=0.0001), scores "
        "85.6 (observed over 3 seeds) with 5.0 min of training: the pick trains 2.5x faster."
    )
    assert "least training time whose score is within 1 point of the best" in text
    why = "bottom:3 is the cheapest to train within 1 point of full (lr=0.0001)"
    assert f" {why[0].upper()}{why[1:]}." in headline(advice(why=why))  # the engine's why wins
    best = headline(advice(pick="a1"))
    assert "; it is also the best-scoring arm." in best


def test_abstention_says_no_signal_and_recommends_nothing(tmp_path: Path) -> None:
    why = "full fine-tuning's 95% CI does not clear the trivial baseline (50.9) by 2 points"
    quiet = advice(pick=None, verdict="no signal", why=why, run=None)
    text = headline(quiet)
    assert text.startswith(f"No signal: {why}. No arm is recommended.")
    assert "Train " not in text
    _, rows, classes = arm_rows(quiet)
    assert not any(r[1] for r in rows) and "pick" not in classes
    markdown = write_advice(tmp_path, quiet).markdown.read_text()
    assert "No model was trained" in markdown and "```python" not in markdown
    assert "No signal: no arm's score clears" in headline(advice(pick=None, verdict="no signal"))


def test_one_architecture_says_inference_cannot_separate_frozen_variants() -> None:
    text = headline(advice())
    sentence = "Every frozen variant is the same model at inference (1.21 ms per example); "
    assert sentence + "inference cost does not separate them." in text
    _, rows, _ = arm_rows(advice())
    assert {r[-1] for r in rows} == {"1.21"}  # one pooled figure, never the arms' noise
    engine = "Frozen variants share minilm-l6 at inference: 1.2 ms per example."
    assert headline(advice(inference_note=engine)).endswith(engine)
    assert engine in render_markdown(advice(inference_note=engine))


def test_several_architectures_name_their_figures() -> None:
    arms = advice().arms
    student = dataclasses.replace(arms[2], architecture="student-3", inference=0.0004)
    many = advice(arms=(*arms[:2], student, *arms[3:]))
    assert "inference cost separates only the architectures (minilm-l6 1.21 ms, student-3 " in (
        headline(many)
    )
    _, rows, _ = arm_rows(many)
    assert rows[2][-1] == "0.4 (student-3)"


def test_html_escapes_every_label_and_inlines_the_plot() -> None:
    page = render_html(advice(), PNG)
    assert BAD_LABEL not in page and "<b>lora</b>" not in page
    assert "&lt;b&gt;lora&lt;/b&gt; &amp; co (lr=0.001)" in page
    assert "data:image/png;base64," in page
    evil = advice(name="<script>x</script>", run='runs/"a"<i>')
    page = render_html(evil, PNG)
    assert "<script>x" not in page and "<i>" not in page


def test_chosen_lr_per_strategy_is_its_best_scoring_rate() -> None:
    headers, rows = lr_rows(advice())
    assert headers[:2] == ["strategy", "chosen lr"]
    full = next(r for r in rows if r[0] == "full")
    assert full[1] == "0.0001" and full[-1] == "0.0001, 0.001"
    lora = next(r for r in rows if r[0] == "lora")
    assert lora[1] == "— (every lr failed)"
    assert [r[0] for r in rows] == ["full", "bottom:3", "head", "lora"]


def test_load_code_follows_the_modality_and_the_plan_is_stated() -> None:
    assert 'pipeline("text-classification", model="runs/advise/a2")' in load_code(advice())
    image = load_code(advice(modality="image"))
    assert "import freezetune.vision.models" in image and '"image-classification"' in image
    markdown = render_markdown(advice())
    assert "rungs at 11.1%, 33.3%, 100% of each arm's steps; arms per rung 5 → 2 → 2" in markdown
    assert "**seed noise**: sd 0.6 points" in markdown and "**trivial baseline**: 50.9" in markdown
    assert "**advise wall time**: 20.6 min" in markdown


def test_the_plot_is_a_png_even_with_nothing_to_draw() -> None:
    assert plot_curves(advice())[:8] == PNG
    assert plot_curves(advice(arms=(), baseline=None, plan={}))[:8] == PNG


def test_rendering_imports_without_torch() -> None:
    code = "import sys, freezetune.advise.render; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
