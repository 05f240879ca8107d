"""Freezing inside an unchanged ``transformers.Trainer`` script: :class:`FreezeCallback`.

The callback takes any ``freezetune train --freeze`` spec (``bottom:3``, ``head``, ``bitfit``,
``pattern:REGEX``, ``two-phase``, ``gradual``, ``progressive``, ``autofreeze``, ``llrd:DECAY``,
``lora`` on an already wrapped model) and applies it to the model a ``Trainer`` trains, with
freezetune's units, policies and log line. A Trainer script gains these lines::

    from freezetune.integrations.transformers import FreezeCallback

    freeze = FreezeCallback("gradual")  # any --freeze spec
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[freeze])
    trainer.train()  # stderr, at every change: "step N: K units frozen; trainable params: ..."

Specs that set per-unit learning rates (``llrd``, ``two-phase``, ``progressive`` (FreezeOut),
``gradual:stlr``) also need freezetune's optimizer and scheduler:
``Trainer(..., optimizers=freeze.optimizers(model, args))``. A complete script:

.. code-block:: python

    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    from freezetune.integrations.transformers import FreezeCallback

    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=3,
                        num_attention_heads=2, intermediate_size=37)
    model = BertForSequenceClassification(config)
    data = [{"input_ids": torch.randint(99, (12,)), "labels": i % 2} for i in range(64)]
    args = TrainingArguments("runs/trainer-demo", max_steps=8, per_device_train_batch_size=8,
                             use_cpu=True, report_to=[], save_strategy="no", disable_tqdm=True)

    freeze = FreezeCallback("gradual:steps=2+llrd:0.8")
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[freeze],
                      optimizers=freeze.optimizers(model, args))
    trainer.train()
    print([(c["step"], c["frozen_units"]) for c in freeze.changes])  # [(0, 4), (2, 3), ...]

What it does, and how it fits Trainer (transformers 5.x):

- **What trains**: units come from :func:`freezetune.units.split_units`; frozen parameters
  get ``requires_grad=False`` and ``grad=None``, so AdamW skips them (no momentum, no weight
  decay) and frozen prefixes cost no backward pass.
- **The optimizer**: Trainer builds it from what requires grad when ``train()`` starts. At
  Trainer's init the callback marks trainable everything the spec may ever train (a static
  spec's frozen units stay out, as in freezetune's own optimizer); a schedule freezes only at
  train begin, so units it thaws later are in the optimizer already.
- **eval() of frozen units**: Trainer calls ``model.train()`` before every micro-batch; a
  forward pre-hook on the model puts the frozen units back in ``eval()`` (no dropout).
- **AutoFreeze** decides from Trainer's own gradients, summed per step before Trainer clips
  them (``trainer_grads``), as freezetune's loop sums them: the same decisions, to the bit.
- **Resume**: the policy's state, what is frozen and the change records are Trainer
  "stateful callback" state (``trainer_state.json``), restored on
  ``train(resume_from_checkpoint=...)`` whether or not ``restore_callback_states_from_checkpoint``
  is set; AutoFreeze's unfinished gradient sums go to ``freezetune_grads.safetensors`` in the
  checkpoint folder.
- **Not under Trainer**: caching frozen-prefix outputs needs freezetune's own loop
  (``freezetune train``), so frozen units still run forward every step here; DeepSpeed, FSDP,
  fp16 AutoFreeze and data-parallel AutoFreeze are refused with a one-line
  :class:`~freezetune.errors.UserError` (see ``trainer_checks``), as is every spec Trainer's
  optimizer cannot honour.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from freezetune.freezer import FreezeLog, Freezer
from freezetune.freezing import apply_frozen, parse_freeze
from freezetune.freezing.apply import never_trains
from freezetune.freezing.policies import (
    GradientWatcher,
    Policy,
    frozen_now,
    make_policy,
)
from freezetune.integrations.trainer_checks import (
    check_args,
    check_lora,
    check_lr,
    check_optimizer,
)
from freezetune.integrations.trainer_grads import RawGradients
from freezetune.integrations.trainer_lr import (
    UnitLR,
    needs_unit_lrs,
    trainer_optimizers,
)
from freezetune.integrations.trainer_run import (
    Run,
    checkpoint_folder,
    exported_state,
    resumed_state,
    steps_per_epoch,
    warmup_ratio,
)
from freezetune.plan import Plan
from freezetune.records import current_names
from freezetune.units import Units, split_units

__all__ = ["FreezeCallback", "UnitLR"]

CACHE_NOTE = (
    "note: under Trainer frozen units still run forward every step; caching their outputs "
    "needs freezetune's own loop (freezetune train)"
)


class FreezeCallback(TrainerCallback, ExportableState):
    """Apply a freezetune spec or schedule to the model a ``transformers.Trainer`` trains.

    ``spec`` is any ``--freeze`` string; ``blocks_path`` and ``embeddings_paths`` override
    unit detection as in :func:`~freezetune.units.split_units`. After (and during) training,
    ``changes`` holds one record per change of what trains, as ``freezetune train``'s
    ``freeze_timeline``, and ``policy`` the schedule sized to the run. (With
    ``restore_callback_states_from_checkpoint=True`` Trainer replaces the callback with a
    restored copy when resuming: read ``changes`` from the one in
    ``trainer.callback_handler.callbacks``.)

    TrainerCallback and ExportableState are Trainer's extension points, hence the bases.

    >>> FreezeCallback("bottom:2").spec.prefix
    3
    """

    def __init__(
        self,
        spec: str,
        *,
        blocks_path: str | None = None,
        embeddings_paths: Sequence[str] | None = None,
    ):
        self.spec = parse_freeze(spec)
        self.blocks_path = blocks_path
        self.embeddings_paths = list(embeddings_paths) if embeddings_paths is not None else None
        self.log = FreezeLog()  # what is frozen now and one record per change
        self.policy: Policy | None = None
        self.saved: dict[str, Any] | None = None  # set by Trainer when it restores callbacks
        self._frozen_early = False  # requires_grad was set before Trainer built its optimizer
        self._run: Run | None = None

    @property
    def changes(self) -> list[dict[str, Any]]:
        """One record per change of what trains (``freezetune train``'s ``freeze_timeline``)."""
        return self.log.timeline

    @property
    def frozen_units(self) -> int | None:
        """Leading units frozen now; None before training."""
        return self.log.frozen_units

    # ----------------------------------------------------------------- public helpers

    def optimizers(
        self, model: nn.Module, args: Any, *, head_lr: float | None = None
    ) -> tuple[torch.optim.Optimizer, UnitLR]:
        """``(optimizer, scheduler)`` for ``Trainer(optimizers=...)``: freezetune's AdamW with
        one group per unit, and a scheduler giving each unit the rate freezetune's loop would.

        Needed for ``llrd`` and for schedules with their own rates; any other spec may use it
        too (then the rate is freezetune's linear warmup over ``warmup_steps``, read as a
        ratio, and decay). Rates come from ``args``; ``head_lr`` is the new head's.
        """
        units = self._split(model)
        return trainer_optimizers(model, units, self.spec, args, head_lr)

    def state(self) -> dict[str, Any]:
        """What Trainer saves in ``trainer_state.json`` (``ExportableState``)."""
        args = {
            "spec": self.spec.text,
            "blocks_path": self.blocks_path,
            "embeddings_paths": self.embeddings_paths,
        }
        saved = exported_state(self.spec, self.policy, self.log, self._run)
        return {"args": args, "attributes": {"saved": saved}}

    # ----------------------------------------------------------------- Trainer events

    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is None:  # model_init: the model is built in train(); train begin checks it
            return
        check_lora(model, self.spec)
        # Trainer's optimizer will hold what requires grad when train() starts: make that
        # everything the spec may ever train (freezetune's own optimizer holds the same)
        apply_frozen(model, never_trains(self.spec, self._split(model)))
        self._frozen_early = True

    def on_train_begin(
        self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs
    ):
        # 1) size the policy to this run (known only now) and refuse what Trainer cannot do
        assert model is not None and optimizer is not None
        units, total = self._split(model), state.max_steps
        per_epoch = steps_per_epoch(kwargs.get("train_dataloader"), args, total)
        warmup = warmup_ratio(args, total)
        policy = make_policy(self.spec, units.num_blocks, total, per_epoch, warmup, args.seed)
        watcher = isinstance(policy, GradientWatcher)
        check_args(args, self.spec, watcher=watcher, frozen_early=self._frozen_early)
        check_lora(model, self.spec)
        excluded = never_trains(self.spec, units)
        may_train = [name for name, _ in model.named_parameters() if name not in excluded]
        check_optimizer(model, optimizer, may_train, self.spec)
        per_unit = needs_unit_lrs(self.spec, policy, len(units.units), total, per_epoch)
        check_lr(self.spec, per_unit, optimizer, lr_scheduler)
        # 2) wire up: the eval() hook, AutoFreeze's gradient hooks, the per-unit rates
        if self._run is not None:  # a previous train() call that raised left its hooks
            self._run.close()
        apply_frozen(model, excluded)  # all that may train starts trainable: the hooks need it
        self.policy = policy
        self._run = Run(
            model,
            Plan(units, self.spec, policy, total, per_epoch, warmup),
            eval_hook=model.register_forward_pre_hook(self._keep_frozen_in_eval),
            grads=RawGradients(model, units) if watcher else None,
            freezer=Freezer(
                model, units, self.spec, self.log, state.is_world_process_zero, optimizer, policy
            ),
        )
        if isinstance(lr_scheduler, UnitLR):
            lr_scheduler.attach(self.lr_factor)
        # 3) continue a resumed run, then freeze for the step about to run
        self._restore(args, state)
        if self._run.freezer.main and (
            self.spec.schedule or self.spec.frozen_units(units.num_blocks)
        ):
            print(CACHE_NOTE, file=sys.stderr)
        self._refreeze(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        self._refreeze(state.global_step)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        run = self._run
        if run is not None and run.grads is not None:
            run.grads.flush()

    def on_step_end(self, args, state, control, **kwargs):
        # as freezetune's loop: decide after the optimizer step that ends an interval; the
        # decision takes effect at the next step's on_step_begin
        run, policy, step = self._run, self.policy, state.global_step
        if run is None or run.grads is None or not isinstance(policy, GradientWatcher):
            return
        if policy.is_decision_step(step):
            policy.decide(run.grads.norms(), step=step)

    def on_save(self, args, state, control, **kwargs):
        run = self._run
        if run is not None and run.grads is not None and run.grads.pending and run.freezer.main:
            run.grads.save(checkpoint_folder(args, state))

    def on_train_end(self, args, state, control, **kwargs):
        if self._run is not None:
            self._run.close()

    # ----------------------------------------------------------------- freezing

    def lr_factor(self, unit: int, step: int) -> float:
        """Multiplier of unit ``unit``'s base LR at ``step`` (what :class:`UnitLR` applies)."""
        assert self._run is not None
        return self._run.plan.lr_factor(unit, step)

    def _refreeze(self, step: int) -> None:
        """Ask the policy what is frozen for ``step``; apply and log it when it changes."""
        run, policy = self._run, self.policy
        if run is None or policy is None:
            return
        frozen = frozen_now(policy, run.plan.progress(step))
        run.freezer.update(frozen, step, training=run.model.training)  # as freezetune's loop

    def _keep_frozen_in_eval(self, model: nn.Module, inputs: Any) -> None:
        # Trainer calls model.train() before every micro-batch (training_step), and only the
        # first micro-batch of a step has an on_step_begin; a pre-hook on the model runs right
        # before every forward, whoever changed the modes. Trainer has just called
        # model.train(), so set_train_modes' own model.train() changes nothing else.
        if self._run is not None and self._run.freezer.frozen and model.training:
            self._run.freezer.set_modes(training=True)

    def _restore(self, args: Any, state: Any) -> None:
        """Continue a resumed run where its checkpoint left off; start afresh otherwise."""
        run, policy = self._run, self.policy
        assert run is not None and policy is not None
        saved = resumed_state(self.spec, policy, state, self.saved, type(self).__name__)
        self.saved = None  # used once: a later fresh train() must not see it
        log = self.log
        if saved is None:
            log.timeline, log.frozen_units, log.frozen_set = [], None, None
            return
        policy.load_state_dict(saved["policy"])
        changes = [current_names(change) for change in saved["changes"]]  # older key names
        log.timeline, log.frozen_units = changes, saved["frozen_units"]
        log.frozen_set = saved.get("frozen_set")  # absent from prefix-only runs' older states
        run.freezer.reapply(run.model.training)  # silently: logged before the stop
        if saved["grads"] and run.grads is not None:
            run.grads.load(checkpoint_folder(args, state))

    # ----------------------------------------------------------------- small helpers

    def _split(self, model: nn.Module) -> Units:
        return split_units(
            model, blocks_path=self.blocks_path, embeddings_paths=self.embeddings_paths
        )
