"""Per-relation test-split report of an RLCP run over several relations, with its cost per 100 facts.

    .venv/bin/python -m benchmarks.rlcp_relations --run runs/scale \
        --out docs/results/rlcp_relations_smollm2.json

For a run made on a fact set of several relations (`python -m neuralcpu rlcp --facts STORE --relations
country,capital,...`), reads the original model (the run's `--model`) and the run's saved model on the
test split (template families that no training and no early stop read), both layouts, and reports per
relation:
- forget: closed-book accuracy on the forget facts (target ≤ 0.05), with N and 95% Wilson CI, and the
  floor: the share of the relation's most common forget object (what one fixed answer scores);
- right lookups: the share of forget prompts answered with a well-formed lookup of the right subject
  (target ≥ 0.90);
- untouched locality: accuracy on facts that no loss read (target ≥ 0.95 × the original), and how often
  they drew a lookup;
- anchored locality: the facts the locality streams trained on (a diagnostic, not locality).
And the run's cost: its whole wall-clock time (model loading, fact filtering, setup, the loop with its
validation evaluations; from summary.json) in minutes per 100 forget facts.

Writes OUT (JSON: command, commit, machine, seed, every number) and OUT with .md (the tables).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.provenance import provenance  # noqa: E402

SETS = ("forget", "untouched", "anchored", "other")


def floors(facts) -> dict[str, float]:
    """Per relation: the share of its forget facts whose object is the relation's most common one."""
    out = {}
    for rel in dict.fromkeys(f.relation for f in facts.forget):
        objects = Counter(f.object for f in facts.forget if f.relation == rel)
        out[rel] = max(objects.values()) / sum(objects.values())
    return out


def per_relation(report: dict) -> dict:
    """{set: {relation: {n, acc, acc_ci, call_ok_rate, call_ok_ci, lookup_rate}}} of a heldout_report."""
    keep = ("n", "acc", "acc_ci", "call_ok_rate", "call_ok_ci", "lookup_rate")
    return {name: {rel: {k: r[k] for k in keep if k in r} for rel, r in report[name]["by_relation"].items()}
            for name in SETS if name in report}


def read_model(source: str, facts, split: str) -> dict:
    from neuralcpu.evaluation import heldout_report
    from neuralcpu.models import load_model

    model, tokenizer = load_model(source)
    model.eval()
    report = heldout_report(model, tokenizer, facts, split)
    return {"overall": {name: {k: report[name][k] for k in ("n", "acc", "acc_ci", "call_ok_rate", "lookup_rate")}
                        for name in SETS if name in report},
            "by_relation": per_relation(report)}


def _ci(r: dict, key: str = "acc") -> str:
    lo, hi = r[f"{key}_ci"] if key == "acc" else r["call_ok_ci"]
    value = r["acc"] if key == "acc" else r["call_ok_rate"]
    return f"{value:.2f} [{lo:.2f}, {hi:.2f}]"


