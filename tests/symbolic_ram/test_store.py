"""KnowledgeStore behaviour, one shared body run over every index backend (faiss, numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from symbolic_ram import KnowledgeStore, StoreConfig, StoreError, ingest_facts


def triples(facts):
    return {(f.subject, f.relation, f.object) for f in facts}


def test_lookup_is_exact_and_alias_insensitive(make_store, world):
    store = make_store()
    report = ingest_facts(store, world, source="test")
    assert report.added == len(world) and not report.skipped
    assert triples(store.lookup("Tokyo")) == {("Tokyo", "country", "Japan")}
    # case, accents and spacing do not matter; the stored text comes back as stored
    for name in ("sao paulo", "SÃO  PAULO", "São Paulo"):
        got = store.lookup(name)
        assert [(f.subject, f.object) for f in got] == [("São Paulo", "Brazil")]
        assert got[0].score == 1.0 and got[0].source == "test" and got[0].id > 0
    assert triples(store.lookup("nigeria", "capital")) == {("Nigeria", "capital", "Abuja")}
    assert store.lookup("Nigeria", "no-such-relation") == []
    assert store.lookup("Atlantis") == []


def test_extra_alias(make_store, world):
    store = make_store()
    ingest_facts(store, world, source="test")
    assert store.lookup("Edo") == []
    store.add_alias("Edo", "Tokyo")
    assert triples(store.lookup("edo")) == {("Tokyo", "country", "Japan")}


def test_reingest_is_idempotent_and_provenance_is_kept(make_store, world):
    store = make_store()
    first = ingest_facts(store, world, source="rlcp", provenance={"run": "r1", "model": "m", "step": 3})
    again = ingest_facts(store, world, source="rlcp", provenance={"run": "r2"})
    assert first.added == len(world)
    assert again.added == 0 and again.duplicates == len(world)
    assert store.db.count() == len(world) == len(store.index)
    fact = store.lookup("Lagos")[0]
    assert fact.provenance == {"run": "r1", "model": "m", "step": 3}  # the first write wins
    # the same triple from another source is another fact
    assert ingest_facts(store, [("Lagos", "country", "Nigeria")], source="other").added == 1
    assert len(store.lookup("Lagos")) == 2


def test_search_returns_scored_facts(make_store, world):
    store = make_store()
    ingest_facts(store, world, source="test")
    hits = store.search("Lagos country Nigeria", k=3)
    assert len(hits) == 3
    assert (hits[0].subject, hits[0].object) == ("Lagos", "Nigeria")
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert len(store.search("anything", k=100)) == len(world)  # k larger than the store


def test_neighbors_and_multi_hop_path(make_store, world):
    store = make_store()
    ingest_facts(store, world, source="test")
    assert triples(store.neighbors("Nigeria")) == {
        ("Nigeria", "capital", "Abuja"), ("Nigeria", "continent", "Africa"),
        ("Lagos", "country", "Nigeria"), ("Kano", "country", "Nigeria"),
    }
    assert triples(store.neighbors("nigeria", relation="country")) == {
        ("Lagos", "country", "Nigeria"), ("Kano", "country", "Nigeria")}
    hops = store.path("Lagos", "Abuja", max_hops=2)
    assert [(f.subject, f.relation, f.object) for f in hops] == [
        ("Lagos", "country", "Nigeria"), ("Nigeria", "capital", "Abuja")]
    back = store.path("Abuja", "Lagos", max_hops=2)  # walked against the edges' direction
    assert [f.id for f in back] == [hops[1].id, hops[0].id]
    assert store.path("Abuja", "Lagos", max_hops=2, directed=True) == []
    assert store.path("Lagos", "Kano", max_hops=1) == []  # two hops away
    assert len(store.path("Lagos", "Kano", max_hops=2)) == 2
    assert store.path("Lagos", "Tokyo") == []  # not connected


@pytest.mark.parametrize("selector", ["ids", "source", "subject"])
def test_delete_removes_from_all_three_parts(make_store, world, selector):
    store = make_store()
    ingest_facts(store, world[:8], source="keep")
    ingest_facts(store, world[8:], source="drop")
    store.graph  # build the graph so deletion has to update it too
    nigeria = [f.id for f in store.lookup("Nigeria")]
    kwargs = {"ids": nigeria, "source": None, "subject": None}
    if selector == "source":
        kwargs = {"source": "drop"}
        expect = sorted(f.id for s in ("Nigeria", "Paris", "France", "Iron", "Gold") for f in store.lookup(s))
    elif selector == "subject":
        kwargs = {"subject": "NIGERIA"}
        expect = sorted(nigeria)
    else:
        expect = sorted(nigeria)
    gone = store.delete(**kwargs)
    assert gone == expect and gone
    assert not set(gone) & set(store.db.ids().tolist())
    assert not set(gone) & set(store.index.ids().tolist())
    assert not set(gone) & store.graph.ids()
    assert not {f.id for f in store.search("Nigeria capital Abuja", k=50)} & set(gone)
    report = store.verify()
    assert report.ok, report
    # survives reopening
    store.close()
    again = KnowledgeStore(store.root)
    assert again.verify().ok and len(again.index) == again.db.count() == len(world) - len(gone)
    again.close()


def test_delete_needs_a_selector(make_store):
    store = make_store()
    with pytest.raises(ValueError):
        store.delete()
    assert store.delete(ids=[12345]) == []


def test_reopen_keeps_facts_vectors_and_config(make_store, world):
    store = make_store(ef_search=77)
    ingest_facts(store, world, source="test")
    before = [(f.id, f.score) for f in store.search("Paris France capital", k=4)]
    root = store.root
    store.close()
    with KnowledgeStore(root) as again:  # no config: the stored one is used
        assert again.config.index == make_store.backend and again.config.embedder == "hash"
        assert again.config.ef_search == 77
        assert [(f.id, round(f.score, 5)) for f in again.search("Paris France capital", k=4)] == [
            (i, round(s, 5)) for i, s in before]
        assert again.verify().ok
    with pytest.raises(StoreError, match="built with index"):
        other = "numpy" if make_store.backend == "faiss" else "faiss"
        KnowledgeStore(root, StoreConfig(index=other))


def test_stats_counts(make_store, world):
    store = make_store()
    ingest_facts(store, world[:4], source="a")
    ingest_facts(store, world[4:], source="b")
    stats = store.stats()
    assert stats["facts"] == len(world) == stats["index"]["vectors"]
    assert stats["sources"] == {"a": 4, "b": len(world) - 4}
    assert stats["relations"]["country"] == sum(1 for _, r, _ in world if r == "country")
    assert stats["config"]["index"] == make_store.backend


def test_precomputed_vectors_are_used(make_store):
    store = make_store()
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(5, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    facts = [(f"e{i}", "r", f"o{i}") for i in range(5)]
    ingest_facts(store, facts, source="v", vectors=vecs)
    for i in range(5):
        top = store.search_vector(vecs[i], k=1)[0]
        assert top.subject == f"e{i}" and top.score == pytest.approx(1.0, abs=1e-5)


def test_approximate_index_deletes_persist_without_drift(make_store, world):
    store = make_store(ann_threshold=10)  # past the threshold: HNSW on the faiss backend
    ingest_facts(store, world, source="test")
    if make_store.backend == "faiss":
        assert store.index.description.startswith("hnsw")
    gone = store.delete(subject="Nigeria")
    assert len(gone) == 2
    assert not {f.id for f in store.search("Nigeria capital Abuja", k=len(world))} & set(gone)
    store.close()
    with KnowledgeStore(store.root, repair=False) as again:  # tombstones came back from disk
        assert again.verify().ok and len(again.index) == len(world) - 2
        assert not {f.id for f in again.search("Nigeria capital Abuja", k=len(world))} & set(gone)
