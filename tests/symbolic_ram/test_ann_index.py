"""Vector index backends: exact/HNSW switch, id bookkeeping, removal and atomic persistence."""

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


def test_faiss_switches_to_hnsw_keeps_recall_and_tombstones(tmp_path):
    x = clustered(6000, seed=1)
    ids = np.arange(6000) * 3 + 7  # sparse ids, as after deletions
    exact = FaissIndex(32, ann_threshold=10**9)
    exact.add(ids, x)
    ann = FaissIndex(32, ann_threshold=5000, ef_search=64, hnsw_m=16)
    ann.add(ids, x)
    assert not ann.is_hnsw and ann.maybe_upgrade() and ann.is_hnsw
    assert sorted(ann.ids().tolist()) == ids.tolist()
    queries = clustered(300, seed=2)
    truth = exact.search(queries, 1)[1][:, 0]
    low = (ann.search(queries, 1)[1][:, 0] == truth).mean()
    ann.ef_search = 400
    high = (ann.search(queries, 1)[1][:, 0] == truth).mean()
    assert high >= 0.97 and high >= low
    ann.ef_search = 64
    # HNSW cannot remove: deleted ids become tombstones that searches skip
    assert ann.remove(ids[:10].tolist() + [999_999]) == 10 and len(ann) == 5990
    assert ann.remove(ids[:10]) == 0
    assert not set(ann.search(x[:10], 5)[1].ravel().tolist()) & set(ids[:10].tolist())
    got_ids, got_vecs = ann.vectors()
    assert np.allclose(got_vecs[np.argsort(got_ids)], x[10:], atol=1e-6)
    ann.save(tmp_path / "i.faiss")
    back = FaissIndex.load(tmp_path / "i.faiss", 32, ef_search=64)
    assert back.is_hnsw and len(back) == 5990 and back.description == "hnsw16,ef=64"
    assert back.deleted == set(ids[:10].tolist())
    assert not back.maybe_upgrade()  # too few tombstones to purge
    back.add(ids[:1], x[:1])  # re-adding a tombstoned id (as a repair does) purges first
    assert back.deleted == set() and len(back) == 5991 and back.search(x[:1], 1)[1][0, 0] == ids[0]
    back.remove(ids[:2000])
    assert back.maybe_upgrade() and back.deleted == set() and len(back) == 4000


def test_faiss_side_index_merges_with_the_main_index_and_folds_on_save(tmp_path):
    x = clustered(700, seed=3)
    ids = np.arange(700) + 1
    index = FaissIndex(32, ann_threshold=400, ef_search=256)
    index.add(ids[:400], x[:400])
    assert index.maybe_upgrade() and index.is_hnsw and index.side_size == 0  # the loaded main index
    index.remove(ids[:5])  # tombstones in the main index
    index.add(ids[400:600], x[400:600])  # later batches: into the side index, the main untouched
    index.add(ids[600:], x[600:])
    assert index.side_size == 300 and index.index.ntotal == 400 and len(index) == 695
    assert index.remove([ids[650], ids[6]]) == 2 and index.side_size == 299
    live = np.setdiff1d(ids, [1, 2, 3, 4, 5, ids[650], ids[6]])
    exact = FaissIndex(32, ann_threshold=10**9)
    exact.add(live, x[live - 1])
    queries = clustered(200, seed=4)
    got_scores, got = index.search(queries, 5)
    want_scores, want = exact.search(queries, 5)
    assert (got[:, 0] == want[:, 0]).mean() >= 0.97  # HNSW for the main part, exact for the side
    assert np.all(np.diff(got_scores, axis=1) <= 1e-6)  # merged best first
    assert set(index.search(x[600:610], 1)[1][:, 0].tolist()) == set(ids[600:610].tolist())  # side hits
    assert sorted(index.ids().tolist()) == live.tolist()
    index.save(tmp_path / "i.faiss")  # folds the side into the main index first
    assert index.side_size == 0 and index.index.ntotal == 699 and len(index) == 693  # 6 tombstones
    back = FaissIndex.load(tmp_path / "i.faiss", 32)
    assert sorted(back.ids().tolist()) == live.tolist()
