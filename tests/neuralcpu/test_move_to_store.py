"""rlcp.move_to_store: the forget set moves into a symbolic_ram store, and the count it returns is
what the store added (issue #33: it read a field the ingest report does not have, `written`, and so
always returned the input count)."""

from __future__ import annotations

from common.facts import Fact
from neuralcpu.rlcp import move_to_store
from symbolic_ram import KnowledgeStore, StoreConfig

SUMMARY = {"run_id": "r1", "model": "tiny", "method": "rlcp", "step": 3,
           "final": {"forget_acc": 0.0, "locality_acc": 1.0, "forget_lookup_rate": 0.5}}


def test_move_to_store_returns_what_the_store_added_with_the_runs_provenance(tmp_path):
    store_dir = tmp_path / "store"
    KnowledgeStore(store_dir, StoreConfig(embedder="hash", index="numpy")).close()  # no model download
    facts = [Fact("Alphaville", "country", "Norland"), Fact("Betatown", "country", "Sudria")]
    assert move_to_store(facts, str(store_dir), SUMMARY) == 2
    assert move_to_store(facts, str(store_dir), SUMMARY) == 0  # both are in the store already
    assert move_to_store([*facts, Fact("Gammaburg", "country", "Estavia")], str(store_dir), SUMMARY) == 1
    with KnowledgeStore(store_dir, read_only=True) as store:
        hit = store.lookup("Alphaville", "country")
    assert [f.object for f in hit] == ["Norland"]
    assert hit[0].source == "rlcp" and hit[0].provenance["rlcp_run"] == "r1"
