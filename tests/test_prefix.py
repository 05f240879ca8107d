"""``--stop-at-step``: a run paused at a step is a prefix of the real run (issue 26's rungs).

A run paused at step N and resumed to the end is bit-identical to one that never stopped; the
paused folder holds its checkpoint of step N and the uninterrupted run's records up to N.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from freezetune.cli import main
from freezetune.errors import UserError
from freezetune.testing import TINY_RUN_ARGS, assert_one_line_error
from test_resume import assert_same_run

# 36 steps (12 an epoch), an evaluation every 5 steps and at epoch ends, no --save-every: the
# checkpoint of the stop is written whatever --save-every says
ARGS = [a for a in TINY_RUN_ARGS if a not in ("--save-every", "1")] + ["--eval-every", "5"]
TOTAL = 36


def cli(model: str, out: Path, freeze: str, *extra: str) -> list[str]:
    return ["train", "--model", model, "--freeze", freeze, *ARGS, "--out", str(out), *extra]


def records(out: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records without their timings."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if not k.endswith("time_s")} for line in lines
    ]


def untimed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if not k.endswith("time_s")}
    return [untimed(v) for v in value] if isinstance(value, list) else value


def assert_same_result(a: Path, b: Path) -> None:
    """Same weights, records and result (apart from timings): down to which eval was best."""
    assert_same_run(a, b)
    assert records(a) == records(b)
    ra, rb = (json.loads((out / "result.json").read_text()) for out in (a, b))
    keys = ("best", "final", "steps", "freeze_timeline", "trainable", "frozen_units", "config")
    for result in (ra, rb):
        result["config"].pop("out")
    assert {k: untimed(ra[k]) for k in keys} == {k: untimed(rb[k]) for k in keys}


def first_steps(whole: Path, n: int) -> list[dict[str, Any]]:
    """The uninterrupted run's records of its first ``n`` steps: all those before step ``n``,
    and step ``n``'s evaluation; a freeze change at ``n`` belongs to step ``n + 1``."""
    return [
        r for r in records(whole) if r["step"] < n or (r["step"] == n and r["event"] != "freeze")
    ]


def files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def whole(tiny_bert, tmp_path_factory):
    """The uninterrupted run of each freeze spec, run once."""
    done: dict[str, Path] = {}

    def run(freeze: str) -> Path:
        if freeze not in done:
            out = tmp_path_factory.mktemp("whole") / freeze.replace(":", "-")
            assert main(cli(tiny_bert, out, freeze)) == 0
            done[freeze] = out
        return done[freeze]

    return run


@pytest.mark.parametrize("freeze", ["full", "autofreeze:n=6"])
@pytest.mark.parametrize("stop", [7, 12], ids=["mid-epoch", "epoch-end"])
def test_paused_then_resumed_is_the_uninterrupted_run(
    tiny_bert, tmp_path, capsys, whole, freeze, stop
):
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(cli(tiny_bert, out, freeze, "--stop-at-step", str(stop))) == 0
    said = capsys.readouterr().out.strip().splitlines()
    assert said == [
        f"paused at step {stop} of {TOTAL}; continue with: freezetune train --resume {out}"
    ]
    assert [p.name for p in (out / "checkpoints").iterdir()] == [f"step-{stop:09d}"]
    assert not (out / "result.json").exists() and not (out / "model.safetensors").exists()
    assert records(out) == first_steps(whole(freeze), stop)
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert_same_result(whole(freeze), out)


def test_two_stops_with_resume_auto_then_the_end(tiny_bert, tmp_path, capsys, whole):
    """``--resume auto`` (``train_or_resume``, what study workers call) pauses, continues to
    the next stop, then to the end; each pause keeps the uninterrupted run's records so far."""
    freeze, out = "gradual:steps=5", tmp_path / "out"
    argv = [*cli(tiny_bert, out, freeze), "--resume", "auto"]
    for stop in (5, 20):
        assert main([*argv, "--stop-at-step", str(stop)]) == 0
        assert f"paused at step {stop} of {TOTAL}" in capsys.readouterr().out
        assert records(out) == first_steps(whole(freeze), stop)
    assert main(argv) == 0
    assert_same_result(whole(freeze), out)


@pytest.mark.parametrize(
    "stop, line",
    [
        (TOTAL, f"--stop-at-step {TOTAL} is not before the end of the run ({TOTAL} steps): that "
         f"is the whole run; pass a step in 1..{TOTAL - 1}, or drop --stop-at-step"),
        (99, f"--stop-at-step 99 is not before the end of the run ({TOTAL} steps): that is the "
         f"whole run; pass a step in 1..{TOTAL - 1}, or drop --stop-at-step"),
        (0, "train.stop_at_step must be >= 1, got 0 (flag --stop-at-step)"),
    ],
)  # fmt: skip
def test_a_stop_outside_the_run_is_refused(tiny_bert, tmp_path, capsys, stop, line):
    out = tmp_path / "out"
    code = main(cli(tiny_bert, out, "full", "--stop-at-step", str(stop)))
    assert assert_one_line_error(code, capsys.readouterr().err) == line
    assert not out.exists()


def test_a_stop_not_after_the_checkpoint_is_refused_and_changes_nothing(
    tiny_bert, tmp_path, capsys
):
    out = tmp_path / "out"
    assert main(cli(tiny_bert, out, "full", "--stop-at-step", "9")) == 0
    capsys.readouterr()
    before = files(out)
    checkpoint = out / "checkpoints" / "step-000000009"
    for argv in (
        ["train", "--resume", str(out), "--stop-at-step", "9"],
        [*cli(tiny_bert, out, "full"), "--resume", "auto", "--stop-at-step", "4"],
    ):
        code = main(argv)
        line = assert_one_line_error(code, capsys.readouterr().err)
        stop = argv[-1]
        assert line == (
            f"--stop-at-step {stop} is not after step 9, where this run resumes from {checkpoint}; "
            f"pass a step in 10..{TOTAL - 1}, or drop it to finish the run"
        )
        assert files(out) == before


def test_a_study_refuses_to_pause_its_runs():
    from freezetune.study import StudySpec

    with pytest.raises(UserError, match=r"^study base must not set train.stop_at_step"):
        StudySpec.from_dict({"base": {"train": {"stop_at_step": 5}}, "strategies": ["full"]})
