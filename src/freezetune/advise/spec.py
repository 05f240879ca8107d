"""What an advise is: a study's strategies, each at its own learning rates, as arms.

An :class:`AdviseSpec` is a :class:`~freezetune.study.spec.StudySpec` (model, task, base
config, strategies: presets and plugins' strategies alike) plus how to search it: ``lrs``
(``auto``, ``one`` or a list, :mod:`~.lrs`), what to ``optimize`` (``train`` time,
``inference`` cost or ``accuracy``), the ``tolerance`` in points, how many ``seeds`` the
finalists run, and ``eta``. In a study YAML the same settings sit under ``advise:``::

    name: advise-sst2
    base: {model: {name: minilm-l6}, data: {task: sst2, max_train_samples: 2000}}
    preset: strategies
    advise: {lrs: auto, optimize: train, tolerance: 1.0, seeds: 3}

Its arms (:meth:`AdviseSpec.arms`) are the strategies x their rates as seed-0 planned runs,
each strategy's own settings kept and ``optim.lr`` set; their run ids are those a study of the
same arms gives (:meth:`AdviseSpec.matching_study`), so ``--check`` can line them up.

>>> spec = AdviseSpec.from_dict({"name": "a", "strategies": ["full", "head"],
...                              "advise": {"lrs": "one"}})
>>> [arm.strategy for arm in spec.arms(hidden_size=384, eval_at=(5, 10))]
['full (lr=0.0001)', 'head (lr=0.002)']
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from freezetune.advise.advice import OPTIMIZE
from freezetune.advise.lrs import LrChoice, family_label, lrs_for, parse_lrs
from freezetune.distill.config import STUDY_TEACHER
from freezetune.errors import UserError
from freezetune.study.spec import PlannedRun, Strategy, StudySpec

__all__ = ["ADVISE_KEYS", "OPTIMIZE", "AdviseSpec"]

ADVISE_KEYS = ("lrs", "optimize", "tolerance", "seeds", "eta")


def _settings(data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"advise: must be a mapping of {', '.join(ADVISE_KEYS)}, got {data!r}")
    unknown = sorted(set(data) - set(ADVISE_KEYS))
    if unknown:
        raise UserError(f"unknown advise key {unknown[0]}; valid keys: {', '.join(ADVISE_KEYS)}")
    return dict(data)


def _whole(value: Any, key: str, least: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = least - 1
    if number < least or str(number) != str(value).strip():
        raise UserError(f"--{key} must be a whole number >= {least}, got {value!r}")
    return number


@dataclass(frozen=True)
class AdviseSpec:
    """The study whose answer advise looks for, and how it searches."""

    study: StudySpec
    lrs: LrChoice = "auto"
    optimize: str = "train"
    tolerance: float = 1.0  # points of the main metric (1 point = 0.01 accuracy)
    seeds: int = 3
    eta: int = 3

    def __post_init__(self) -> None:
        if self.optimize not in OPTIMIZE:
            raise UserError(f"--optimize {self.optimize!r}: choose one of {', '.join(OPTIMIZE)}")
        _whole(self.seeds, "seeds", 1)
        _whole(self.eta, "eta", 2)
        if not self.tolerance >= 0:  # NaN too
            raise UserError(
                f"--tolerance {self.tolerance!r} must be >= 0 points (e.g. 1 for one point)"
            )
        for strategy in self.study.strategies:
            if dict(strategy.overrides).get("distill.teacher") == STUDY_TEACHER:
                raise UserError(
                    f"advise cannot distil from {STUDY_TEACHER} (the full arm may be pruned): "
                    "set distill.teacher to a finished run folder, or drop that strategy"
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, preset_blocks: int | None = None) -> AdviseSpec:
        """A study mapping (``name``, ``base``, ``strategies``/``preset``) with ``advise:``."""
        data = dict(data)
        settings = _settings(data.pop("advise", None))
        data.pop("seeds", None)  # a study's seed list: advise runs seed 0, finalists more
        if data.get("lrs") is not None and "lrs" not in settings:
            settings["lrs"] = data.pop("lrs")  # a study's lrs axis: the same rates for all
        data.pop("lrs", None)
        study = StudySpec.from_dict(data, preset_blocks=preset_blocks)
        try:
            tolerance = float(settings.get("tolerance", 1.0))
        except (TypeError, ValueError):
            shown = settings["tolerance"]
            raise UserError(f"--tolerance must be a number of points, got {shown!r}") from None
        return cls(
            study=study,
            lrs=parse_lrs(settings.get("lrs", "auto")),
            optimize=str(settings.get("optimize", "train")),
            tolerance=tolerance,
            seeds=_whole(settings.get("seeds", 3), "seeds", 1),
            eta=_whole(settings.get("eta", 3), "eta", 2),
        )

    @property
    def name(self) -> str:
        return self.study.name

    def settings(self) -> dict[str, Any]:
        lrs = self.lrs if isinstance(self.lrs, str) else list(self.lrs)
        return {"lrs": lrs, "optimize": self.optimize, "tolerance": self.tolerance,
                "seeds": self.seeds, "eta": self.eta}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {**self.study.to_dict(), "advise": self.settings()}

    def strategies(self, hidden_size: int | None, modality: str = "text") -> list[Strategy]:
        """Every strategy at each of its rates (its own ``optim.lr`` wins), in strategy order."""
        out: list[Strategy] = []
        for strategy in self.study.strategies:
            own = dict(strategy.overrides).get("optim.lr")
            rates = (
                (float(own),)
                if own is not None
                else lrs_for(
                    _family_label(strategy, self.study.base), self.lrs, hidden_size, modality
                )
            )
            for lr in rates:
                kept = tuple((k, v) for k, v in strategy.overrides if k != "optim.lr")
                out.append(Strategy(strategy.freeze, tuple(sorted((*kept, ("optim.lr", lr))))))
        return out

    def matching_study(
        self,
        hidden_size: int | None,
        eval_at: tuple[int, ...],
        seeds: tuple[int, ...] = (0,),
        modality: str = "text",
    ) -> StudySpec:
        """The study that runs every arm to its end with ``seeds``: the arms' run ids at seed 0."""
        base = _with_eval_at(self.study.base, eval_at)
        strategies = tuple(self.strategies(hidden_size, modality))
        return dataclasses.replace(self.study, base=base, strategies=strategies, seeds=seeds)

    def arms(
        self, hidden_size: int | None, eval_at: tuple[int, ...], modality: str = "text"
    ) -> list[PlannedRun]:
        """The arms: every strategy x rate, seed 0, evaluated after ``eval_at`` steps."""
        return self.matching_study(hidden_size, eval_at, (0,), modality).grid()


def _family_label(strategy: Strategy, base: dict[str, Any]) -> str:
    """The label :func:`~.lrs.family_of` reads (a student set by the strategy or the base)."""
    student = dict(strategy.overrides).get(
        "distill.student_layers", (base.get("distill") or {}).get("student_layers")
    )
    return family_label(strategy.freeze, student)


def _with_eval_at(base: dict[str, Any], eval_at: tuple[int, ...]) -> dict[str, Any]:
    train = dict(base.get("train") or {})
    train["eval_at"] = list(eval_at)
    return {**base, "train": train}
