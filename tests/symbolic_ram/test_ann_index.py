"""Vector index backends: exact/IVF switch, id bookkeeping, removal and atomic persistence."""

from __future__ import annotations

import numpy as np
import pytest

from symbolic_ram import FaissIndex, IndexLoadError, NumpyIndex


def clustered(n, dim=32, centers=40, seed=0):
    """Unit vectors around random centres: the structure real sentence embeddings have."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, dim))
    x = c[rng.integers(0, centers, n)] + 0.35 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("cls", [FaissIndex, NumpyIndex])
def test_add_search_remove_save_load(cls, tmp_path):
    x = clustered(500)
    ids = np.arange(1000, 1500)
    index = cls(32)
    index.add(ids[:250], x[:250])
    index.add(ids[250:], x[250:])
    assert len(index) == 500 and sorted(index.ids().tolist()) == ids.tolist()
    scores, got = index.search(x[:5], 1)
    assert got[:, 0].tolist() == ids[:5].tolist() and np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert index.remove([1000, 1001, 99999]) == 2
    assert 1000 not in index.search(x[:1], 3)[1][0]
    index.save(tmp_path / cls.file_name)
    again = cls.load(tmp_path / cls.file_name, 32)
    assert sorted(again.ids().tolist()) == sorted(index.ids().tolist())
    assert again.search(x[2:3], 1)[1][0, 0] == 1002
    with pytest.raises(IndexLoadError):
        cls.load(tmp_path / cls.file_name, 16)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_faiss_switches_to_ivf_and_keeps_recall(tmp_path):
    x = clustered(6000, seed=1)
    ids = np.arange(6000) * 3 + 7  # sparse ids, as after deletions
    exact = FaissIndex(32, ann_threshold=10**9)
    exact.add(ids, x)
    ivf = FaissIndex(32, ann_threshold=5000, nprobe=16)
    ivf.add(ids, x)
    assert not ivf.is_ivf and ivf.maybe_upgrade() and ivf.is_ivf
    assert sorted(ivf.ids().tolist()) == ids.tolist()
    queries = clustered(300, seed=2)
    truth = exact.search(queries, 1)[1][:, 0]
    got = ivf.search(queries, 1)[1][:, 0]
    assert (truth == got).mean() >= 0.95
    assert ivf.remove(ids[:10]) == 10 and len(ivf) == 5990
    got_ids, got_vecs = ivf.vectors()
    order = np.argsort(got_ids)
    assert np.allclose(got_vecs[order], x[10:], atol=1e-6)
    ivf.save(tmp_path / "i.faiss")
    back = FaissIndex.load(tmp_path / "i.faiss", 32, nprobe=16)
    assert back.is_ivf and len(back) == 5990 and back.description.startswith("ivf")
    assert not back.maybe_upgrade()  # not grown enough to retrain
