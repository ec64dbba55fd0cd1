"""RLCP training throughput: `deep` mode with the cached frozen prefix against a plain fp32 full fine-tune.

    .venv/bin/python benchmarks/train_bench.py [--model smollm2-135m] [--steps 6] [--out results/train_bench.json]

Every variant runs rlcp.step itself, the step rlcp.train runs, set up by rlcp.setup at RLCPConfig's
defaults (the variant's --trainable, --cache-prefix and --mixed-precision aside): every stream, every
draw, one backward, one AdamW step. The facts are a run's facts.json (--facts) or synthetic ones of the
default size, with the default run's count of other cities of the forget countries.
  full-fp32        every parameter trained, nothing cached: the plain fine-tune loop
  deep-fp32        blocks from the lowest probed block up trained, nothing cached
  deep-cache-fp32  the same as rlcp.train runs it: the frozen prefix computed once per fact prompt and once
                   per step for the GSM8K batch (shared with the anchor), the anchor's locality outputs once
                   per prompt
  deep-cache-bf16  the same under bf16 autocast
Every timed step replays the draws of one step (step `lam_warmup`: the GRL lambda at its maximum), so the
cached variants time the steady state of a run (rlcp.train samples its fact prompts from fixed pools, so
its caches fill within the first steps; GSM8K text is never served from a cache). Tokens per step count
every batch the step encodes.
Each variant runs in its own subprocess, so peak RSS is its own. Achieved FLOP/s counts the step's
matmul FLOPs with torch's FlopCounterMode and is compared with a bf16 and an fp32 matmul measured in
the same run. The first step (which fills the caches) is a warm-up and is not timed.
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


def build(cfg, facts_path: str | None = None):
    """rlcp.setup's State for `cfg`, on the facts of a run's facts.json or, without one, synthetic facts
    of the default size (the timing only needs shapes). Seeded as rlcp.train seeds a run."""
    from accelerate import Accelerator

    from common.facts import Fact
    from neuralcpu.facts import FactSets
    from neuralcpu.rlcp import load_models, other_city_fit_cities, setup

    accel = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    model, anchor, tokenizer = load_models(cfg, accel)
    if facts_path:
        facts = FactSets.load(facts_path)
        cfg, shared = other_city_fit_cities(cfg, facts, facts_path)
    else:  # 15 forget, 20 locality facts and the default run's count on SmolLM2 of other cities of the forget
        # countries (22 locality cities, 6 more per country)
        facts = FactSets([Fact(f"City{i}", "country", f"Country{i}") for i in range(cfg.n_forget)],
                         [Fact(f"Town{i}", "country", f"Land{i}") for i in range(cfg.n_locality_same + cfg.n_locality_other)])
        shared = [Fact(f"Village{i}", "country", f"Country{i % cfg.n_forget}") for i in range(22 + 6 * cfg.n_forget)]
    return setup(cfg, accel, model, anchor, tokenizer, facts, shared)


def timed_step(state, step: int, cached: bool = True) -> tuple[torch.Tensor, dict]:
    """rlcp.step itself, what each variant times; uncached variants first empty the anchor's locality
    outputs, so that they recompute them as a plain loop would. `state.runner.tokens` then counts the
    tokens of the step's batches."""
    from neuralcpu.prefix_cache import RowCache
    from neuralcpu.rlcp import step as rlcp_step

    if not cached:
        state.runner.locality_reference.cache = RowCache()
    state.runner.tokens = 0
    return rlcp_step(state, step)


def run_variant(name: str, model_name: str, steps: int, facts_path: str | None, gsm8k_path: str | None) -> dict:
    """Time `steps` RLCP training steps of one variant (after one warm-up step)."""
    from torch.utils.flop_counter import FlopCounterMode

    from neuralcpu.rlcp import RLCPConfig

    v = VARIANTS[name]
    cfg = RLCPConfig(model=model_name, trainable=v["trainable"], cache_prefix=v["cache"],
                     mixed_precision="bf16" if v["bf16"] else "no", gsm8k_path=gsm8k_path, retain_examples=50)
    state = build(cfg, facts_path)
    at = state.cfg.lam_warmup  # every step replays this one's draws (GRL lambda at its maximum, no probe reset)

    def one_step() -> float:
        return timed_step(state, at, v["cache"])[0].item()

    first_loss = one_step()  # warm-up: fills the caches, allocates optimizer state
    with FlopCounterMode(display=False) as counter:
        one_step()
    flops, tokens = counter.get_total_flops(), state.runner.tokens
    t0 = time.perf_counter()
    for _ in range(steps):
        one_step()
    dt = (time.perf_counter() - t0) / steps
    return {"variant": name, "first_loss": first_loss, "step_s": dt, "tokens_per_step": tokens, "tokens_per_s": tokens / dt,
            "step_flops": flops, "flops_per_s": flops / dt, "trainable_params": sum(p.numel() for p in state.params),
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
