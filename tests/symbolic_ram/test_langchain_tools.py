"""langchain-core integration: tool names and schemas match the model's call format."""

from __future__ import annotations

import json

import pytest

from symbolic_ram import KnowledgeStore, StoreConfig, ingest_facts, make_retriever, make_tools


@pytest.fixture
def store(tmp_path, world):
    with KnowledgeStore(tmp_path / "s", StoreConfig(embedder="hash")) as s:
        ingest_facts(s, world, source="test", provenance={"run": "r1"})
        yield s


def test_tool_names_and_arguments(store):
    lookup, search = make_tools(store)
    assert (lookup.name, search.name) == ("lookup", "search")
    assert set(lookup.args) == {"subject", "relation"} and set(search.args) == {"query", "k"}
    assert "relation" not in lookup.tool_call_schema.model_json_schema().get("required", [])
    with pytest.raises(Exception):
        search.invoke({"query": "x", "k": 0})  # validated by the schema


def test_lookup_tool_returns_json_facts(store):
    lookup, _ = make_tools(store)
    out = lookup.invoke({"subject": "tokyo", "relation": "country"})
    assert isinstance(out, str)
    facts = json.loads(out)
    assert [(f["subject"], f["relation"], f["object"]) for f in facts] == [("Tokyo", "country", "Japan")]
    assert set(facts[0]) == {"id", "subject", "relation", "object", "score", "source", "provenance", "matched_by"}
    assert facts[0]["matched_by"] == "exact"
    assert facts[0]["provenance"] == {"run": "r1"} and facts[0]["source"] == "test"
    assert len(json.loads(lookup.invoke({"subject": "Nigeria"}))) == 2
    assert json.loads(lookup.invoke({"subject": "Atlantis"})) == []


def test_search_tool_and_retriever(store):
    _, search = make_tools(store)
    facts = json.loads(search.invoke({"query": "Lagos country Nigeria", "k": 2}))
    assert len(facts) == 2 and facts[0]["subject"] == "Lagos" and facts[0]["score"] >= facts[1]["score"]
    assert len(json.loads(search.invoke({"query": "Lagos"}))) == 5  # default k
    docs = make_retriever(store, k=3).invoke("Lagos country Nigeria")
    assert len(docs) == 3
    assert docs[0].page_content == "Lagos country: Nigeria" and docs[0].metadata["object"] == "Nigeria"
