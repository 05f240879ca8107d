"""Run an advise: successive halving over the arms on an executor, then the answer.

1) plan (:mod:`~.context`, :mod:`~.spec`) and check every arm's inputs before anything is
written (the study's preflight); 2) under the folder's lock, replay the stored rows
(:mod:`~.store`) and ask :class:`~.halving.Halving` what is next: store its decision rows in
one transaction, then train the arms it names up to their rung step on the executor (local
processes or Ray, as a study's runs; :class:`~.ledger.ArmLedger` records what they did); repeat
until the finalists finish; 3) run the finalists' other seeds; 4) answer
(:mod:`~.answer`), train the pick to its end if it was pruned, answer again with its measured
score; 5) write the report. Kill it at any point and run the same command: stored decisions
are kept, finished rungs are read back, an arm killed mid-rung continues from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freezetune.advise.advice import Advice
from freezetune.advise.answer import Curves, answer
from freezetune.advise.context import Context, eval_steps, read_context
from freezetune.advise.facts import arm_facts, own_curves, references_for
from freezetune.advise.halving import FAILED, Action, Decision, Halving
from freezetune.advise.ledger import ArmLedger, rung_rows
from freezetune.advise.spec import AdviseSpec
from freezetune.advise.store import (
    ensure_table,
    read_halving_rows,
    read_picks,
    start_call,
    wall_seconds,
    write_pick,
    write_rows,
)
from freezetune.errors import UserError
from freezetune.records import atomic_write_text
from freezetune.study.executors import Executor, Ledger, make_executor
from freezetune.study.spec import PlannedRun
from freezetune.study.store import open_store, pause_run, read_rows, study_lock
from freezetune.study.worker import load_events, unfinished_step

__all__ = ["AdviseOutcome", "run_advise"]

FIRST = 1 / 9  # the first rung: 1/9 of every arm's run (two cuts of 1/3 with eta 3)
PICK_ROUNDS = 3  # a pruned pick is trained to its end, and the answer taken again


@dataclass(frozen=True)
class AdviseOutcome:
    folder: Path
    advice: Advice
    headline: str
    files: tuple[Path, ...]


@dataclass
class _Run:
    """One call's fixed parts."""

    spec: AdviseSpec
    folder: Path
    context: Context
    arms: list[PlannedRun]
    plan: Halving
    executor: Executor
    progress: bool
    conn: Any = None
    touch: Callable[[], None] = lambda: None  # moves this call's end in advise_calls to now

    def ledger(self, todo: list[PlannedRun], rungs: dict[str, int] | None = None) -> Ledger:
        if rungs is None:  # finalists' seeds and the pick: plain runs
            ledger = Ledger(self.conn, self.folder, self.spec.name, todo, todo,
                            progress=self.progress, executor=self.executor.name)  # fmt: skip
            ledger.noun = "advise"
            return ledger
        return ArmLedger(self.conn, self.folder, self.spec.name, self.arms, todo, rungs=rungs,
                         metric=self.context.metric, budget=self.context.budget,
                         progress=self.progress, executor=self.executor.name)  # fmt: skip

    def train(self, todo: list[PlannedRun], rungs: dict[str, int] | None = None) -> None:
        """Hand ``todo`` to the executor; then note this call's wall time so far."""
        ledger = self.ledger(todo, rungs)
        self.executor.run(todo, ledger)
        ledger.close()
        self.touch()


def plan_of(spec: AdviseSpec, ids: Sequence[Hashable], budget: int) -> Halving:
    """The halving of arms ``ids``, each of ``budget`` steps."""
    first = FIRST if len(ids) > spec.eta else 1 / spec.eta
    budgets = dict.fromkeys(ids, budget)
    return Halving.of(budgets, eta=spec.eta, first=first, finalists=1, rung_score="best")


def _prepare(spec: AdviseSpec) -> tuple[Context, list[PlannedRun], Halving]:
    """Context, arms and plan; every arm's inputs checked (UserError before any write)."""
    from freezetune.study.preflight import preflight

    probe = spec.study.grid()
    context = read_context(spec.study.base, [run.config for run in probe])
    n = len(spec.strategies(context.hidden_size, context.modality))
    shape = plan_of(spec, range(n), context.budget)  # its rung steps fix the evaluations...
    arms = spec.arms(context.hidden_size, eval_steps(shape), context.modality)
    plan = plan_of(spec, [arm.run_id for arm in arms], context.budget)  # ...and the run ids
    preflight(arms)
    return context, arms, plan


