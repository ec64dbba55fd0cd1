"""Fixtures for the bridge tests: a small hash-embedder store (with one hostile fact) and its tools."""

from __future__ import annotations

import pytest

from symbolic_ram import KnowledgeStore, StoreConfig, ingest_facts, make_tools

from world import INJECTED, WORLD  # noqa: F401  (re-exported for fixtures)


def build_store(path) -> KnowledgeStore:
    """A KnowledgeStore at `path` with WORLD ingested (hash embedder: no model, deterministic)."""
    store = KnowledgeStore(path, StoreConfig(embedder="hash", index="numpy"))
    ingest_facts(store, WORLD, source="test", provenance={"run": "t"})
    return store


@pytest.fixture
def store(tmp_path):
    s = build_store(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture
def store_dir(tmp_path):
    """Path of a closed store with WORLD (for CLI subprocesses)."""
    build_store(tmp_path / "store").close()
    return tmp_path / "store"


@pytest.fixture
def tools(store):
    return make_tools(store)
