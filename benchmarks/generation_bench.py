"""Greedy generation speed, side by side in one run: plain HF `model.generate` on left-padded batches of
8 (the baseline a new user would write) against this project's generator (`neuralcpu.generation`:
finished rows leave the batch, waiting prompts join, in-place KV cache) at batch 8 and at a larger
batch, on the same GSM8K prompts; bf16 only where the CPU has it natively.

    flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/generation_bench.py --model qwen2.5-coder-0.5b \\
        --n 16 --max-new-tokens 256 --batch-size 16 --prompt boxed --out docs/results/generation_bench.json

Every mode generates greedily until EOS (or end of turn) or the cap, with no answer-stop, so all do
the same useful work; tokens/s counts the tokens each prompt keeps (before its EOS). HF generate also
computes a finished row until its whole batch ends: that waste is what the project's generator saves.
"differing" compares each mode's output ids with the baseline's for the same prompt and gives the
first differing token: a different batch layout changes the shapes of the matrix products and so
their floating-point rounding, which can flip a near-tie. bf16 (where native) rounds far more; on a
CPU without AVX512-BF16/AMX it is emulated and slower than fp32, so it is skipped and the reason
recorded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks import gsm8k  # noqa: E402
from benchmarks.report import write_json_atomic  # noqa: E402
from benchmarks.provenance import provenance  # noqa: E402
from neuralcpu.generation import encode_left_padded, generate_ids, native_bf16, stop_token_ids  # noqa: E402

BASELINE_BATCH = 8


@torch.inference_mode()
def hf_generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = BASELINE_BATCH
                ) -> list[list[int]]:
    """Plain `model.generate` (greedy) on left-padded batches of `batch_size`, longest prompts first
    (less padding, as the project's generator does); the kept ids of each prompt (before its EOS), in
    prompt order."""
    ends = stop_token_ids(tokenizer, model)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for s in range(0, len(order), batch_size):
        chunk = order[s:s + batch_size]
        enc = encode_left_padded(tokenizer, [prompts[i] for i in chunk]).to(model.device)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                             top_k=None, pad_token_id=tokenizer.pad_token_id)
        for i, row in zip(chunk, gen[:, enc["input_ids"].shape[1]:].tolist()):
            out[i] = row[:next((j for j, t in enumerate(row) if t in ends), len(row))]
    return out


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token of two sequences (None if identical)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def timed(fn):
    """(fn(), seconds)."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_modes(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int, bf16_model=None,
              log=print, int8_model=None, large_only: bool = False) -> list[dict]:
    """Time every mode on `prompts`; one record per mode (the first is the baseline). `large_only` drops
    the two batch-8 modes: the baseline is then the project's fp32 generator at `batch_size`."""
    modes = [] if large_only else [
        (f"hf-generate b{BASELINE_BATCH} fp32", lambda: hf_generate(model, tokenizer, prompts, max_new_tokens)),
        (f"neuralcpu b{BASELINE_BATCH} fp32", lambda: generate_ids(model, tokenizer, prompts, max_new_tokens, BASELINE_BATCH))]
    if batch_size != BASELINE_BATCH or large_only:
        modes.append((f"neuralcpu b{batch_size} fp32",
                      lambda: generate_ids(model, tokenizer, prompts, max_new_tokens, batch_size)))
    if bf16_model is not None:
        modes.append((f"neuralcpu b{batch_size} bf16",
                      lambda: generate_ids(bf16_model, tokenizer, prompts, max_new_tokens, batch_size)))
    if int8_model is not None:
        modes.append((f"neuralcpu b{batch_size} int8",
                      lambda: generate_ids(int8_model, tokenizer, prompts, max_new_tokens, batch_size)))
    records, base = [], None
    for name, fn in modes:
        ids, secs = timed(fn)
        base = base or ids
        diffs = {i: first_difference(b, o) for i, (b, o) in enumerate(zip(base, ids)) if b != o}
        tokens = sum(len(x) for x in ids)
        rec = {"mode": name, "seconds": secs, "tokens": tokens, "tokens_per_s": tokens / secs,
               "differing": len(diffs), "first_diff_token": diffs}
        rec["ratio"] = rec["tokens_per_s"] / records[0]["tokens_per_s"] if records else 1.0
        records.append(rec)
        log(f"{name:<24}{secs:>9.1f}{tokens:>8}{rec['tokens_per_s']:>8.1f}{rec['ratio']:>7.2f}x  "
            f"{len(diffs)}/{len(prompts)} differ" + (f" (first differing token: {list(diffs.values())[:8]})" if diffs else ""))
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", help="preset, .gguf or save_pretrained dir")
    parser.add_argument("--n", type=int, default=32, help="GSM8K test prompts (seeded subset)")
    parser.add_argument("--max-new-tokens", type=int, default=384, help="generation cap per prompt")
    parser.add_argument("--batch-size", type=int, default=32, help="the larger batch of the project's generator")
    parser.add_argument("--prompt", default="auto", help=f"GSM8K prompt format: auto or one of {gsm8k.FORMATS}")
    parser.add_argument("--bf16", choices=["auto", "off", "force"], default="auto",
                        help="time bf16 too: where native (auto), never, or even when emulated (force)")
    parser.add_argument("--int8", action="store_true", help="also time int8 dynamic quantization of the Linear "
                        "layers (neuralcpu.generation.int8_dynamic) at --batch-size; its outputs are compared too")
    parser.add_argument("--large-only", action="store_true", help="skip the two batch-8 modes: the baseline is "
                        "the project's fp32 generator at --batch-size (for a quicker int8 or bf16 reading)")
    parser.add_argument("--seed", type=int, default=0, help="subset seed")
    parser.add_argument("--gsm8k-test", default=None, help="GSM8K test JSONL (default: shared copy, else hub)")
    parser.add_argument("--gsm8k-train", default=None, help="GSM8K train JSONL for few-shot prompts")
    parser.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    if args.n < 1 or args.max_new_tokens < 1 or args.batch_size < 1:
        parser.error("--n, --max-new-tokens and --batch-size must be >= 1")

    from neuralcpu.data import load_gsm8k
    from neuralcpu.models import load_model

    rows = load_gsm8k("test", args.gsm8k_test)
    model, tok = load_model(args.model)
    fmt = gsm8k.prompt_format(tok, args.prompt)
    prefix = gsm8k.fewshot_prefix(load_gsm8k("train", args.gsm8k_train, limit=200), args.seed) if fmt == "fewshot" else ""
    idx = gsm8k.select_problems(rows, args.n, args.seed)
    prompts = gsm8k.build_prompts(tok, [rows[i]["question"] for i in idx], fmt, prefix)
    native = native_bf16()
    bf16_model, bf16_note = None, None
    if args.bf16 == "force" or (args.bf16 == "auto" and native):
        bf16_model = load_model(args.model, dtype="bfloat16")[0]
    else:
        bf16_note = "skipped: " + ("--bf16 off" if args.bf16 == "off" else "this CPU has no native bf16 (AVX512-BF16/AMX)")
    print(f"{args.model}: {len(prompts)} GSM8K prompts ({fmt}), max_new_tokens {args.max_new_tokens}, "
          f"threads {torch.get_num_threads()}, native bf16 {native}" + (f"; bf16 {bf16_note}" if bf16_note else ""),
          flush=True)
    print(f"{'mode':<24}{'seconds':>9}{'tokens':>8}{'tok/s':>8}{'x base':>8}  outputs differing from the baseline")
    load_avg_start = os.getloadavg()[0]  # other load skews a speed ratio: the file says how much there was
    origin = provenance(argv if argv is not None else sys.argv[1:], "benchmarks/generation_bench.py", args.seed)
    int8_model = None
    if args.int8:
        from neuralcpu.generation import int8_dynamic

        int8_model = int8_dynamic(model)
    records = run_modes(model, tok, prompts, args.max_new_tokens, args.batch_size, bf16_model,
                        log=lambda s: print(s, flush=True), int8_model=int8_model, large_only=args.large_only)
    if args.out:
        write_json_atomic(Path(args.out), {
            **origin,
            "model": args.model, "n": len(prompts), "format": fmt, "max_new_tokens": args.max_new_tokens,
            "batch_size": args.batch_size, "threads": torch.get_num_threads(),
            "load_avg_start": load_avg_start, "cpus": os.cpu_count(), "native_bf16": native,
            "bf16": bf16_note or "timed", "int8": args.int8, "large_only": args.large_only,
            "indices": idx, "results": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