def _save_spec(folder: Path, spec: AdviseSpec, arms: list[PlannedRun]) -> None:
    """advise.yaml; a folder holding an advise of other arms is refused."""
    import yaml

    ids = [arm.run_id for arm in arms]
    path = folder / "advise.yaml"
    if path.is_file():
        stored = yaml.safe_load(path.read_text("utf-8")) or {}
        if stored.get("arm_ids") != ids:
            raise UserError(
                f"{folder} holds an advise of other arms (strategies, rates or settings "
                "changed); pass another --name, or delete that folder"
            )
    text = yaml.safe_dump({**spec.to_dict(), "arm_ids": ids}, sort_keys=False)
    atomic_write_text(path, f"# freezetune advise --config <this file>\n{text}")


def _save_matching_study(folder: Path, run: _Run) -> None:
    """``study.yaml``: the study that runs every arm to its end over the same seeds, for
    ``--check`` (its seed-0 run ids are the arms')."""
    ctx, seeds = run.context, tuple(range(run.spec.seeds))
    study = run.spec.matching_study(ctx.hidden_size, _eval_at(run), seeds, ctx.modality)
    study = dataclasses.replace(study, name=f"{run.spec.name}-study")
    note = f"# the full study of these arms: freezetune advise --config ... --check runs/{study.name}\n"
    atomic_write_text(folder / "study.yaml", note + study.to_yaml())


def _read_back(run: _Run, actions: Sequence[Action]) -> list[Action]:
    """Record arms a killed advise left paused at their rung step (their rows may be lost);
    the rest still have to run."""
    todo = []
    for action in actions:
        out, arm = run.folder / "runs" / str(action.arm), str(action.arm)
        if unfinished_step(out) == action.run_to:
            events = [e for e in load_events(out / "metrics.jsonl") if e.get("event") == "eval"]
            pause_run(run.conn, arm, events)
            write_rows(run.conn, rung_rows(arm, action.rung, events, run.context.metric,
                                           action.run_to))  # fmt: skip
        else:
            todo.append(action)
    return todo


def _halve(run: _Run) -> Decision:
    """Successive halving to its end; every decision stored before the runs it starts."""
    by_id = {arm.run_id: arm for arm in run.arms}
    while True:
        decision = run.plan.decide(read_halving_rows(run.conn))
        write_rows(run.conn, decision.rows)
        if decision.done:
            return decision
        actions = _read_back(run, decision.run)
        if not actions:
            continue
        budget = run.context.budget  # the last rung runs to the end: no stop
        todo = [
            dataclasses.replace(
                by_id[str(a.arm)], stop_at_step=a.run_to if a.run_to < budget else None
            )
            for a in actions
        ]
        run.train(todo, {str(a.arm): a.rung for a in actions})


def _finish(run: _Run, todo: list[PlannedRun]) -> None:
    """Train ``todo`` to their ends (skipping those already finished)."""
    done = {row.run_id for row in read_rows(run.conn) if row.status == "succeeded"}
    todo = [r for r in todo if r.run_id not in done]
    if todo:
        run.train(todo)


def _seeds(run: _Run, finalists: Sequence[str]) -> list[PlannedRun]:
    """The finalists' other seeds (1 .. seeds-1), as full runs."""
    seeds = tuple(range(1, run.spec.seeds))
    if not seeds or not finalists:
        return []
    ctx = run.context
    study = run.spec.matching_study(ctx.hidden_size, _eval_at(run), seeds, ctx.modality)
    labels = {arm.strategy for arm in run.arms if arm.run_id in finalists}
    return [planned for planned in study.grid() if planned.strategy in labels]


def _eval_at(run: _Run) -> tuple[int, ...]:
    return tuple(run.arms[0].config["train"]["eval_at"])


def _with_own(
    run: _Run, extra: list[PlannedRun], refs: Callable[[str], Curves]
) -> Callable[[str], Curves]:
    """References for a family: this advise's finished runs of it (else all of them), then
    the others (shipped, --references)."""
    ctx = run.context
    own = own_curves(run.folder, [*run.arms, *extra], ctx.metric, ctx.budget)

    def for_family(family: str) -> Curves:
        mine = [c for f, c in own if f == family] or [c for _, c in own]
        return [*mine, *refs(family)]

    return for_family


