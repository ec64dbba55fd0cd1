"""Crash safety and honest failure: SIGKILL mid-ingest, missing/corrupt index, drift, versions."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from symbolic_ram import (
    KnowledgeStore, StoreConfig, StoreDriftError, StoreError, StoreVersionError, ingest_facts,
)

sys.path.insert(0, str(Path(__file__).parent))
from crash_worker import synthetic  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def test_sigkill_mid_ingest_leaves_exactly_the_committed_facts(tmp_path):
    path, n = tmp_path / "crash", 60_000
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "crash_worker.py"), str(path), str(n)],
                            stdout=subprocess.PIPE, text=True, env=env)
    last = 0
    deadline = time.monotonic() + 120
    try:
        for line in proc.stdout:  # wait for a few thousand committed facts, then kill without warning
            if line.strip() == "done":
                break
            last = int(line)
            if last >= 4_000 or time.monotonic() > deadline:
                time.sleep(0.05)  # land somewhere inside a later batch, embedding or index save
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the worker finished before it could be killed"
    assert 4_000 <= last < n

    # As found on disk: the index may lag SQLite by the batch being logged, but never holds a
    # fact SQLite lacks, and a read-only open changes nothing.
    def files():  # SQLite's own -wal/-shm aside
        return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.suffix not in (".sqlite-wal", ".sqlite-shm"))

    before = files()
    with KnowledgeStore(path, create=False, read_only=True) as raw:
        drift = raw.verify()
        assert drift.extra_in_index == [] and drift.duplicate_in_index == []
        assert drift.missing_in_graph == []
        assert len(drift.missing_in_index) <= 200  # at most the one batch between commit and log append
        raw.search("entity 1", k=1)  # searches what is indexed; no error
    assert files() == before

    with KnowledgeStore(path, create=False) as store:  # the repair a write (or verify --repair) runs
        report = store.repair()
        assert report.ok, report
        count = store.db.count()
        assert count >= last and count % 200 == 0  # whole batches only
        sql_ids = store.db.ids()
        assert sorted(store.index.ids().tolist()) == sql_ids.tolist()
        stored = {(f.subject, f.relation, f.object) for batch in store.db.iter_facts() for f in batch}
        assert stored == set(synthetic(n)[:count])  # exactly the committed prefix, nothing partial
        assert store.search("entity 17 rel3 value 527", k=1)[0].subject == "entity 17"
    assert not list(path.glob("*.tmp-*"))


def _small_store(path, world, **config):
    store = KnowledgeStore(path, StoreConfig(embedder="hash", **config))
    ingest_facts(store, world, source="t")
    store.close()
    return path


def test_missing_index_is_rebuilt_at_the_next_write(tmp_path, world, caplog):
    path = _small_store(tmp_path / "s", world)
    (path / "index.faiss").unlink()
    with KnowledgeStore(path, read_only=True) as raw:
        assert len(raw.verify().missing_in_index) == len(world)
        assert raw.search("Lagos", k=1) == []  # nothing indexed, and said so at open:
    assert "verify --repair" in caplog.text
    assert not (path / "index.faiss").exists()  # reading repaired nothing
    with KnowledgeStore(path) as store:
        assert not store.verify().ok  # opening a writable store does not write either
        ingest_facts(store, [("Accra", "country", "Ghana")], source="t")  # the next write repairs first
        assert store.verify().ok
        assert store.search("Lagos country Nigeria", k=1)[0].subject == "Lagos"
    assert (path / "index.faiss").exists()


@pytest.mark.parametrize("damage", [b"", b"not a faiss index at all", None])
def test_corrupt_index_gives_error_or_rebuild(tmp_path, world, damage):
    path = _small_store(tmp_path / "s", world)
    index_file = path / "index.faiss"
    data = index_file.read_bytes()
    index_file.write_bytes(damage if damage is not None else data[: len(data) // 2])
    with KnowledgeStore(path, read_only=True) as raw:
        report = raw.verify()
        assert not report.ok and any("cannot read FAISS index" in p for p in report.problems)
        with pytest.raises(StoreDriftError, match="verify --repair"):
            raw.search("Lagos", k=1)
    with KnowledgeStore(path) as store:
        assert store.repair().ok and len(store.index) == len(world)
        assert store.search("Tokyo country Japan", k=1)[0].subject == "Tokyo"


def test_index_of_wrong_dimension_is_refused(tmp_path, world):
    import faiss

    path = _small_store(tmp_path / "s", world)
    faiss.write_index(faiss.IndexIDMap2(faiss.IndexFlatIP(8)), str(path / "index.faiss"))
    with KnowledgeStore(path, read_only=True) as raw:
        assert any("dim 8" in p for p in raw.verify().problems)
    with KnowledgeStore(path) as store:
        assert store.repair().ok


def test_drift_made_behind_the_stores_back_is_reported_with_ids(tmp_path, world):
    path = _small_store(tmp_path / "s", world)
    con = sqlite3.connect(path / "facts.sqlite")
    (gone,) = con.execute("SELECT id FROM facts WHERE subject = 'Lagos'").fetchone()
    con.execute("DELETE FROM facts WHERE id = ?", (gone,))
    con.commit()
    con.close()
    with KnowledgeStore(path, repair=False) as raw:
        report = raw.verify()
        assert report.extra_in_index == [gone] and not report.ok
        assert str(gone) in str(report)
        fixed = raw.repair()
        assert fixed.ok
    with KnowledgeStore(path, repair=False) as again:
        assert again.verify().ok


def test_other_format_version_is_a_clear_error(tmp_path, world):
    path = _small_store(tmp_path / "s", world)
    con = sqlite3.connect(path / "facts.sqlite")
    con.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreVersionError, match="format version 99"):
        KnowledgeStore(path)


def test_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "s"
    path.mkdir()
    con = sqlite3.connect(path / "facts.sqlite")
    con.executescript("CREATE TABLE facts (id INTEGER PRIMARY KEY, subject TEXT, relation TEXT, object TEXT,"
                      " source TEXT, provenance TEXT, created_at TEXT); INSERT INTO facts VALUES (1,'a','b','c','','{}','');")
    con.close()
    with pytest.raises(StoreVersionError, match="not written by this package"):
        KnowledgeStore(path)


def test_encoder_of_another_model_is_refused(tmp_path, world):
    from symbolic_ram import HashEncoder

    path = _small_store(tmp_path / "s", world)
    other = HashEncoder(384)
    other.name = "some-other-model"
    with pytest.raises(StoreError, match="some-other-model"):
        KnowledgeStore(path, encoder=other)


def test_missing_store_is_not_created_silently(tmp_path):
    with pytest.raises(FileNotFoundError, match="symbolic_ram init"):
        KnowledgeStore(tmp_path / "nope", create=False)


def test_stale_temp_file_of_a_dead_process_is_removed(tmp_path, world):
    path = _small_store(tmp_path / "s", world)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = path / f"index.faiss.tmp-{dead.pid}"
    stale.write_bytes(b"half written")
    with KnowledgeStore(path) as store:
        assert stale.exists()  # opening writes nothing; the first write cleans up
        store.add_alias("Lagos City", "Lagos")
        assert store.verify().ok
    assert not stale.exists()


def test_deleted_ids_are_never_reused(tmp_path, world):
    path = _small_store(tmp_path / "s", world)
    with KnowledgeStore(path) as store:
        top = store.db.stats()["max_id"]
        store.delete(ids=[top])
        new = ingest_facts(store, [("Accra", "country", "Ghana")], source="t").added_ids
        assert new[0] > top
