"""examples/make_pycountry_kb.py: its relation file is a valid one with train, validation and test families
in both layouts; names are put in reading order; the JSONL it writes goes through `symbolic_ram ingest`
and `load_jsonl_facts` with no code naming its relation."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from common.relations import load_relation, shipped_relations

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("make_pycountry_kb", ROOT / "examples" / "make_pycountry_kb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_relation_file_is_complete_and_unknown_to_the_project(example):
    rel = load_relation(str(example.RELATION))
    assert rel.name not in shipped_relations()
    for split in ("train", "validation", "test"):
        assert {t.layout for t in rel.select(split)} == {"completion", "chat"}, split
    assert len(rel.families("train")) >= 3 and len(rel.families("test")) >= 3
    assert not set(rel.families("test")) & set(rel.families("train"))  # whole families go to one split
    code_names = [p.read_text(encoding="utf-8") for pkg in ("common", "neuralcpu", "symbolic_ram", "bridge", "benchmarks")
                  for p in (ROOT / pkg).rglob("*.py")]
    assert not any(rel.name in text for text in code_names)  # no code of the project names the relation


def test_inverted_names_are_put_in_reading_order(example):
    assert example.reading_order("Virgin Islands, British") == "British Virgin Islands"
    assert example.reading_order("Congo, The Democratic Republic of the") == "The Democratic Republic of the Congo"
    assert example.reading_order("Micronesia, Federated States of") == "Federated States of Micronesia"
    assert example.reading_order("Bonaire, Sint Eustatius and Saba") == "Bonaire, Sint Eustatius and Saba"
    assert example.reading_order("Peru") == "Peru"


def test_the_knowledge_base_goes_through_ingest_and_the_fact_loader(example, tmp_path):
    pytest.importorskip("pycountry")
    from neuralcpu.facts import load_jsonl_facts
    from symbolic_ram.cli import main as symbolic_ram

    assert example.main(["--out", str(tmp_path / "kb")]) == 0
    jsonl = tmp_path / "kb" / "numeric_code.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert len(rows) > 200 and all(r["relation_file"] == "numeric_code.yaml" for r in rows)
    assert (tmp_path / "kb" / "numeric_code.yaml").read_text() == example.RELATION.read_text()
    by_subject = {r["subject"]: r["object"] for r in rows}
    assert by_subject["Afghanistan"] == "004" and by_subject["Nigeria"] == "566"  # leading zeros kept
    assert not [s for s in by_subject if ", " in s and " and " not in s]
    facts = load_jsonl_facts(jsonl)  # registers the relation from the file the lines name
    assert len(facts) == len(rows) and facts[0].relation == "numeric_code"

    store = tmp_path / "store"
    assert symbolic_ram(["init", str(store), "--embedder", "hash", "--index", "numpy"]) == 0
    assert symbolic_ram(["ingest", str(store), str(jsonl), "--strict"]) == 0
    from symbolic_ram import KnowledgeStore

    with KnowledgeStore(store, create=False, read_only=True) as s:
        assert [f.object for f in s.lookup("nigeria", "numeric_code")] == ["566"]
        assert s.stats()["relations"] == {"numeric_code": len(rows)}
