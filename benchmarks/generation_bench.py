"""Batched greedy generation (left padding, KV cache, optionally bf16) against one-at-a-time `generate`,
on the same GSM8K prompts: tokens/s ratio, and how many outputs differ from the one-at-a-time ones.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/generation_bench.py --model qwen2.5-coder-0.5b \\
        --n 16 --max-new-tokens 256 --batch-size 16 [--bf16] [--out results/generation_bench.json]

Both sides generate greedily until EOS or the cap (no answer-stop, so they do the same work); tokens/s
counts generated tokens before EOS. "differ" compares each batched output with the one-at-a-time
output of the same prompt and gives the first differing token: left padding changes the shapes of the
matrix products and so their floating-point rounding, and a near-tie between two tokens can then
flip; bf16 rounds far more.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks import gsm8k  # noqa: E402
from neuralcpu.generation import adds_bos, stop_token_ids  # noqa: E402
from benchmarks.report import write_json_atomic  # noqa: E402


@torch.inference_mode()
def one_at_a_time(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[dict]:
    """Plain `generate` on each prompt alone (no padding): {"ids", "tokens"} per prompt."""
    ends = stop_token_ids(tokenizer, model)
    outs = []
    for p in prompts:
        enc = tokenizer(p, return_tensors="pt", add_special_tokens=adds_bos(tokenizer, [p])).to(model.device)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                             top_k=None, pad_token_id=tokenizer.pad_token_id)
        row = gen[0, enc["input_ids"].shape[1]:].tolist()
        n = next((j for j, t in enumerate(row) if t in ends), len(row))
        outs.append({"ids": row[:n], "tokens": n})
    return outs


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token of two sequences (None if identical)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", help="preset, hub id or save_pretrained dir")
    parser.add_argument("--n", type=int, default=16, help="GSM8K test prompts (seeded subset)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="generation cap per prompt")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per batch")
    parser.add_argument("--bf16", action="store_true", help="also time batched generation in bfloat16")
    parser.add_argument("--seed", type=int, default=0, help="subset seed")
    parser.add_argument("--gsm8k-test", default=None, help="GSM8K test JSONL (default: shared copy, else hub)")
    parser.add_argument("--gsm8k-train", default=None, help="GSM8K train JSONL for base-model few-shot prompts")
    parser.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    if args.n < 1 or args.max_new_tokens < 1 or args.batch_size < 1:
        parser.error("--n, --max-new-tokens and --batch-size must be >= 1")

    from neuralcpu.data import load_gsm8k
    from neuralcpu.models import load_model

    rows = load_gsm8k("test", args.gsm8k_test)
    model, tok = load_model(args.model)
    fmt = gsm8k.prompt_format(tok)
    prefix = gsm8k.fewshot_prefix(load_gsm8k("train", args.gsm8k_train, limit=200), args.seed) if fmt == "fewshot" else ""
    idx = gsm8k.select_problems(rows, args.n, args.seed)
    prompts = gsm8k.build_prompts(tok, [rows[i]["question"] for i in idx], fmt, prefix)
    print(f"{args.model}: {len(prompts)} GSM8K prompts ({fmt}), max_new_tokens {args.max_new_tokens}, "
          f"batch {args.batch_size}, threads {torch.get_num_threads()}", flush=True)

    base, t_base = timed(lambda: one_at_a_time(model, tok, prompts, args.max_new_tokens))
    rows_out = [("one-at-a-time fp32", t_base, sum(o["tokens"] for o in base), None)]
    runs = [("batched fp32", model)]
    if args.bf16:
        runs.append(("batched bf16", load_model(args.model, dtype="bfloat16")[0]))
    for name, m in runs:
        outs, secs = timed(lambda: gsm8k.generate(m, tok, prompts, args.max_new_tokens, args.batch_size, stop=False))
        diffs = [(i, first_difference(b["ids"], o["ids"])) for i, (b, o) in enumerate(zip(base, outs))
                 if b["ids"] != o["ids"]]
        rows_out.append((name, secs, sum(o["tokens"] for o in outs), diffs))

    report = []
    print(f"{'mode':<22}{'seconds':>9}{'tokens':>8}{'tok/s':>8}{'x base':>8}  outputs differing from one-at-a-time")
    base_rate = rows_out[0][2] / rows_out[0][1]
    for name, secs, tokens, diffs in rows_out:
        rate = tokens / secs
        where = "" if diffs is None else f"{len(diffs)}/{len(prompts)}" + (
            f" (first differing token: {', '.join(str(d) for _, d in diffs[:8])})" if diffs else "")
        print(f"{name:<22}{secs:>9.1f}{tokens:>8}{rate:>8.1f}{rate / base_rate:>7.2f}x  {where}")
        report.append({"mode": name, "seconds": secs, "tokens": tokens, "tokens_per_s": rate,
                       "ratio": rate / base_rate, "differing": None if diffs is None else len(diffs),
                       "first_diff_token": None if diffs is None else dict(diffs)})
    if args.out:
        write_json_atomic(Path(args.out), {"model": args.model, "n": len(prompts), "format": fmt,
                                           "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                                           "threads": torch.get_num_threads(), "indices": idx, "results": report})
    return 0


if __name__ == "__main__":
    sys.exit(main())
