"""A study's preflight: whatever can fail without training fails before the first run.

Once per distinct run config of the grid, with the seed and the optimizer settings set aside
(they change no input), :func:`freezetune.training.check_inputs` loads the data (or reaches its
hub copy), loads the model and its processor (tokenizer or image processor), resolves the
strategy's freeze spec against the model's real depth and checks every flag against this model and task. So
``--strategies full,bottom:99`` stops before ``full`` trains, and a study without its data stops
in seconds instead of writing one failed row per run.

A teacher inside the grid (``distill.teacher: "@full"``) has not trained yet: its students are
checked without it (the grid itself guarantees the teacher run, ``spec._link_teachers``), and
a teacher of an earlier call whose weights ``--keep-models`` dropped trains again first
(``runner._with_teachers``). A teacher outside the grid must be finished, with its weights.

The first failure raises :class:`~freezetune.errors.UserError` naming the strategy: the CLI
prints that one line and exits 2 before any folder or row exists.

>>> _checked({"train": {"seed": 3, "epochs": 1}, "optim": {"lr": 1e-3}, "freeze": "head"})
{'train': {'epochs': 1, 'progress': False}, 'freeze': 'head'}
"""

from __future__ import annotations

import copy
from typing import Any

from freezetune.errors import UserError, first_line
from freezetune.objectives import objective_options
from freezetune.study.spec import PlannedRun, config_hash

__all__ = ["preflight"]


def _checked(config: dict[str, Any], in_grid_teacher: bool = False) -> dict[str, Any]:
    """What of a run's config decides whether its inputs load: all but the seed and the
    optimizer (and a teacher of the same grid, which trains first); checked quietly."""
    found = copy.deepcopy(config)
    found.pop("optim", None)
    found["train"] = {**(found.get("train") or {}), "progress": False}  # no loading bars
    found["train"].pop("seed", None)
    if in_grid_teacher:  # its temperature, alpha and objective go with it (they need one)
        kept = {k: v for k, v in found["distill"].items() if k not in ("temperature", "alpha")}
        found["distill"] = {**kept, "teacher": None}
        objective = found.pop("objective", None)
        if objective:  # registered and its options parse; its teacher comes later
            objective_options(objective)
    return found


def preflight(planned: list[PlannedRun]) -> int:
    """Check the inputs of every distinct config in ``planned``; how many were checked.

    Raises UserError (``strategy <label>: <the problem>``) at the first that fails.
    """
    from freezetune.config import RunConfig
    from freezetune.training import check_inputs

    seen: set[str] = set()
    for run in planned:
        try:
            config = _checked(run.config, in_grid_teacher=run.teacher is not None)
            key = config_hash(config)
            if key in seen:
                continue
            seen.add(key)
            check_inputs(RunConfig.from_dict({**config, "out": "preflight"}))
        except (UserError, OSError) as err:
            raise UserError(f"strategy {run.strategy}: {first_line(err)}") from None
    return len(seen)
