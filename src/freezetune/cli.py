"""``freezetune`` command line: ``train``, ``inspect``, ``study`` and ``report``.

Every bad input becomes one line on stderr naming the problem and the fix, and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from freezetune.errors import UserError
from freezetune.loop import Interrupted
from freezetune.study.cli import add_report_args, add_study_args, cmd_report, cmd_study

__all__ = ["build_parser", "main"]

# CLI flag -> (config section or None for top level, key)
FLAGS: dict[str, tuple[str | None, str]] = {
    "model": ("model", "name"),
    "pooling": ("model", "pooling"),
    "blocks_path": ("model", "blocks_path"),
    "embeddings_paths": ("model", "embeddings_paths"),
    "trust_remote_code": ("model", "trust_remote_code"),
    "task": ("data", "task"),
    "data_dir": ("data", "data_dir"),
    "train": ("data", "train_file"),
    "validation": ("data", "validation_file"),
    "text_columns": ("data", "text_columns"),
    "label_column": ("data", "label_column"),
    "regression": ("data", "regression"),
    "max_length": ("data", "max_length"),
    "max_train_samples": ("data", "max_train_samples"),
    "max_eval_samples": ("data", "max_eval_samples"),
    "group_by_length": ("data", "group_by_length"),
    "lr": ("optim", "lr"),
    "head_lr": ("optim", "head_lr"),
    "weight_decay": ("optim", "weight_decay"),
    "warmup_ratio": ("optim", "warmup_ratio"),
    "max_grad_norm": ("optim", "max_grad_norm"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "eval_batch_size": ("train", "eval_batch_size"),
    "grad_accum": ("train", "grad_accum"),
    "bf16": ("train", "bf16"),
    "seed": ("train", "seed"),
    "eval_every": ("train", "eval_every"),
    "threads": ("train", "threads"),
    "save_every": ("train", "save_every"),
    "keep_checkpoints": ("train", "keep_checkpoints"),
    "skip_nonfinite": ("train", "skip_nonfinite"),
    "cache_dtype": ("train", "cache_dtype"),
    "cache_dir": ("train", "cache_dir"),
    "cache_budget_mb": ("train", "cache_budget_mb"),
    "freeze": (None, "freeze"),
    "out": (None, "out"),
    "overwrite": (None, "overwrite"),
}


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", help="hub id, local folder, or alias minilm-l6 (default)")
    g.add_argument("--pooling", choices=["pooler", "cls", "mean", "last"], help="head input")
    g.add_argument("--blocks-path", help="qualified name of the blocks' nn.ModuleList")
    g.add_argument("--embeddings-paths", help="comma-separated modules before the first block")
    g.add_argument(
        "--trust-remote-code",
        action="store_true",
        default=None,
        help="run code shipped with a hub model (off by default)",
    )
    g.add_argument(
        "--freeze",
        help="full, head, embeddings, bottom:K, top:K, bitfit, "
        "pattern:REGEX, joined with + (default full)",
    )


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (sections model, data, optim, train)")
    g = p.add_argument_group("data")
    g.add_argument(
        "--task", help="GLUE task: sst2 (default), mrpc, stsb, cola, rte, qnli, qqp, mnli, wnli"
    )
    g.add_argument("--data-dir", help="GLUE folder (default $FREEZETUNE_GLUE_DIR)")
    g.add_argument("--train", help="your own CSV/TSV/JSONL training file")
    g.add_argument("--validation", help="your own validation file")
    g.add_argument("--text-columns", help="one or two text columns, comma-separated")
    g.add_argument("--label-column", help="label column of your files")
    g.add_argument("--regression", action="store_true", default=None, help="real-valued labels")
    g.add_argument("--max-length", type=int, help="truncate to this many tokens (128)")
    g.add_argument("--max-train-samples", type=int, help="seeded random training subset")
    g.add_argument("--max-eval-samples", type=int, help="seeded random validation subset")
    g.add_argument("--group-by-length", action="store_true", default=None)
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, help="peak learning rate (1e-4)")
    g.add_argument("--head-lr", type=float, help="learning rate of the new head (= --lr)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--warmup-ratio", type=float)
    g.add_argument("--max-grad-norm", type=float)
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--grad-accum", type=int)
    g.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast")
    g.add_argument("--seed", type=int)
    g.add_argument("--eval-every", type=int, help="also evaluate every N steps")
    g.add_argument("--threads", type=int, help="torch threads")
    g.add_argument("--save-every", type=int, help="checkpoint every N steps and each epoch end")
    g.add_argument("--keep-checkpoints", type=int, help="newest checkpoints kept (2)")
    g.add_argument(
        "--skip-nonfinite",
        action="store_true",
        default=None,
        help="skip a batch whose loss is NaN/inf instead of stopping",
    )
    g.add_argument(
        "--resume", metavar="OUT", help="continue the run in OUT from its newest checkpoint"
    )
    g.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute frozen units every step instead of caching their output",
    )
    g.add_argument("--cache-dtype", choices=["float32", "bfloat16", "float16"])
    g.add_argument("--cache-dir", help="folder for a memory-mapped cache over the budget")
    g.add_argument("--cache-budget-mb", type=float, help="RAM budget of the cache (4096)")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="output folder (default runs/train)")
    g.add_argument("--overwrite", action="store_true", default=None)
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_overrides(p, "config field, e.g. optim.lr=3e-4")


def add_overrides(p: argparse.ArgumentParser, what: str) -> None:
    """The trailing ``section.key=value`` arguments (``freezetune train`` and ``study``)."""
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help=f"override any {what}")


def apply_flags(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Set every run-config flag given on the command line in its section of ``data``."""
    for flag, (section, key) in FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if section is None:
            data[key] = value
            continue
        if not isinstance(data.setdefault(section, {}), dict):
            raise UserError(f"config section {section} must be a mapping of keys to values")
        data[section][key] = value
    return data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="freezetune",
        description="Fine-tune Hugging Face encoders with any choice of what trains.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="fine-tune a model on a task")
    _add_model_args(p)
    _add_train_args(p)
    p = sub.add_parser("inspect", help="show the model's units and what a --freeze spec trains")
    _add_model_args(p)
    p.add_argument("--num-labels", type=int, default=2, help="size of the new head (2)")
    add_study_args(sub.add_parser("study", help="run a resumable grid of strategies x seeds"))
    add_report_args(sub.add_parser("report", help="(re)write a study's tables, plots and html"))
    return parser


