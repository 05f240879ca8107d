"""Build ``src/freezetune/advise/reference_curves.json``: the reference curves shipped with the
package (:func:`freezetune.advise.references.shipped`), from this repository's studies.

Each study folder's ``results.sqlite`` gives one curve per succeeded run (the best main
metric so far against the fraction of the run done, rounded to 4 decimals), stamped with the
study's name, the config that runs it and the commit each run was made at (where stored). A
run whose config an earlier study already ran (same run id: e.g. ``lisa``'s ``full``, which is
``default``'s) is kept once, under the first study. The study folders are not in git (``runs/`` is ignored): run the studies first, then

    python benchmarks/reference_curves.py --runs runs default speed vision lisa
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from freezetune.advise.references import SHIPPED, from_rows, to_shipped
from freezetune.study.store import open_store, read_rows

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "freezetune" / "advise" / SHIPPED
COMMAND = "python benchmarks/reference_curves.py --runs runs default speed vision lisa"
#: where a study's config lives: the shipped studies, then the example plugins' studies
CONFIG_FOLDERS = ("configs/studies", "examples/plugins/studies")


def config_of(name: str) -> str:
    """The repository path of study ``name``'s config."""
    for folder in CONFIG_FOLDERS:
        if (ROOT / folder / f"{name}.yaml").is_file():
            return f"{folder}/{name}.yaml"
    raise SystemExit(f"no config for study {name} in {', '.join(CONFIG_FOLDERS)}")


def build(runs: Path, names: list[str]) -> dict:
    studies: dict[str, dict] = {}
    references: list[dict] = []
    seen: set[str] = set()
    for name in names:
        conn = open_store(runs / name / "results.sqlite")
        try:
            rows = read_rows(conn)
        finally:
            conn.close()
        found = from_rows(rows, name)
        if not found:
            raise SystemExit(f"study {name} in {runs} has no succeeded run with a curve")
        new = [ref for ref in found if ref.run_id not in seen]
        seen.update(ref.run_id for ref in new)
        studies[name] = {"config": config_of(name), "runs": len(new),
                         "already_shipped": len(found) - len(new)}  # fmt: skip
        references += to_shipped(name, new)
    about = ("finished runs' curves: x = step / the run's steps, y = best main metric so far; "
             "freezetune.advise.references.shipped() reads them")  # fmt: skip
    return {"about": about, "command": COMMAND, "studies": studies, "references": references}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("studies", nargs="+", help="study names (folders under --runs)")
    parser.add_argument("--runs", default="runs", help="the folder holding the study folders")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    data = build(Path(args.runs), args.studies)
    text = json.dumps(data, indent=None, separators=(",", ":"))
    Path(args.out).write_text(text.replace('},{"study"', '},\n{"study"') + "\n", "utf-8")
    print(f"{args.out}: {len(data['references'])} curves from {', '.join(data['studies'])}, "
          f"{len(text) // 1024} KB")  # fmt: skip


if __name__ == "__main__":
    main()
