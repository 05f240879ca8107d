"""Bring your own strategy: a policy or executor from outside freezetune works like a built-in."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from freezetune import RunConfig
from freezetune.cli import main
from freezetune.errors import UserError
from freezetune.freezing import parse_freeze
from freezetune.freezing.policies import Progress, make_policy
from freezetune.freezing.registry import POLICIES, RunShape, register_policy
from freezetune.study.executors import EXECUTORS, ExecutorOptions, make_executor, register_executor
from freezetune.testing import assert_one_line_error
from freezetune.training import resume, train
from test_resume import _stop_at


@dataclass(frozen=True)
class StepwiseOptions:
    """``stepwise[:every=2]``."""

    every: int = field(default=2, metadata={"help": "decisions per newly frozen block"})

    def __post_init__(self) -> None:
        if self.every < 1:
            raise UserError(f"every={self.every} must be >= 1")


@dataclass
class Stepwise:
    """A plugin's adaptive policy: one more block freezes every ``every`` gradient decisions.

    Its count of decisions is state: without exact resume, a resumed run freezes later.
    """

    num_blocks: int
    every: int
    name: str = "stepwise"
    count: int = 0

    def frozen_units(self, progress: Progress) -> int:
        blocks = min(self.num_blocks - 1, self.count // self.every)
        return blocks + 1 if blocks else 0

    def lr_factor(self, unit: int, progress: Progress) -> float | None:
        return None

    def is_decision_step(self, step: int) -> bool:
        return step > 0 and step % 2 == 0

    def decide(self, norms: list[float], step: int = 0) -> int:
        self.count += 1
        return min(self.num_blocks - 1, self.count // self.every)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])


def stepwise(options: StepwiseOptions, run: RunShape) -> Stepwise:
    return Stepwise(run.num_blocks, options.every)


@pytest.fixture
def registered():
    register_policy("stepwise", stepwise, options=StepwiseOptions, positional="every")
    yield "stepwise"
    POLICIES.unregister("stepwise")


def test_a_registered_policy_parses_like_a_built_in(registered):
    spec = parse_freeze("stepwise:3+llrd:0.9")
    assert (spec.schedule, spec.schedule_options, spec.llrd) == ("stepwise", (("every", 3),), 0.9)
    policy = make_policy(spec, 4, 100, 10, 0.1)
    assert isinstance(policy, Stepwise) and policy.every == 3
    assert POLICIES.source("stepwise") == "test_plugins"
    assert POLICIES.code_modules() == ["test_plugins"]  # what a study's workers import
    with pytest.raises(UserError, match=r"--freeze stepwise:every=0: every=0 must be >= 1"):
        parse_freeze("stepwise:every=0")
    with pytest.raises(UserError, match="unknown option 'n'; choose from every"):
        parse_freeze("stepwise:n=1")
    with pytest.raises(UserError, match="one schedule"):
        parse_freeze("stepwise+gradual")


def test_names_are_refused_twice_and_unknown_ones_list_the_choices(registered):
    with pytest.raises(UserError, match="'gradual' from package 'test_plugins' clashes"):
        register_policy("gradual", stepwise, options=StepwiseOptions)
    with pytest.raises(UserError, match="cannot use"):
        register_policy("bottom", stepwise, options=StepwiseOptions)
    with pytest.raises(UserError, match="no option 'k'"):
        register_policy("other", stepwise, options=StepwiseOptions, positional="k")
    with pytest.raises(UserError) as err:
        parse_freeze("stepwsie")
    _, said, plugins = str(err.value).rpartition("; or a plugin policy: ")
    assert said and "stepwise" in plugins.split(", ")  # (and any installed: lisa)
    with pytest.raises(UserError, match=r"choose one of: two-phase, gradual, .*stepwise"):
        POLICIES.get("nope")


def test_the_policy_trains_with_llrd_and_resumes_exactly(registered, tiny_bert, tmp_path):
    cfg = RunConfig.from_dict(
        {
            "model": {"name": tiny_bert},
            "data": {"task": "sst2", "max_train_samples": 32, "max_eval_samples": 8},
            "train": {
                "epochs": 2,
                "batch_size": 8,
                "progress": False,
                "save_every": 1,
                "keep_checkpoints": 100,
            },
            "freeze": "stepwise:1+llrd:0.9",
            "out": str(tmp_path / "out"),
        }
    )
    out = Path(cfg.out)
    whole = train(cfg)
    result = json.loads((out / "result.json").read_text())
    assert result["policy_state"] == {"count": 4}  # 8 steps, a decision every 2
    freezes = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in freezes if e["event"] == "freeze"][:2] == [0, 2]
    weights = load_file(out / "model.safetensors")
    # stop right after step 3's checkpoint (one decision taken), as a killed run would
    _stop_at(out, 3)
    again = resume(out)
    assert again.steps == whole.steps
    assert json.loads((out / "result.json").read_text())["policy_state"] == {"count": 4}
    resumed = load_file(out / "model.safetensors")
    assert all(torch.equal(resumed[k], v) for k, v in weights.items())


def test_inspect_takes_the_registered_policy(registered, tiny_bert, capsys):
    assert main(["inspect", "--model", tiny_bert, "--freeze", "stepwise:2+llrd:0.9"]) == 0
    assert "freeze stepwise:2+llrd:0.9" in capsys.readouterr().out


def _install(root: Path, package: str, module: str, source: str, group: str, name: str) -> None:
    """A package as pip leaves it: a module and a ``.dist-info`` with its entry points."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{package.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {module}:PLUGIN\n")


