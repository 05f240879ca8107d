"""The ``freezetune advise`` subcommand (wired into ``freezetune.cli``).

``freezetune advise --model M --task T --preset strategies`` runs successive halving over the
strategies x their learning rates and answers what to train; ``--check STUDY`` compares that
answer with a study that ran the same arms x seeds to the end. The same settings can sit in a
study YAML under ``advise:`` (``--config``); flags win over the YAML.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from freezetune.errors import UserError
from freezetune.flags import add_config_flags, add_flag, add_overrides, flag_for
from freezetune.records import atomic_write_text
from freezetune.study.cli import (
    add_executor_args,
    base_flags,
    base_from_args,
    duration,
    executor_from_args,
    grid_from_args,
)

__all__ = ["add_advise_args", "advise_spec_from_args", "cmd_advise"]


def add_advise_args(p: argparse.ArgumentParser) -> None:
    """The ``freezetune advise`` flags: the strategies, the search, the base run config."""
    p.add_argument("--config", help="study YAML (name, base, strategies, advise: {...})")
    p.add_argument("--preset", help="strategies to compare: strategies, depth or speed")
    p.add_argument("--strategies", help="comma-separated --freeze specs, e.g. full,head,bottom:3")
    p.add_argument("--name", help="advise name = folder under --out-root (default advise-PRESET)")
    g = p.add_argument_group("search")
    g.add_argument(
        "--lrs",
        help="auto (each strategy family its own 3 rates, default), one (its middle rate) or "
        "a comma-separated list for every strategy",
    )
    g.add_argument(
        "--optimize", help="what the pick minimises: train (time, default), inference, accuracy"
    )
    g.add_argument(
        "--tolerance", help="points of the main metric a cheaper pick may lose (default 1)"
    )
    g.add_argument("--seeds", help="seeds each finalist runs, for its interval (default 3)")
    g.add_argument("--eta", help="keep 1/eta of the arms at each rung (default 3)")
    g.add_argument(
        "--references",
        help="comma-separated study folders whose finished curves inform the predictions "
        "(besides the curves shipped with freezetune)",
    )
    g.add_argument(
        "--check",
        metavar="STUDY",
        help="compare this advise (run it first) with a study of the same arms x seeds",
    )
    add_config_flags(p, base_flags(), title="base run config")
    g = add_executor_args(p)
    g.add_argument("--out-root", default="runs", help="advise folders live in OUT_ROOT/NAME")
    add_flag(g, flag_for("train.progress"))
    add_overrides(p, "base run config field, e.g. optim.weight_decay=0")


def advise_spec_from_args(args: argparse.Namespace) -> Any:
    """The validated :class:`~freezetune.advise.spec.AdviseSpec` of a command line."""
    from freezetune.advise.spec import AdviseSpec

    data = grid_from_args(args)
    settings = dict(data.get("advise") or {})
    for key in ("lrs", "optimize", "tolerance", "seeds", "eta"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    data["advise"] = settings
    data["name"] = args.name or data.get("name") or f"advise-{args.preset or 'strategies'}"
    data["base"] = base_from_args(data, args)
    return AdviseSpec.from_dict(data)


def _check(args: argparse.Namespace, folder: Path) -> int:
    from freezetune.advise.advice import read_advice
    from freezetune.advise.check import check_advice
    from freezetune.advise.references import from_folders, shipped
    from freezetune.study.store import open_store, read_rows

    study = Path(args.check)
    if not (study / "results.sqlite").is_file():
        raise UserError(f"--check {study}: no results.sqlite there; pass a study folder")
    if not (folder / "advice.json").is_file():
        raise UserError(f"no advice in {folder}; run the same command without --check first")
    conn = open_store(study / "results.sqlite")
    try:
        rows = read_rows(conn)
    finally:
        conn.close()
    references = shipped() + from_folders(_references(args))
    found = check_advice(read_advice(folder), rows, references=references, study=study.name)
    text = found.markdown()
    atomic_write_text(folder / "check.md", text + "\n")
    atomic_write_text(folder / "check.json", json.dumps(found.to_dict(), indent=1) + "\n")
    print(text)
    print(f"wrote {folder / 'check.md'} and {folder / 'check.json'}")
    return 0


def _references(args: argparse.Namespace) -> list[Path]:
    return [Path(s.strip()) for s in (args.references or "").split(",") if s.strip()]


def cmd_advise(args: argparse.Namespace) -> int:
    from freezetune.advise.engine import run_advise

    spec = advise_spec_from_args(args)
    folder = Path(args.out_root) / spec.name
    if args.check is not None:
        return _check(args, folder)
    executor = executor_from_args(args)
    if args.jobs > 1:
        print(
            f"note: {args.jobs} arms share the CPU at once, so the training times advise "
            "measures and predicts are slower than alone; set --threads so that jobs x threads "
            "<= cores"
        )
    started = time.monotonic()
    outcome = run_advise(
        spec,
        args.out_root,
        executor=executor,
        jobs=args.jobs if executor == "local" else 1,
        progress=not args.no_progress,
        references=_references(args),
    )
    print(f"advise {spec.name}: {len(outcome.advice.arms)} arms in "
          f"{duration(time.monotonic() - started)}; report {folder / 'advice.html'}")  # fmt: skip
    print(outcome.headline)
    return 0
