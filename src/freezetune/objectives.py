"""What the loop minimises: the seam between a batch and the loss that trains on it.

The loop calls ``objective.prepare()`` once before training (its seconds count as training
time) and ``objective.loss(forward, batch)`` for every (micro-)batch, and nothing else about
the loss. ``batch`` holds the model's inputs, ``labels`` and ``index`` (each example's row in
the training split); ``forward(batch)`` is the model's output for it, computed from cached
frozen-prefix states where it can. Neither changes the batch, so an objective may run the
model twice (R-Drop), read hidden states (through forward hooks on the model it was built
with) or look per-example state up by ``index``. Per-example state (a teacher's logits or
features) is what ``state_dict`` returns: tensors only, saved in every checkpoint as
safetensors, so a resumed run does not recompute it.

Objectives are registered like freezing policies (:mod:`freezetune.plugins`): with
:func:`register_objective`, or by an installed package through the ``freezetune.objectives``
entry points. ``--objective NAME[:key=value,...]`` picks one; without it a run uses the task's
own loss (``task``), or ``distill`` when it has a ``--teacher``.

>>> import torch
>>> from types import SimpleNamespace
>>> loss, out = TaskLoss().loss(lambda b: SimpleNamespace(loss=b["labels"].float().mean()),
...                             {"labels": torch.tensor([0, 1])})
>>> loss
tensor(0.5000)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from freezetune.errors import UserError
from freezetune.plugin_options import (
    NoOptions,
    build_options,
    option_types,
    options_problem,
    parse_options,
)
from freezetune.plugins import Registry

if TYPE_CHECKING:
    from torch import nn

    from freezetune.config import RunConfig
    from freezetune.distill.teacher import Teacher
    from freezetune.distributed import Dist
    from freezetune.tasks import TaskInfo
    from freezetune.units import Units

__all__ = [
    "OBJECTIVES",
    "Batch",
    "Forward",
    "Objective",
    "ObjectiveContext",
    "ObjectivePlugin",
    "TaskLoss",
    "check_objective",
    "make_objective",
    "objective_name",
    "objective_options",
    "register_objective",
]

#: a (micro-)batch: model inputs, ``labels`` and ``index`` (rows of the training split)
Batch = Mapping[str, torch.Tensor]
#: the model's output for a batch (``.logits``, ``.loss``); it never changes the batch
Forward = Callable[[Batch], Any]


@runtime_checkable
class Objective(Protocol):
    """A training loss over batches, with the state it needs to resume exactly."""

    name: str

    def prepare(self) -> float:
        """Get ready before the first step (e.g. compute targets); return the seconds spent."""
        ...

    def loss(self, forward: Forward, batch: Batch) -> tuple[torch.Tensor, Any]:
        """The loss of one batch and the model output it was computed from."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors a checkpoint keeps (empty when the objective is stateless)."""
        ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...

    def summary(self) -> dict[str, Any] | None:
        """What ``result.json`` records about the objective (None: nothing to say)."""
        ...


class TaskLoss:
    """The task's own loss: cross-entropy for classes, MSE for regression (the model's)."""

    name = "task"

    def prepare(self) -> float:
        return 0.0

    def loss(self, forward: Forward, batch: Batch) -> tuple[torch.Tensor, Any]:
        output = forward(batch)
        return output.loss, output

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def summary(self) -> dict[str, Any] | None:
        return None


@dataclass(frozen=True)
class ObjectiveContext:
    """What an objective is built from: the run and the model it trains.

    ``features`` is the training split as featurized (row i has ``index`` i), ``collate``
    batches them without augmentation (as the teacher and inference see them), ``teacher``
    is the checked ``--teacher`` run (None without one).
    """

    config: RunConfig
    task: TaskInfo
    model: nn.Module
    units: Units
    features: list[dict]
    collate: Callable[..., dict[str, Any]]
    device: torch.device
    dist: Dist
    teacher: Teacher | None = None


