"""Generate the README's results tables (and the tables of docs pages) from the committed results files.

    .venv/bin/python scripts/readme_results.py           # rewrite README.md and the PAGES between their markers
    .venv/bin/python scripts/readme_results.py --check   # exit 1 if any of them is out of date

Every `docs/results/*.json` that has a "table" ({"title", "columns", "rows", "notes"?}) becomes one
table, in file-name order, under a heading that links to the file and states its command, commit,
machine and seeds. The README holds them between `<!-- results:start -->` and `<!-- results:end -->`.
A page of PAGES holds blocks `<!-- results:FILE.json VIEW -->` ... `<!-- results:end -->`: each is
the table that VIEW (scripts/store_tables.py) derives from docs/results/FILE.json, with the same
heading, so a page's numbers cannot drift from the files either.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from store_tables import VIEWS

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
ENVELOPE = ("command", "commit", "machine")
PAGES = ("docs/symbolic_ram.md",)  # pages with generated tables, relative to ROOT
BLOCK = re.compile(r"<!-- results:(?P<file>[\w.-]+\.json) (?P<view>\w+) -->\n.*?<!-- results:end -->", re.S)


class ResultsFileError(ValueError):
    """A results file lacks what the README needs; the message names the file and field."""


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _store_bench(d: dict) -> dict:
    rows = [[r["ours"], r["threads"], f"{r['ingest_speedup']:.2f}×", f"{r['query_p50_ratio']:.2f}", f"{r['recall_ours']:.3f}",
             f"{r['recall_txtai']:.3f}"] for r in d["real_vs_txtai"]]
    notes = ["1 thread is the comparison: in the 2-thread rows another process held one of the two cores and "
             "txtai's baseline fell to 42 facts/s, so those ratios overstate ours"] if any(r["threads"] == 2 for r in d["real_vs_txtai"]) else []
    return {"title": "symbolic_ram against txtai, same facts and threads, MiniLM (targets: ingest ≥ 1.5×, query p50 ratio ≤ 1)",
            "columns": ["our embedder backend", "threads", "ingest facts/s vs txtai", "query p50 ours / txtai",
                        "intended fact first, ours", "txtai"], "rows": rows, "notes": notes}


def _generation_bench(d: dict) -> dict:
    rows = [[r["mode"], f"{r['tokens_per_s']:.1f}", f"{r['ratio']:.2f}×", r["differing"]] for r in d["results"]]
    return {"title": f"Greedy generation, {d['model']}, {d['n']} GSM8K problems, {d['max_new_tokens']}-token cap, "
                     f"{d['threads']} thread(s) (target ≥ 3× plain HF generate at batch 8)",
            "columns": ["mode", "tokens/s", "vs HF generate, batch 8", "outputs differing"], "rows": rows,
            "notes": [f"bf16: {d['bf16']}", _contention(d)]}


def _contention(d: dict) -> str:
    """What else ran: the file's own record (the 1-min load average at start, or a stated "contended")."""
    if "load_avg_start" in d:
        return f"1-min load average at start {d['load_avg_start']:.2f} on {d.get('cpus', '?')} cores"
    if "contended" in d:
        return "measured with other heavy processes on the machine" if d["contended"] else "ran alone on the machine"
    return "other load on the machine not recorded"


def _store_load(d: dict) -> dict:
    during, tw, v = d["during"], d.get("two_writers") or {}, d["verify"]
    rows = [["lookup p50 / p95 / p99 (ms)", f"{during['lookup']['p50']:.2f} / {during['lookup']['p95']:.2f} / {during['lookup']['p99']:.2f}", ""],
            ["search p50 / p95 / p99 (ms)", f"{during['search']['p50']:.1f} / {during['search']['p95']:.1f} / {during['search']['p99']:.1f}",
             "search p95 ≤ 3× idle"],
            ["search p95 during ingest / idle p95, idle before and idle after",
             f"{d['search_p95_during_over_idle_before']:.1f}× and {d['search_p95_during_over_idle_after']:.1f}×", "≤ 3×"],
            ["reader errors", during["errors"], "0"],
            ["verify after the ingest", f"{'OK' if v['ok'] else 'DRIFT'}: {v['facts']} facts, {v['vectors']} vectors", "OK, exact"]]
    fixed = d.get("fixed_index")
    if fixed:
        r, grown = fixed["search_p95_ratio"], fixed["base"] + during["writer"]["added"]
        rows.append([f"the same ratios with exact search throughout ({fixed['base']:,} → {grown:,} vectors): the writer's own cost",
                     f"{r['during_over_idle_before']:.1f}× and {r['during_over_idle_after']:.1f}×", "≤ 3×"])
    if tw.get("runs"):
        rows.append(["two concurrent writers: runs OK, lost facts, lost vectors",
                     f"{tw['ok']}/{tw['runs']}, {tw['lost_facts']}, {tw['lost_vectors']}", "0 lost in 20 runs"])
    return {"title": f"symbolic_ram under load: one writer ingesting {during['writer']['added']} facts, 4 reader processes",
            "columns": ["measure", "value", "target (issue #35)"], "rows": rows}


