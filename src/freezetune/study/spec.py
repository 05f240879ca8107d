"""What a study is: one model and task, a grid of strategies x seeds (x lrs, x train sizes).

A :class:`StudySpec` is plain, validated data; :meth:`StudySpec.grid` expands it into
:class:`PlannedRun` s, each with a fully resolved run config and its ``run_id`` (a hash of its
identity, as the options declare it: :func:`freezetune.options.identity`), so re-running the
same spec finds the same runs, whatever invocation options (``--report-to``, checkpoints) the
rerun passes.

A study YAML file looks like this (every key but ``strategies`` or ``preset`` is optional)::

    name: depth-sst2
    base:                       # a run config (model, data, optim, train), minus out and freeze
      model: {name: minilm-l6}
      data: {task: sst2, max_train_samples: 2000}
    strategies:                 # any --freeze spec; a mapping adds per-strategy overrides
      - full
      - {freeze: head, optim.lr: 1.0e-3}
    preset: depth               # or generate them: depth | strategies | speed (added before the list)
    seeds: [0, 1, 2]
    lrs: [1.0e-4, 3.0e-4]       # optional grid axes
    train_sizes: [500, 2000]

>>> spec = StudySpec.from_dict({"name": "demo", "strategies": ["full", "head"], "seeds": [0, 1]})
>>> [(run.strategy, run.seed) for run in spec.grid()]
[('full', 0), ('head', 0), ('full', 1), ('head', 1)]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from freezetune.config import RunConfig, copy_data
from freezetune.distill.config import STUDY_TEACHER
from freezetune.errors import UserError
from freezetune.freezing.spec import parse_freeze
from freezetune.options import identity, set_key

__all__ = [
    "PRESETS",
    "SHORT_KEYS",
    "PlannedRun",
    "Strategy",
    "StudySpec",
    "config_hash",
    "num_blocks_of",
    "preset_strategies",
]

#: Short names for the settings that labels mention most.
SHORT_KEYS: dict[str, str] = {
    "optim.lr": "lr",
    "data.max_train_samples": "n_train",
    "distill.student_layers": "student",
    "distill.teacher": "teacher",
}

#: ``advise`` holds ``freezetune advise``'s settings (a study ignores it)
SPEC_KEYS = ("name", "base", "strategies", "preset", "seeds", "lrs", "train_sizes", "advise")
#: the top-level run-config keys a strategy may set besides ``freeze``
TOP_KEYS = ("objective",)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _override_key(key: object) -> bool:
    return isinstance(key, str) and (key.count(".") == 1 or key in TOP_KEYS)


@dataclass(frozen=True)
class Strategy:
    """One ``--freeze`` spec, optionally with its own config overrides (e.g. a higher lr).

    >>> Strategy.parse({"freeze": "head", "optim.lr": 1e-3})
    Strategy(freeze='head', overrides=(('optim.lr', 0.001),))
    """

    freeze: str
    overrides: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        try:
            parse_freeze(self.freeze)  # a typo fails when the study is built, not hours in
        except UserError as err:
            raise UserError(f"strategy {self.freeze!r}: {err}") from None

    @classmethod
    def parse(cls, entry: Any) -> Strategy:
        """A spec string, or a mapping with ``freeze`` and dotted ``section.key`` overrides
        (or ``objective``)."""
        if isinstance(entry, str) and entry.strip():
            return cls(entry.strip())
        if isinstance(entry, dict) and isinstance(entry.get("freeze"), str):
            extra = {k: v for k, v in entry.items() if k != "freeze"}
            bad = [k for k in extra if not _override_key(k)]
            if bad:
                raise UserError(
                    f"strategy {entry!r}: override keys must look like section.key "
                    f"(e.g. optim.lr) or be {', '.join(TOP_KEYS)}, got {bad[0]!r}"
                )
            items = [(k, tuple(v) if isinstance(v, list) else v) for k, v in extra.items()]
            return cls(entry["freeze"].strip(), tuple(sorted(items)))
        raise UserError(
            f"bad strategy {entry!r}: use a --freeze spec string or a mapping like "
            "{freeze: head, optim.lr: 1.0e-3}"
        )

    def to_yaml_entry(self) -> str | dict[str, Any]:
        if not self.overrides:
            return self.freeze
        plain = [(k, list(v) if isinstance(v, tuple) else v) for k, v in self.overrides]
        return dict([("freeze", self.freeze), *plain])


@dataclass(frozen=True)
class PlannedRun:
    """One cell of the grid: a resolved run config (without ``out``) and its identity."""

    run_id: str
    strategy: str  # display label: the freeze spec plus the strategy's own overrides
    freeze: str
    seed: int
    lr: float
    train_size: int | None  # None = the whole training split
    config: dict[str, Any]  # its identity: options.identity(RunConfig), what run_id hashes
    teacher: str | None = None  # run_id of the run it distils from (distill.teacher: "@full")
    report_to: str = "none"  # live logger of the run (not part of its identity)
    save_every: int | None = None  # train.save_every as the study sets it (not in its identity)
    inference_cost: bool = True  # time the saved model after training (not in its identity)
    stop_at_step: int | None = None  # pause there (advise's rungs; not in its identity)


def config_hash(config: dict[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of canonical JSON of a config.

    >>> config_hash({"b": 1, "a": [1, 2]}) == config_hash({"a": (1, 2), "b": 1})
    True
    """
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _label(strategy: Strategy, config: dict[str, Any]) -> str:
    if not strategy.overrides:
        return strategy.freeze
    parts = []
    for key, _ in strategy.overrides:
        section, dot, name = key.partition(".")
        value = config.get(section, {}).get(name) if dot else config.get(key)
        shown = f"{value:g}" if isinstance(value, float) else value
        parts.append(f"{SHORT_KEYS.get(key, key)}={shown}")
    return f"{strategy.freeze} ({', '.join(parts)})"


