"""The SQLite part of the store: the source of truth for facts, aliases and the store's metadata.

Every other part (vector index, graph) is derived from these rows and can be rebuilt from them.
Ids come from AUTOINCREMENT, so a deleted fact's id is never handed out again and a stale vector
can never be mistaken for a new fact. Only facts that are new are INSERTed (the batch is checked
against the table first): an ignored INSERT would still consume an AUTOINCREMENT id.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .errors import StoreError, StoreLockedError
from .facts import StoredFact, FactInput, normalize_name

try:
    import sqlite_utils
except ImportError:  # pragma: no cover - a hard dependency, but fail with a hint
    sqlite_utils = None

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS facts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    relation TEXT NOT NULL,
    object TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    provenance TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    UNIQUE (subject, relation, object, source)
);
CREATE INDEX IF NOT EXISTS facts_source ON facts (source);
CREATE TABLE IF NOT EXISTS aliases (
    alias TEXT NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (alias, subject)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS aliases_subject ON aliases (subject);
"""
# The UNIQUE constraint's index starts with subject, so it also serves lookup(subject, relation).

_COLUMNS = "id, subject, relation, object, source, provenance, created_at"
_CHUNK = 900  # stay under SQLite's bound-parameter limit


def _row_to_fact(row: tuple, score: float = 1.0) -> StoredFact:
    return StoredFact(row[0], row[1], row[2], row[3], score, row[4], json.loads(row[5]), row[6])


