"""Issue #31's first target, read on a toolsft run: a relation the model never knew, answered through lookups.

    flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/new_kb.py --run runs/toolsft_iso --split test \\
        --out docs/results/toolsft_newkb_smollm2.json

Everything is read on the `--split` templates (validation to choose a setting, test to report):
- **right lookups** and **tool-mode accuracy**: each held-out fact of the run (`<run>/held_out_facts.jsonl`,
  facts toolsft never trained on) asked under every template of the split, both layouts, through the
  bridge loop in tool mode (`bridge.evaluate.run_eval`) on the run's store. A chat template's question is
  asked in the bridge's own layout, as toolsft trains it. A lookup is right when it names the fact's
  subject *and* relation; the answer is right when it names the object (`common.facts.matches_answer`).
  A lookup that is not right is counted by why (`wrong_calls`): no call, malformed markup, wrong subject
  (with how: extra words, part of the name, another name), wrong relation (with the names written);
- **closed-book accuracy of the original on those facts**: how much of the relation the model knew;
- **closed-book accuracy on unrelated facts** (`--unrelated`: facts of other relations that the original
  knows), original and after, both layouts in the model's own prompt (`neuralcpu.evaluation`, as the
  RLCP reports read locality), with after / original and its paired bootstrap 95% CI over facts.
Rates carry their N and a Wilson 95% CI. The relation is whatever the run trained: no code here names one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.metrics import proportion  # noqa: E402
from benchmarks.provenance import provenance  # noqa: E402
from benchmarks.report import write_json_atomic  # noqa: E402
from common.facts import Fact, matches_answer  # noqa: E402
from common.toolcall import CALL_OPEN  # noqa: E402

DEFAULT_UNRELATED = "docs/results/rlcp_smollm2_original_test.json"  # SmolLM2's screened known facts
TARGETS = {"right_lookups": 0.90, "tool_acc": 0.90, "unrelated_closed_book_ratio": 0.95}


def load_unrelated(path: str) -> list[Fact]:
    """Facts from a JSONL of triples, a facts.json (forget/locality/untouched/other) or a results file that
    holds one under "facts"; every set is used, each (subject, relation) once."""
    from neuralcpu.facts import load_jsonl_facts

    if path.endswith(".jsonl"):
        return load_jsonl_facts(path)
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    sets = data.get("facts", data) if isinstance(data, dict) else None
    if not isinstance(sets, dict) or not any(isinstance(sets.get(k), list) for k in ("forget", "locality", "untouched", "other")):
        raise ValueError(f"{path}: expected a facts.json (forget, locality, untouched, other) or a JSONL of triples")
    facts, seen = [], set()
    for name in ("forget", "locality", "untouched", "other"):
        for i, r in enumerate(sets.get(name) or []):
            if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("subject", "relation", "object")):
                raise ValueError(f"{path}: facts.{name}[{i}]: needs string subject, relation and object")
            if (r["subject"], r["relation"]) not in seen:
                seen.add((r["subject"], r["relation"]))
                facts.append(Fact(r["subject"], r["relation"], r["object"], tuple(r.get("aliases", ()))))
    return facts


def closed_book_rows(model, tokenizer, facts: list[Fact], split: str) -> list[dict]:
    """One row per prompt: {subject, relation, layout, family, correct, called, prompt (its end), output}
    (greedy, the model's own prompt)."""
    from neuralcpu.evaluation import answer_rows

    return [{"subject": p.fact.subject, "relation": p.fact.relation, "layout": p.layout, "family": p.family,
             "correct": matches_answer(o, p.fact, p.window), "called": CALL_OPEN in o, "prompt": p.text[-90:],
             "output": o[: p.window]}
            for p, o in answer_rows(model, tokenizer, facts, split)]


def wrong_call_breakdown(records) -> dict:
    """Why lookups were not right (`bridge.evaluate.call_verdict`): verdict counts overall and per family; the
    relation names written in wrong-relation calls; how a wrong subject relates to the right one (extra words
    around it, a part of it, something else) with examples."""
    from collections import Counter

    from bridge.evaluate import VERDICTS, call_verdict
    from common.facts import normalize_name

    verdicts = [call_verdict(r) for r in records]
    by_family: dict[str, Counter] = {}
    for r, v in zip(records, verdicts):
        by_family.setdefault(r.family, Counter())[v] += 1
    relations, shapes, examples = Counter(), Counter(), []
    for r, v in zip(records, verdicts):
        lookups = [c for c in r.calls if "subject" in c]
        if v in ("wrong_relation", "wrong_both"):
            relations.update(c["relation"] for c in lookups if c["relation"] != r.relation)
        if v in ("wrong_subject", "wrong_both"):
            wrote = next(c["subject"] for c in lookups)
            got, want = normalize_name(wrote), normalize_name(r.subject)
            shape = "extra_words" if want in got else "part_of_subject" if got and got in want else "other"
            shapes[shape] += 1
            if sum(e["shape"] == shape for e in examples) < 4:
                examples.append({"shape": shape, "subject": r.subject, "wrote": wrote, "prompt": r.prompt[-100:]})
    return {"verdicts": {v: verdicts.count(v) for v in VERDICTS}, "n": len(records),
            "by_family": {f: {v: c[v] for v in VERDICTS} for f, c in by_family.items()},
            "relations_written": dict(relations.most_common(8)), "wrong_subject_shapes": dict(shapes),
            "wrong_subject_examples": examples}


def toolsft_command(config: dict) -> str:
    """The `python -m bridge.toolsft` command that trained a run, from its toolsft_config.json."""
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in config.items() if v is not None and v is not False)
    return f"python -m bridge.toolsft {flags}"