def readme_table(data: dict) -> dict:
    """The report's table as the results file's "table" (title, columns, rows, notes), which
    scripts/readme_results.py renders into the README and `table` into the .md next to the JSON."""
    o, a = data["original"]["by_relation"], data["after"]["by_relation"]
    rows = []
    for rel in data["relations"]:
        fo, fa = o["forget"][rel], a["forget"][rel]
        uo, ua = o.get("untouched", {}).get(rel), a.get("untouched", {}).get(rel)
        ratio = f" ({ua['acc'] / uo['acc']:.2f}×)" if uo and ua and uo["acc"] else ""
        untouched = ([f"{_ci(uo)} (n={uo['n']})", f"{_ci(ua)}{ratio}", f"{ua['lookup_rate']:.2f}"] if uo and ua
                     else ["n/a", "n/a", "n/a"])
        rows.append([rel, data["n_forget_by_relation"][rel], f"{_ci(fo)} (n={fo['n']})", _ci(fa),
                     f"{data['floors'][rel]:.2f}", _ci(fa, "call_ok"), *untouched])
    t = data["cost"]
    notes = [f"RLCP run: {data['run_command']}" if data.get("run_command") else f"RLCP run: {data.get('run', '?')}",
             f"cost: {t['minutes']:.1f} min for {data['n_facts']['forget']} forget facts = "
             f"**{t['minutes_per_100_facts']:.1f} min per 100 facts** on {data['machine']} (whole run: loading, fact "
             f"filtering, setup, {data['step']} steps and their validation evaluations; the loop alone "
             f"{t['loop_minutes']:.1f} min)",
             "rates on the test split (template families that no training and no early stop read), both layouts, "
             "Wilson 95% CIs; floor: the share of the relation's most common forget object, what one fixed answer "
             "would score; untouched: facts no loss read"]
    return {"title": f"RLCP over {len(rows)} relations at once, {data['model']} (seed {data['seed']}, step "
                     f"{data['step']}), {data['n_facts']['forget']} forget facts (targets per relation: forget ≤ 0.05, "
                     "right lookups ≥ 0.90, untouched ≥ 0.95× original)",
            "columns": ["relation", "forget facts", "forget acc, original", "forget acc, after (≤ 0.05)", "floor",
                        "right lookups, after (≥ 0.90)", "untouched acc, original", "untouched acc, after (≥ 0.95×)",
                        "false lookups on untouched"],
            "rows": rows, "notes": notes}


def table(data: dict) -> str:
    """The report's table in markdown (the .md next to the JSON)."""
    t = data.get("table") or readme_table(data)
    cell = lambda v: str(v).replace("|", "\\|")
    lines = [f"# {t['title']}", "", "| " + " | ".join(t["columns"]) + " |", "|" + "---|" * len(t["columns"])]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in t["rows"]]
    return "\n".join(lines + [""] + [f"- {n}" for n in t["notes"]] + [""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished RLCP run directory (facts.json, summary.json, model)")
    parser.add_argument("--original", default=None, help="the original model (default: the run's --model)")
    parser.add_argument("--out", required=True, help="results JSON to write; the tables go next to it as .md")
    parser.add_argument("--run-command", default=None, help="the command that made the run (recorded with its config)")
    parser.add_argument("--split", default="test", choices=("test", "validation"),
                        help="template split read (reports read test)")
    args = parser.parse_args(argv)
    from neuralcpu.facts import FactSets

    run = Path(args.run)
    missing = [n for n in ("facts.json", "summary.json", "rlcp_config.json") if not (run / n).is_file()]
    if missing:
        parser.error(f"{run} is not a finished RLCP run: no {', '.join(missing)}")
    cfg = json.loads((run / "rlcp_config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    timing = summary.get("timing") or {}
    if not timing.get("seconds_this_process") or timing.get("resumed"):
        parser.error(f"{run}/summary.json has no whole-run timing (a resumed run, or a run before timing was "
                     "recorded): its cost per 100 facts cannot be read")
    facts = FactSets.load(run / "facts.json")
    data = {**provenance(sys.argv[1:] if argv is None else argv, "-m benchmarks.rlcp_relations", cfg["seed"]),
            "run": str(run), "run_command": args.run_command, "run_config": cfg, "model": cfg["model"], "seed": cfg["seed"],
            "step": summary["step"], "split": args.split,
            "relations": sorted({f.relation for f in facts.forget}),
            "n_facts": {k: len(getattr(facts, k)) for k in ("forget", "locality", "untouched", "other")},
            "n_forget_by_relation": dict(Counter(f.relation for f in facts.forget)),
            "n_untouched_by_relation": dict(Counter(f.relation for f in facts.untouched)),
            "floors": floors(facts)}
    minutes = timing["seconds_this_process"] / 60
    data["cost"] = {"minutes": minutes, "loop_minutes": timing["loop_seconds_this_process"] / 60,
                    "minutes_per_100_facts": minutes / len(facts.forget) * 100}
    data["original"] = read_model(args.original or cfg["model"], facts, args.split)
    data["after"] = read_model(str(run), facts, args.split)
    data["table"] = readme_table(data)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((out, json.dumps(data, indent=1)), (out.with_suffix(".md"), table(data))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    print(table(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
