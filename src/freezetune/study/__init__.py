"""Studies: a grid of strategies x seeds (x lrs, x train sizes) over one model and task,
run resumably into ``runs/<study>/`` with one SQLite row per run.

>>> from freezetune.study import StudySpec, run_study
>>> spec = StudySpec.from_dict({"name": "d", "strategies": ["full", "bottom:2"], "seeds": [0, 1]})
>>> len(spec.grid())
4
>>> run_study(spec, "runs")  # doctest: +SKIP
"""

from freezetune.study.runner import StudyOutcome, plan_todo, run_study, study_folder
from freezetune.study.spec import PlannedRun, Strategy, StudySpec, preset_strategies
from freezetune.study.store import RunRow, open_store, read_rows, study_lock

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
