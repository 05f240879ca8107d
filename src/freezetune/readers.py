"""Read CSV, TSV and JSON Lines files into tables, with one-line errors that name the line.

Nothing here knows about tasks or labels: a `Table` is a file's columns and its rows, each kept
with its line number so that later errors can point at it. `freezetune.tasks` turns tables
into examples.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from freezetune.errors import UserError

__all__ = ["DATA_SUFFIXES", "Table", "read_delimited", "read_file", "read_jsonl"]


@dataclass(frozen=True)
class Table:
    """Rows of one file as (line number, record) so errors can point at the line.

    >>> table = Table("t.csv", ("text", "label"), [(2, {"text": "hi", "label": 1})])
    >>> table.cell(2, table.rows[0][1], "label")
    '1'
    """

    path: str
    columns: tuple[str, ...]
    rows: list[tuple[int, dict[str, Any]]]

    def check_columns(self, wanted: Sequence[str], fix: str) -> None:
        """Raise a UserError naming the first of `wanted` this table lacks, then `fix`."""
        for name in wanted:
            if name not in self.columns:
                raise UserError(
                    f"missing column '{name}' in {self.path} (columns: {', '.join(self.columns)}); "
                    f"{fix}"
                )

    def cell(self, line: int, record: dict[str, Any], column: str) -> str:
        """The text in `column` of the row at `line` (numbers become their string)."""
        value = record.get(column)
        if value is None:  # JSONL null or missing key
            raise UserError(
                f"no value for '{column}' in {self.path} line {line}; fill it or drop it"
            )
        return value if isinstance(value, str) else str(value)


@contextmanager
def _reading(path: Path) -> Iterator[TextIO]:
    """Open a UTF-8 text file (a BOM is dropped) and turn decoding errors into UserErrors."""
    if not path.is_file():
        raise UserError(f"file not found: {path}; check the path (relative to {Path.cwd()})")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            yield handle
    except UnicodeDecodeError as err:
        byte = err.object[err.start : err.start + 1]
        raise UserError(f"{path} is not UTF-8 (found byte {byte!r}); re-save it as UTF-8") from None
    except csv.Error as err:
        raise UserError(f"{path} could not be parsed ({err}); fix the file's quoting") from None


def read_delimited(
    path: Path, delimiter: str, *, glue: bool = False, columns: tuple[str, ...] | None = None
) -> Table:
    """Read a CSV/TSV; GLUE files use QUOTE_NONE since their text holds unbalanced quotes.

    `columns` names the columns of a file without a header line (GLUE's CoLA).
    """
    rows: list[tuple[int, dict[str, Any]]] = []
    with _reading(path) as handle:
        reader = csv.reader(
            handle, delimiter=delimiter, quoting=csv.QUOTE_NONE if glue else csv.QUOTE_MINIMAL
        )
        header = columns or tuple(name.strip() for name in next(reader, []))
        if not header:
            raise UserError(f"{path} is empty; give a file with a header line and data rows")
        if len(set(header)) != len(header):
            raise UserError(f"{path} has duplicate column names ({', '.join(header)}); rename them")
        try:
            for fields in reader:
                if not fields:
                    continue  # blank line
                if len(fields) != len(header):
                    raise UserError(
                        f"{path} line {reader.line_num} has {len(fields)} fields but the header "
                        f"has {len(header)}; fix the quoting or delimiters on that line"
                    )
                rows.append((reader.line_num, dict(zip(header, fields, strict=True))))
        except csv.Error as err:  # e.g. a field over csv's size limit: a runaway quote
            raise UserError(
                f"{path} line {reader.line_num} could not be parsed ({err}); look for an "
                "unclosed quote there, or shorten the text"
            ) from None
    if not rows:
        raise UserError(f"{path} has no data rows (only a header or blank lines); add examples")
    return Table(str(path), header, rows)


def read_jsonl(path: Path) -> Table:
    """Read JSON Lines: one object per line; the first object's keys are the columns."""
    rows: list[tuple[int, dict[str, Any]]] = []
    with _reading(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(
                    f"{path} line {number} is not valid JSON ({err.msg}); write one object per line"
                ) from None
            if not isinstance(record, dict):
                raise UserError(f"{path} line {number} is not a JSON object; write one per line")
            rows.append((number, record))
    if not rows:
        raise UserError(f"{path} is empty; add one JSON object per line")
    return Table(str(path), tuple(rows[0][1]), rows)


_READERS: dict[str, Callable[[Path], Table]] = {
    ".csv": lambda path: read_delimited(path, ","),
    ".tsv": lambda path: read_delimited(path, "\t"),
    ".jsonl": read_jsonl,
    ".json": read_jsonl,
}

DATA_SUFFIXES: tuple[str, ...] = tuple(_READERS)
"""File name endings `read_file` reads (compare in lower case)."""


def read_file(path: Path) -> Table:
    """Read a user's data file, chosen by its suffix: .csv, .tsv, or .jsonl/.json."""
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise UserError(f"unsupported file type '{suffix}' for {path}; use .csv, .tsv or .jsonl")
    return _READERS[suffix](path)