def _gsm8k(d: dict) -> dict:
    """benchmarks.gsm8k_paired's result: one row per model, then the paired tests when there are two."""
    cfg = d["config"]
    prop = lambda p: f"{p['acc']:.3f} ({p['k']}/{p['n']}) [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}]"
    name = lambda side: cfg[side] + (" (int8)" if cfg.get("int8", "none") in (side, "both") else "")
    rows = [[name(side), prop(s["accuracy"]), prop(s["cot_rate"]), s["no_answer"], f"{s['mean_tokens']:.0f}",
             f"{s['cap_rate']:.2f}", f"{s['generation_seconds'] / 60:.1f}"] for side, s in d["models"].items()]
    notes = [f"{cfg.get('partial') or str(cfg['n_problems']) + ' GSM8K test problems'}, a seeded subset (seed {cfg['seed']}); "
             f"prompt `{cfg['prompt']}`, greedy, cap {cfg['max_new_tokens']} new tokens; Wilson 95% CIs; chance ≈ 0"]
    for key, title in (("accuracy", "accuracy"), ("cot", "CoT rate")):
        p = d.get("paired", {}).get(key)
        if p:
            notes.append(f"{title}, paired (B − A): {p['diff']:+.3f} [{p['diff_ci95'][0]:+.3f}, {p['diff_ci95'][1]:+.3f}] "
                         f"(Newcombe), exact McNemar p = {p['mcnemar_p']:.3g}")
    return {"title": f"GSM8K: {' vs '.join(name(s) for s in d['models'])}",
            "columns": ["model", "accuracy [95% CI]", "CoT rate", "no answer", "mean new tokens", "hit cap", "generation min"],
            "rows": rows, "notes": notes}


def _new_kb(d: dict) -> dict:
    """benchmarks/new_kb.py's result: issue #31's targets for a relation the model never knew, on the run's split."""
    n, u, t = d["new_relation"], d["unrelated"], d["targets"]
    prop = lambda p: f"{p['acc']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}] (N={p['n']})"
    met = lambda key: "met" if t[key]["met"] else "not met"
    r = u["ratio"]
    rows = [["right lookups (subject and relation)", prop(n["right_lookups"]), t["right_lookups"]["target"], met("right_lookups")]]
    rows += [[f"— {fam} ({v['layout']})", prop(v["right_lookups"]), "", ""] for fam, v in n["by_family"].items()]
    rows += [["tool-mode accuracy", prop(n["tool_acc"]), t["tool_acc"]["target"], met("tool_acc")],
             ["closed-book accuracy of the original on these facts", prop(n["original_closed_book"]), "", ""],
             [f"unrelated closed-book accuracy, after / original ({r['facts']} facts)",
              f"{r['ratio']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]", t["unrelated_closed_book_ratio"]["target"],
              met("unrelated_closed_book_ratio")]]
    wrong = (n.get("wrong_calls") or {}).get("verdicts", {})
    notes = [f"relation {', '.join(d['relations'])} (a relation no project code names), {n['facts']} held-out facts that "
             f"toolsft never trained on, {d['split']} templates, both layouts; Wilson 95% CIs, the ratio's a paired "
             f"bootstrap over facts ({r['reps']} resamples)",
             f"toolsft: {d['toolsft_command']}"]
    if wrong:
        notes.append("why lookups were not right (questions): " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in wrong.items() if k != "right"))
    return {"title": f"A knowledge base the model never knew: toolsft on {d['original']}, {d['split']} phrasings (issue #31)",
            "columns": ["measure", "value", "target", "met"], "rows": rows, "notes": notes}


# Results files written by scripts that do not build a README table themselves: their table, derived here
# (by the file name's stem, or for GSM8K by its prefix: one file per model pair).
DERIVED = {"store_bench": _store_bench, "store_load": _store_load, "generation_bench": _generation_bench,
           "generation_bench_avx512bf16": _generation_bench}


