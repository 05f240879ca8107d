"""One ``trainer.train()`` call as FreezeCallback sees it: its sizes, hooks and checkpoints.

Trainer knows the run's length only once ``train()`` starts, and keeps no count of optimizer
steps per epoch, so the policy is sized here the way Trainer sizes its loop
(``Trainer.set_initial_training_values``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from freezetune.errors import UserError
from freezetune.freezer import FreezeLog, Freezer
from freezetune.freezing import FreezeSpec
from freezetune.freezing.policies import Policy
from freezetune.integrations.trainer_grads import RawGradients
from freezetune.plan import Plan

__all__ = [
    "Run",
    "checkpoint_folder",
    "exported_state",
    "resumed_state",
    "saved_state",
    "steps_per_epoch",
    "warmup_ratio",
]


@dataclass
class Run:
    """What one ``train()`` call wires up: the sizes, the hooks and the gradient signal."""

    model: nn.Module
    plan: Plan  # the units, the policy and the run's steps: each step's progress and LRs
    eval_hook: RemovableHandle
    grads: RawGradients | None  # AutoFreeze's signal, for a policy that watches gradients
    freezer: Freezer  # applies, records and prints each change of what is frozen

    def close(self) -> None:
        """Remove the hooks: the model trains as plain PyTorch again."""
        self.eval_hook.remove()
        if self.grads is not None:
            self.grads.remove()


def steps_per_epoch(loader: Any, args: Any, max_steps: int) -> int:
    """Optimizer steps per epoch, as Trainer counts them.

    >>> from types import SimpleNamespace
    >>> steps_per_epoch(range(10), SimpleNamespace(gradient_accumulation_steps=4), 99)
    3
    """
    try:
        batches = len(loader)
    except TypeError:  # an iterable dataset: Trainer runs max_steps as one "epoch"
        return max_steps
    accum = args.gradient_accumulation_steps
    return max(batches // accum + int(batches % accum > 0), 1)


def warmup_ratio(args: Any, max_steps: int) -> float:
    """``warmup_steps`` as freezetune's ratio: in transformers 5.x below 1 it is one already.

    >>> from types import SimpleNamespace
    >>> [warmup_ratio(SimpleNamespace(warmup_steps=w), 50) for w in (0.1, 5)]
    [0.1, 0.1]
    """
    steps = float(args.warmup_steps)
    return steps if steps < 1 else steps / max(1, max_steps)


def checkpoint_folder(args: Any, state: Any) -> str:
    """The folder Trainer writes (and by default resumes) the checkpoint of this step in."""
    return os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")


def exported_state(
    spec: FreezeSpec, policy: Policy | None, log: FreezeLog, run: Run | None
) -> dict[str, Any] | None:
    """What FreezeCallback exports as its ``saved`` attribute (``trainer_state.json``) for a
    resumed ``train()``: None before training starts."""
    if policy is None:
        return None
    return {
        "spec": spec.text,
        "policy": policy.state_dict(),
        "frozen_units": log.frozen_units,
        "frozen_set": log.frozen_set,
        "changes": log.timeline,
        "grads": bool(run and run.grads and run.grads.pending),
    }


def saved_state(state: Any, name: str) -> dict[str, Any] | None:
    """The ``saved`` attribute callback ``name`` exported into a resumed TrainerState.

    Trainer hands callbacks their exported state only with
    ``restore_callback_states_from_checkpoint``, but the TrainerState it loads keeps it anyway.
    """
    entry = (state.stateful_callbacks or {}).get(name)
    if isinstance(entry, list):  # several callbacks of one class: the first is ours
        entry = entry[0] if entry else None
    return (entry or {}).get("attributes", {}).get("saved")


def resumed_state(
    spec: FreezeSpec, policy: Policy, state: Any, restored: dict[str, Any] | None, name: str
) -> dict[str, Any] | None:
    """What callback ``name`` saved at the checkpoint this run resumes from; None for a fresh
    start. ``restored`` is what Trainer set on a callback it restored itself.

    A stateful policy (AutoFreeze) with no saved state, or a checkpoint trained with another
    spec, is refused: continuing would silently be a different schedule.
    """
    if state.global_step == 0:
        return None
    saved = restored or saved_state(state, name)
    where = f"FreezeCallback({spec.text!r}): the checkpoint at step {state.global_step}"
    if saved is None and policy.state_dict():
        raise UserError(
            f"{where} holds no FreezeCallback state, so {policy.name} cannot continue; "
            "resume from a checkpoint written with this callback"
        )
    if saved is not None and saved["spec"] != spec.text:
        raise UserError(f"{where} was trained with {saved['spec']!r}; resume with that spec")
    return saved
