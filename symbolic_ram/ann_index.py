"""The vector part of the store: fact embeddings keyed by SQLite id, persisted without pickle.

Two interchangeable backends share one interface (add, remove, search, ids, save, load):
- `FaissIndex`: exact inner product (IndexIDMap2 over IndexFlatIP) below `ann_threshold` vectors,
  an IVF-Flat index at or above it (trained on the vectors it already holds). Saved with
  `faiss.write_index`.
- `NumpyIndex`: brute force in numpy, saved as an `.npz` read back with `allow_pickle=False`.

Saving is atomic (temp file, fsync, os.replace), so a crash leaves either the old file or the new
one. The store compares `ids()` with SQLite on open to find anything a crash left out.
"""

from __future__ import annotations

import math
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
    """Inner-product FAISS index keyed by fact id: exact when small, IVF-Flat when large.

    Args:
        dim: embedding size.
        ann_threshold: from this many vectors on, `maybe_upgrade()` switches to IVF-Flat.
        nprobe: IVF lists visited per query (recall against speed).
    """

    kind = "faiss"
    file_name = "index.faiss"

    def __init__(self, dim: int, ann_threshold: int = 100_000, nprobe: int = 32, index=None):
        if faiss is None:
            raise ImportError("the 'faiss' index backend needs faiss: `pip install faiss-cpu` (or use index='numpy')")
        self.dim, self.ann_threshold, self.nprobe = dim, ann_threshold, nprobe
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if self.is_ivf:
            self.index.nprobe = nprobe

    @property
    def is_ivf(self) -> bool:
        """True when the approximate (IVF) index is in use."""
        return isinstance(self.index, faiss.IndexIVF)

    @property
    def description(self) -> str:
        """A short label: "exact" or "ivf<nlist>,nprobe=<n>"."""
        return f"ivf{self.index.nlist},nprobe={self.nprobe}" if self.is_ivf else "exact"

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids, vectors) -> None:
        """Add vectors under the given fact ids (ids must not be present already)."""
        ids, vectors = _as_batch(ids, vectors, self.dim)
        if len(ids):
            self.index.add_with_ids(vectors, ids)

    def remove(self, ids) -> int:
        """Remove the given ids; return how many vectors were removed."""
        ids = np.asarray(list(ids), dtype=np.int64)
        if not len(ids):
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n, k); missing neighbours have id -1."""
        queries = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(-1, self.dim))
        if len(self) == 0:
            n = len(queries)
            return np.zeros((n, k), np.float32), np.full((n, k), -1, np.int64)
        if len(queries) >= 8:
            return self.index.search(queries, k)
        # A few queries: OpenMP's thread start-up and barriers cost more than they save, and far
        # more when another process holds a core (measured 31 ms vs 4 ms for 20k exact vectors).
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return self.index.search(queries, k)
        finally:
            faiss.omp_set_num_threads(threads)

    def ids(self) -> np.ndarray:
        """Every stored id (unsorted, duplicates kept so a caller can detect them)."""
        if not self.is_ivf:
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        inv = self.index.invlists
        parts = []
        for lst in range(self.index.nlist):
            n = inv.list_size(lst)
            if n:
                parts.append(faiss.rev_swig_ptr(inv.get_ids(lst), n).copy())
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of everything stored, for rebuilding the index in another shape."""
        if not self.is_ivf:
            inner = faiss.downcast_index(self.index.index)
            return self.ids(), inner.reconstruct_n(0, len(self)) if len(self) else np.zeros((0, self.dim), np.float32)
        inv = self.index.invlists
        ids, vecs = [], []
        for lst in range(self.index.nlist):
            n = inv.list_size(lst)
            if n:
                ids.append(faiss.rev_swig_ptr(inv.get_ids(lst), n).copy())
                raw = faiss.rev_swig_ptr(inv.get_codes(lst), n * self.dim * 4).copy()
                vecs.append(raw.view(np.float32).reshape(n, self.dim))
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        return np.concatenate(ids).astype(np.int64), np.concatenate(vecs)

    @staticmethod
    def target_nlist(n: int) -> int:
        """IVF list count for n vectors: about 2*sqrt(n), at least 16."""
        return max(16, int(2 * math.sqrt(max(n, 1))))

    def maybe_upgrade(self) -> bool:
        """Switch to IVF once past `ann_threshold`; retrain when the data grew 4x. True if rebuilt."""
        n = len(self)
        if n < self.ann_threshold:
            return False
        if self.is_ivf and self.index.nlist * 2 >= self.target_nlist(n):
            return False
        ids, vecs = self.vectors()
        self.index = self.build_ivf(ids, vecs, self.dim, self.nprobe)
        return True

    @classmethod
    def build_ivf(cls, ids: np.ndarray, vecs: np.ndarray, dim: int, nprobe: int, seed: int = 0):
        """An IVF-Flat (inner product) index trained on a sample of `vecs` and holding all of them."""
        nlist = cls.target_nlist(len(vecs))
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vecs[rng.choice(len(vecs), size=min(len(vecs), nlist * 64), replace=False)]
        ivf.train(np.ascontiguousarray(sample))
        ivf.add_with_ids(np.ascontiguousarray(vecs), np.ascontiguousarray(ids))
        ivf.nprobe = nprobe
        return ivf

    def save(self, path: str | Path) -> None:
        """Write with faiss.write_index, atomically."""
        _atomic_write(Path(path), lambda tmp: faiss.write_index(self.index, str(tmp)))

    @classmethod
    def load(cls, path: str | Path, dim: int, ann_threshold: int = 100_000, nprobe: int = 32) -> "FaissIndex":
        """Read an index written by `save`; raise IndexLoadError if it is unreadable or foreign."""
        if faiss is None:
            raise ImportError("the 'faiss' index backend needs faiss: `pip install faiss-cpu`")
        try:
            index = faiss.read_index(str(path))  # already downcast; re-wrapping would free it
        except Exception as e:  # faiss raises RuntimeError with a C++ message
            raise IndexLoadError(f"cannot read FAISS index {path}: {str(e).splitlines()[0]}") from e
        if isinstance(index, faiss.IndexIDMap2):
            inner = faiss.downcast_index(index.index)
            ok = isinstance(inner, faiss.IndexFlat)
        else:
            ok = isinstance(index, faiss.IndexIVFFlat)
        if not ok:
            raise IndexLoadError(f"{path} holds a {type(index).__name__}, not an index this store writes")
        if index.d != dim or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexLoadError(f"{path} has dim {index.d}, metric {index.metric_type}; the store expects dim {dim}, inner product")
        return cls(dim, ann_threshold, nprobe, index=index)


class NumpyIndex:
    """Brute-force inner product in numpy; exact at every size. Saved as .npz without pickle."""

    kind = "numpy"
    file_name = "index.npz"
    description = "exact"

    def __init__(self, dim: int, ann_threshold: int = 0, nprobe: int = 0, ids=None, vectors=None):
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
    def load(cls, path: str | Path, dim: int, ann_threshold: int = 0, nprobe: int = 0) -> "NumpyIndex":
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
