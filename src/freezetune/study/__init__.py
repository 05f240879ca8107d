"""Studies: a grid of strategies x seeds (x lrs, x train sizes) over one model and task,
run resumably into ``runs/<study>/`` with one SQLite row per run.

>>> from freezetune.study import StudySpec, run_study
>>> spec = StudySpec.from_dict({"name": "d", "strategies": ["full", "bottom:2"], "seeds": [0, 1]})
>>> len(spec.grid())
4
>>> run_study(spec, "runs")  # doctest: +SKIP

Planning a study needs only :mod:`freezetune.study.spec`; the runner and the store (which pull
in the report's numpy and plotting) are imported on first use (PEP 562), so parsing the
``freezetune study`` command line and validating its grid stay quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from freezetune.study.spec import PlannedRun, Strategy, StudySpec, preset_strategies

if TYPE_CHECKING:
    from freezetune.study.runner import StudyOutcome, plan_todo, run_study, study_folder
    from freezetune.study.store import RunRow, open_store, read_rows, study_lock

_LAZY = {
    **dict.fromkeys(("StudyOutcome", "plan_todo", "run_study", "study_folder"), "runner"),
    **dict.fromkeys(("RunRow", "open_store", "read_rows", "study_lock"), "store"),
}

__all__ = [
    "PlannedRun",
    "RunRow",
    "Strategy",
    "StudyOutcome",
    "StudySpec",
    "open_store",
    "plan_todo",
    "preset_strategies",
    "read_rows",
    "run_study",
    "study_folder",
    "study_lock",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'freezetune.study' has no attribute {name!r}")
    return getattr(importlib.import_module(f"freezetune.study.{module}"), name)
