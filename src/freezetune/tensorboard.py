"""Live curves in TensorBoard (``--report-to tensorboard``): event files in ``<out>/tensorboard``.

An :class:`~freezetune.observers.Observer` that writes what the loop reports as scalars:

- ``train/loss`` and ``train/lr/<unit>`` (each unit's learning rate) at every optimizer step;
- ``dev/<metric>`` (and ``dev/loss``), ``train/epoch`` and ``time/train_s``/``time/wall_s`` at
  every evaluation, ``cache/hit_rate`` whenever a record carries ``cache_hit_rate``;
- ``freezing/frozen_units`` and ``freezing/trainable_params`` at every change of what trains
  (the canonical ``trainable params`` line as text ``freezing/trainable``);

and the resolved config as text (``config``). ``metrics.jsonl`` and ``result.json`` stay the
record of the run; these files are only a view of it.

A resumed run appends to the same folder: the first step it reports tells where it picks up,
and the new event file starts with TensorBoard's ``purge_step`` there, so that what the stopped
run wrote past its checkpoint is hidden rather than drawn twice. A run started afresh (or
``--overwrite``) removes the event files of an earlier start, as it does ``metrics.jsonl``.

>>> observer = TensorBoardObserver(Path("runs/x"), {"freeze": "full"})  # doctest: +SKIP
>>> observer.on_step(1, 0.69, {"head": 1e-3})  # doctest: +SKIP
>>> observer.close()  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from freezetune.errors import UserError

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["FOLDER", "TensorBoardObserver", "require"]

#: where in the run folder the event files go
FOLDER = "tensorboard"
MISSING = (
    "--report-to tensorboard needs the tensorboard package: "
    "pip install 'freezetune[tensorboard]' (or pip install tensorboard)"
)
#: eval-record keys that are not measurements (the step is the x axis)
_NOT_SCALARS = frozenset({"event", "step"})


def require() -> None:
    """Raise a one-line UserError unless ``torch.utils.tensorboard`` can be imported here."""
    try:
        importlib.import_module("torch.utils.tensorboard")
    except ImportError:
        raise UserError(MISSING) from None


def eval_tag(key: str) -> str:
    """The TensorBoard tag of an eval record's ``key``.

    >>> [eval_tag(k) for k in ("accuracy", "epoch", "train_time_s", "cache_hit_rate")]
    ['dev/accuracy', 'train/epoch', 'time/train_s', 'cache/hit_rate']
    """
    if key == "epoch":
        return "train/epoch"
    if key == "cache_hit_rate":
        return "cache/hit_rate"
    if key.endswith("_time_s"):
        return f"time/{key.removesuffix('_time_s')}_s"
    return f"dev/{key}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def config_text(config: dict[str, Any], total_steps: int | None = None) -> str:
    """The resolved config as a YAML code block (TensorBoard renders text as markdown)."""
    plain = json.loads(json.dumps(config, default=str))  # tuples and paths as YAML can write
    body = yaml.safe_dump(plain, sort_keys=False).rstrip()
    steps = f"{total_steps} optimizer steps\n\n" if total_steps is not None else ""
    return f"{steps}```yaml\n{body}\n```"


class TensorBoardObserver:
    """Writes a run's curves to ``<out>/tensorboard`` as the loop reports them (module doc).

    The writer opens at the first event, which says whether the run starts afresh (step 0 or
    1) or resumes (a later step: ``purge_step`` there).
    """

    def __init__(self, out: Path | str, config: dict[str, Any]):
        self.folder = Path(out) / FOLDER
        self.config = config
        self.total_steps: int | None = None  # from a start record, when one is reported
        self.writer: SummaryWriter | None = None
        self.partial_step: int | None = None  # a step one of whose batches was skipped

    def _open(self, next_step: int) -> SummaryWriter:
        """The writer; opened on the first call, ``next_step`` the first step this run takes."""
        if self.writer is not None:
            return self.writer
        from torch.utils.tensorboard import SummaryWriter

        fresh = next_step <= 1
        if fresh:  # started over: an earlier start's curves are not this run's
            for stale in self.folder.glob("events.out.tfevents.*"):
                stale.unlink(missing_ok=True)
        # resumed: hide what the stopped run wrote from ``next_step`` on (it is redone now)
        self.writer = SummaryWriter(
            str(self.folder), purge_step=None if fresh else next_step, flush_secs=10
        )
        if fresh:
            self.writer.add_text("config", config_text(self.config, self.total_steps), 0)
        return self.writer

    def on_step(self, step: int, loss: float, lrs: dict[str, float]) -> None:
        """``train/loss`` and every unit's ``train/lr/<unit>`` at optimizer step ``step``."""
        writer = self._open(step)
        if step != self.partial_step:  # a skipped batch adds 0 to its step's loss: leave it out
            writer.add_scalar("train/loss", loss, step)
        for unit, lr in lrs.items():
            writer.add_scalar(f"train/lr/{unit}", lr, step)

    def on_record(self, record: dict[str, Any]) -> None:
        """Scalars from a start, freeze, eval or skipped record (other events are ignored)."""
        event, step = record.get("event"), int(record.get("step", 0))
        if event == "start":
            self.total_steps = record.get("total_steps")
        # a record at step N comes after step N (eval) or before step N + 1 (freeze, skipped)
        writer = self._open(step + 1)
        if event == "freeze":
            for key in ("frozen_units", "trainable_params"):
                if _is_number(record.get(key)):
                    writer.add_scalar(f"freezing/{key}", record[key], step)
            if isinstance(record.get("trainable"), str):
                writer.add_text("freezing/trainable", record["trainable"], step)
        elif event == "eval":
            for key, value in record.items():
                if key not in _NOT_SCALARS and _is_number(value):
                    writer.add_scalar(eval_tag(key), value, step)
            writer.flush()  # an evaluation is what people open TensorBoard to see
        elif event == "skipped":
            writer.add_scalar("train/skipped_batch", 1, step + 1)
            self.partial_step = step + 1
        if event != "eval" and _is_number(record.get("cache_hit_rate")):
            writer.add_scalar("cache/hit_rate", record["cache_hit_rate"], step)

    def close(self) -> None:
        """Flush and close the event file (a no-op when nothing was reported)."""
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
