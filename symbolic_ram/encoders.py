"""Text -> unit vectors for the store: the packaged MiniLM, or a cheap deterministic hash for tests.

An encoder has a `name` (recorded in the store's metadata, so a store is never searched with
vectors from another model), a `dim`, `encode(texts) -> float32 (n, dim)` with unit rows, and
`semantic` (whether near vectors mean near meanings; the lookup's semantic fallback trusts only those).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from .embeddings import PACKAGED_EMBEDDER, load_embedder

HASH_EMBEDDER = "hash"


def _model_dim(model) -> int:
    """Embedding size; sentence-transformers 5.x renamed the method."""
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


class SentenceEncoder:
    """A sentence-transformers model (default: the packaged all-MiniLM-L6-v2), loaded on first use.

    Args:
        name: PACKAGED_EMBEDDER, a local model dir or a hub id (only local works offline).
        model: an already loaded SentenceTransformer to reuse (e.g. a test session fixture).
        batch_size: texts per forward pass.
        backend: "auto", "torch", "onnx" or "onnx-int8" (symbolic_ram.embeddings).
        threads: intra-op threads; 0 = this process's cores.
    """

    def __init__(self, name: str = PACKAGED_EMBEDDER, model=None, batch_size: int = 128, dim: int = 384,
                 backend: str = "auto", threads: int = 0):
        self.name, self.batch_size, self._model = name, batch_size, model
        self.semantic = True  # neighbours mean similar things: a lookup may take one as the subject
        self.backend, self.threads = backend, threads
        self.dim = _model_dim(model) if model is not None else dim

    @property
    def model(self):
        """The SentenceTransformer, loaded the first time it is needed."""
        if self._model is None:
            self._model = load_embedder(self.name, backend=self.backend, threads=self.threads or None)
            self.dim = _model_dim(self._model)
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-normalised float32 embeddings, (len(texts), dim)."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vecs = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)


class HashEncoder:
    """Deterministic bag-of-words hashing into `dim` buckets. Fast; no model; for tests and scale runs.

    Texts sharing words get similar vectors, which is enough to exercise search mechanics.
    """

    _TOKEN = re.compile(r"\w+", re.UNICODE)

    def __init__(self, dim: int = 384):
        self.name, self.dim = HASH_EMBEDDER, dim
        self.semantic = False  # neighbours only share words: a lookup must not take one as another name

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-normalised float32 vectors, (len(texts), dim)."""
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            for tok in self._TOKEN.findall(text.casefold()):
                h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm else out[row]
            if not norm:
                out[row, 0] = 1.0
        return out


def make_encoder(name: str, dim: int = 384, model=None, backend: str = "auto", threads: int = 0):
    """The encoder a store's config names: "hash", or a sentence-transformers model name/path."""
    if name == HASH_EMBEDDER:
        return HashEncoder(dim)
    return SentenceEncoder(name, model=model, dim=dim, backend=backend, threads=threads)