def _number_list(value: Any, kind: type, key: str) -> tuple[Any, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        items = [items]
    try:
        numbers = tuple(kind(str(v).strip()) if kind is int else kind(v) for v in items)
    except (TypeError, ValueError):
        raise UserError(
            f"study {key} must be a list of {kind.__name__}s (e.g. {key}: [0, 1]), got {value!r}"
        ) from None
    if len(set(numbers)) != len(numbers):
        raise UserError(f"study {key} lists a value twice: {list(numbers)}")
    return numbers


@dataclass(frozen=True)
class StudySpec:
    """A grid over one base run config: strategies x seeds (x learning rates, x train sizes).

    ``lrs`` and ``train_sizes`` are optional axes: empty means "as in ``base``".
    """

    name: str
    base: dict[str, Any] = field(default_factory=dict)
    """Nested run config (model, data, optim, train); ``out`` and ``freeze`` come from the study."""
    strategies: tuple[Strategy, ...] = (Strategy("full"),)
    seeds: tuple[int, ...] = (0,)
    lrs: tuple[float, ...] = ()
    train_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise UserError(
                f"study name {self.name!r} must be a folder name: letters, digits, '.', '_', '-'"
            )
        bad = sorted(set(self.base) & {"out", "freeze", "overwrite"})
        if bad:
            raise UserError(
                f"study base must not set {bad[0]}: the study sets it (list freeze specs "
                "under strategies)"
            )
        if not self.strategies or not self.seeds:
            raise UserError("a study needs at least one strategy and one seed")
        train = self.base.get("train")
        if isinstance(train, dict) and train.get("stop_at_step") is not None:
            raise UserError(
                "study base must not set train.stop_at_step: a study runs every run to its end "
                "(pause single runs with freezetune train --stop-at-step)"
            )
        self.grid()  # every cell must be a valid run config: fail now, not mid-study

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, preset_blocks: int | None = None) -> StudySpec:
        """Build from YAML-like data; ``preset: depth|strategies|speed`` needs the model's block count
        (``preset_blocks``, or read from the model config via :func:`num_blocks_of`)."""
        unknown = sorted(set(data) - set(SPEC_KEYS))
        if unknown:
            raise UserError(f"unknown study key {unknown[0]}; valid keys: {', '.join(SPEC_KEYS)}")
        base = data.get("base") or {}
        if not isinstance(base, dict):
            raise UserError("study base must be a mapping of run config sections")
        raw = data.get("strategies") or []
        if not isinstance(raw, list):
            raw = [s for s in str(raw).split(",") if s.strip()]
        strategies = [Strategy.parse(s) for s in raw]
        if data.get("preset"):
            blocks = preset_blocks if preset_blocks is not None else num_blocks_of(base)
            generated = [Strategy.parse(s) for s in preset_strategies(str(data["preset"]), blocks)]
            strategies = generated + [s for s in strategies if s not in generated]
        return cls(
            name=str(data.get("name") or "study"),
            base=base,
            strategies=tuple(dict.fromkeys(strategies)) or (Strategy("full"),),
            seeds=_number_list(data.get("seeds", [0]), int, "seeds"),
            lrs=_number_list(data.get("lrs"), float, "lrs"),
            train_sizes=_number_list(data.get("train_sizes"), int, "train_sizes"),
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "base": self.base,
            "strategies": [s.to_yaml_entry() for s in self.strategies],
            "seeds": list(self.seeds),
        }
        if self.lrs:
            data["lrs"] = list(self.lrs)
        if self.train_sizes:
            data["train_sizes"] = list(self.train_sizes)
        return data

    def to_yaml(self) -> str:
        header = f"# freezetune study --config <this file>   (study {self.name})\n"
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False)

    def grid(self) -> list[PlannedRun]:
        """Every run of the study, seeds outermost (so seed 0 of everything finishes first);
        in each cell, a run that distils from the cell's ``full`` run comes after it."""
        runs: dict[str, PlannedRun] = {}
        for seed in self.seeds:
            for size in self.train_sizes or (None,):
                for lr in self.lrs or (None,):
                    cell = [self._plan(s, seed, lr, size) for s in self.strategies]
                    for run in _link_teachers(cell, self.name):
                        runs.setdefault(run.run_id, run)
        return list(runs.values())

    def _plan(
        self, strategy: Strategy, seed: int, lr: float | None, size: int | None
    ) -> PlannedRun:
        data = copy_data(self.base)
        settings: list[tuple[str, Any]] = [("train.seed", seed), ("freeze", strategy.freeze)]
        settings += [("optim.lr", lr)] if lr is not None else []
        settings += [("data.max_train_samples", size)] if size is not None else []
        try:
            for key, value in [*settings, *strategy.overrides]:  # the strategy's own settings win
                set_key(data, key, value)
            config = RunConfig.from_dict(data)
        except UserError as err:
            raise UserError(f"study {self.name}, strategy {strategy.freeze}: {err}") from None
        what = identity(config)
        return PlannedRun(
            run_id=config_hash(what),
            strategy=_label(strategy, what),
            freeze=config.freeze,
            seed=seed,
            lr=config.optim.lr,
            train_size=config.data.max_train_samples,
            config=what,
            report_to=config.train.report_to,
            save_every=config.train.save_every,
            inference_cost=config.train.inference_cost,
        )