def derived_table(stem: str, data: dict) -> dict | None:
    if stem.startswith("gsm8k_"):
        return _gsm8k(data)
    if stem.startswith("toolsft_newkb") and data.get("split") == "test":  # the validation reading chose the setting
        return _new_kb(data)
    return DERIVED[stem](data) if stem in DERIVED else None


def render_file(path: Path) -> str | None:
    """One results file as a markdown section, or None when it has no table."""
    data = json.loads(path.read_text())
    table = data.get("table") or derived_table(path.stem, data)
    if not table:
        return None
    return render_table(path, data, table)


def render_table(path: Path, data: dict, table: dict, link_from: Path | None = None) -> str:
    """`table` of the results file `path` as a markdown section; links are relative to `link_from` (ROOT)."""
    missing = [k for k in ENVELOPE if not data.get(k)]
    if missing:
        raise ResultsFileError(f"{path}: missing field(s) {missing}: every results file states how it was made")
    for key in ("title", "columns", "rows"):
        if key not in table:
            raise ResultsFileError(f"{path}: field 'table.{key}' is missing")
    width = len(table["columns"])
    for i, row in enumerate(table["rows"]):
        if len(row) != width:
            raise ResultsFileError(f"{path}: table.rows[{i}] has {len(row)} cells, the header {width}")
    rel = path.relative_to(ROOT).as_posix()
    link = Path(os.path.relpath(path, link_from or ROOT)).as_posix()
    seeds = data.get("seeds", data.get("seed", "n/a"))
    lines = [f"#### {table['title']}", "",
             f"From [`{rel}`]({link}): `{data['command']}` at {data['commit'][:10]}, seeds {seeds}, {data['machine']}.", "",
             "| " + " | ".join(map(_cell, table["columns"])) + " |",
             "|" + "---|" * width]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in table["rows"]]
    # "about": what a results file's own fields cannot say (which run a model dir is), written by hand
    lines += [""] + [f"- {note}" for note in [*table.get("notes", []), *data.get("about", [])]]
    return "\n".join(lines).rstrip() + "\n"


def render(results_dir: Path) -> str:
    """Every table of `results_dir`, joined."""
    parts = [s for s in (render_file(p) for p in sorted(results_dir.glob("*.json"))) if s]
    return "\n".join(parts) if parts else "_No results committed yet._\n"


def updated_readme(readme: str, tables: str) -> str:
    """`readme` with the text between the markers replaced by `tables`."""
    if START not in readme or END not in readme:
        raise ResultsFileError(f"README.md has no {START} ... {END} block")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{tables}{END}{tail}"


def updated_page(page: Path, text: str, results_dir: Path) -> str:
    """`text` (of `page`) with every `<!-- results:FILE.json VIEW -->` block regenerated."""
    def fill(m: re.Match) -> str:
        path, view = results_dir / m["file"], m["view"]
        if view not in VIEWS:
            raise ResultsFileError(f"{page}: unknown table view {view!r}; known: {sorted(VIEWS)}")
        if not path.is_file():
            raise ResultsFileError(f"{page}: names {path}, which does not exist")
        data = json.loads(path.read_text())
        try:
            table = VIEWS[view](data)
        except KeyError as e:
            raise ResultsFileError(f"{path}: field {e} is missing (view {view})") from e
        return f"<!-- results:{m['file']} {view} -->\n{render_table(path, data, table, page.parent)}{END}"

    return BLOCK.sub(fill, text)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md differs from what would be written")
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    parser.add_argument("--results", default=str(ROOT / "docs" / "results"))
    parser.add_argument("--pages", nargs="*", default=[str(ROOT / p) for p in PAGES],
                        help="docs pages whose results blocks to regenerate (default: %(default)s)")
    args = parser.parse_args(argv)
    results = Path(args.results)
    files = [Path(args.readme)] + [Path(p) for p in args.pages]
    try:
        new = {files[0]: updated_readme(files[0].read_text(), render(results))}
        new.update({page: updated_page(page, page.read_text(), results) for page in files[1:]})
    except (ResultsFileError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stale = [path for path, text in new.items() if text != path.read_text()]
    if args.check:
        for path in stale:
            print(f"{path} is out of date: run .venv/bin/python scripts/readme_results.py", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        _write(path, new[path])
    print(f"results tables up to date in {', '.join(str(p) for p in files)} ({len(stale)} rewritten)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
