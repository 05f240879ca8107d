"""``freezetune inspect``: the ordered units of a model and what a ``--freeze`` spec trains."""

from __future__ import annotations

from freezetune.config import RunConfig
from freezetune.families import get_family
from freezetune.freezing import apply_frozen, frozen_parameters, parse_freeze
from freezetune.modality import Loaded, model_modality, read_model_config
from freezetune.tasks import TaskInfo
from freezetune.units import describe_units, split_units, trainable_line

__all__ = ["inspect_model", "pooling_note", "unit_table"]


def unit_table(rows: list[tuple[str, int, int]]) -> str:
    """One line per unit from ``units.describe_units``: name, parameters, trainable, state.

    >>> print(unit_table([("embeddings", 10, 0), ("head", 2, 2)]))
    unit             params   trainable  state
    embeddings           10           0  frozen
    head                  2           2  trains
    """
    lines = ["unit             params   trainable  state"]
    for name, total, trains in rows:
        state = "frozen" if trains == 0 and total else "trains" if trains == total else "partial"
        lines.append(f"{name:<12}{total:>11,}{trains:>12,}  {state}")
    return "\n".join(lines)


def pooling_note(model_type: str, pooling: str) -> str:
    """A warning when ``pooling`` reads little of the sentence for ``model_type``, else ``""``.

    >>> pooling_note("qwen3", "last"), pooling_note("bert", "cls")
    ('', '')
    >>> pooling_note("qwen3", "cls")
    'qwen3 is a causal decoder: its first token sees only itself; pass --pooling last'
    """
    family = get_family(model_type)
    if family is None or not family.causal or pooling not in ("cls", "pooler"):
        return ""
    return (
        f"{model_type} is a causal decoder: its first token sees only itself; pass --pooling last"
    )


def _load(name: str, num_labels: int, pooling: str | None, trust_remote_code: bool) -> Loaded:
    """``name`` with a fresh ``num_labels``-way head, loaded by the modality that owns it."""
    modality = model_modality(read_model_config(name, trust_remote_code))
    model = {"name": name, "pooling": pooling, "trust_remote_code": trust_remote_code}
    # no input is fed: the shortest --max-length passes any text model's position check
    config = RunConfig.from_dict({"model": model, "data": {"max_length": 8}})
    labels = tuple(map(str, range(num_labels)))
    task = TaskInfo("inspect", (), "label", labels, False, (), "")
    return modality.load_model(config, task)


def inspect_model(
    name: str,
    *,
    freeze: str = "full",
    pooling: str | None = None,
    blocks_path: str | None = None,
    embeddings_paths: list[str] | None = None,
    num_labels: int = 2,
    trust_remote_code: bool = False,
) -> str:
    """Describe ``name``'s units and the trainable split under ``freeze``.

    >>> print(inspect_model("minilm-l6", freeze="bottom:3"))  # doctest: +SKIP
    """
    spec = parse_freeze(freeze)
    model = _load(name, num_labels, pooling, trust_remote_code).model
    units = split_units(model, blocks_path=blocks_path, embeddings_paths=embeddings_paths)
    how = str(model.config.pooling)
    frozen = frozen_parameters(units, spec)
    apply_frozen(model, frozen)
    header = (
        f"model {name} ({units.family}, {units.num_blocks} blocks at {units.blocks_path}, "
        f"pooling {how}); freeze {spec.text}"
    )
    lines = [header, unit_table(describe_units(model, units))]
    family = get_family(units.family)
    kind = family.note if family is not None else ""
    notes = [note for note in (kind, units.note, pooling_note(units.family, how)) if note]
    lines.extend(f"note: {note}" for note in notes)
    lines.append(trainable_line(model))
    return "\n".join(lines)