@dataclass(frozen=True)
class ObjectivePlugin:
    """A registered objective: ``build(options, context)`` returns a fresh :class:`Objective`,
    ``options`` an instance of the ``options`` dataclass (its fields are the ``--objective``
    options). ``teacher``: whether it learns from a ``--teacher`` (then one is required; else
    one is refused). ``check(options, config)``, if given, raises a one-line UserError when
    the run's config does not suit the objective: it runs before anything is written."""

    build: Callable[[Any, ObjectiveContext], Objective]
    options: type = NoOptions
    teacher: bool = False
    check: Callable[[Any, RunConfig], None] | None = None


def _check(name: str, obj: object) -> str | None:
    """What is wrong with registering ``obj`` as objective ``name``, if anything."""
    if not name or any(c in name for c in "+:,= "):
        return "takes a name that --objective cannot use (+ : , = or a space); rename it"
    if not isinstance(obj, ObjectivePlugin):
        return f"is a {type(obj).__name__}, not an ObjectivePlugin; fix it or uninstall it"
    return options_problem(obj.options, "--objective")


OBJECTIVES: Registry[ObjectivePlugin] = Registry(
    "freezetune.objectives",
    "objective",
    builtins="freezetune.distill.objective",
    check=_check,
    flag="--objective",
)


def register_objective(
    name: str,
    build: Callable[[Any, ObjectiveContext], Objective],
    *,
    options: type = NoOptions,
    teacher: bool = False,
    check: Callable[[Any, RunConfig], None] | None = None,
    source: str | None = None,
) -> None:
    """Make ``--objective name[:key=value,...]`` train with ``build(options, context)``.

    ``options`` is the objective's options dataclass, ``teacher`` whether it needs
    ``--teacher``, ``check`` its check of a run's config (see :class:`ObjectivePlugin`),
    ``source`` the package named in errors (default: ``build``'s top package).
    """
    module = getattr(build, "__module__", None) or "__main__"
    plugin = ObjectivePlugin(build, options, teacher, check)
    OBJECTIVES.register(name, plugin, source=source or module.partition(".")[0], module=module)


def objective_name(config: RunConfig) -> str:
    """The objective ``config`` trains with: ``--objective``'s name, else ``distill`` with a
    teacher and ``task`` without."""
    if config.objective:
        return config.objective.partition(":")[0]
    return "distill" if config.distill.teacher is not None else "task"


def objective_options(text: str) -> tuple[ObjectivePlugin, Any]:
    """``NAME[:key=value,...]`` -> its registered plugin and options; one-line UserError
    otherwise.

    >>> objective_options("task")[1]
    NoOptions()
    >>> objective_options("task:beta=1")
    Traceback (most recent call last):
    ...
    freezetune.errors.UserError: --objective task:beta=1: unknown option 'beta'; it takes none
    """
    name, _, rest = text.partition(":")
    plugin, where = OBJECTIVES.get(name), f"--objective {text}"
    given = parse_options(where, rest, option_types(plugin.options))
    return plugin, build_options(where, name, plugin.options, given)


def check_objective(config: RunConfig) -> None:
    """``config``'s objective resolves and has the teacher it needs (and no other)."""
    name = objective_name(config)
    plugin, options = objective_options(config.objective or name)
    if plugin.teacher and config.distill.teacher is None:
        raise UserError(f"--objective {name} learns from a teacher; pass --teacher RUN_FOLDER")
    if not plugin.teacher and config.distill.teacher is not None:
        raise UserError(
            f"--teacher is unused by --objective {name}; drop --teacher or pick an objective "
            "that distils (distill, or a plugin's)"
        )
    if plugin.check is not None:
        plugin.check(options, config)


def make_objective(context: ObjectiveContext) -> Objective:
    """The objective ``context.config`` names, built for this run."""
    config = context.config
    plugin, options = objective_options(config.objective or objective_name(config))
    return plugin.build(options, context)


register_objective("task", lambda options, context: TaskLoss())
