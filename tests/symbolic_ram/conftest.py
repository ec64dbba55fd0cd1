"""Fixtures for the store tests: the real MiniLM once per session, small fact sets, and a store
factory run over every index backend (one shared test body, as txtai tests its backends)."""

from __future__ import annotations

import pytest

from symbolic_ram import KnowledgeStore, StoreConfig

INDEX_BACKENDS = ["faiss", "numpy"]

# A tiny world: enough for aliases, duplicates, multi-hop paths and semantic neighbours.
WORLD = [
    ("Tokyo", "country", "Japan"),
    ("Osaka", "country", "Japan"),
    ("Japan", "capital", "Tokyo"),
    ("São Paulo", "country", "Brazil"),
    ("Rio de Janeiro", "country", "Brazil"),
    ("Brazil", "capital", "Brasília"),
    ("Lagos", "country", "Nigeria"),
    ("Kano", "country", "Nigeria"),
    ("Nigeria", "capital", "Abuja"),
    ("Nigeria", "continent", "Africa"),
    ("Paris", "country", "France"),
    ("France", "capital", "Paris"),
    ("France", "currency", "Euro"),
    ("Iron", "symbol", "Fe"),
    ("Iron", "atomic_number", "26"),
    ("Gold", "symbol", "Au"),
]


@pytest.fixture
def world():
    """The small fact set as (subject, relation, object) tuples."""
    return list(WORLD)


@pytest.fixture(scope="session")
def minilm():
    """A SentenceEncoder around the packaged all-MiniLM-L6-v2, loaded once per session."""
    from symbolic_ram import SentenceEncoder
    from symbolic_ram.embeddings import load_embedder

    return SentenceEncoder(model=load_embedder())


@pytest.fixture(params=INDEX_BACKENDS)
def make_store(request, tmp_path):
    """Factory: make_store(name="s", **config) opens a hash-embedder store on the parametrised backend."""
    opened = []

    def make(name: str = "s", **config) -> KnowledgeStore:
        config.setdefault("embedder", "hash")
        store = KnowledgeStore(tmp_path / name, StoreConfig(index=request.param, **config))
        opened.append(store)
        return store

    make.backend = request.param
    yield make
    for store in opened:
        store.close()
