"""RLCP training throughput: `deep` mode with the cached frozen prefix against a plain fp32 full fine-tune.

    .venv/bin/python benchmarks/train_bench.py [--model smollm2-135m] [--steps 6] [--out results/train_bench.json]

Every variant runs the same RLCP-shaped step on the same batches: forget prompts (every fact under
every training template), locality and RAG prompts, two GSM8K solutions of 128 tokens; the forward
of the trained model, the frozen anchor's forward (for the KL terms), one backward and an AdamW step.
As in rlcp.train, the LM head runs only where a loss reads it: the target tokens of the fact batches,
every token of the GSM8K batch.
  full-fp32        every parameter trained, anchor run in full (the plain fine-tune loop)
  deep-fp32        blocks from the first GRL layer up trained, nothing cached
  deep-cache-fp32  the same, with the frozen prefix computed once per prompt and shared with the anchor
  deep-cache-bf16  the same under bf16 autocast
Each variant runs in its own subprocess, so peak RSS is its own. Achieved FLOP/s counts the step's
matmul FLOPs with torch's FlopCounterMode and is compared with a bf16 and an fp32 matmul measured in
the same run. The first step (which fills the prefix cache) is a warm-up and is not timed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VARIANTS = {
    "full-fp32": dict(trainable="full", cache=False, bf16=False),
    "deep-fp32": dict(trainable="deep", cache=False, bf16=False),
    "deep-cache-fp32": dict(trainable="deep", cache=True, bf16=False),
    "deep-cache-bf16": dict(trainable="deep", cache=True, bf16=True),
}


def matmul_flops(dtype: torch.dtype, n: int = 1024, reps: int = 10) -> float:
    """FLOP/s of an n x n matmul in `dtype` on this machine."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def batches(tokenizer, facts_path: str | None, gsm8k_path: str | None):
    """The step's batches: forget, locality, RAG (cacheable fact prompts) and GSM8K (not cached)."""
    from neuralcpu.data import gsm8k_text, load_gsm8k
    from neuralcpu.facts import Fact, FactSets, prompts_for
    from neuralcpu.rlcp import encode, forget_pairs, rag_pairs

    if facts_path:
        facts = FactSets.load(facts_path)
    else:  # synthetic fact set of the default size (15 forget, 60 locality): the timing only needs shapes
        facts = FactSets([Fact(f"City{i}", "country", f"Country{i}") for i in range(15)],
                         [Fact(f"Town{i}", "country", f"Land{i}") for i in range(60)])
    forget = [p for p, _, _ in forget_pairs(facts, "rlcp", True)]
    locality = [(p, " " + f.object) for f in facts.locality[:32] for p in prompts_for(f, "train")[:1]]
    retain = [gsm8k_text(r) for r in load_gsm8k("train", gsm8k_path, limit=2)]
    return [(encode(tokenizer, forget), True), (encode(tokenizer, locality), True),
            (encode(tokenizer, rag_pairs(facts.forget)[:8]), True), (encode(tokenizer, retain, 128), False)]