def misses(rows: list[dict], n: int = 12) -> list[str]:
    """Up to `n` wrong rows, spread over the list, as "prompt end -> output"."""
    wrong = [r for r in rows if not r["correct"]]
    return [f"{r['prompt']!r} -> {r['output']!r}" for r in wrong[:: max(1, len(wrong) // n)][:n]]


def rate_by(rows: list[dict], flag: str, key: str | None = None) -> dict:
    """proportion() of `flag` over `rows`, overall or per value of `key`."""
    if key is None:
        return proportion(sum(r[flag] for r in rows), len(rows))
    return {v: rate_by([r for r in rows if r[key] == v], flag) for v in dict.fromkeys(r[key] for r in rows)}


def paired_ratio(before: list[dict], after: list[dict], seed: int, reps: int = 2000) -> dict:
    """after / before accuracy, pooled over prompts, with a percentile bootstrap 95% CI that resamples
    facts (paired: the same facts for both models)."""
    import numpy as np

    def tallies(rows):
        t: dict[tuple, list[int]] = {}
        for r in rows:
            k = t.setdefault((r["subject"], r["relation"]), [0, 0])
            k[0] += r["correct"]
            k[1] += 1
        return t

    b, a = tallies(before), tallies(after)
    keys = sorted(b.keys() & a.keys())
    kb = np.array([b[k][0] for k in keys], float)
    ka = np.array([a[k][0] for k in keys], float)
    value = float(ka.sum() / kb.sum()) if kb.sum() else None  # the same prompts on both sides: the n cancel
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(reps):
        i = rng.integers(0, len(keys), len(keys))
        if kb[i].sum() > 0:
            draws.append(float(ka[i].sum() / kb[i].sum()))
    ci = [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))] if draws else None
    return {"ratio": value, "ci95": ci, "facts": len(keys), "reps": reps}


def tool_mode(run: str, store_path: str, facts: list[Fact], split: str, max_steps: int, max_new_tokens: int):
    """(records, layout name, {family: layout}) of the bridge loop in tool mode on `facts`, every `split` template."""
    from bridge.backend import HFGenerator
    from bridge.evaluate import run_eval
    from bridge.loop import Bridge, tool_schemas
    from bridge.prompts import make_format
    from bridge.tools import make_bridge_tools
    from neuralcpu.facts import relation_of
    from neuralcpu.models import load_model
    from symbolic_ram import KnowledgeStore

    model, tokenizer = load_model(run)
    with KnowledgeStore(store_path, create=False, read_only=True) as store:
        tools = make_bridge_tools(store)
        bridge = Bridge(HFGenerator(model, tokenizer, max_new_tokens=max_new_tokens),
                        make_format(tokenizer, tool_schemas(tools), "auto"), tools, mode="tool", max_steps=max_steps)
        records = run_eval(bridge, facts, ("tool",), split, progress=True, layouts=("completion", "chat"))
    layouts = {t.family: t.layout for f in facts for t in relation_of(f).select(split)}
    return records, bridge.fmt.name, layouts, (model, tokenizer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/new_kb.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="output dir of `python -m bridge.toolsft` (model, relations, held-out facts)")
    parser.add_argument("--original", default=None, help="the model toolsft started from (default: the run's --model)")
    parser.add_argument("--store", default=None, help="symbolic_ram store (default: the run's --store)")
    parser.add_argument("--facts", default=None, help="JSONL of the new relation's facts to ask (default: <run>/held_out_facts.jsonl)")
    parser.add_argument("--unrelated", default=DEFAULT_UNRELATED,
                        help="known facts of other relations: facts.json, a results file with 'facts', or JSONL")
    parser.add_argument("--split", default="test", choices=["validation", "test"], help="template split read")
    parser.add_argument("--max-steps", type=int, default=4, help="generations per question in tool mode")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per generation (a call is ~35)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--out", required=True, help="results JSON")
    args = parser.parse_args(argv)

    run = Path(args.run)
    problems = []
    config = json.loads((run / "toolsft_config.json").read_text()) if (run / "toolsft_config.json").is_file() else None
    if config is None or not (run / "summary.json").is_file():
        problems.append(f"--run {run}: not a finished toolsft run (no toolsft_config.json or summary.json)")
    else:
        args.original = args.original or config["model"]
        args.store = args.store or config["store"]
        args.facts = args.facts or str(run / "held_out_facts.jsonl")
        if not (Path(args.store) / "facts.sqlite").is_file():
            problems.append(f"--store {args.store}: no knowledge store there")
        if not Path(args.facts).is_file():
            problems.append(f"--facts {args.facts}: no such file")
    if not Path(args.unrelated).is_file():
        problems.append(f"--unrelated {args.unrelated}: no such file")
    if args.max_steps < 1 or args.max_new_tokens < 1:
        problems.append("--max-steps and --max-new-tokens must be >= 1")
    if problems:
        parser.error("\n  " + "\n  ".join(problems))

    from bridge.chat import register_run_relations
    from neuralcpu.facts import load_jsonl_facts
    from neuralcpu.models import load_model

    origin = provenance(argv if argv is not None else sys.argv[1:], "benchmarks/new_kb.py", args.seed)
    relations = register_run_relations(str(run))
    facts, unrelated = load_jsonl_facts(args.facts), load_unrelated(args.unrelated)
    clash = {f.relation for f in unrelated} & {f.relation for f in facts}
    if clash:
        parser.error(f"--unrelated holds facts of the relation(s) under test: {sorted(clash)}")
    t0 = time.perf_counter()
    records, layout, family_layout, (trained, tok) = tool_mode(str(run), args.store, facts, args.split,
                                                               args.max_steps, args.max_new_tokens)
    t_tool = time.perf_counter() - t0
    tool_rows = [{"family": r.family, "layout": family_layout[r.family], "called": r.called, "correct": r.correct}
                 for r in records]
    t0 = time.perf_counter()
    after = closed_book_rows(trained, tok, unrelated, args.split)
    del trained
    original, otok = load_model(args.original)
    before = closed_book_rows(original, otok, unrelated, args.split)
    known = closed_book_rows(original, otok, facts, args.split)
    t_closed = time.perf_counter() - t0
    ratio = paired_ratio(before, after, args.seed)

    result = {
        **origin,
        "issue": 31, "split": args.split, "run": str(run), "original": args.original, "store": args.store,
        "relations": relations, "facts": args.facts, "unrelated": args.unrelated, "bridge_layout": layout,
        "toolsft_config": config, "toolsft_command": toolsft_command(config), "toolsft_seconds": json.loads((run / "summary.json").read_text()).get("seconds"),
        "new_relation": {
            "facts": len(facts),
            "right_lookups": rate_by(tool_rows, "called"), "tool_acc": rate_by(tool_rows, "correct"),
            "by_family": {fam: {"layout": family_layout[fam], "right_lookups": rate_by(rows, "called"),
                                "tool_acc": rate_by(rows, "correct")}
                          for fam, rows in ((f, [r for r in tool_rows if r["family"] == f])
                                            for f in dict.fromkeys(r["family"] for r in tool_rows))},
            "original_closed_book": rate_by(known, "correct"),
            "samples": [{"prompt": r.prompt, "answer": r.answer, "object": r.object, "called": r.called}
                        for r in records[:: max(1, len(records) // 6)]],
            "wrong_calls": wrong_call_breakdown(records),
            "wrong_call_samples": [{"prompt": r.prompt, "object": r.object, "answer": r.answer, "calls": r.calls}
                                   for r in [r for r in records if not r.called][:8]],
            "seconds": round(t_tool, 1)},
        "unrelated": {
            "facts": len({(r["subject"], r["relation"]) for r in before}),
            "original": rate_by(before, "correct"), "after": rate_by(after, "correct"),
            "original_by_relation": rate_by(before, "correct", "relation"),
            "after_by_relation": rate_by(after, "correct", "relation"),
            "original_by_layout": rate_by(before, "correct", "layout"),
            "after_by_layout": rate_by(after, "correct", "layout"),
            "after_lookup_rate": rate_by(after, "called"),
            "ratio": ratio, "after_misses": misses([a for a, b in zip(after, before) if b["correct"]]),
            "seconds": round(t_closed, 1)},
    }
    values = {"right_lookups": result["new_relation"]["right_lookups"]["acc"],
              "tool_acc": result["new_relation"]["tool_acc"]["acc"], "unrelated_closed_book_ratio": ratio["ratio"]}
    result["targets"] = {k: {"target": f">= {t}", "value": values[k], "met": bool(values[k] is not None and values[k] >= t)}
                         for k, t in TARGETS.items()}
    write_json_atomic(Path(args.out), result)
    print(json.dumps({"split": args.split, **{k: v["value"] for k, v in result["targets"].items()},
                      "n_tool": len(tool_rows), "n_unrelated": len(before),
                      "wrong_calls": result["new_relation"]["wrong_calls"]["verdicts"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
