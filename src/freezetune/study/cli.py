"""The ``freezetune study`` and ``freezetune report`` subcommands (wired into ``freezetune.cli``).

Precedence for a study's base run config, lowest first: defaults < ``--config`` study YAML's
``base`` < flags < ``section.key=value`` overrides. ``--strategies``/``--seeds``/``--lrs``/
``--train-sizes``/``--preset`` replace the YAML's lists.

>>> from freezetune.cli import main
>>> main(["study", "--preset", "depth", "--task", "mrpc", "--seeds", "0,1,2"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
from typing import Any

from freezetune.errors import UserError

__all__ = ["add_report_args", "add_study_args", "cmd_report", "cmd_study", "spec_from_args"]

# run-config flags a study accepts (the rest: section.key=value); dests match freezetune.cli.FLAGS
RUN_FLAGS: tuple[tuple[str, type | None, str], ...] = (
    ("--model", str, "hub id, local folder, or alias minilm-l6 (default)"),
    ("--task", str, "GLUE task: sst2 (default), mrpc, stsb, cola, rte, qnli, qqp, mnli, wnli"),
    ("--data-dir", str, "GLUE folder (default $FREEZETUNE_GLUE_DIR)"),
    ("--max-train-samples", int, "seeded random training subset"),
    ("--max-eval-samples", int, "seeded random validation subset"),
    ("--max-length", int, "truncate to this many tokens (128)"),
    ("--epochs", int, "passes over the training set"),
    ("--batch-size", int, "examples per optimizer step"),
    ("--lr", float, "base learning rate (a strategy or --lrs may override it)"),
    ("--threads", int, "torch threads per run"),
    ("--bf16", None, "bfloat16 autocast"),
)


def add_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="study YAML (name, base, strategies, seeds, lrs, train_sizes)")
    p.add_argument("--preset", help="generate strategies: depth or strategies")
    p.add_argument("--name", help="study name = folder under --out-root (default from YAML)")
    p.add_argument("--strategies", help="comma-separated --freeze specs, e.g. full,head,bottom:3")
    p.add_argument("--seeds", help="comma-separated seeds (default 0)")
    p.add_argument("--lrs", help="comma-separated learning rates: a grid axis")
    p.add_argument("--train-sizes", help="comma-separated training-set sizes: a grid axis")
    g = p.add_argument_group("base run config")
    for flag, kind, text in RUN_FLAGS:
        if kind is None:
            g.add_argument(flag, action="store_true", default=None, help=text)
        else:
            g.add_argument(flag, type=kind, help=text)
    g = p.add_argument_group("running")
    g.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    g.add_argument("--retry-failed", action="store_true", help="rerun failed runs too")
    g.add_argument("--out-root", default="runs", help="studies live in OUT_ROOT/NAME (runs)")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    from freezetune.cli import add_overrides

    add_overrides(p, "base run config field, e.g. optim.weight_decay=0")


def add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="a study folder, e.g. runs/default")


def _base(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from freezetune.cli import apply_flags
    from freezetune.config import apply_overrides

    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise UserError("study base must be a mapping of run config sections")
    base = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    return apply_overrides(apply_flags(base, args), args.overrides or [])


def spec_from_args(args: argparse.Namespace) -> Any:
    """The validated :class:`StudySpec` that a ``freezetune study`` command line describes."""
    from freezetune.config import load_yaml
    from freezetune.study.spec import StudySpec

    data = load_yaml(args.config) if args.config else {}
    if not (args.config or args.preset or args.strategies):
        raise UserError(
            "say what to compare: --config study.yaml, --preset depth|strategies, "
            "or --strategies full,head,bottom:3"
        )
    for key, value in (
        ("preset", args.preset),
        ("strategies", args.strategies),
        ("seeds", args.seeds),
        ("lrs", args.lrs),
        ("train_sizes", args.train_sizes),
    ):
        if value is not None:
            data[key] = (
                [v.strip() for v in value.split(",") if v.strip()] if key != "preset" else value
            )
    data["name"] = args.name or data.get("name") or args.preset or "study"
    data["base"] = _base(data, args)
    return StudySpec.from_dict(data)


def cmd_study(args: argparse.Namespace) -> int:
    from freezetune.study.runner import run_study

    spec = spec_from_args(args)
    if args.jobs > 1:
        print(
            f"note: {args.jobs} runs share the CPU at once, so their wall times are not "
            "comparable with runs alone; set --threads so that jobs x threads <= cores"
        )
    outcome = run_study(
        spec,
        args.out_root,
        jobs=args.jobs,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
    )
    from freezetune import distributed

    if not distributed.current().is_main:
        return 0  # rank 0 reports for the whole job
    print(
        f"study {spec.name}: {outcome.succeeded} of {outcome.planned} runs succeeded, "
        f"{outcome.failed} failed ({outcome.ran} run now, {outcome.skipped} skipped); "
        f"results in {outcome.folder}, report {outcome.report}"
    )
    if outcome.failed and not args.retry_failed:
        print("failed runs are listed in the report; rerun them with --retry-failed")
    if outcome.headline:
        print(outcome.headline)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from freezetune.report import write_report

    written = write_report(args.folder)
    print(f"wrote {written.html}, {written.markdown}, {written.csv} and {len(written.plots)} plots")
    print(written.headline)
    return 0
