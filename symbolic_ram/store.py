"""KnowledgeStore: SQLite (truth) + a vector index + a graph behind one object, as txtai lays it out.

    with KnowledgeStore("stores/geo") as store:
        store.lookup("Sao Paulo", "country")          # exact, through aliases
        store.lookup("Sao Paolo", "nation", fallback=True).matched_by  # "fuzzy_subject"
        store.search("Which country is Lagos in?", 3)  # semantic
        store.path("Lagos", "Abuja", max_hops=2)       # multi-hop over the graph

A `StoreConfig` picks each part; the structural choices (database, index, graph, embedder, dim)
are written into SQLite's meta table, so reopening rebuilds the same stack.

Several processes may use one store at once (symbolic_ram/sync.py): writers take a file lock per
batch, from the SQLite transaction until the batch's vectors are appended to the vector log, and
compute embeddings before taking it; readers take no lock and catch up from the log before each
search, into the index's exact side index (ann_index.FaissIndex), so the index they loaded
(exact or HNSW) is searched as it is, and HNSW insertion never runs under their queries; a writer
folds the side into the main index under its lock at each checkpoint, and readers then load that
new base. Opening a store never writes to it. Drift between SQLite and the index (a writer killed
between its commit and its log append) is reported on open and repaired at the start of the next
write (repair=True) or by `repair()` / `verify --repair`, always under the lock.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from .ann_index import INDEXES, IndexLoadError
from .config import STRUCTURAL, TUNABLE, StoreConfig, VerifyReport
from .encoders import make_encoder
from .errors import StoreDriftError, StoreError, StoreLockedError, StoreReadOnlyError, StoreVersionError
from .facts import FactInput, StoredFact
from .fallback import LookupResult, lookup_with_fallback
from .graph import GRAPHS
from .sqlite_db import DATABASES
from .sync import LOG_FILE, LogPosition, VectorLog, WriteLock, file_stamp

log = logging.getLogger("symbolic_ram")

__all__ = ["KnowledgeStore", "StoreConfig", "VerifyReport", "StoreError", "StoreDriftError", "StoreLockedError",
           "StoreReadOnlyError", "StoreVersionError", "LookupResult", "FORMAT_VERSION"]

FORMAT_VERSION = 1
DB_FILE = "facts.sqlite"
DEFAULT_LOCK_TIMEOUT = 120.0


def _repair_hint(root: Path) -> str:
    return f"python -m symbolic_ram verify --repair {root}"


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
        read_only: never write (every write raises StoreReadOnlyError); for query verbs.
        repair: at the start of the first write, re-embed facts missing from the vector index and
            drop vectors of deleted facts (also rebuild an unreadable index). With False, drift is
            only reported; `repair()` fixes it on demand.
        lock_timeout: seconds a write waits for another writer before StoreLockedError.
        **tunables: ann_threshold, ef_search, hnsw_m, checkpoint_every, batch_size, embedder_backend
            or embedder_threads for this session.
    """

    def __init__(self, path: str | Path, config: StoreConfig | None = None, *, encoder=None,
                 create: bool = True, read_only: bool = False, repair: bool = True,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT, **tunables):
        self.root = Path(path)
        db_file = self.root / DB_FILE
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root}: is a file, not a store directory; give the path of a directory "
                             "(a missing one is created)")
        if db_file.exists() and not db_file.is_file():
            raise StoreError(f"{db_file}: is not a file; this directory is not a symbolic_ram store")
        if not db_file.exists():
            if not create or read_only:
                raise FileNotFoundError(f"no knowledge store at {self.root} (create one: python -m symbolic_ram init {self.root})")
            self.root.mkdir(parents=True, exist_ok=True)
        self.read_only, self._repair_on_write = read_only, repair
        self._lock = threading.RLock()  # threads of this process
        self._write_lock = WriteLock(self.root, lock_timeout)  # processes
        self.db = None
        try:
            self.config = self._load_config(db_file, config, tunables, lock_timeout)
        except BaseException:
            if self.db is not None:
                self.db.close()
            raise
        self.encoder = self._check_encoder(encoder) if encoder is not None else make_encoder(
            self.config.embedder, self.config.dim, backend=self.config.embedder_backend,
            threads=self.config.embedder_threads)
        self._graph, self._graph_version = None, None
        self._aliases = (None, [])  # (data_version, alias table) for fuzzy subject matching
        self._log = VectorLog(self.root / LOG_FILE, self.config.dim)
        self._checked_since_open = False
        self._index_problem: str | None = None
        self._load_index()
        drift = self._index_drift()
        self._drift = None if drift.ok else drift
        if self._drift is not None and not self._write_lock.held_elsewhere():
            when = "at the next write" if repair and not read_only else f"by `{_repair_hint(self.root)}`"
            log.warning("store %s needs repair (%d facts without a vector, %d stale vectors%s); it is repaired %s",
                        self.root, len(drift.missing_in_index), len(drift.extra_in_index) + len(drift.duplicate_in_index),
                        "; the index file is unreadable" if self._index_problem else "", when)

    # -- opening ------------------------------------------------------------------------------
    def _load_config(self, db_file: Path, given: StoreConfig | None, tunables: dict, timeout: float) -> StoreConfig:
        unknown = set(tunables) - set(TUNABLE)
        if unknown:
            raise TypeError(f"unknown store option(s) {sorted(unknown)}; tunable ones are {TUNABLE}")
        config = StoreConfig(**{**asdict(given or StoreConfig()), **tunables})
        config.validate()
        self.db = DATABASES[config.database](db_file, read_only=self.read_only, busy_timeout=timeout)
        stored = self.db.get_meta("config")
        if stored is None and self.db.get_meta("format_version") is None:
            if self.read_only:
                raise StoreError(f"{self.root}: holds no symbolic_ram store yet (create one: python -m symbolic_ram init {self.root})")
            with self._write_lock:  # two processes creating one store: the second sees the first's meta
                if self.db.get_meta("config") is None:
                    if self.db.count():
                        raise StoreVersionError(f"{db_file} holds facts but no symbolic_ram metadata; it was not written by this package")
                    with self.db.transaction():
                        self.db.set_meta("format_version", FORMAT_VERSION)
                        self.db.set_meta("config", asdict(config))
                    return config
                stored = self.db.get_meta("config")
        version = self.db.get_meta("format_version")
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
        """Where the base vector index is saved (the vector log extends it)."""
        return self.root / INDEXES[self.config.index].file_name

    def _remove_stale_temp_files(self) -> None:
        """Delete index temp files left by a process that died while saving (writers only)."""
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

    def _load_index(self) -> None:
        """Read the base file and the whole vector log into a fresh in-memory index."""
        cls = INDEXES[self.config.index]
        stamp = file_stamp(self.index_file)
        self._index_problem = None
        if stamp is None:
            index = self._new_index()  # any facts then show up as missing
        else:
            try:
                index = cls.load(self.index_file, self.config.dim, self.config.ann_threshold, self.config.ef_search,
                                 self.config.hnsw_m)
            except IndexLoadError as e:
                self._index_problem = str(e)
                index = self._new_index()
        self.index, self._base_stamp, self._log_pos = index, stamp, LogPosition()
        held = self.index.ids()
        self._max_id = int(held.max()) if len(held) else 0
        self._catch_up()  # the log's vectors stay in the side index: folding them into HNSW here would stall the open

    def _catch_up(self) -> int:
        """Add the log records not seen yet (skipping ids already held); return how many vectors."""
        ids, vecs, pos = self._log.read(self._log_pos)
        self._log_pos = pos
        if not len(ids):
            return 0
        _, first = np.unique(ids, return_index=True)
        keep = np.zeros(len(ids), bool)
        keep[first] = True
        if ids.min() <= self._max_id:  # a record can repeat a base written meanwhile (ids only grow otherwise)
            keep &= ~np.isin(ids, self.index.ids())
        if keep.any():
            self.index.add(ids[keep], vecs[keep])
            self._max_id = max(self._max_id, int(ids[keep].max()))
        return int(keep.sum())

    def refresh(self) -> None:
        """See what other processes wrote: reload a rewritten base file, else read new log records."""
        with self._lock:
            had = self._log_pos.ident
            if file_stamp(self.index_file) != self._base_stamp or (had is not None and self._log.ident() != had):
                self._load_index()  # another writer checkpointed (or deleted): start from its base
            else:
                self._catch_up()

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

    # -- writing: one batch at a time under the store's lock -------------------------------------
    @contextmanager
    def _writing(self, repair: bool | None = None):
        """Hold both locks, be current with disk, and (first time, or on a count mismatch) repair."""
        if self.read_only:
            raise StoreReadOnlyError(f"store {self.root} was opened read-only")
        with self._lock, self._write_lock:
            self.refresh()
            self._log.truncate(self._log_pos)  # a torn record of a writer that died mid-append
            if not self._checked_since_open:
                self._remove_stale_temp_files()
            if not self._checked_since_open or len(self.index) != self.db.count():
                drift = self._index_drift()
                self._drift = None if drift.ok else drift
                self._checked_since_open = True
                if self._drift is not None and (self._repair_on_write if repair is None else repair):
                    self._reconcile()
            yield

    def _reconcile(self) -> None:
        """Make the index hold exactly SQLite's ids (under the write lock), then checkpoint."""
        drift = self._drift or self._index_drift()
        log.warning("repairing vector index of %s from SQLite:\n%s", self.root, drift)
        self.index.remove(drift.extra_in_index + drift.duplicate_in_index)
        for batch in self.db.iter_facts(drift.missing_in_index + drift.duplicate_in_index, batch=self.config.batch_size):
            self.index.add([f.id for f in batch], self.encoder.encode([f.text() for f in batch]))
        self._index_problem, self._drift = None, None
        self._checkpoint()

    def _checkpoint(self) -> None:
        """Write the whole index as the new base file (atomically), then drop the log it absorbed."""
        if self.index.maybe_upgrade():
            log.info("vector index is now %s", self.index.description)
        self.index.save(self.index_file)
        self._log.remove()  # after the base: a crash between the two leaves duplicates, skipped on load
        self._base_stamp, self._log_pos = file_stamp(self.index_file), LogPosition()

    def repair(self) -> VerifyReport:
        """Fix index drift from SQLite (re-embed missing, drop extra) and return a fresh verify()."""
        with self._writing(repair=True):
            drift = self._index_drift()
            if not drift.ok:
                self._drift = drift
                self._reconcile()
            self._graph = None  # rebuilt from SQLite on next use
            return self.verify()

    # -- the graph, built on first use ----------------------------------------------------------
    @property
    def graph(self):
        """The graph part, built from SQLite when first needed and again after another process commits."""
        with self._lock:
            version = self.db.data_version()
            if self._graph is None or version != self._graph_version:
                graph = GRAPHS[self.config.graph]()
                graph.add(self.db.iter_edges())
                self._graph, self._graph_version = graph, version
            return self._graph

    # -- writes ---------------------------------------------------------------------------------
    def write_batch(self, batch: list[FactInput], vectors: np.ndarray | None = None) -> list[StoredFact]:
        """Write one batch as one SQLite transaction and append its vectors to the log; return the new facts.

        The facts that look new are embedded first, without any lock; the write lock is then held
        only for the transaction and the log append. A crash between the two leaves vectors
        missing, which the next write (or `verify --repair`) re-embeds.

        Args:
            batch: validated facts.
            vectors: optional precomputed unit vectors aligned with `batch` (skips the encoder).
        """
        if self.read_only:
            raise StoreReadOnlyError(f"store {self.root} was opened read-only")
        with self._lock:
            known = self.db.existing_keys(batch)
        todo = [pos for pos, f in enumerate(batch) if f.key() not in known]
        if vectors is not None:
            vecs = np.asarray(vectors, np.float32)[todo] if todo else np.zeros((0, self.config.dim), np.float32)
        else:
            vecs = self.encoder.encode([batch[p].text() for p in todo])
        row = {pos: i for i, pos in enumerate(todo)}
        with self._writing():
            with self.db.transaction():
                placed = self.db.insert_facts(batch)
            new = [f for _, f in placed]
            if not new:
                return new
            late = [pos for pos, _ in placed if pos not in row]  # deleted by another writer meanwhile
            if late:
                extra = (np.asarray(vectors, np.float32)[late] if vectors is not None
                         else self.encoder.encode([batch[p].text() for p in late]))
                row.update({pos: len(vecs) + i for i, pos in enumerate(late)})
                vecs = np.concatenate([vecs, extra])
            ids = np.array([f.id for f in new], np.int64)
            new_vecs = vecs[[row[pos] for pos, _ in placed]]
            size = self._log.append(ids, new_vecs)
            self._log_pos = LogPosition(self._log.ident(), self._log_pos.offset + size, self._log_pos.vectors + len(ids))
            self.index.add(ids, new_vecs)
            self._max_id = max(self._max_id, int(ids.max()))
            if self._graph is not None:
                self._graph.add((f.id, f.subject, f.relation, f.object) for f in new)
            # Rewrite the base once the log reaches checkpoint_every vectors, and geometrically for
            # big indexes (a quarter of the current size), so rewriting stays O(n) over an ingest.
            if self._log_pos.vectors >= max(self.config.checkpoint_every, len(self.index) // 4):
                self._checkpoint()
            return new

    def add_alias(self, alias: str, subject: str) -> None:
        """Make `alias` resolve to the stored subject `subject` in lookups."""
        with self._writing(), self.db.transaction():
            self.db.add_alias(alias, subject)

    def delete(self, ids=None, source: str | None = None, subject: str | None = None) -> list[int]:
        """Delete facts matching every given selector from SQLite, the index and the graph.

        Args:
            ids: fact ids. source: a source name. subject: a subject (through aliases).
        Returns the deleted ids.
        """
        with self._writing():
            chosen = self.db.select_ids(ids=ids, source=source, subject=subject)
            if not chosen:
                return []
            with self.db.transaction():
                gone = self.db.delete_ids(chosen)
            self.index.remove(gone)  # a crash before the checkpoint leaves extra vectors: dropped by repair
            if self._graph is not None:
                self._graph.remove(gone)
            self._checkpoint()  # the log can only add, so a delete rewrites the base
            return gone

    def save(self) -> None:
        """Checkpoint: write the index as one base file (upgrading to HNSW if it outgrew exact search)."""
        with self._writing():
            if self._log_pos.vectors or not self.index_file.exists():
                self._checkpoint()

    # -- queries --------------------------------------------------------------------------------
    def lookup(self, subject: str, relation: str | None = None, *, fallback: bool = False,
               fuzzy_cutoff: float = 80.0, semantic_min: float = 0.5) -> LookupResult:
        """Facts about `subject` (case/diacritic-insensitive through aliases), score 1.0.

        Args:
            subject, relation: what to look up; relation None means every relation.
            fallback: when the exact lookup is empty, try the relation one hop away (the chain
                through a neighbour that has it), the subject with any relation, then the nearest
                subject by spelling, then by meaning (symbolic_ram/fallback.py).
            fuzzy_cutoff: minimum rapidfuzz ratio (0-100) of a fuzzy subject match (which must also
                be within `fallback.max_edits` edits).
            semantic_min: minimum cosine of a semantic subject match.
        Returns a LookupResult: a list of StoredFact with `.matched_by` ("exact", "via_neighbour",
        "any_relation", "fuzzy_subject", "semantic_subject", or "none" when nothing was found).
        """
        with self._lock:
            if not fallback:
                return LookupResult(self.db.lookup(subject, relation), "exact")
            return lookup_with_fallback(self, subject, relation, fuzzy_cutoff, semantic_min)

    def relations(self) -> list[str]:
        """The distinct relation names in the store, sorted (for the lookup tool's schema)."""
        with self._lock:
            return self.db.relations()

    def alias_table(self) -> list[tuple[str, str]]:
        """(normalised alias, subject) pairs, cached until SQLite changes."""
        with self._lock:
            version = (self.db.data_version(), self.db.count())
            if self._aliases[0] != version:
                self._aliases = (version, self.db.alias_table())
            return self._aliases[1]

    def _check_drift(self) -> None:
        if self._index_problem is not None:
            raise StoreDriftError(
                f"the vector index of {self.root} cannot be read ({self._index_problem}); run "
                f"`{_repair_hint(self.root)}`"
            )

    def search(self, text: str, k: int = 5) -> list[StoredFact]:
        """The k facts whose text is most similar to `text` (cosine score), best first."""
        return self.search_vector(self.encoder.encode([text])[0], k)

    def search_vector(self, vector: np.ndarray, k: int = 5) -> list[StoredFact]:
        """Like search, from a precomputed unit query vector."""
        with self._lock:
            self.refresh()
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
            self.refresh()
            out = self.db.stats()
            out["index"] = {"backend": self.config.index, "kind": self.index.description, "vectors": len(self.index),
                            "bytes": self.index_file.stat().st_size if self.index_file.exists() else 0,
                            "log_vectors": self._log_pos.vectors, "side_vectors": self.index.side_size}
            out["graph"] = {"backend": self.config.graph, "edges": len(self._graph) if self._graph is not None else None}
            out["config"] = asdict(self.config)
            out["path"] = str(self.root)
            if self._drift is not None:
                out["needs_repair"] = _repair_hint(self.root)
            return out

    def verify(self) -> VerifyReport:
        """Check that SQLite, the vector index and the graph hold the same fact ids; report drift.

        Waits for the write lock (without writing) so it compares a state between batches.
        """
        with self._lock, self._write_lock:
            self.refresh()
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
        """Close SQLite. Nothing to save: every committed batch's vectors are already on disk."""
        with self._lock:
            if self.db is None:
                return
            self.db.close()
            self.db = None

    def __enter__(self) -> "KnowledgeStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KnowledgeStore({str(self.root)!r}, index={self.index.description}, embedder={self.config.embedder!r})"