class SQLiteDatabase:
    """Facts, aliases and metadata in one SQLite file (WAL mode, synchronous=FULL).

    Args:
        path: the database file; created if missing (unless read_only).
        read_only: refuse every write on this connection (PRAGMA query_only); for read verbs.
        busy_timeout: seconds to wait for another connection's SQLite write lock.
    """

    kind = "sqlite"

    def __init__(self, path: str | Path, read_only: bool = False, busy_timeout: float = 120.0):
        if sqlite_utils is None:
            raise ImportError("symbolic_ram needs sqlite-utils: `pip install sqlite-utils`")
        self.path = Path(path)
        self.read_only = read_only
        self._patterns: dict[tuple[str, str], tuple[tuple[int, int], tuple[float, float]]] = {}  # chain_pattern's
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so a batch is exactly one transaction.
        # mode=ro, not only query_only: a read-write connection checkpoints the WAL into the file on close.
        target = self.path.resolve().as_uri() + "?mode=ro" if read_only else str(self.path)
        self.conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False,
                                    timeout=busy_timeout, uri=read_only)
        try:
            if read_only:
                self.conn.execute("PRAGMA query_only = ON")
            else:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")  # a reported commit survives a crash
            has_schema = self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
            if not has_schema and not read_only:
                self.conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            self.conn.close()
            if "locked" in str(e):
                raise StoreLockedError(f"{self.path}: another connection holds SQLite's lock: {e}; retry when it is done") from e
            raise StoreError(f"{self.path}: not a usable SQLite database ({e}): restore it from a backup, "
                             "or move it away and re-ingest the facts into a new store") from e
        self.db = sqlite_utils.Database(self.conn)
        self._in_tx = False

    # -- transactions and metadata -------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; rolls back if the block raises."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if "locked" in str(e):
                raise StoreLockedError(f"{self.path}: another connection held SQLite's write lock too long ({e}); "
                                       "retry when it is done") from e
            raise
        self._in_tx = True
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")
        finally:
            self._in_tx = False

    def get_meta(self, key: str, default=None):
        """A JSON value from the meta table, or `default`."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value) -> None:
        """Store a JSON value in the meta table."""
        self.db["meta"].upsert({"key": key, "value": json.dumps(value, sort_keys=True)}, pk="key")

    # -- writes --------------------------------------------------------------------------------
    def existing_keys(self, facts: list[FactInput]) -> set[tuple[str, str, str, str]]:
        """The (subject, relation, object, source) keys of `facts` that are already stored."""
        found: set[tuple[str, str, str, str]] = set()
        subjects = sorted({f.subject for f in facts})
        wanted = {f.key() for f in facts}
        for i in range(0, len(subjects), _CHUNK):
            chunk = subjects[i : i + _CHUNK]
            rows = self.conn.execute(
                f"SELECT subject, relation, object, source FROM facts WHERE subject IN ({','.join('?' * len(chunk))})", chunk)
            found.update(r for r in map(tuple, rows) if r in wanted)
        return found

    def insert_facts(self, facts: Iterable[FactInput]) -> list[tuple[int, StoredFact]]:
        """Insert facts whose key is new; return (position in input, StoredFact with its id) for each.

        Call inside `transaction()`. Facts whose (subject, relation, object, source) already exist,
        or repeat an earlier item of the batch, are skipped without consuming an id: this is what
        makes re-ingestion idempotent.
        """
        facts = list(facts)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        seen = self.existing_keys(facts)
        new: list[tuple[int, StoredFact]] = []
        aliases = set()
        sql = "INSERT INTO facts (subject, relation, object, source, provenance, created_at) VALUES (?, ?, ?, ?, ?, ?)"
        for pos, f in enumerate(facts):
            if f.key() in seen:
                continue
            seen.add(f.key())
            prov = json.dumps(f.provenance, ensure_ascii=False, sort_keys=True)
            cur = self.conn.execute(sql, (f.subject, f.relation, f.object, f.source, prov, now))
            new.append((pos, StoredFact(cur.lastrowid, f.subject, f.relation, f.object, 1.0, f.source, f.provenance, now)))
            aliases.add((normalize_name(f.subject), f.subject))
        if aliases:
            self.conn.executemany("INSERT OR IGNORE INTO aliases (alias, subject) VALUES (?, ?)", sorted(aliases))
        return new

    def add_alias(self, alias: str, subject: str) -> None:
        """Make `alias` (normalised) resolve to the stored subject name `subject`."""
        self.conn.execute("INSERT OR IGNORE INTO aliases (alias, subject) VALUES (?, ?)", (normalize_name(alias), subject))

    def delete_ids(self, ids: Iterable[int]) -> list[int]:
        """Delete facts by id (call inside `transaction()`); prune aliases left without facts.

        Returns the ids that existed and were deleted.
        """
        ids = [int(i) for i in ids]
        gone: list[int] = []
        subjects: set[str] = set()
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(f"SELECT id, subject FROM facts WHERE id IN ({marks})", chunk).fetchall()
            gone.extend(r[0] for r in rows)
            subjects.update(r[1] for r in rows)
            self.conn.execute(f"DELETE FROM facts WHERE id IN ({marks})", chunk)
        for s in subjects:
            if self.conn.execute("SELECT 1 FROM facts WHERE subject = ? LIMIT 1", (s,)).fetchone() is None:
                self.conn.execute("DELETE FROM aliases WHERE subject = ?", (s,))
        return sorted(gone)

    # -- reads ---------------------------------------------------------------------------------
    def resolve(self, name: str) -> list[str]:
        """Stored subject names that `name` matches through the alias table."""
        rows = self.conn.execute("SELECT subject FROM aliases WHERE alias = ?", (normalize_name(name),)).fetchall()
        return [r[0] for r in rows]

    def lookup(self, subject: str, relation: str | None = None) -> list[StoredFact]:
        """Exact facts about `subject` (through aliases), optionally only one relation; by id."""
        sql = f"SELECT {_COLUMNS} FROM facts WHERE subject IN (SELECT subject FROM aliases WHERE alias = ?)"
        args: list = [normalize_name(subject)]
        if relation is not None:
            sql += " AND relation = ?"
            args.append(relation)
        return [_row_to_fact(r) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def is_object_of(self, name: str, relation: str) -> bool:
        """Whether some fact of `relation` has `name` (verbatim) as its object: "Antigua and Barbuda" is a
        value of "country". A scan (objects are not indexed); used once per neighbour fallback."""
        sql = "SELECT 1 FROM facts WHERE relation = ? AND object = ? LIMIT 1"
        return self.conn.execute(sql, (relation, name)).fetchone() is not None

    def chain_pattern(self, first: str, second: str) -> tuple[float, float]:
        """How the store's facts compose `first` then `second` (s -first-> o -second-> x), as two shares:
        (support: of the distinct objects of `first`, those that have a `second` fact;
         inverse: of the `first` facts whose object has a `second` fact, those where it leads back, x = s).
        country then capital: support ~1 (countries have capitals), inverse ~0 (a city is rarely the
        capital); capital then country: inverse ~1 (a capital's country is the country we came from);
        currency then country: support ~0 (a currency is a country's subject only by a namesake).
        Cached until the facts change (this connection's writes or another's commits): a join per call
        would repeat on every fallback lookup."""
        version = (self.data_version(), self.conn.total_changes)
        cached = self._patterns.get((first, second))
        if cached is not None and cached[0] == version:
            return cached[1]
        objects = self.conn.execute("SELECT COUNT(DISTINCT object) FROM facts WHERE relation = ?", (first,)).fetchone()[0]
        with_second, linked, back = self.conn.execute(
            "SELECT COUNT(DISTINCT a.object), COUNT(DISTINCT a.id), COUNT(DISTINCT CASE WHEN b.object = a.subject "
            "THEN a.id END) FROM facts a JOIN facts b ON b.subject = a.object AND b.relation = ? WHERE a.relation = ?",
            (second, first)).fetchone()
        shares = (with_second / objects if objects else 0.0), (back / linked if linked else 0.0)
        self._patterns[(first, second)] = (version, shares)
        return shares

    def relations(self) -> list[str]:
        """The distinct relation names in the store, sorted."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT relation FROM facts ORDER BY relation")]

    def alias_table(self) -> list[tuple[str, str]]:
        """Every (normalised alias, subject) pair: what fuzzy subject matching searches."""
        return self.conn.execute("SELECT alias, subject FROM aliases ORDER BY alias").fetchall()

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's PRAGMA data_version)."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def get(self, ids: Iterable[int]) -> dict[int, StoredFact]:
        """Facts by id as {id: StoredFact}; ids that do not exist are absent."""
        ids = [int(i) for i in ids]
        out: dict[int, StoredFact] = {}
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(f"SELECT {_COLUMNS} FROM facts WHERE id IN ({marks})", chunk):
                out[r[0]] = _row_to_fact(r)
        return out

    def select_ids(self, ids=None, source: str | None = None, subject: str | None = None) -> list[int]:
        """Ids matching every given selector: explicit ids, a source, a subject (through aliases)."""
        where, args = [], []
        if ids is not None:
            ids = [int(i) for i in ids]
            if not ids:
                return []
            found: list[int] = []
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i : i + _CHUNK]
                found += [r[0] for r in self.conn.execute(f"SELECT id FROM facts WHERE id IN ({','.join('?' * len(chunk))})", chunk)]
            if source is None and subject is None:
                return sorted(found)
            where.append(f"id IN ({','.join(str(i) for i in found) or 'NULL'})")
        if source is not None:
            where.append("source = ?")
            args.append(source)
        if subject is not None:
            where.append("subject IN (SELECT subject FROM aliases WHERE alias = ?)")
            args.append(normalize_name(subject))
        if not where:
            raise ValueError("select_ids needs at least one selector (ids, source or subject)")
        return [r[0] for r in self.conn.execute(f"SELECT id FROM facts WHERE {' AND '.join(where)} ORDER BY id", args)]

    def ids(self) -> np.ndarray:
        """Every fact id, sorted, as int64."""
        cur = self.conn.execute("SELECT id FROM facts ORDER BY id")
        return np.fromiter((r[0] for r in cur), dtype=np.int64)

    def iter_edges(self) -> Iterator[tuple[int, str, str, str]]:
        """(id, subject, relation, object) for every fact: what the graph is built from."""
        yield from self.conn.execute("SELECT id, subject, relation, object FROM facts ORDER BY id")

    def iter_facts(self, ids: Iterable[int] | None = None, batch: int = 2048) -> Iterator[list[StoredFact]]:
        """Facts in batches of up to `batch`, all of them or only `ids`, in id order."""
        if ids is None:
            cur = self.conn.execute(f"SELECT {_COLUMNS} FROM facts ORDER BY id")
            while rows := cur.fetchmany(batch):
                yield [_row_to_fact(r) for r in rows]
            return
        ids = sorted(int(i) for i in ids)
        for i in range(0, len(ids), batch):
            got = self.get(ids[i : i + batch])
            yield [got[j] for j in ids[i : i + batch] if j in got]

    def count(self) -> int:
        """Number of facts."""
        return self.conn.execute("SELECT COUNT(*) FROM facts").fetchone()[0]

    def stats(self) -> dict:
        """Counts per source and relation, the alias count and the file size."""
        q = self.conn.execute
        return {
            "facts": self.count(),
            "aliases": q("SELECT COUNT(*) FROM aliases").fetchone()[0],
            "subjects": q("SELECT COUNT(DISTINCT subject) FROM facts").fetchone()[0],
            "sources": dict(q("SELECT source, COUNT(*) FROM facts GROUP BY source ORDER BY 2 DESC").fetchall()),
            "relations": dict(q("SELECT relation, COUNT(*) FROM facts GROUP BY relation ORDER BY 2 DESC").fetchall()),
            "max_id": q("SELECT COALESCE(MAX(id), 0) FROM facts").fetchone()[0],
            "bytes": self.path.stat().st_size if self.path.exists() else 0,
        }

    def close(self) -> None:
        """Checkpoint the WAL into the main file (writers only; PASSIVE never waits for readers) and close."""
        if not self.read_only:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
        self.conn.close()


DATABASES = {"sqlite": SQLiteDatabase}