HALVES = """
    from dataclasses import dataclass
    from freezetune.freezing import PolicyPlugin
    from freezetune.freezing.schedules import Static

    @dataclass(frozen=True)
    class Options:
        k: int = 1

    PLUGIN = PolicyPlugin(lambda options, run: Static(options.k + 1), Options, "k")
"""


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Plugins installed in ``tmp_path``, found by a fresh look at the entry points."""
    monkeypatch.syspath_prepend(str(tmp_path))
    POLICIES.refresh()
    EXECUTORS.refresh()
    yield tmp_path
    for name in ("halves", "broken", "wrong"):
        POLICIES.unregister(name)
    POLICIES.refresh()
    EXECUTORS.refresh()


def test_an_installed_policy_is_found_through_its_entry_point(installed):
    # (not "lisa": the example package, freezetune-examples, installs that name)
    _install(installed, "freezetune-halves", "ft_halves", HALVES, "freezetune.policies", "halves")
    spec = parse_freeze("halves:2+llrd:0.5")
    assert make_policy(spec, 4, 10, 5, 0.0).frozen_units(Progress(0, 10, 5)) == 3
    assert POLICIES.source("halves") == "freezetune-halves"


def test_a_broken_plugin_is_one_line_naming_its_package(installed, tiny_bert, capsys):
    broken = "raise ImportError('No module named torch_lisa')\n"
    _install(installed, "freezetune-broken", "ft_broken", broken, "freezetune.policies", "broken")
    wrong = "PLUGIN = print\n"
    _install(installed, "freezetune-wrong", "ft_wrong", wrong, "freezetune.policies", "wrong")
    code = main(["inspect", "--model", tiny_bert, "--freeze", "broken+llrd:0.9"])
    assert assert_one_line_error(code, capsys.readouterr().err).endswith(
        "policy 'broken' from package 'freezetune-broken' failed to load: "
        "ImportError: No module named torch_lisa; reinstall it or uninstall it"
    )
    with pytest.raises(UserError, match="'wrong' from package 'freezetune-wrong' is a builtin_"):
        parse_freeze("wrong")
    assert parse_freeze("bottom:1").prefix == 2  # the others still work


def test_an_executor_plugin_is_found_by_name(installed):
    made: list[ExecutorOptions] = []

    def inline(options: ExecutorOptions) -> Any:
        made.append(options)
        return "an executor"

    register_executor("inline", inline, source="freezetune-inline")
    try:
        assert make_executor("inline", jobs=3) == "an executor"
        assert made == [ExecutorOptions(jobs=3)]
        assert "inline" in EXECUTORS
        with pytest.raises(UserError, match="choose one of: local, ray, inline"):
            make_executor("spark")
    finally:
        EXECUTORS.unregister("inline")
    source = "PLUGIN = lambda options: ('slurm', options.jobs)\n"
    _install(installed, "freezetune-slurm", "ft_slurm", source, "freezetune.executors", "slurm")
    EXECUTORS.refresh()  # installed while this process runs
    assert make_executor("slurm", jobs=2) == ("slurm", 2)
    EXECUTORS.unregister("slurm")