def run_variant(name: str, model_name: str, steps: int, facts_path: str | None, gsm8k_path: str | None) -> dict:
    """Time `steps` RLCP-shaped training steps of one variant (after one warm-up step)."""
    from torch.utils.flop_counter import FlopCounterMode

    from neuralcpu import losses
    from neuralcpu.models import load_model
    from neuralcpu.prefix_cache import DeepSuffix, PrefixCache
    from neuralcpu.rlcp import resolve_layers, set_trainable

    v = VARIANTS[name]
    model, tokenizer = load_model(model_name)
    anchor, _ = load_model(model_name)
    anchor.requires_grad_(False).eval()
    first = resolve_layers("auto", model.config.num_hidden_layers)[0]
    model = set_trainable(model, v["trainable"], first)
    data = batches(tokenizer, facts_path, gsm8k_path)
    tokens = sum(int(b["attention_mask"].sum()) for b, _ in data)
    prefix = PrefixCache(model, first) if v["cache"] else None
    net, anchor_net = (DeepSuffix(model, first), DeepSuffix(anchor, first)) if prefix else (model, anchor)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)

    def logits_of(m, b, at, cacheable):
        """Logits where the step's losses read them: every position of the GSM8K batch (LM loss and KL
        on every token), only the labelled positions `at` of the fact batches, as rlcp.train does."""
        ids, mask = b["input_ids"], b["attention_mask"]
        if prefix:
            return m(prefix(ids, mask, cache=cacheable), mask, positions=at)[0]
        hidden = m.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        return m.get_output_embeddings()(hidden if at is None else hidden[at])

    def step():
        total = 0.0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v["bf16"]):
            for b, cacheable in data:
                at, targets = losses.labelled_positions(b["labels"]) if cacheable else (None, None)
                logits = logits_of(net, b, at, cacheable)
                with torch.no_grad():
                    ref = logits_of(anchor_net, b, at, cacheable)
                if at is None:
                    total = total + losses.lm_loss(logits, b["labels"]) + losses.kl_to_anchor(logits, ref, b["attention_mask"])
                else:
                    total = total + F.cross_entropy(logits.float(), targets) + losses.kl_to_anchor(logits, ref)
        opt.zero_grad()
        total.backward()
        opt.step()

    step()  # warm-up: fills the prefix cache, allocates optimizer state
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / steps
    return {"variant": name, "step_s": dt, "tokens_per_step": tokens, "tokens_per_s": tokens / dt,
            "step_flops": flops, "flops_per_s": flops / dt, "trainable_params": sum(p.numel() for p in params),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="preset, hub id or path")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    parser.add_argument("--facts", default=None, help="a run's facts.json (default: synthetic facts of the default size)")
    parser.add_argument("--gsm8k-path", default=None, help="GSM8K train JSONL (default: shared copy, else hub)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", default=None, help="write the rows and ratios as JSON here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_variant(args.one, args.model, args.steps, args.facts, args.gsm8k_path)))
        return 0

    from benchmarks.report import write_json_atomic

    peak = {"bf16": matmul_flops(torch.bfloat16), "fp32": matmul_flops(torch.float32)}
    rows = []
    for name in args.variants:
        cmd = [sys.executable, __file__, "--one", name, "--model", args.model, "--steps", str(args.steps)]
        cmd += ["--facts", args.facts] if args.facts else []
        cmd += ["--gsm8k-path", args.gsm8k_path] if args.gsm8k_path else []
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"variant {name} failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{name}: {r['step_s']:.2f} s/step, {r['tokens_per_s']:.0f} tok/s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        if args.out:  # the variants done so far survive a later variant that is killed or fails
            write_json_atomic(Path(args.out), {"model": args.model, "matmul_flops": peak, "rows": rows, "complete": False})
    base = next((r for r in rows if r["variant"] == "full-fp32"), rows[0])
    print(f"matmul 1024^3: bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s, fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s")
    print(f"{'variant':<17}{'step (s)':>9}{'tok/s':>8}{'vs full':>9}{'GFLOP/s':>9}{'of bf16':>9}{'of fp32':>9}{'peak RSS':>10}")
    for r in rows:
        r["speedup_vs_full_fp32"] = r["tokens_per_s"] / base["tokens_per_s"]
        r["fraction_of_bf16_matmul"] = r["flops_per_s"] / peak["bf16"]
        r["fraction_of_fp32_matmul"] = r["flops_per_s"] / peak["fp32"]
        print(f"{r['variant']:<17}{r['step_s']:>9.2f}{r['tokens_per_s']:>8.0f}{r['speedup_vs_full_fp32']:>8.2f}x"
              f"{r['flops_per_s'] / 1e9:>9.1f}{r['fraction_of_bf16_matmul']:>9.2f}{r['fraction_of_fp32_matmul']:>9.2f}"
              f"{r['peak_rss_mb']:>8.0f}MB")
    if args.out:
        write_json_atomic(Path(args.out), {"model": args.model, "matmul_flops": peak, "rows": rows, "complete": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
