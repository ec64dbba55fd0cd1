"""GSM8K, model A against model B on the same problems: accuracies with Wilson CIs, the paired
difference with Newcombe's CI, the exact McNemar p, and the same for the chain-of-thought rate; plus,
optionally, perplexity on text the retain stream never saw (`benchmarks.ood_perplexity`).

    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.gsm8k_paired --a qwen2.5-coder-0.5b \\
        --b runs/rlcp-qwen --n 250 --prompt qwen-boxed --out results/gsm8k-paired-qwen [--ood-ppl]

Without --b it reads model A alone (accuracy, CoT rate, Wilson CIs). Each model's per-problem records
are appended to <out>/a.jsonl and <out>/b.jsonl a chunk at a time (fsync'd), so a killed run continues
where it stopped when run again with the same arguments; <out>/config.json refuses a resume with
different ones. Outputs: <out>/gsm8k_paired.json and <out>/report.md, written atomically at the end.

Prompts (`--prompt`): "qwen-boxed" (Qwen's own: "Please reason step by step, and put your final answer
within \\boxed{}.", answer = the last \\boxed{}) is the reading of what the model can do; "format-only"
(asks for `#### <number>` and nothing else) measures what it does unasked, for the CoT-rate claim.

Statistics (two-sided, 95%): McNemar's exact test is the binomial test of the discordant pairs
(A right and B wrong against A wrong and B right) at 1/2 (scipy.stats.binomtest). The CI of the
difference of paired proportions is Newcombe's method 10 (Wilson score intervals combined with the
pairs' correlation; Newcombe 1998, Stat Med 17:2635), which stays inside [-1, 1] and is sensible
at small counts, unlike the Wald interval.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks import gsm8k, metrics  # noqa: E402
from benchmarks.report import write_json_atomic  # noqa: E402

SIDES = ("a", "b")
RUN_KEYS = ("a", "b", "n", "seed", "prompt", "max_new_tokens", "int8")  # a resume must match these


# ----------------------------------------------------------------------------- paired statistics -----

def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p: binomial test of `b_only` successes in the discordant pairs at 1/2
    (1.0 when there are none)."""
    from scipy.stats import binomtest

    n = a_only + b_only
    return 1.0 if n == 0 else float(binomtest(b_only, n, 0.5).pvalue)


