"""A run's folder: what may be written into it, and how a run resumes from it.

Nothing is written before every input has been checked (``check_out_dir`` runs first and
refuses to replace a finished or unfinished run unless asked); ``start_outputs`` is the first
write of a run. ``auto_action`` is the decision behind ``--resume auto``: a folder's run is
finished (nothing to do), resumable (it has a checkpoint) or to be started, and a folder that
holds a run of another config is refused. Which keys make it another run is declared on the
options (:func:`freezetune.options.identity`, what a study's run_id hashes): an attempt with
another ``--out``, ``--report-to``, ``--no-inference-cost``, ``--save-every`` or ``--stop-at-step``
continues the run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from freezetune import checkpoint
from freezetune.checkpointer import check_stop_at
from freezetune.config import RunConfig
from freezetune.distributed import Dist
from freezetune.errors import UserError
from freezetune.options import identity
from freezetune.records import RunResult, append_jsonl, atomic_write_json

__all__ = [
    "RESULT_FILES",
    "NoIntactCheckpoint",
    "auto_action",
    "check_out_dir",
    "first_difference",
    "read_result",
    "resume_config",
    "start_outputs",
    "start_record",
]

RESULT_FILES = ("result.json", "model.safetensors")


class NoIntactCheckpoint(UserError):
    """Resuming found checkpoints, but every one is corrupt or incomplete."""


def check_out_dir(config: RunConfig, resume: bool = False) -> Path:
    """Refuse to replace a finished run unless asked (before any work is done)."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} is a file; pass --out with a folder")
    if resume and (out / "result.json").exists():
        raise UserError(f"{out} already finished (result.json exists); nothing to resume")
    if not (config.overwrite or resume) and any((out / n).exists() for n in RESULT_FILES):
        raise UserError(
            f"output folder {out} already holds a result; pass --overwrite to replace it "
            "or choose another --out"
        )
    if not (config.overwrite or resume) and any((out / "checkpoints").glob("step-*")):
        raise UserError(
            f"output folder {out} holds an unfinished run; continue it with --resume {out} "
            "or start over with --overwrite"
        )
    return out


def _stored_config(path: Path, out: str | Path, key: str | None = None) -> RunConfig:
    """The RunConfig stored in the JSON file ``path`` (under ``key``, if given)."""
    try:  # the folder may have moved: ``out`` is where it is now
        data = json.loads(path.read_text())
        return RunConfig.from_dict({**(data[key] if key else data), "out": str(out)})
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a valid run config ({err})") from None


def resume_config(out: str | Path) -> RunConfig:
    """The config a run in ``out`` was started with (for ``--resume``)."""
    path = Path(out) / "run_config.json"
    if (Path(out) / "result.json").exists():
        raise UserError(f"{out} already finished (result.json exists); nothing to resume")
    if not path.is_file():
        raise UserError(f"{out} holds no run to resume (no run_config.json); check the folder")
    return _stored_config(path, out)


def _earlier_config(out: Path) -> RunConfig | None:
    """The config an earlier attempt in ``out`` ran with, if it got as far as writing it."""
    if (out / "run_config.json").is_file():
        return _stored_config(out / "run_config.json", out)
    if (out / "result.json").is_file():  # a finished run always has one; this is a fallback
        return _stored_config(out / "result.json", out, key="config")
    return None


def _flat(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def first_difference(ours: RunConfig, theirs: RunConfig) -> tuple[str, Any, Any] | None:
    """The first dotted key of a run's identity (:func:`freezetune.options.identity`) whose
    value differs between two configs, with both values; None if they are one run.

    >>> lr = RunConfig.from_dict({"optim": {"lr": 2e-4}, "out": "a"})
    >>> first_difference(lr, RunConfig.from_dict({"out": "b"}))
    ('optim.lr', 0.0002, 0.0001)
    >>> invocation = {"report_to": "tensorboard", "save_every": 5, "inference_cost": False}
    >>> first_difference(RunConfig.from_dict({"train": invocation}), RunConfig()) is None
    True
    """
    a, b = dict(_flat(identity(ours))), dict(_flat(identity(theirs)))
    # a key one identity leaves out (at the value its option declares) is as the config has it
    full_a, full_b = (dict(_flat(json.loads(json.dumps(c.to_dict())))) for c in (ours, theirs))
    for key in [*a, *(k for k in b if k not in a)]:
        mine, other = a.get(key, full_a.get(key)), b.get(key, full_b.get(key))
        if mine != other:
            return key, mine, other
    return None


def auto_action(config: RunConfig) -> Literal["finished", "resume", "restart", "start"]:
    """What ``--resume auto`` does with ``config.out``; it only reads the folder.

    "finished": it holds this run's ``result.json``. "resume": it holds checkpoints of this
    run. "restart": an earlier attempt of this run left files but no checkpoint; they are
    replaced. "start": nothing of this run is there (the usual checks of ``check_out_dir``
    apply). An earlier attempt's config must be the same run as ``config`` (the same identity;
    options declared ``identity=False`` may differ, and the attempt runs with ``config``'s): a
    different run is refused, or with ``config.overwrite`` replaced ("start").
    """
    out = Path(config.out)
    earlier = _earlier_config(out) if out.is_dir() else None
    differs = first_difference(config, earlier) if earlier else None
    if differs and not config.overwrite:
        key, ours, theirs = differs
        raise UserError(
            f"{out} holds a different run ({key} is {theirs!r} there, {ours!r} here); "
            "use another --out, or --overwrite to replace it"
        )
    if differs:
        return "start"
    if (out / "result.json").is_file():
        return "finished"
    if any((out / "checkpoints").glob(f"{checkpoint.PREFIX}*")):
        return "resume"
    # run_config.json is a run's first file: without it, an attempt wrote nothing to replace
    return "restart" if (out / "run_config.json").is_file() else "start"


def read_result(out: str | Path) -> RunResult:
    """The finished run in ``out``, read from its ``result.json`` (``out`` as given)."""
    path = Path(out) / "result.json"
    try:
        result = RunResult.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a valid result ({err}); check the folder") from None
    return dataclasses.replace(result, config={**result.config, "out": str(out)})


def start_outputs(
    out: Path, config: RunConfig, resume: bool, total_steps: int, d: Dist
) -> Path | None:
    """Only now, after every check passed (``--stop-at-step`` against ``total_steps`` and the
    checkpoint, the last), is anything written; return the checkpoint to resume from (None for
    a fresh start). ``--overwrite`` replaces our files in place."""
    metrics_path = out / "metrics.jsonl"
    latest = checkpoint.find_latest(out) if resume else None
    if resume and latest is None:
        raise NoIntactCheckpoint(f"no intact checkpoint in {out}/checkpoints; start the run again")
    check_stop_at(config.train.stop_at_step, total_steps, latest)  # refused before writing
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
    if latest is None and d.is_main:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # --overwrite: start over
        (out / "result.json").unlink(missing_ok=True)  # it would say a run finished that has not
        atomic_write_json(out / "run_config.json", config.to_dict())  # config.json is the model's
        metrics_path.unlink(missing_ok=True)
        append_jsonl(metrics_path, start_record(config, total_steps))
    return latest


def start_record(config: RunConfig, total_steps: int) -> dict[str, Any]:
    """The first line of a run's ``metrics.jsonl``."""
    return {"event": "start", "step": 0, "freeze": config.freeze, "total_steps": total_steps}
