"""``freezetune inspect``: the ordered units of a model and what a ``--freeze`` spec trains."""

from __future__ import annotations

from typing import Any

from freezetune.families import get_family
from freezetune.freezing import apply_frozen, frozen_parameters, parse_freeze
from freezetune.models import load_model
from freezetune.units import describe_units, split_units, trainable_line
from freezetune.vision.models import is_image_model, load_image_model

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
    if is_image_model(name, trust_remote_code):
        labels = tuple(map(str, range(num_labels)))
        loaded: Any = load_image_model(
            name,
            labels=labels,
            image_size=224,
            pooling=pooling,
            trust_remote_code=trust_remote_code,
        )
    else:
        loaded = load_model(
            name, num_labels=num_labels, pooling=pooling, trust_remote_code=trust_remote_code
        )
    model = loaded.model
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