def _answer(
    run: _Run,
    decision: Decision,
    extra: list[PlannedRun],
    refs: Callable[[str], Curves],
    observed_only: bool = False,
) -> Advice:
    from freezetune.study.baseline import baseline_key, read_baselines

    failed = frozenset(str(r.arm) for r in read_halving_rows(run.conn) if r.kind == FAILED)
    facts = arm_facts(run.folder, run.arms, extra, decision, run.context, failed)
    found = read_baselines(run.folder).get(baseline_key(run.arms[0].config) or "")
    value = None if found is None else found.metrics.get(run.context.metric)
    advice = answer(run.spec.name, facts, metric=run.context.metric,
                    optimize=run.spec.optimize, tolerance=run.spec.tolerance / 100,
                    baseline=value, references=_with_own(run, extra, refs),
                    observed_only=observed_only)  # fmt: skip
    plan = run.plan
    first = {str(arm.id): plan.steps(arm.id, 0) for arm in plan.arms}
    shown = {"eta": plan.eta, "fractions": list(plan.fractions), "sizes": list(plan.sizes),
             "cost_fraction": plan.cost_fraction(), "first_steps": first,
             "eval_at": list(_eval_at(run)), "budget": run.context.budget,
             "train_size": (run.arms[0].config.get("data") or {}).get("max_train_samples")}  # fmt: skip
    where = str(run.folder / "runs" / advice.pick) if advice.pick else None
    ctx = run.context
    return dataclasses.replace(advice, plan=shown, modality=ctx.modality, model=ctx.model,
                               task=ctx.task, seeds=run.spec.seeds, run=where)  # fmt: skip


def _complete_pick(
    run: _Run, decision: Decision, extra: list[PlannedRun], refs: Callable[[str], Curves]
) -> Advice:
    """Answer; while the pick is an arm that was pruned, train it to its end and answer again
    (at most :data:`PICK_ROUNDS` times; then the pick is among the arms that ran to the end)."""
    by_id = {arm.run_id: arm for arm in run.arms}
    trained = [dataclasses.replace(by_id[arm], stop_at_step=None) for arm in read_picks(run.conn)]
    _finish(run, trained)  # a killed advise's stored picks first, in their order
    for round_ in range(len(trained), PICK_ROUNDS):
        advice = _answer(run, decision, extra, refs)
        pick = advice.pick
        if pick is None or advice.arm(pick).status in ("finalist", "trained"):
            return advice
        write_pick(run.conn, round_, pick)  # stored before it trains
        trained.append(dataclasses.replace(by_id[pick], stop_at_step=None))
        _finish(run, trained[-1:])
    return _answer(run, decision, extra, refs, observed_only=True)  # the pick ran to its end


def _drop_checkpoints(run: _Run, advice: Advice) -> None:
    """The answer is settled: pruned arms' checkpoints (weights and optimizer state) go."""
    for arm in advice.arms:
        if arm.status == "stopped" and arm.id != advice.pick:
            shutil.rmtree(run.folder / "runs" / arm.id / "checkpoints", ignore_errors=True)


def run_advise(
    spec: AdviseSpec,
    out_root: str | Path = "runs",
    *,
    executor: str | Executor = "local",
    jobs: int = 1,
    progress: bool = True,
    references: Sequence[str | Path] = (),
) -> AdviseOutcome:
    """Advise on ``spec`` into ``out_root/<name>/`` (see the module docstring)."""
    from freezetune.advise.render import write_advice
    from freezetune.study.baseline import ensure_baselines

    chosen = make_executor(executor, jobs=jobs) if isinstance(executor, str) else executor
    context, arms, plan = _prepare(spec)
    refs = references_for(references, context)
    folder = Path(out_root) / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    with study_lock(folder, spec.name):
        _save_spec(folder, spec, arms)
        ensure_baselines(folder, [arms[0].config])
        run = _Run(
            spec,
            folder,
            context,
            arms,
            plan,
            chosen,
            progress,
            open_store(folder / "results.sqlite"),
        )
        try:
            ensure_table(run.conn)
            run.touch = start_call(run.conn)
            _save_matching_study(folder, run)
            decision = _halve(run)
            extra = _seeds(run, [str(arm) for arm in decision.finalists])
            _finish(run, extra)
            advice = _complete_pick(run, decision, extra, refs)
            _drop_checkpoints(run, advice)
            run.touch()
            advice = dataclasses.replace(advice, wall_s=round(wall_seconds(run.conn), 1))
        finally:
            run.conn.close()
        written = write_advice(folder, advice)
    files = (written.json, written.markdown, written.html, written.plot)
    return AdviseOutcome(folder, advice, written.headline, files)
