"""Outputs of a benchmark run: results.json (atomic), report.md tables and the PNG plots."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

FACT_SETS = [("forget", "forget"), ("locality_same", "locality (same relation)"),
             ("locality_other", "locality (other relation)"), ("tofu", "TOFU world facts")]


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to a temp file in the same directory, then os.replace it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Atomic text write (temp file + os.replace)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _cell(p: dict | None) -> str:
    """'0.87 [0.70, 0.95] (13/15)' for a proportion dict."""
    if not p or p.get("acc") is None:
        return "–"
    lo, hi = p["ci95"]
    return f"{p['acc']:.2f} [{lo:.2f}, {hi:.2f}] ({p['k']}/{p['n']})"


def _num(x, fmt="{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _git(state: dict | None) -> str:
    state = state or {}
    return f"{state.get('commit') or 'unknown'}{' (dirty)' if state.get('dirty') else ''}"


def _earlier_git(results: dict) -> str:
    """" (resumed; earlier invocations at <commits>)" when --resume kept results made at other checkouts."""
    earlier = [_git(g) for g in results.get("invocation_git", [])[:-1]]
    others = list(dict.fromkeys(g for g in earlier if g != _git(results["git"])))
    return f" (resumed; earlier invocations at {', '.join(others)})" if others else ""


def markdown(results: dict) -> str:
    """report.md: run header, then the fact, GSM8K and relearning tables, skipped systems and plots."""
    cfg = results["config"]
    lines = [f"# Benchmark report: {results['model']}", "",
             f"seed {results['seed']} · git {_git(results['git'])}{_earlier_git(results)} · "
             f"wall time {results.get('wall_seconds', 0):.0f} s · suites {', '.join(cfg['suite'])}", ""]
    for w in results.get("warnings", []):
        lines.append(f"> warning: {w}")
    facts = results.get("facts", {})
    if facts:
        present = [(k, label) for k, label in FACT_SETS if any(k in r for r in facts.values())]
        lines += ["## Fact QA (exact match, held-out templates; acc [95% Wilson CI] (k/n))", "",
                  "| system | " + " | ".join(label for _, label in present) + " | lookup calls (per set) |",
                  "|---|" + "---|" * (len(present) + 1)]
        for name, r in facts.items():
            looks = " / ".join(_num(r[k].get("lookup_rate")) for k, _ in present if k in r)
            lines.append(f"| {name} | " + " | ".join(_cell(r.get(k)) for k, _ in present) + f" | {looks} |")
        first = next(iter(facts.values()))
        lines.append("| *floor: the best fixed answer* | " + " | ".join(_num(first.get(k, {}).get("floor")) for k, _ in present)
                     + " | |")
        lines += ["", "A lookup call counts as a wrong closed-book answer; the +tool systems execute it. The floor is "
                  "what a model that knows none of the facts reaches by always giving one answer per relation (the "
                  "best of the set's objects); the answers are free generations, so 1/(number of objects) is no "
                  "chance level here.", ""]
    gsm = results.get("gsm8k", {})
    if gsm:
        lines += ["## GSM8K (test subset; acc [95% Wilson CI] (k/n))", "",
                  "| system | prompt | N | accuracy | CoT rate | accuracy on CoT outputs | mean new tokens | hit cap | time (s) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, r in gsm.items():
            lines.append(f"| {name} | {r['format']} | {r['n']} | {_cell(r['accuracy'])} | {_cell(r['cot_rate'])} | "
                         f"{_cell(r['cot_accuracy'])} | {_num(r['mean_tokens'], '{:.0f}')} | {_num(r['cap_rate'])} | "
                         f"{r['seconds']:.0f} |")
        lines += ["", f"max_new_tokens {cfg['gsm8k_max_new_tokens']}. CoT = at least 2 reasoning steps before the "
                  "final answer (see docs/benchmarks.md).", ""]
    rob = results.get("robustness", {})
    if rob:
        lines += ["## Relearning attack (fine-tune on a share of the forget set, test on the rest)", "",
                  "| system | held-out before | held-out after | attack set after | probe (deep) before | probe (deep) after | probe chance |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in rob.items():
            b, a = r["before"], r["after"]
            lines.append(f"| {name} | {_cell(b['heldout'])} | {_cell(a['heldout'])} | {_cell(a['attack_set'])} | "
                         f"{_num(b['probe']['deep_mean'])} | {_num(a['probe']['deep_mean'])} | {_num(b['probe']['chance'])} |")
        c = next(iter(rob.values()))["config"]
        lines += ["", f"attack: {c['fraction']:.0%} of the forget set, {c['steps']} full-batch AdamW steps at lr {c['lr']}, "
                  "all parameters; target: held-out after <= 0.15.", ""]
    skipped = results.get("skipped", {})
    if skipped:
        lines += ["## Skipped systems", ""] + [f"- {n}: {why}" for n, why in skipped.items()] + [""]
    if results.get("plots"):
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in results["plots"]] + [""]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on the benchmark machine
    import matplotlib.pyplot as plt

    return plt


def plot_gsm8k_vs_cot(gsm: dict, path: Path) -> Path:
    """Scatter of GSM8K accuracy against CoT rate, one point per system, with 95% CI bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, r in gsm.items():
        x, y = r["cot_rate"]["acc"], r["accuracy"]["acc"]
        xerr = [[max(0.0, x - r["cot_rate"]["ci95"][0])], [max(0.0, r["cot_rate"]["ci95"][1] - x)]]
        yerr = [[max(0.0, y - r["accuracy"]["ci95"][0])], [max(0.0, r["accuracy"]["ci95"][1] - y)]]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", capsize=3, label=name)
    ax.set(xlabel="chain-of-thought rate", ylabel="GSM8K accuracy", xlim=(-0.05, 1.05), ylim=(-0.05, 1.05),
           title="GSM8K accuracy vs CoT rate (95% CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_phase_transition(name: str, rows: list[dict], path: Path) -> Path:
    """Forget accuracy, locality accuracy and mean probe accuracy against training step for one run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r.get("forget_acc") for r in rows], "o-", label="forget acc (held-out templates)")
    ax.plot(steps, [r.get("locality_acc") for r in rows], "s-", label="locality acc")
    probe = [(r["step"], sum(r["probe_acc"]) / len(r["probe_acc"])) for r in rows if r.get("probe_acc")]
    if probe:
        ax.plot(*zip(*probe), "^-", label="probe acc (mean over GRL layers)")
    ax.set(xlabel="step", ylabel="accuracy", ylim=(-0.05, 1.05), title=f"phase transition: {name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_probe_attack(rob: dict, path: Path) -> Path:
    """Per-layer probe decodability before (dashed) and after (solid) the relearning attack."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in rob.items():
        before, after = r["before"]["probe"]["per_layer"], r["after"]["probe"]["per_layer"]
        line, = ax.plot(range(len(after)), after, "-o", ms=3, label=f"{name} after")
        ax.plot(range(len(before)), before, "--", color=line.get_color(), label=f"{name} before")
        chance = r["before"]["probe"]["chance"]
    ax.axhline(chance, color="grey", lw=0.8, ls=":", label="chance")
    ax.set(xlabel="layer (0 = embeddings)", ylabel="probe accuracy (held-out templates)", ylim=(-0.05, 1.05),
           title="probe decodability before/after the relearning attack")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
