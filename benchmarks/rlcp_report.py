"""The committed results file of RLCP runs: every target of the generalisation issue, on test families.

    .venv/bin/python benchmarks/rlcp_report.py --runs runs/a [runs/b ...] --out docs/results/rlcp_smollm2.json \
        --command "python -m neuralcpu rlcp --model smollm2-135m --out runs/a"

Reads each run's `analysis/analysis.json` (written by `python -m neuralcpu analyze`), `rlcp_config.json`
and `summary.json`. Writes one JSON with the command, commit, machine and seeds, the numbers of every
run, and a "table" that `scripts/readme_results.py` puts in the README. Each rate is on the test split
(template families no training or stopping read) with its N and 95% Wilson CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.provenance import commit, machine  # noqa: E402


def _fmt(r: dict, key: str = "acc") -> str:
    ci = r.get(f"{key}_ci") or r.get("acc_ci")
    value = r[key] if key in r else r[f"{key}_rate"]
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] (n={r['n']})" if ci else f"{value:.2f} (n={r['n']})"


def run_numbers(run: Path) -> dict:
    """The numbers of one analysed run."""
    analysis = json.loads((run / "analysis" / "analysis.json").read_text())
    cfg = json.loads((run / "rlcp_config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    before, after = analysis["before"], analysis["after"]
    out = {"run": str(run), "seed": cfg["seed"], "model": cfg["model"], "stopped_at": summary["step"],
           "trained_blocks": analysis.get("trained_blocks"), "chance": analysis["chance"]}
    for key, res in (("original", before), ("after", after)):
        h = res["heldout"]
        f = h["forget"]
        out[key] = {
            "forget_acc": f["acc"], "forget_acc_ci": f["acc_ci"], "forget_n": f["n"],
            "forget_acc_by_family": {k: v["acc"] for k, v in f["by_family"].items()},
            "forget_acc_by_layout": {k: v["acc"] for k, v in f["by_layout"].items()},
            "call_ok_by_layout": {k: v["call_ok_rate"] for k, v in f["by_layout"].items()},
            "call_ok": f["call_ok_rate"], "call_ok_ci": f["call_ok_ci"],
            "untouched_acc": h.get("untouched", {}).get("acc"), "untouched_n": h.get("untouched", {}).get("n"),
            "untouched_acc_ci": h.get("untouched", {}).get("acc_ci"),
            "untouched_false_lookups": h.get("untouched", {}).get("lookup_rate"),
            "other_acc": h.get("other", {}).get("acc"), "other_n": h.get("other", {}).get("n"),
            "anchored_acc": h.get("anchored", {}).get("acc"),
            "gsm8k_perplexity": res["gsm8k_perplexity"],
            "effective_rank_trained": res.get("effective_rank_trained"),
            "country_probe_sweep": res.get("country_probe_sweep"),
        }
    out["gsm8k_perplexity_ratio"] = analysis["gsm8k_perplexity_ratio"]
    return out


def _n(x, digits: int = 2) -> str:
    """A number as the table shows it ("n/a" where a run has no such set)."""
    return "n/a" if x is None else f"{x:.{digits}f}"


def table(runs: list[dict], notes: list[str] = (), recipe: str = "") -> dict:
    """The README table: one row per target, one column per seed (original and after)."""
    seeds = [r["seed"] for r in runs]
    o = runs[0]["original"]  # the original model's numbers are the same fact sets' for every seed of one model
    def per_seed(fn):
        return " / ".join(fn(r) for r in runs)

    def probe_max(r, kind, pos):
        sw = r["after"]["country_probe_sweep"]
        return f"{max(sw[kind][pos]):.2f}" if sw else "n/a"

    def families(r):
        fam = r["after"]["forget_acc_by_family"]
        return f"max {max(fam.values()):.2f}"

    chance = runs[0]["chance"]
    rows = [
        ["forget closed-book acc, test families (≤ 0.05)", f"{o['forget_acc']:.2f}", per_seed(lambda r: f"{r['after']['forget_acc']:.2f}")],
        ["— worst test family (≤ 0.05 on every family)", f"max {max(o['forget_acc_by_family'].values()):.2f}", per_seed(families)],
        ["right lookups on forget, completion (≥ 0.90)", f"{o['call_ok_by_layout'].get('completion', 0):.2f}",
         per_seed(lambda r: f"{r['after']['call_ok_by_layout'].get('completion', float('nan')):.2f}")],
        ["right lookups on forget, chat (≥ 0.90)", f"{o['call_ok_by_layout'].get('chat', float('nan')):.2f}",
         per_seed(lambda r: f"{r['after']['call_ok_by_layout'].get('chat', float('nan')):.2f}")],
        ["untouched locality, same relation (≥ 0.95 × original)", f"{_n(o['untouched_acc'])} (n={o['untouched_n']})",
         per_seed(lambda r: "n/a" if r['after']['untouched_acc'] is None else f"{r['after']['untouched_acc']:.2f} ({r['after']['untouched_acc'] / max(r['original']['untouched_acc'], 1e-9):.2f}×)")],
        ["false lookups on untouched (≤ 0.05)", _n(o['untouched_false_lookups']), per_seed(lambda r: _n(r['after']['untouched_false_lookups']))],
        ["untouched, other relation", f"{o['other_acc']:.2f} (n={o['other_n']})" if o["other_acc"] is not None else "n/a",
         per_seed(lambda r: f"{r['after']['other_acc']:.2f}" if r['after']['other_acc'] is not None else "n/a")],
        ["anchored locality (diagnostic: trained on)", _n(o['anchored_acc']), per_seed(lambda r: _n(r['after']['anchored_acc']))],
        ["GSM8K test-solution perplexity ratio (≤ 1.05)", "1.00", per_seed(lambda r: f"{r['gsm8k_perplexity_ratio']:.2f}")],
        [f"country probe, not trained against, max over trained blocks (≤ chance + 0.05 = {chance + 0.05:.2f}): linear, subject token",
         probe_max(dict(after=o), "linear", "subject"), per_seed(lambda r: probe_max(r, "linear", "subject"))],
        ["— linear, last prompt token", probe_max(dict(after=o), "linear", "last"), per_seed(lambda r: probe_max(r, "linear", "last"))],
        ["— MLP, subject token", probe_max(dict(after=o), "mlp", "subject"), per_seed(lambda r: probe_max(r, "mlp", "subject"))],
        ["— MLP, last prompt token", probe_max(dict(after=o), "mlp", "last"), per_seed(lambda r: probe_max(r, "mlp", "last"))],
        ["effective rank, mean over trained blocks", _n(o['effective_rank_trained'], 1), per_seed(lambda r: _n(r['after']['effective_rank_trained'], 1))],
        ["stopped at step", "", per_seed(lambda r: str(r["stopped_at"]))],
    ]
    f = runs[0]["after"]
    return {"title": f"RLCP on {runs[0]['model']}{' ' + recipe if recipe else ''}: test-split targets (seeds {', '.join(map(str, seeds))})",
            "columns": ["target (issue #30)", "original", "after RLCP, per seed"],
            "rows": rows,
            "notes": [f"forget set: {f['forget_n']} test prompts per seed (15 facts × test templates of both layouts); "
                      "95% Wilson CI of the forget accuracy per seed: "
                      + ", ".join(f"{r['after']['forget_acc_ci'][0]:.2f}–{r['after']['forget_acc_ci'][1]:.2f}" for r in runs),
                      f"chance for the country probe: 1/{round(1 / chance)} = {chance:.2f}; per-block readings and p-values are in the JSON",
                      f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))}): "
                      + ("the issue's three seeds for this model (the seed count only: each target is read per seed above)"
                         if len(seeds) >= 3 else "fewer than the issue's three seeds")] + list(notes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="analysed RLCP run directories (one per seed)")
    parser.add_argument("--out", required=True, help="results JSON to write (docs/results/...)")
    parser.add_argument("--command", required=True, help="the command that made the runs (recorded)")
    parser.add_argument("--note", action="append", default=[], help="a note under the table (repeatable)")
    parser.add_argument("--recipe", default="", help="what sets these runs apart, in the table's title (e.g. 'with --recall-samples 4')")
    args = parser.parse_args(argv)
    problems = [r for r in args.runs if not (Path(r) / "analysis" / "analysis.json").is_file()]
    if problems:
        parser.error(f"not analysed (no analysis/analysis.json; run python -m neuralcpu analyze): {problems}")
    runs = [run_numbers(Path(r)) for r in args.runs]
    data = {"command": args.command, "commit": commit(), "machine": machine(), "seeds": [r["seed"] for r in runs],
            "split": "test", "runs": runs, "table": table(runs, args.note, args.recipe)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
