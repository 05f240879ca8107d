"""The ``freezetune study`` and ``freezetune report`` subcommands (wired into ``freezetune.cli``).

Precedence for a study's base run config, lowest first: defaults < ``--config`` study YAML's
``base`` < flags < ``section.key=value`` overrides. ``--strategies``/``--seeds``/``--lrs``/
``--train-sizes``/``--preset`` replace the YAML's lists.

>>> from freezetune.cli import main
>>> main(["study", "--preset", "depth", "--task", "mrpc", "--seeds", "0,1,2"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from freezetune.config import apply_overrides, copy_data, load_yaml
from freezetune.errors import UserError
from freezetune.flags import (
    Flag,
    add_config_flags,
    add_flag,
    add_overrides,
    apply_flags,
    config_flags,
    flag_for,
)

__all__ = [
    "add_executor_args",
    "add_report_args",
    "add_study_args",
    "base_flags",
    "base_from_args",
    "cmd_report",
    "cmd_study",
    "executor_from_args",
    "grid_from_args",
    "retry_command",
    "spec_from_args",
]


def base_flags() -> list[Flag]:
    """The run-config flags a study takes (declared with ``study=True``); the rest: key=value."""
    return [flag for flag in config_flags() if flag.study]


def add_study_args(p: argparse.ArgumentParser) -> None:
    """The ``freezetune study`` flags: the grid, the base run config, and how it runs."""
    p.add_argument("--config", help="study YAML (name, base, strategies, seeds, lrs, train_sizes)")
    p.add_argument("--preset", help="generate strategies: depth, strategies or speed")
    p.add_argument("--name", help="study name = folder under --out-root (default from YAML)")
    p.add_argument("--strategies", help="comma-separated --freeze specs, e.g. full,head,bottom:3")
    p.add_argument("--seeds", help="comma-separated seeds (default 0)")
    p.add_argument("--lrs", help="comma-separated learning rates: a grid axis")
    p.add_argument("--train-sizes", help="comma-separated training-set sizes: a grid axis")
    add_config_flags(
        p,
        base_flags(),
        title="base run config",
        description="a strategy's own settings and the --lrs/--train-sizes axes win over these",
    )
    g = add_executor_args(p)
    g.add_argument(
        "--keep-models",
        default="all",
        help="whose saved weights stay: all (default), best (one per strategy) or none",
    )
    g.add_argument("--retry-failed", action="store_true", help="rerun failed runs too")
    g.add_argument("--out-root", default="runs", help="studies live in OUT_ROOT/NAME (runs)")
    add_flag(g, flag_for("train.progress"))  # --no-progress: for the runner, not in the base
    add_overrides(p, "base run config field, e.g. optim.weight_decay=0")


def add_executor_args(p: argparse.ArgumentParser) -> Any:
    """``--executor``, ``--jobs``, ``--ray-address``, ``--run-resources``; the group."""
    g = p.add_argument_group("running")
    g.add_argument(
        "--executor",
        default="local",
        help="where runs train: local (processes here, --jobs at a time) or ray (a Ray cluster)",
    )
    g.add_argument("--jobs", type=int, default=1, help="runs at once, local executor (default 1)")
    g.add_argument(
        "--ray-address",
        help="Ray cluster to join: auto or HOST:PORT (default: RAY_ADDRESS, else a local one)",
    )
    g.add_argument(
        "--run-resources",
        help="what each run asks of the Ray cluster, e.g. cpu=2,gpu=1 (default cpu=1)",
    )
    return g


def add_report_args(p: argparse.ArgumentParser) -> None:
    """The ``freezetune report`` arguments: one study folder, or several to contrast."""
    p.add_argument(
        "folders",
        nargs="+",
        metavar="folder",
        help="a study folder, e.g. runs/default; two or more: a contrast report of them "
        "(e.g. an image study and a text study)",
    )
    p.add_argument(
        "--out",
        help="contrast report folder (default: next to the first study, contrast-NAME1-NAME2)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the contrast report files in --out"
    )


def base_from_args(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The base run config: the YAML's ``base``, then flags, then ``key=value`` overrides."""
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise UserError("study base must be a mapping of run config sections")
    return apply_overrides(apply_flags(copy_data(base), args, base_flags()), args.overrides or [])


def grid_from_args(args: argparse.Namespace, lists: tuple[str, ...] = ()) -> dict[str, Any]:
    """The study YAML (``--config``) with the command line's ``--preset``, ``--strategies`` and
    the comma-separated ``lists`` (e.g. ``seeds``) laid over it; its base not yet built."""
    data = load_yaml(args.config) if args.config else {}
    if not (args.config or args.preset or args.strategies):
        raise UserError(
            "say what to compare: --config study.yaml, --preset depth|strategies|speed, "
            "or --strategies full,head,bottom:3"
        )
    if args.preset is not None:
        data["preset"] = args.preset
    for key in ("strategies", *lists):
        value = getattr(args, key)
        if value is not None:
            data[key] = [v.strip() for v in value.split(",") if v.strip()]
    return data


