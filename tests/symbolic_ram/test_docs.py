"""docs/symbolic_ram.md against the code and the results files: the defaults it states are the code's,
and every measured number on it is in a generated table (scripts/readme_results.py), not typed by hand."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from symbolic_ram import StoreConfig
from symbolic_ram.store import DEFAULT_LOCK_TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "symbolic_ram.md"
GENERATED = re.compile(r"<!-- results:\S+ \w+ -->\n.*?<!-- results:end -->", re.S)
# A measurement typed into prose: "12 ms", "5.2 facts/s", "96%", "1.7×", "3x", "0.95" (a rate or score).
MEASURED = re.compile(r"\b\d[\d,]*(?:\.\d+)?\s?(?:ms|facts/s|texts/s|%|×|x\b)|\b0\.\d{2,}\b")


def _prose(text: str) -> str:
    """The page without its generated tables, code blocks and inline code."""
    text = GENERATED.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def test_the_config_table_states_the_configs_defaults():
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", DOC.read_text(encoding="utf-8"), flags=re.M))
    defaults = {f.name: str(f.default) for f in dataclasses.fields(StoreConfig)}
    assert set(defaults) <= set(rows), sorted(set(defaults) - set(rows))
    assert {k: rows[k] for k in defaults} == defaults


def test_the_stated_lock_timeout_is_the_default():
    stated = re.search(r"`--lock-timeout SECONDS` \(default (\d+)\)", DOC.read_text(encoding="utf-8"))
    assert stated is not None and float(stated.group(1)) == DEFAULT_LOCK_TIMEOUT


def test_no_measurement_is_typed_outside_the_generated_tables():
    text = DOC.read_text(encoding="utf-8")
    assert len(GENERATED.findall(text)) >= 9  # the tables are there (a marker typo must not pass silently)
    assert MEASURED.findall(_prose(text)) == []


def test_the_guard_would_catch_a_typed_number():
    assert MEASURED.findall(_prose("ingests 662 facts/s, p50 5.2 ms, recall 0.950, 1.71× txtai, 96%")) == [
        "662 facts/s", "5.2 ms", "0.950", "1.71×", "96%"]
    assert MEASURED.findall(_prose("`fuzzy_cutoff=0.80` and 2,000 facts, 20 runs")) == []


def test_every_results_file_the_page_names_exists():
    named = set(re.findall(r"docs/results/[\w.-]+\.json", DOC.read_text(encoding="utf-8")))
    assert named and [n for n in sorted(named) if not (ROOT / n).is_file()] == []