def config_from_args(args: argparse.Namespace) -> Any:
    """Defaults < --config YAML < flags < key=value overrides -> validated RunConfig."""
    from freezetune.config import RunConfig, apply_overrides, load_yaml

    data = apply_flags(load_yaml(args.config) if args.config else {}, args)
    if getattr(args, "no_progress", False):
        data.setdefault("train", {})["progress"] = False
    if getattr(args, "no_cache", False):
        data.setdefault("train", {})["cache"] = False
    data = apply_overrides(data, getattr(args, "overrides", []) or [])
    return RunConfig.from_dict(data)


def cmd_train(args: argparse.Namespace) -> int:
    from freezetune.train import resume_config, train

    if args.resume:  # the run's own config; only --no-progress may change
        config = resume_config(args.resume)
        if args.no_progress:
            quiet = dataclasses.replace(config.train, progress=False)
            config = dataclasses.replace(config, train=quiet)
        result = train(config, resume=True)
    else:
        config = config_from_args(args)
        result = train(config)
    if not _is_main():
        return 0  # rank 0 reports for the whole job
    main = result["main_metric"]
    print(
        f"done: best {main} {result['best'][main]:.4f} (epoch {result['best']['epoch']}), "
        f"wall time {result['wall_time_s']:.1f}s, {result['train_examples_per_s']:.1f} train "
        f"examples/s; model and result.json in {config.out}"
    )
    for split, c in (result["cache"] or {}).items():
        if c["hits"] + c["misses"]:
            where = f"file {c['file']}" if c["file"] else "RAM"
            print(
                f"cache ({split}): {c['bytes'] / 2**20:.1f} MiB in {where}, "
                f"{c['store_time_s'] + c['advance_time_s']:.1f}s to store and advance; "
                f"{c['hits']} batches read from it, {c['misses']} computed"
            )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from freezetune.describe import inspect_model

    print(
        inspect_model(
            args.model or "minilm-l6",
            freeze=args.freeze or "full",
            pooling=args.pooling,
            blocks_path=args.blocks_path,
            embeddings_paths=args.embeddings_paths.split(",") if args.embeddings_paths else None,
            num_labels=args.num_labels,
            trust_remote_code=bool(args.trust_remote_code),
        )
    )
    return 0


COMMANDS = {"train": cmd_train, "inspect": cmd_inspect, "study": cmd_study, "report": cmd_report}
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


def _lost_peer(err: RuntimeError) -> bool:
    import torch.distributed as dist

    return isinstance(err, dist.DistError) or "gloo" in str(err).lower()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    joined = False
    try:
        if args.command in DISTRIBUTED:
            from freezetune import distributed

            joined = distributed.init_from_env().enabled
        return COMMANDS[args.command](args)
    except UserError as err:
        _say(f"error: {err}")
        return 2
    except Interrupted as stop:
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