def spec_from_args(args: argparse.Namespace) -> Any:
    """The validated :class:`StudySpec` that a ``freezetune study`` command line describes."""
    from freezetune.study.spec import StudySpec

    data = grid_from_args(args, ("seeds", "lrs", "train_sizes"))
    data["name"] = args.name or data.get("name") or args.preset or "study"
    data["base"] = base_from_args(data, args)
    return StudySpec.from_dict(data)


def executor_from_args(args: argparse.Namespace) -> Any:
    """``--executor`` and its options, checked before anything runs ("local" stays a name:
    under torchrun the runner replaces it)."""
    from freezetune.study.executors import make_executor

    if args.executor == "local" and args.ray_address is None and args.run_resources is None:
        make_executor("local", jobs=args.jobs)  # checks --jobs
        return "local"
    return make_executor(
        args.executor,
        jobs=args.jobs,
        ray_address=args.ray_address,
        run_resources=args.run_resources,
    )


def cmd_study(args: argparse.Namespace) -> int:
    from freezetune.study.executors.keep import check_keep
    from freezetune.study.runner import run_study

    spec = spec_from_args(args)
    executor = executor_from_args(args)
    check_keep(args.keep_models)
    if args.jobs > 1:
        print(
            f"note: {args.jobs} runs share the CPU at once, so their wall times are not "
            "comparable with runs alone; set --threads so that jobs x threads <= cores"
        )
    started = time.monotonic()
    outcome = run_study(
        spec,
        args.out_root,
        jobs=args.jobs if executor == "local" else 1,
        executor=executor,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
        keep_models=args.keep_models,
    )
    from freezetune import distributed

    if not distributed.current().is_main:
        return 0  # rank 0 reports for the whole job
    print(
        f"study {spec.name}: {outcome.succeeded} of {outcome.planned} runs succeeded, "
        f"{outcome.failed} failed ({outcome.ran} run now, {outcome.skipped} skipped) in "
        f"{duration(time.monotonic() - started)}; results in {outcome.folder}, report "
        f"{outcome.report}"
    )
    if outcome.headline:
        print(outcome.headline)
    if outcome.failed:
        print(
            f"error: {outcome.failed} of {outcome.planned} runs failed (their errors are in the "
            f"report); retry them with: {retry_command(args.argv)}",
            file=sys.stderr,
        )
        return 1
    return 0


def retry_command(argv: list[str]) -> str:
    """The command line that reruns this study's failed runs too.

    >>> retry_command(["study", "--config", "my study.yaml"])
    "freezetune study --config 'my study.yaml' --retry-failed"
    """
    retry = [] if "--retry-failed" in argv else ["--retry-failed"]
    return shlex.join(["freezetune", *argv, *retry])


def duration(seconds: float) -> str:
    """``"17 min 48 s"``, ``"52 s"``, ``"1 h 02 min"``.

    >>> duration(1068.4), duration(52.2), duration(3720)
    ('17 min 48 s', '52 s', '1 h 02 min')
    """
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def _distinct(folders: list[str]) -> list[Path]:
    """The study folders of a contrast; the same study named twice is refused."""
    seen: dict[Path, str] = {}
    for folder in folders:
        where = Path(folder).resolve()
        if where in seen:
            raise UserError(
                f"{folder} and {seen[where]} are the same study; a contrast needs two "
                "different study folders, e.g. freezetune report runs/vision runs/default"
            )
        seen[where] = folder
    return [Path(f) for f in folders]


def _contrast_out(args: argparse.Namespace) -> Path:
    """Where a contrast report goes; an existing non-empty folder only with --overwrite."""
    folders = _distinct(args.folders)
    names = "-".join(f.resolve().name for f in folders)
    out = Path(args.out) if args.out else folders[0].resolve().parent / f"contrast-{names}"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UserError(
            f"{out} already exists and is not empty; pass --overwrite to replace its contrast "
            "report, or choose another --out"
        )
    return out


def cmd_report(args: argparse.Namespace) -> int:
    from freezetune.report import write_report

    if len(args.folders) > 1:
        from freezetune.report.contrast import contrast

        out = _contrast_out(args)
        found = contrast(_distinct(args.folders), out)
        print(f"wrote {', '.join(str(path) for path in found.files)}")
        print("\n".join([*(side.sentence for side in found.sides), found.closing]))
        return 0
    if args.out is not None or args.overwrite:
        raise UserError(
            "--out and --overwrite are for a contrast report of two or more study folders; "
            "a single study's report is always written into its own folder"
        )
    written = write_report(args.folders[0])
    print(f"wrote {written.html}, {written.markdown}, {written.csv} and {len(written.plots)} plots")
    print(written.headline)
    return 0
