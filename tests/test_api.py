"""The public API: cheap to import, and every README Python API snippet runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def api_snippets() -> list[str]:
    text = README.read_text()
    section = text[text.index("### Python API") : text.index("Bad input (an unknown task")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_import_is_cheap() -> None:
    code = "import sys, freezetune; print(freezetune.RunConfig().freeze, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["full", "False"]


def test_public_names_resolve() -> None:
    import freezetune

    for name in freezetune.__all__:
        assert getattr(freezetune, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = freezetune.nope


def test_readme_has_the_api_snippets() -> None:
    joined = "\n".join(api_snippets())
    for name in ("train(", "resume(", "freeze(", "StudySpec", "run_study(", "write_report("):
        assert name in joined, name


@pytest.mark.parametrize("index", range(3))
def test_readme_api_snippet_runs(index, tiny_bert, tmp_path, monkeypatch, capsys) -> None:
    """Each snippet as written, on the tiny model and a 32-example slice (same code path)."""
    code = api_snippets()[index]
    for name in ('"minilm-l6"', '"my-bert-folder"'):
        code = code.replace(name, repr(tiny_bert))
    code = re.sub(r'"max_train_samples": \d+', '"max_train_samples": 32', code)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README snippet {index}", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.strip(), "the snippet prints its result"
    if index == 0:
        assert (tmp_path / "runs/api-b3/result.json").is_file()
    if index == 2:
        assert (tmp_path / "runs/api-depth/report.html").is_file()


def test_all_lists_every_lazy_export() -> None:
    import freezetune

    assert sorted(freezetune.__all__) == sorted(freezetune._EXPORTS)
