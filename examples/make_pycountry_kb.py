"""Write a knowledge base the project's code never names: country -> ISO 3166-1 numeric code, from pycountry.

    .venv/bin/pip install pycountry          # or: pip install -e '.[examples]'
    .venv/bin/python examples/make_pycountry_kb.py --out kb/iso
    # -> kb/iso/numeric_code.jsonl (one fact a line) and kb/iso/numeric_code.yaml (its relation file)

It is the example of docs/bridge.md's "Add a knowledge base the model never knew": a JSONL of triples
whose every line names its relation file (`relation_file`, relative to the JSONL), so `python -m
symbolic_ram ingest`, `python -m bridge.toolsft --relations kb/iso/numeric_code.yaml` and `python -m
bridge.evaluate --facts ...jsonl` read the relation without any code knowing it. The relation file is
copied from examples/relations/numeric_code.yaml (template families in train, validation and test).

Subjects are pycountry's common names ("Bolivia", not "Bolivia, Plurinational State of"); an inverted
name ("Virgin Islands, British") is put in reading order ("British Virgin Islands"), because a comma
in a subject reads as two clauses in every template. Codes keep their leading zeros ("004").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

RELATION = Path(__file__).resolve().parent / "relations" / "numeric_code.yaml"


def reading_order(name: str) -> str:
    """"Virgin Islands, British" -> "British Virgin Islands"; "Congo, The Democratic Republic of the" ->
    "The Democratic Republic of the Congo". Names whose tail is a list ("Bonaire, Sint Eustatius and
    Saba") stay as they are."""
    if ", " not in name:
        return name
    head, tail = name.split(", ", 1)
    if " and " in tail or "," in tail:
        return name
    if tail.endswith((" of", " of the")) or len(tail.split()) == 1:
        return f"{tail} {head}"
    return name


def country_rows() -> list[dict]:
    """One fact per pycountry country: {subject, relation, object, relation_file, provenance}, by name."""
    try:
        import pycountry
    except ImportError as e:
        raise SystemExit("this example needs pycountry: .venv/bin/pip install pycountry") from e
    rows = []
    for c in pycountry.countries:
        subject = reading_order(getattr(c, "common_name", None) or c.name)
        rows.append({"subject": subject, "relation": "numeric_code", "object": c.numeric,
                     "relation_file": RELATION.name,
                     "provenance": {"alpha_3": c.alpha_3, "iso_name": c.name, "pycountry": pycountry.__version__}})
    subjects = [r["subject"] for r in rows]
    if len(set(subjects)) != len(subjects):
        raise SystemExit("two countries share a subject name; the lookups would be ambiguous")
    return sorted(rows, key=lambda r: r["subject"])


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, so a killed run leaves no half file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="examples/make_pycountry_kb.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for numeric_code.jsonl and numeric_code.yaml")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = country_rows()
    shutil.copyfile(RELATION, out / RELATION.name)
    write_atomic(out / "numeric_code.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} facts to {out / 'numeric_code.jsonl'} and the relation file {out / RELATION.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
