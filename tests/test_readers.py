"""Tests for freezetune.readers on its own: files into tables, with line numbers kept.

The errors a user meets through `load_task` are checked in test_tasks.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from freezetune.errors import UserError
from freezetune.readers import DATA_SUFFIXES, Table, read_delimited, read_file


def test_read_file_picks_the_reader_by_suffix(tmp_path: Path) -> None:
    (tmp_path / "a.CSV").write_text('text,label\n"x, y",1\n\nz,0\n', encoding="utf-8")
    (tmp_path / "a.tsv").write_text("text\tlabel\nx\t1\n", encoding="utf-8")
    (tmp_path / "a.json").write_text('{"text": "x", "label": 1}\n\n{"label": 0}\n')
    csv_table = read_file(tmp_path / "a.CSV")
    assert csv_table.columns == ("text", "label")
    assert csv_table.rows == [(2, {"text": "x, y", "label": "1"}), (4, {"text": "z", "label": "0"})]
    assert read_file(tmp_path / "a.tsv").rows == [(2, {"text": "x", "label": "1"})]
    jsonl = read_file(tmp_path / "a.json")
    assert jsonl.columns == ("text", "label") and [line for line, _ in jsonl.rows] == [1, 3]
    assert set(DATA_SUFFIXES) == {".csv", ".tsv", ".jsonl", ".json"}
    with pytest.raises(UserError, match=r"unsupported file type '\.txt'"):
        read_file(tmp_path / "a.txt")


def test_glue_files_keep_quotes_and_take_given_columns(tmp_path: Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_text('gj04\t0\t*\tThey "drank the pub.\n', encoding="utf-8")
    table = read_delimited(path, "\t", glue=True, columns=("source", "label", "mark", "text"))
    assert table.rows == [
        (1, {"source": "gj04", "label": "0", "mark": "*", "text": 'They "drank the pub.'})
    ]


def test_table_cells_and_columns() -> None:
    table = Table("t.jsonl", ("text", "label"), [(1, {"text": "a", "label": 2.5}), (2, {})])
    assert table.cell(1, table.rows[0][1], "label") == "2.5"
    with pytest.raises(UserError, match=r"no value for 'text' in t\.jsonl line 2"):
        table.cell(2, table.rows[1][1], "text")
    table.check_columns(("label", "text"), "unused")
    with pytest.raises(
        UserError, match=r"missing column 'y' in t\.jsonl \(columns: text, label\); fix"
    ):
        table.check_columns(("text", "y"), "fix")