def _link_teachers(cell: list[PlannedRun], study: str) -> list[PlannedRun]:
    """Point each ``distill.teacher: "@full"`` run of a grid cell at the cell's ``full`` run."""
    teacher = next((run.run_id for run in cell if run.strategy == "full"), None)
    plain, students = [], []
    for run in cell:
        if (run.config.get("distill") or {}).get("teacher") != STUDY_TEACHER:
            plain.append(run)
            continue
        if teacher is None:
            raise UserError(
                f"study {study}, strategy {run.strategy}: distill.teacher {STUDY_TEACHER} needs "
                "the plain full strategy in the study; add full to strategies"
            )
        students.append(dataclasses.replace(run, teacher=teacher))
    return plain + students


def num_blocks_of(base: dict[str, Any]) -> int:
    """Number of blocks of the base config's model, from its config file: ``num_hidden_layers``
    (or the like) for a transformer, the entries of ``stages`` plus the head conv for a CNN
    (EfficientNet-Lite's 7 MBConv stages: 8).

    >>> num_blocks_of({"model": {"name": "minilm-l6"}})  # doctest: +SKIP
    6
    """
    from freezetune.modality import read_model_config

    model = RunConfig.from_dict({k: v for k, v in base.items() if k == "model"}).model
    cfg = read_model_config(model.name, model.trust_remote_code)
    if cfg is None:
        raise UserError(
            f"cannot read the config of model {model.name}; check the name (or go online for a "
            "hub model), or list strategies instead of a preset"
        )
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(getattr(cfg, key, None), int):
            return int(getattr(cfg, key))
    if isinstance(getattr(cfg, "stages", None), list | tuple):
        return len(cfg.stages) + 1  # the stages and the head conv, as split_units sees them
    raise UserError(f"model {model.name}: its config names no layer count; list strategies")


def _depth(blocks: int) -> list[str]:
    return ["full", *(f"bottom:{k}" for k in range(blocks + 1)), "head"]


def _strategies(blocks: int) -> list[str]:
    half = f"bottom:{blocks // 2}"
    return ["full", "head", half, "two-phase", "gradual", "progressive", "autofreeze", "lora"]


def _speed(blocks: int) -> list[str | dict[str, Any]]:
    """ "If speed is the concern": freeze half, AutoFreeze, LoRA, or a half-depth student
    fine-tuned plainly and distilled from the same cell's full run."""
    student = {"freeze": "full", "distill.student_layers": max(1, blocks // 2)}
    distilled = {**student, "distill.teacher": STUDY_TEACHER}
    return ["full", f"bottom:{blocks // 2}", "autofreeze", "lora", student, distilled]


#: Generated strategy lists, from the model's number of blocks L.
PRESETS: dict[str, Any] = {"depth": _depth, "strategies": _strategies, "speed": _speed}


def preset_strategies(name: str, blocks: int) -> list[str | dict[str, Any]]:
    """The strategies of a preset for a model with ``blocks`` blocks (specs, or mappings with
    the strategy's own settings).

    >>> preset_strategies("depth", 2)
    ['full', 'bottom:0', 'bottom:1', 'bottom:2', 'head']
    >>> preset_strategies("strategies", 6)[:3]
    ['full', 'head', 'bottom:3']
    >>> preset_strategies("speed", 6)[-1]
    {'freeze': 'full', 'distill.student_layers': 3, 'distill.teacher': '@full'}
    """
    if name not in PRESETS:
        raise UserError(f"unknown study preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name](blocks)
