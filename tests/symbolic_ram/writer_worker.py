"""Subprocess for the concurrency tests: ingest a range of synthetic facts into a shared store.

    python tests/symbolic_ram/writer_worker.py STORE_DIR START N [BATCH]

Prints "ok <added> <duplicates>" on success.
"""

import sys

from symbolic_ram import KnowledgeStore, ingest_facts


def facts(start: int, n: int):
    """Deterministic facts start..start+n; two workers with overlapping ranges share facts."""
    return [(f"entity {i}", f"rel{i % 5}", f"value {i * 37 % 1013}") for i in range(start, start + n)]


if __name__ == "__main__":
    path, start, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    with KnowledgeStore(path, create=False, lock_timeout=60, checkpoint_every=700) as store:
        report = ingest_facts(store, facts(start, n), source="w", batch_size=batch)
    print("ok", report.added, report.duplicates, flush=True)
