"""A run's folder: what may be written into it, and how a run resumes from it.

Nothing is written before every input has been checked (``check_out_dir`` runs first and
refuses to replace a finished or unfinished run unless asked); ``start_outputs`` is the first
write of a run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from freezetune import checkpoint
from freezetune.config import RunConfig
from freezetune.distributed import Dist
from freezetune.errors import UserError
from freezetune.records import append_jsonl, atomic_write_json

__all__ = ["RESULT_FILES", "check_out_dir", "resume_config", "start_outputs", "start_record"]

RESULT_FILES = ("result.json", "model.safetensors")


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


def resume_config(out: str | Path) -> RunConfig:
    """The config a run in ``out`` was started with (for ``--resume``)."""
    path = Path(out) / "run_config.json"
    if (Path(out) / "result.json").exists():
        raise UserError(f"{out} already finished (result.json exists); nothing to resume")
    if not path.is_file():
        raise UserError(f"{out} holds no run to resume (no run_config.json); check the folder")
    try:
        data = json.loads(path.read_text())
        return RunConfig.from_dict({**data, "out": str(out)})  # the folder may have moved
    except ValueError as err:
        raise UserError(f"{path} is not a valid run config ({err})") from None


def start_outputs(
    out: Path, config: RunConfig, resume: bool, total_steps: int, d: Dist
) -> Path | None:
    """Only now, after every check passed, is anything written; return the checkpoint to
    resume from (None for a fresh start). ``--overwrite`` replaces our files in place."""
    metrics_path = out / "metrics.jsonl"
    latest = checkpoint.find_latest(out) if resume else None
    if resume and latest is None:
        raise UserError(f"no intact checkpoint in {out}/checkpoints; start the run again")
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
    if latest is None and d.is_main:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # --overwrite: start over
        atomic_write_json(out / "run_config.json", config.to_dict())  # config.json is the model's
        metrics_path.unlink(missing_ok=True)
        append_jsonl(metrics_path, start_record(config, total_steps))
    return latest


def start_record(config: RunConfig, total_steps: int) -> dict[str, Any]:
    """The first line of a run's ``metrics.jsonl``."""
    return {"event": "start", "step": 0, "freeze": config.freeze, "total_steps": total_steps}
