"""The teacher: a finished freezetune run, checked against the student's task and tokenizer
before anything is written, and run once over the training set.

>>> load_teacher("runs/full", task, tokenizer, texts).result["freeze"]  # doctest: +SKIP
'full'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from freezetune import distributed
from freezetune.distill.config import STUDY_TEACHER
from freezetune.distributed import Dist
from freezetune.errors import UserError
from freezetune.precision import autocast
from freezetune.tasks import TaskInfo

__all__ = ["Teacher", "load_teacher", "logits_of", "teacher_logits"]


@dataclass(frozen=True)
class Teacher:
    """A finished run folder: its ``result.json`` and its saved model (loaded on demand)."""

    folder: Path
    result: dict[str, Any]

    def load(self) -> nn.Module:
        """The saved model, in eval mode (safetensors; no remote code)."""
        from transformers import AutoModelForSequenceClassification

        import freezetune.classifier  # noqa: F401  (registers freezetune's head)

        model = AutoModelForSequenceClassification.from_pretrained(self.folder)
        return model.eval()

    def about(self) -> dict[str, Any]:
        """What the student's ``result.json`` says of its teacher."""
        return {
            "teacher": str(self.folder),
            "teacher_freeze": self.result.get("freeze"),
            "teacher_wall_time_s": self.result.get("wall_time_s"),
        }


def _finished_result(folder: Path) -> dict[str, Any]:
    if folder.as_posix() == STUDY_TEACHER:
        raise UserError(
            f"--teacher {STUDY_TEACHER} means a study's same-seed full run; outside a study "
            "pass a finished run folder (e.g. --teacher runs/full)"
        )
    if not folder.is_dir():
        raise UserError(
            f"teacher folder {folder} does not exist; train it first (freezetune train "
            f"--freeze full --out {folder}) or fix --teacher"
        )
    path = folder / "result.json"
    if not path.is_file():
        raise UserError(
            f"teacher {folder} has not finished (no result.json); finish it with "
            f"freezetune train --resume {folder}, or pass another --teacher"
        )
    try:
        result = json.loads(path.read_text())
    except ValueError:
        raise UserError(f"teacher {folder}'s result.json is not valid JSON; retrain it") from None
    if not isinstance(result, dict) or result.get("status") != "succeeded":
        raise UserError(f"teacher {folder} did not succeed; pass a finished run as --teacher")
    _check_saved(folder)
    return result


#: what a saved model's weights are (``save_pretrained``: safetensors, older runs: .bin)
WEIGHTS = ("*.safetensors", "pytorch_model*.bin")


def _check_saved(folder: Path) -> None:
    """The teacher's saved model is there: its config and weights (a study's
    ``--keep-models none|best`` removes the weights and leaves the rest)."""
    retrain = (
        f"train it again (freezetune train --freeze full --out {folder} --overwrite) or "
        "pass another --teacher"
    )
    if not (folder / "config.json").is_file():
        raise UserError(f"teacher {folder} has no saved model (no config.json); {retrain}")
    if not any(path.is_file() for pattern in WEIGHTS for path in folder.glob(pattern)):
        raise UserError(
            f"teacher {folder} has no saved weights (removed, e.g. by a study's --keep-models "
            f"none or best); {retrain}"
        )


def _check_task(folder: Path, result: dict[str, Any], task: TaskInfo) -> None:
    if result.get("task") != task.name:
        raise UserError(
            f"teacher {folder} was trained on task {result.get('task')!r}, this run is "
            f"{task.name!r}; pass a teacher of the same task"
        )
    try:
        model_config = json.loads((folder / "config.json").read_text())
    except ValueError:
        raise UserError(f"teacher {folder}'s config.json is not valid JSON; retrain it") from None
    id2label = model_config.get("id2label") or {}
    names = tuple(id2label[k] for k in sorted(id2label, key=int))
    expected = task.labels if not task.is_regression else ("score",)
    if model_config.get("num_labels", len(names)) != task.num_labels or (
        names and expected and names != tuple(expected)
    ):
        raise UserError(
            f"teacher {folder} predicts labels {list(names)}, this run's task has "
            f"{list(expected or ())}; pass a teacher trained on the same label set"
        )


def _check_tokenizer(folder: Path, student: Any, texts: Sequence[tuple[str, ...]]) -> None:
    """The student reads the teacher's logits for the same token ids: same tokenizer."""
    from transformers import AutoTokenizer

    teacher = AutoTokenizer.from_pretrained(folder)
    for pair in texts:
        if teacher(*pair)["input_ids"] != student(*pair)["input_ids"]:
            raise UserError(
                f"teacher {folder}'s tokenizer splits {pair[0][:40]!r} differently from the "
                "student's; a student must share its teacher's tokenizer (pick another --model)"
            )


def load_teacher(
    folder: str | Path, task: TaskInfo, tokenizer: Any, texts: Sequence[tuple[str, ...]]
) -> Teacher:
    """Check that ``folder`` is a finished run of ``task`` with the student's tokenizer
    (compared on ``texts``, a few training examples); raise one UserError line otherwise."""
    path = Path(folder)
    result = _finished_result(path)
    _check_task(path, result, task)
    _check_tokenizer(path, tokenizer, texts)
    return Teacher(path, result)


def logits_of(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """What distillation reads of the teacher: its logits for ``inputs``."""
    return model(**inputs).logits


@torch.inference_mode()
def teacher_logits(
    model: nn.Module,
    loader: DataLoader,
    count: int,
    *,
    device: torch.device,
    bf16: bool,
    dist: Dist,
    progress: Callable[[int], Any] | None = None,
    read: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor] = logits_of,
) -> torch.Tensor:
    """What ``read`` takes of the teacher (its logits) for every training example, row i =
    example i (its ``index``), in fp32 on the CPU.

    Under DDP each rank runs ``loader`` (its share) and the rows are gathered on every rank.
    """
    model = model.to(device)
    rows: list[tuple[torch.Tensor, torch.Tensor]] = []
    for batch in loader:
        index = batch["index"]
        inputs = {k: v.to(device) for k, v in batch.items() if k not in ("index", "labels")}
        with autocast(bf16, device):
            values = read(model, inputs)
        rows.append((index, values.float().cpu()))
        if progress is not None:
            progress(len(index))
    parts = distributed.all_gather(rows, dist)
    out: torch.Tensor | None = None
    for index, values in (row for part in parts for row in part):
        if out is None:
            out = torch.full((count, *values.shape[1:]), float("nan"))
        out[index] = values
    if out is None or torch.isnan(out).any():
        raise RuntimeError("the teacher's pass missed some training examples")
    return out
