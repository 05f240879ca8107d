"""``freezetune`` command line: ``train``, ``inspect``, ``study``, ``report`` and ``advise``.

Every bad input becomes one line on stderr naming the problem and the fix, and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from freezetune.advise.cli import add_advise_args, cmd_advise
from freezetune.config import RunConfig, apply_overrides, load_yaml
from freezetune.errors import UserError
from freezetune.flags import Flag, add_config_flags, add_overrides, apply_flags, config_flags
from freezetune.study.cli import add_report_args, add_study_args, cmd_report, cmd_study

if TYPE_CHECKING:
    from freezetune.records import RunResult

__all__ = ["build_parser", "config_from_args", "main"]

#: The run-config keys ``freezetune inspect`` takes.
INSPECT_KEYS = ("model.", "freeze")
#: ``--resume auto``: finish the run of this command's config, whatever an earlier attempt left
AUTO = "auto"


_CHOICE = re.compile(r"^argument (\S+?)(?:/\S+)?: invalid choice: '?(.*?)'? \(choose from (.*)\)$")
_VALUE = re.compile(r"^argument (\S+?)(?:/\S+)?: invalid (\w+) value: (.*)$")
_MISSING = re.compile(r"^argument (\S+?)(?:/\S+)?: expected (?:one|at least one) argument")
_KINDS = {"int": "a whole number", "float": "a number"}


def explain(message: str, prog: str) -> str:
    """An argparse error as the project's one line: the problem, then the fix.

    >>> explain("argument --report-to: invalid choice: 'wandb' (choose from 'none', 'tb')", "x")
    "--report-to 'wandb' is not a choice; choose one of: none, tb"
    >>> explain("argument --epochs: invalid int value: 'two'", "freezetune train")
    "--epochs must be a whole number, got 'two'"
    >>> explain("unrecognized arguments: --fast", "freezetune train")
    'unrecognized arguments: --fast; see freezetune train --help'
    """
    if found := _CHOICE.match(message):
        flag, value, choices = found.groups()
        names = ", ".join(c.strip().strip("'") for c in choices.split(","))
        return f"{flag} {value!r} is not a choice; choose one of: {names}"
    if found := _VALUE.match(message):
        flag, kind, value = found.groups()
        return f"{flag} must be {_KINDS.get(kind, kind)}, got {value}"
    if found := _MISSING.match(message):
        return f"{found.group(1)} needs a value; see {prog} --help"
    if message.endswith("required: command"):
        return f"name a command: {prog} train|inspect|study|report|advise (see {prog} --help)"
    return f"{message}; see {prog} --help"


class Parser(argparse.ArgumentParser):
    """An argparse parser whose every error (and its subcommands', which are made of this
    class too) is a :class:`UserError`: ``main`` prints it as one line, exit code 2, instead
    of the usage text."""

    def error(self, message: str) -> NoReturn:
        raise UserError(explain(message, self.prog))

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        found, extra = self.parse_known_args(args, namespace)
        if extra:  # name the subcommand whose help lists the arguments it takes
            command = getattr(found, "command", None)
            where = f"{self.prog} {command}" if command else self.prog
            keys = {flag.name: flag.key for flag in config_flags()}
            key = keys.get(extra[0].partition("=")[0])
            if key and hasattr(found, "overrides"):  # a run-config key it takes, not as a flag
                raise UserError(f"{where} has no flag {extra[0]}; set {key}=VALUE instead")
            raise UserError(f"unknown argument(s) {' '.join(extra)}; see {where} --help")
        return found


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (sections model, data, optim, train)")
    add_config_flags(p, config_flags())
    p.add_argument(
        "--resume",
        metavar="OUT|auto",
        help="continue the run in folder OUT from its newest checkpoint, with its own config; "
        "auto: run this command's config in --out, resuming it from its newest intact checkpoint "
        "if it has one, starting it if not, doing nothing if it finished (safe to repeat after a "
        "preemption; a different run there is refused); a folder named auto: --resume ./auto",
    )
    add_overrides(p, "config field, e.g. optim.lr=3e-4")


def _inspect_flags() -> list[Flag]:
    return [f for f in config_flags() if f.key.startswith(INSPECT_KEYS)]


def build_parser() -> argparse.ArgumentParser:
    """The ``freezetune`` parser; the run-config flags come from the config's fields."""
    parser = Parser(
        prog="freezetune",
        description="Fine-tune Hugging Face encoders with any choice of what trains.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_args(sub.add_parser("train", help="fine-tune a model on a task"))
    p = sub.add_parser("inspect", help="show the model's units and what a --freeze spec trains")
    add_config_flags(p, _inspect_flags())
    p.add_argument("--num-labels", type=int, default=2, help="size of the new head (2)")
    add_study_args(sub.add_parser("study", help="run a resumable grid of strategies x seeds"))
    add_report_args(sub.add_parser("report", help="(re)write a study's tables, plots and html"))
    add_advise_args(
        sub.add_parser("advise", help="the study's answer at a fraction of its cost (halving)")
    )
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults < --config YAML < flags < key=value overrides -> validated RunConfig."""
    data = apply_flags(load_yaml(args.config) if args.config else {}, args)
    data = apply_overrides(data, getattr(args, "overrides", []) or [])
    return RunConfig.from_dict(data)


def _best(result: RunResult) -> str:
    main, best = result.main_metric, result.best
    return "none" if best is None else f"{main} {best[main]:.4f} (epoch {best['epoch']})"


def _already_finished(config: RunConfig) -> bool:
    """``--resume auto`` on a finished run: say so in one line; nothing is written."""
    from freezetune.rundir import auto_action, read_result

    if auto_action(config) != "finished":
        return False
    if _is_main():
        best = _best(read_result(config.out))
        print(f"{config.out} already finished: best {best}; nothing to do")
    return True


#: what ``--resume OUT`` may change of the run it continues
RESUME_MAY_SET = ("train.progress", "train.stop_at_step")


def _resume_alone(args: argparse.Namespace) -> None:
    """``--resume OUT`` runs with the run's own config: any other setting would be ignored."""
    given = [
        flag.name
        for flag in config_flags()
        if flag.key not in RESUME_MAY_SET and apply_flags({}, args, [flag])
    ]
    given += ["--config"] * bool(args.config) + list(args.overrides or [])
    if given:
        raise UserError(
            f"--resume {args.resume} continues that run with its own config, so "
            f"{', '.join(given)} would be ignored; drop them (only --no-progress and "
            "--stop-at-step may be given), or start a new run"
        )


def _train_run(args: argparse.Namespace) -> RunResult | None:
    """The run ``freezetune train`` finishes, or None if it had finished already."""
    from freezetune.training import resume, train, train_or_resume

    if args.resume == AUTO:  # this command's config; the folder says whether to start or resume
        config = config_from_args(args)
        return None if _already_finished(config) else train_or_resume(config)
    if args.resume:  # the run's own config; only --no-progress and --stop-at-step may change
        _resume_alone(args)
        progress = False if args.no_progress else None
        return resume(args.resume, progress=progress, stop_at_step=args.stop_at_step)
    return train(config_from_args(args))


def cmd_train(args: argparse.Namespace) -> int:
    from freezetune.checkpointer import Paused

    try:
        run = _train_run(args)
    except Paused as paused:  # --stop-at-step: a checkpoint to continue from, not a failure
        if _is_main():
            print(paused)
        return 0
    if run is not None and _is_main():  # rank 0 reports for the whole job
        _report(run)
    return 0


def _report(run: RunResult) -> None:
    result = run.to_dict()
    print(
        f"done: best {_best(run)}, wall time {result['wall_time_s']:.1f}s, "
        f"{result['train_examples_per_s']:.1f} train examples/s; model and result.json in "
        f"{run.out}"
    )
    for split, c in (result["cache"] or {}).items():
        if c["hits"] + c["misses"]:
            where = f"file {c['file']}" if c["file"] else "RAM"
            print(
                f"cache ({split}): {c['bytes'] / 2**20:.1f} MiB in {where}, "
                f"{c['store_time_s'] + c['advance_time_s']:.1f}s to store and advance; "
                f"{c['hits']} batches read from it, {c['misses']} computed"
            )


def cmd_inspect(args: argparse.Namespace) -> int:
    from freezetune.describe import inspect_model

    config = RunConfig.from_dict(apply_flags({}, args, _inspect_flags()))
    model = config.model
    print(
        inspect_model(
            model.name,
            freeze=config.freeze,
            pooling=model.pooling,
            blocks_path=model.blocks_path,
            embeddings_paths=list(model.embeddings_paths) if model.embeddings_paths else None,
            num_labels=args.num_labels,
            trust_remote_code=model.trust_remote_code,
        )
    )
    return 0


COMMANDS = {
    "train": cmd_train,
    "inspect": cmd_inspect,
    "study": cmd_study,
    "report": cmd_report,
    "advise": cmd_advise,
}
DISTRIBUTED = ("train", "study")  # commands that join a torchrun / accelerate launch job


def _is_main() -> bool:
    from freezetune import distributed

    return distributed.current().is_main


def _say(message: str) -> None:
    """stderr, once per job: rank 0 speaks for all ranks; others only add their rank."""
    from freezetune import distributed

    d = distributed.current()
    print(
        f"freezetune{f' (rank {d.rank})' if d.enabled and not d.is_main else ''}: {message}",
        file=sys.stderr,
    )


class _NotRaised(Exception):
    """Matches nothing: stands in for ``loop.Interrupted`` while the loop was never imported."""


def _interrupted() -> type[BaseException]:
    """``loop.Interrupted`` if the loop (which needs torch) was imported, so it may be raised."""
    loop = sys.modules.get("freezetune.loop")
    found = getattr(loop, "Interrupted", None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else _NotRaised


def _lost_peer(err: RuntimeError) -> bool:
    import torch.distributed as dist

    return isinstance(err, dist.DistError) or "gloo" in str(err).lower()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UserError as err:  # a bad command line: before torch is imported or a job joined
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
            print(f"freezetune: error: {err}", file=sys.stderr)
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to print a retry command
    joined = False
    try:
        if args.command in DISTRIBUTED:
            from freezetune import distributed

            joined = distributed.init_from_env().enabled
        return COMMANDS[args.command](args)
    except UserError as err:
        _say(f"error: {err}")
        return 2
    except _interrupted() as stop:
        if _is_main():
            _say(str(stop))
        return 130
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except RuntimeError as err:
        if not joined or not _lost_peer(err):
            raise
        # a peer died or hung (its own error is in its log): end this rank too, with one line
        # instead of a hang (collectives time out after $FREEZETUNE_DIST_TIMEOUT seconds)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        _say(
            f"error: the distributed job lost a process ({type(err).__name__}: {first}); "
            "stopping; continue from the last checkpoint with: freezetune train --resume OUT"
        )
        return 1
    finally:
        if joined:
            from freezetune import distributed

            distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
