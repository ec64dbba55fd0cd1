"""Several processes on one store: two writers lose nothing, a held lock is a clean error, readers never write."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from symbolic_ram import KnowledgeStore, StoreConfig, StoreLockedError, StoreReadOnlyError, ingest_facts
from symbolic_ram.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from writer_worker import facts  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).parent / "writer_worker.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _writer(path, start, n, batch=100):
    return subprocess.Popen([sys.executable, str(WORKER), str(path), str(start), str(n), str(batch)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


@pytest.mark.parametrize("index", ["faiss", "numpy"])
@pytest.mark.parametrize("run", range(2))
def test_two_writers_lose_nothing(tmp_path, index, run):
    path = tmp_path / "s"
    KnowledgeStore(path, StoreConfig(embedder="hash", index=index)).close()
    # 2000 facts each, 500 of them shared: 3500 distinct facts, and checkpoints (every 700
    # vectors) of one writer land between the other's batches
    procs = [_writer(path, 0, 2000), _writer(path, 1500, 2000)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    added = [int(o[0].split()[1]) for o in outs]
    assert sum(added) == 3500
    with KnowledgeStore(path, read_only=True) as store:
        report = store.verify()
        assert report.ok, report
        assert (report.facts, report.index_vectors, report.graph_edges) == (3500, 3500, 3500)
        assert store.db.stats()["max_id"] == 3500  # the shared 500 burned no ids
        stored = {(f.subject, f.relation, f.object) for b in store.db.iter_facts() for f in b}
        assert stored == set(facts(0, 3500))
        s, r, o = facts(3141, 1)[0]
        assert store.search(f"{s} {r}: {o}", k=1)[0].subject == "entity 3141"


def test_held_write_lock_fails_cleanly_after_the_timeout(tmp_path, capsys, caplog):
    path = tmp_path / "s"
    KnowledgeStore(path, StoreConfig(embedder="hash")).close()
    data = tmp_path / "f.jsonl"
    data.write_text('{"subject": "Accra", "relation": "country", "object": "Ghana"}\n')
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from filelock import FileLock; l = FileLock(sys.argv[1]); l.acquire(); "
                               "print('held', flush=True); time.sleep(30)", str(path / "write.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t = time.monotonic()
        code = main(["ingest", str(path), str(data), "--lock-timeout", "1.5"])
        waited = time.monotonic() - t
        err = capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and 1.5 <= waited < 10
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "write lock" in lines[0] and "--lock-timeout" in lines[0]
    assert "waiting for the write lock" in caplog.text  # the progress message while it waited
    assert "Traceback" not in err
    with KnowledgeStore(path, read_only=True) as store:  # nothing half-applied
        assert store.db.count() == 0 and store.verify().ok
    assert main(["ingest", str(path), str(data), "--lock-timeout", "1.5"]) == 0  # free again: it works


def test_sqlite_lock_held_by_another_connection_is_a_store_locked_error(tmp_path):
    path = tmp_path / "s"
    KnowledgeStore(path, StoreConfig(embedder="hash")).close()
    other = sqlite3.connect(path / "facts.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with KnowledgeStore(path, lock_timeout=0.5) as store:
            with pytest.raises(StoreLockedError, match="retry"):
                ingest_facts(store, [("Accra", "country", "Ghana")], source="t")
    finally:
        other.execute("ROLLBACK")
        other.close()
    with KnowledgeStore(path, read_only=True) as store:
        assert store.db.count() == 0


def test_reader_sees_a_concurrent_writers_batches_whole(tmp_path, world):
    path = tmp_path / "s"
    with KnowledgeStore(path, StoreConfig(embedder="hash")) as writer, KnowledgeStore(path, read_only=True) as reader:
        ingest_facts(writer, world, source="t", batch_size=4)
        assert len(reader.search("Lagos country Nigeria", k=50)) == len(world)  # caught up from the log
        assert reader.neighbors("Nigeria") and reader.path("Lagos", "Abuja", 2)  # graph rebuilt after commits
        writer.delete(subject="Lagos")  # a delete rewrites the base: the reader reloads it
        assert "Lagos" not in {f.subject for f in reader.search("Lagos country Nigeria", k=50)}
        with pytest.raises(StoreReadOnlyError):
            reader.add_alias("Lagos City", "Kano")



def test_reader_searches_appended_batches_through_its_side_index(tmp_path, world):
    from common.facts import render_fact
    from symbolic_ram.facts import FactInput

    path = tmp_path / "s"
    with KnowledgeStore(path, StoreConfig(embedder="hash", ann_threshold=len(world))) as writer:
        ingest_facts(writer, world, source="t")  # its save makes the base an HNSW index of the world
        with KnowledgeStore(path, read_only=True) as reader:
            assert reader.index.is_hnsw and reader.index.side_size == 0
            new = [(f"Town {i}", "country", f"Land {i}") for i in range(len(world) + 4)]
            batches = [new[i:i + 4] for i in range(0, len(new), 4)]
            for batch in batches[:-1]:  # appended to the log; no checkpoint, so no new base file
                writer.write_batch([FactInput(s, r, o, "t2", {}) for s, r, o in batch])
            hit = reader.search("Town 3 country Land 3", k=1)[0]
            assert (hit.subject, hit.object) == ("Town 3", "Land 3")
            assert reader.index.side_size == len(world) and reader.index.index.ntotal == len(world)  # main as loaded
            hit = reader.search("Kano country Nigeria", k=1)[0]
            assert (hit.subject, hit.object) == ("Kano", "Nigeria")
            # every stored fact is reachable, and the merged top k is the exact top k
            all_facts = world + new[:len(world)]
            texts = [render_fact(s, r, o) for s, r, o in all_facts]
            got = reader.search("Town 7 country Land 7", k=len(all_facts))
            assert sorted((f.subject, f.object) for f in got) == sorted((s, o) for s, _, o in all_facts)
            assert [f.score for f in got] == sorted((f.score for f in got), reverse=True)
            vecs = reader.encoder.encode(texts)
            best = np.sort(vecs @ reader.encoder.encode(["Town 7 country Land 7"])[0])[::-1][:5]
            assert np.allclose([f.score for f in got[:5]], best, atol=1e-5)
            # past ann_threshold, the side is folded into the HNSW index on the next catch-up
            writer.write_batch([FactInput(s, r, o, "t2", {}) for s, r, o in batches[-1]])
            hit = reader.search("Town 18 country Land 18", k=1)[0]
            assert (hit.subject, hit.object) == ("Town 18", "Land 18")
            assert reader.index.side_size == 0 and len(reader.index) == len(world) + len(new)
            assert writer.verify().ok and reader.verify().ok


def test_duplicates_do_not_burn_ids(tmp_path, world):
    with KnowledgeStore(tmp_path / "s", StoreConfig(embedder="hash")) as store:
        ingest_facts(store, world, source="t")
        seq = lambda: store.db.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'facts'").fetchone()[0]  # noqa: E731
        assert seq() == len(world)
        again = ingest_facts(store, world + world[:3], source="t")  # all known, some repeated in the batch
        assert (again.added, again.duplicates) == (0, len(world) + 3)
        assert seq() == len(world)
        new = ingest_facts(store, [("Accra", "country", "Ghana")] + world, source="t")
        assert new.added_ids == [len(world) + 1]


def _files(path: Path):
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir()
                  if not p.name.endswith(("-wal", "-shm")))


def test_read_verbs_on_a_store_that_needs_repair_warn_and_change_nothing(tmp_path, world, caplog):
    path = tmp_path / "s"
    with KnowledgeStore(path, StoreConfig(embedder="hash")) as store:
        ingest_facts(store, world, source="t")
    (path / "index.faiss").unlink()  # as if a crash had lost every vector
    before = _files(path)
    for verb in (["stats"], ["query", "Lagos"], ["search", "Lagos"], ["neighbors", "Nigeria"],
                 ["path", "Lagos", "Abuja"], ["verify"]):
        caplog.clear()
        code = main([verb[0], str(path), *verb[1:]])
        assert code == (1 if verb == ["verify"] else 0), verb
        assert "verify --repair" in caplog.text, verb  # the CLI logs warnings to stderr
        assert _files(path) == before, verb
    assert main(["verify", str(path), "--repair"]) == 0
    assert main(["verify", str(path)]) == 0
