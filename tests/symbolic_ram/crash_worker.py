"""Subprocess for the SIGKILL test: ingest a large synthetic set, printing each committed count.

    python tests/symbolic_ram/crash_worker.py STORE_DIR N_FACTS
"""

import sys

from symbolic_ram import KnowledgeStore, StoreConfig, ingest_facts


def synthetic(n: int):
    """Deterministic facts; the test regenerates the same list to check what was committed."""
    return [(f"entity {i}", f"rel{i % 7}", f"value {i * 31 % 1009}") for i in range(n)]


if __name__ == "__main__":
    path, n = sys.argv[1], int(sys.argv[2])
    # frequent checkpoints so a kill can also land while the index file is being written
    store = KnowledgeStore(path, StoreConfig(embedder="hash", batch_size=200, checkpoint_every=1000))
    ingest_facts(store, synthetic(n), source="synthetic",
                 progress=lambda r: print(r.added, flush=True))
    print("done", flush=True)