def newcombe_paired_ci(both: int, a_only: int, b_only: int, neither: int) -> tuple[float, float]:
    """95% CI of p_B - p_A for paired binary outcomes (Newcombe's method 10: Wilson intervals of each
    proportion, combined with the phi correlation of the 2x2 table)."""
    n = both + a_only + b_only + neither
    if n == 0:
        return -1.0, 1.0
    pa, pb = (both + a_only) / n, (both + b_only) / n
    la, ua = metrics.wilson_ci(both + a_only, n)
    lb, ub = metrics.wilson_ci(both + b_only, n)
    margins = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    phi = 0.0
    if margins:
        cross = both * neither - a_only * b_only
        cross = cross - n / 2 if cross > n / 2 else (0.0 if cross >= 0 else cross)
        phi = cross / math.sqrt(margins)
    # B - A: the lower bound takes B's lower and A's upper distance, and the reverse for the upper bound.
    lo = (pb - pa) - math.sqrt(max(0.0, (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2))
    hi = (pb - pa) + math.sqrt(max(0.0, (ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2))
    return max(-1.0, lo), min(1.0, hi)


def paired(a: list[bool], b: list[bool]) -> dict:
    """Paired comparison of two equal-length outcome lists: the 2x2 counts, both proportions with Wilson
    CIs, diff = p_B - p_A with Newcombe's CI, and the exact McNemar p."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need equal lengths, got {len(a)} and {len(b)}")
    both = sum(x and y for x, y in zip(a, b))
    a_only = sum(x and not y for x, y in zip(a, b))
    b_only = sum(y and not x for x, y in zip(a, b))
    neither = len(a) - both - a_only - b_only
    n = len(a)
    return {"n": n, "both": both, "a_only": a_only, "b_only": b_only, "neither": neither,
            "a": metrics.proportion(both + a_only, n), "b": metrics.proportion(both + b_only, n),
            "diff": (b_only - a_only) / n if n else None, "diff_ci95": list(newcombe_paired_ci(both, a_only, b_only, neither)),
            "mcnemar_p": mcnemar_exact(a_only, b_only)}


# ----------------------------------------------------------------------------- resumable generation ---

def read_records(path: Path) -> dict[int, dict]:
    """Per-problem records already written to `path` (a JSONL), by test index. A torn last line (a kill
    mid-write) is cut from the file, so that the next append starts on a fresh line."""
    done: dict[int, dict] = {}
    if not path.is_file():
        return done
    text = path.read_text(encoding="utf-8")
    complete = text[: text.rfind("\n") + 1]  # everything up to the last newline
    for line in complete.splitlines():
        rec = json.loads(line)
        done[rec["index"]] = rec
    if complete != text:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text(complete, encoding="utf-8")
        os.replace(tmp, path)
    return done


def append_records(path: Path, records: list[dict]) -> None:
    """Append records as JSON lines and fsync, so a killed run keeps every finished chunk."""
    with open(path, "a", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_side(model_name: str, path: Path, rows: list[dict], idx: list[int], fmt: str, max_new_tokens: int,
             batch_size: int, chunk: int, prefix: str = "", log=print, int8: bool = False) -> dict[int, dict]:
    """Generate and score the problems of `idx` not yet in `path`, a chunk at a time; all records by index.
    `prefix`: the few-shot exemplars (fmt "fewshot"); `int8`: generate with the Linear layers dynamically
    quantized (`neuralcpu.generation.int8_dynamic`)."""
    done = read_records(path)
    todo = [i for i in idx if i not in done]
    if not todo:
        return done
    from neuralcpu.models import load_model

    model, tok = load_model(model_name)
    if int8:
        from neuralcpu.generation import int8_dynamic

        model = int8_dynamic(model)
    fmt = gsm8k.prompt_format(tok, fmt)
    log(f"{model_name}: {len(done)} done, {len(todo)} to go ({fmt}, cap {max_new_tokens}, batch {batch_size}"
        f"{', int8' if int8 else ''})")
    for s in range(0, len(todo), chunk):
        part = todo[s:s + chunk]
        prompts = gsm8k.build_prompts(tok, [rows[i]["question"] for i in part], fmt, prefix)
        t0 = time.perf_counter()
        outs = gsm8k.generate(model, tok, prompts, max_new_tokens, batch_size, fmt=fmt)
        share = (time.perf_counter() - t0) / len(part)
        recs = []
        for i, out in zip(part, outs):
            gold = metrics.gold_answer(rows[i]["answer"])
            recs.append({"index": i, "gold": gold, **gsm8k.score(out["text"], gold, fmt), "tokens": out["tokens"],
                         "capped": out["tokens"] >= max_new_tokens, "seconds": share, "output": out["text"]})
        append_records(path, recs)
        done.update((r["index"], r) for r in recs)
        k = sum(done[i]["correct"] for i in idx if i in done)
        log(f"  {len(done)}/{len(idx)}: {k} correct so far, {share * len(part):.0f} s for {len(part)}")
    del model
    return done


def side_summary(records: list[dict]) -> dict:
    """Accuracy and CoT rate with Wilson CIs, mean tokens, cap rate and generation seconds of one model."""
    n = len(records)
    return {"n": n, "accuracy": metrics.proportion(sum(r["correct"] for r in records), n),
            "cot_rate": metrics.proportion(sum(r["cot"] for r in records), n),
            "no_answer": sum(r["pred"] is None for r in records),
            "mean_tokens": metrics.mean(r["tokens"] for r in records),
            "cap_rate": metrics.mean(r["capped"] for r in records),
            "generation_seconds": sum(r["seconds"] for r in records)}


def check_config(out: Path, config: dict) -> None:
    """Write <out>/config.json, or check that the one there matches `config` on RUN_KEYS."""
    path = out / "config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        old.setdefault("int8", "none")  # written before --int8 existed
        bad = [f"{k}: {old.get(k)!r} there, {config.get(k)!r} now" for k in RUN_KEYS if old.get(k) != config.get(k)]
        if bad:
            raise SystemExit(f"{out} holds a different run ({'; '.join(bad)}); pass another --out to start a new one")
        return
    write_json_atomic(path, config)


def fmt_prop(p: dict) -> str:
    return f"{p['acc']:.3f} ({p['k']}/{p['n']}) [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}]" if p["n"] else "n/a"


def markdown(result: dict) -> str:
    """report.md: the per-model table, then the paired tests when there are two models."""
    cfg = result["config"]
    lines = [f"# GSM8K: {cfg['a']}" + (f" vs {cfg['b']}" if cfg.get("b") else ""), "",
             f"{cfg.get('partial') or str(cfg['n_problems']) + ' test problems'} (seed {cfg['seed']}), prompt `{cfg['prompt']}`, greedy, "
             f"cap {cfg['max_new_tokens']} new tokens. Commit {result.get('commit')}, {result.get('machine')}.", "",
             "| model | accuracy [95% Wilson] | CoT rate | no answer | mean new tokens | hit cap | generation s |",
             "|---|---|---|---|---|---|---|"]
    for side in SIDES:
        s = result["models"].get(side)
        if s:
            int8 = " (int8)" if cfg.get("int8", "none") in (side, "both") else ""
            lines.append(f"| {side}: {cfg[side]}{int8} | {fmt_prop(s['accuracy'])} | {fmt_prop(s['cot_rate'])} | "
                         f"{s['no_answer']} | {s['mean_tokens']:.0f} | {s['cap_rate']:.2f} | {s['generation_seconds']:.0f} |")
    for key, title in (("accuracy", "Accuracy"), ("cot", "CoT rate")):
        p = result.get("paired", {}).get(key)
        if p:
            lines += ["", f"**{title}, paired (B - A)**: {p['diff']:+.3f}, 95% CI [{p['diff_ci95'][0]:+.3f}, "
                      f"{p['diff_ci95'][1]:+.3f}] (Newcombe); A only {p['a_only']}, B only {p['b_only']}, both "
                      f"{p['both']}, neither {p['neither']}; exact McNemar p = {p['mcnemar_p']:.3g}."]
    if result.get("ood_perplexity"):
        o = result["ood_perplexity"]
        lines += ["", f"**Out-of-domain perplexity** ({o['source']}, {o['passages']} passages): "
                  + ", ".join(f"{side} {o[side]:.3f}" for side in SIDES if side in o)
                  + (f"; B/A = {o['b'] / o['a']:.3f}" if "b" in o else "") + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", default="qwen2.5-coder-0.5b", help="model A (the original): preset, .gguf or run dir")
    parser.add_argument("--b", default=None, help="model B (e.g. an RLCP run dir); omit to read A alone")
    parser.add_argument("--n", type=int, default=250, help="GSM8K test problems, a seeded subset (0 = all 1319)")
    parser.add_argument("--seed", type=int, default=0, help="subset seed")
    parser.add_argument("--prompt", default="qwen-boxed", choices=[*gsm8k.FORMATS, *gsm8k.ALIASES],
                        help="qwen-boxed (= boxed), format-only (= chat) or fewshot")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="generation cap per problem")
    parser.add_argument("--batch-size", type=int, default=32, help="rows generated at once")
    parser.add_argument("--int8", choices=["none", "a", "b", "both"], default="none",
                        help="generate these sides with int8 dynamic quantization of the Linear layers (faster on "
                             "CPU, not identical to fp32: --a M --b M --int8 b measures what it changes)")
    parser.add_argument("--chunk", type=int, default=64, help="problems per appended (resumable) chunk")
    parser.add_argument("--gsm8k-test", default=None, help="GSM8K test JSONL (default: ../shared/data copy, else hub)")
    parser.add_argument("--gsm8k-train", default=None, help="GSM8K train JSONL for --prompt fewshot exemplars")
    parser.add_argument("--ood-ppl", action="store_true", help="also perplexity on out-of-domain text "
                                                                "(benchmarks.ood_perplexity)")
    parser.add_argument("--partial", action="store_true", help="generate nothing: report on the problems that "
                                                                "every model has finished so far (a cut-short run)")
    parser.add_argument("--out", default="results/gsm8k-paired", help="output folder (resumes what is there)")
    args = parser.parse_args(argv)
    problems = [f"--{k.replace('_', '-')} must be >= 1" for k in ("max_new_tokens", "batch_size", "chunk")
                if getattr(args, k) < 1] + (["--n must be >= 0"] if args.n < 0 else [])
    if problems:
        parser.error("; ".join(problems))

    from neuralcpu.data import load_gsm8k

    from benchmarks.provenance import provenance

    rows = load_gsm8k("test", args.gsm8k_test)
    idx = gsm8k.select_problems(rows, args.n or None, args.seed)
    prompt = gsm8k.ALIASES.get(args.prompt, args.prompt)
    prefix = gsm8k.fewshot_prefix(load_gsm8k("train", args.gsm8k_train, limit=2000), args.seed) if prompt == "fewshot" else ""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {"a": args.a, "b": args.b, "n": args.n, "n_problems": len(idx), "seed": args.seed, "prompt": prompt,
              "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "int8": args.int8, "indices": idx}
    check_config(out, config)
    origin = provenance(argv if argv is not None else sys.argv[1:], "-m benchmarks.gsm8k_paired", args.seed)  # the code that runs
    t0 = time.perf_counter()
    done = {}
    for side in SIDES:
        name = getattr(args, side)
        if name and args.partial:
            done[side] = read_records(out / f"{side}.jsonl")
        elif name:
            done[side] = run_side(name, out / f"{side}.jsonl", rows, idx, prompt, args.max_new_tokens,
                                  args.batch_size, args.chunk, prefix, log=lambda s: print(s, flush=True),
                                  int8=args.int8 in (side, "both"))
    have = [i for i in idx if all(i in d for d in done.values())]  # all of idx unless --partial
    if args.partial:
        config["partial"] = f"{len(have)} of the {len(idx)} problems: those every model had finished"
    records = {side: [d[i] for i in have] for side, d in done.items()}
    result = {**origin, "config": config, "models": {side: side_summary(r) for side, r in records.items()}}
    if "b" in records:
        a, b = records["a"], records["b"]
        result["paired"] = {"accuracy": paired([r["correct"] for r in a], [r["correct"] for r in b]),
                            "cot": paired([r["cot"] for r in a], [r["cot"] for r in b])}
    if args.ood_ppl:
        from benchmarks import ood_perplexity

        result["ood_perplexity"] = ood_perplexity.compare({side: getattr(args, side) for side in records})
    result["wall_seconds_this_invocation"] = time.perf_counter() - t0
    result["items"] = {side: [{k: r[k] for k in ("index", "gold", "pred", "correct", "cot_steps", "tokens")}
                              for r in recs] for side, recs in records.items()}
    write_json_atomic(out / "gsm8k_paired.json", result)
    report = markdown(result)
    tmp = out / "report.md.tmp"
    tmp.write_text(report, encoding="utf-8")
    os.replace(tmp, out / "report.md")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
