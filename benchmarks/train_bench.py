"""RLCP training throughput: `deep` mode with the cached frozen prefix against a plain fp32 full fine-tune.

    .venv/bin/python benchmarks/train_bench.py [--model smollm2-135m] [--steps 6] [--out results/train_bench.json]

Every variant runs rlcp.train's step on the same batches, at RLCPConfig's default sizes: every forget
prompt under every training template (states at the GRL layers, the probes' adversarial and class-mean
terms), the other-city term (its cities under the default's number of drawn templates, forward without
gradient, a ridge probe fitted on them and read on the forget states), forget prompts with their lookup
requests, GSM8K solutions (LM loss and KL to the anchor on every token), locality prompts (KL where the answer is read, the drift of the last-token GRL-layer states) and
answer-from-context pairs; one backward, one AdamW step. The LM head runs only where a loss reads it.
  full-fp32        every parameter trained, nothing cached: the plain fine-tune loop
  deep-fp32        blocks from the first GRL layer up trained, nothing cached
  deep-cache-fp32  the same as rlcp.train runs it: the frozen prefix computed once per fact prompt and once
                   per step for the GSM8K batch (shared with the anchor), the anchor's locality outputs once
                   per prompt
  deep-cache-bf16  the same under bf16 autocast
The batches repeat every step, so the cached variants time the steady state of a run (rlcp.train samples
its locality prompts from a fixed pool, so its caches fill within the first steps; GSM8K text is new
every step and is never served from a cache here either).
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


def batches(tokenizer, facts_path: str | None, gsm8k_path: str | None) -> dict:
    """One step's batches, built as rlcp.train builds them, at RLCPConfig's default sizes."""
    from neuralcpu.data import load_gsm8k
    from common.facts import Fact
    from neuralcpu.facts import FactSets, prompts_for
    from neuralcpu.rlcp import RLCPConfig, country_probe_fit_cities, forget_pairs, probe_prompts, rag_pairs, retain_texts
    from neuralcpu.training import encode

    cfg = RLCPConfig()
    if facts_path:
        facts = FactSets.load(facts_path)
        others = country_probe_fit_cities(facts, cfg.country_probe_cities)
    else:  # synthetic fact set of the default size (15 forget, 60 locality): the timing only needs shapes
        facts = FactSets([Fact(f"City{i}", "country", f"Country{i}") for i in range(cfg.n_forget)],
                         [Fact(f"Town{i}", "country", f"Land{i}") for i in range(cfg.n_locality_same + cfg.n_locality_other)])
        # the default run's count on SmolLM2: 22 locality cities of the forget countries, 6 more per country
        others = [Fact(f"Village{i}", "country", f"Country{i % cfg.n_forget}") for i in range(22 + 6 * cfg.n_forget)]
    pool = forget_pairs(facts, "rlcp", True)
    probe = probe_prompts(pool, [])
    retain = retain_texts(tokenizer, load_gsm8k("train", gsm8k_path, limit=50), cfg.retain_max_len, cfg.retain_chat)
    locality = [(p, " " + f.object) for f in facts.locality for p in prompts_for(f, "train")]
    country = [(p, facts.class_index[f.object]) for f in others for p in prompts_for(f, "train")[: cfg.country_probe_templates or None]]
    return {
        "probe": encode(tokenizer, [(p, "") for p, _, _, _ in probe]),
        "classes": torch.tensor([y for _, y, _, _ in probe]), "groups": torch.tensor([g for _, _, g, _ in probe]),
        "n_classes": len(facts.classes),
        "retrieval": encode(tokenizer, [pair for pair, _, _, _ in pool[: cfg.forget_batch]]),
        "retain": encode(tokenizer, retain[: cfg.retain_batch], cfg.retain_max_len),
        "locality": encode(tokenizer, locality[: cfg.locality_batch]),
        "rag": encode(tokenizer, rag_pairs(facts.forget)[: cfg.rag_batch]),
        "country": encode(tokenizer, [(p, "") for p, _ in country]), "country_classes": torch.tensor([y for _, y in country]),
    }


def run_variant(name: str, model_name: str, steps: int, facts_path: str | None, gsm8k_path: str | None) -> dict:
    """Time `steps` RLCP training steps of one variant (after one warm-up step)."""
    from types import SimpleNamespace

    from torch.utils.flop_counter import FlopCounterMode

    from neuralcpu import losses
    from neuralcpu.models import load_model
    from neuralcpu.prefix_cache import AnchorReference, DeepSuffix, PrefixCache
    from neuralcpu.training import resolve_layers, set_trainable

    v = VARIANTS[name]
    model, tokenizer = load_model(model_name)
    anchor, _ = load_model(model_name)
    anchor.requires_grad_(False).eval()
    layers = resolve_layers("auto", model.config.num_hidden_layers)
    first = layers[0]
    model = set_trainable(model, v["trainable"], first)
    data = batches(tokenizer, facts_path, gsm8k_path)
    names = ("probe", "country", "retrieval", "retain", "locality", "rag")
    tokens = sum(int(data[k]["attention_mask"].sum()) for k in names)
    prefix = PrefixCache(model, first) if v["cache"] else None
    net, anchor_net = (DeepSuffix(model, first), DeepSuffix(anchor, first)) if prefix else (model, anchor)
    torch.manual_seed(0)  # the same probes in every variant
    probes = losses.LayerProbes(layers, model.config.hidden_size, data["n_classes"])
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    probe_opt = torch.optim.Adam(probes.parameters(), lr=1e-2)

    def autocast():  # bf16 variants: the forwards only, as rlcp.train runs them; the losses stay fp32
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=v["bf16"])

    def forward(m, b, at=None, head=True, states=None):
        """(logits where the losses read them: at `at`, or every position; hidden states), as rlcp.train's
        forward. `states`: the prefix states when the caller computed them (the GSM8K batch, shared)."""
        ids, mask = b["input_ids"], b["attention_mask"]
        with autocast():
            if prefix:
                h = states if states is not None else prefix(ids, mask)
                logits, hs = m(h, mask, head=head, positions=at)
                return SimpleNamespace(logits=logits, hidden_states=[None] * first + hs)
            out = m.get_decoder()(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            hidden = out.last_hidden_state
            logits = m.get_output_embeddings()(hidden if at is None else hidden[at]) if head else None
            return SimpleNamespace(logits=logits, hidden_states=out.hidden_states)

    def new_reference():
        return AnchorReference(lambda b, at: forward(anchor_net, b, at), layers)

    # Cached variants keep one AnchorReference for the run; the others start an empty one every step.
    locality_ref = new_reference() if v["cache"] else (lambda b, at: new_reference()(b, at))

    def step():
        total = 0.0
        b = data["probe"]  # forget stream: the probes read the last prompt token at the GRL layers
        hs = forward(net, b, head=False).hidden_states
        feats = [hs[l + 1][torch.arange(len(b["last"])), b["last"]] for l in layers]
        for _ in range(4):
            p_loss, _, _ = losses.adversarial_loss(probes, feats, data["classes"], 1.0, "uniform")
            probe_opt.zero_grad()
            p_loss.backward()
            probe_opt.step()
        _, adv, _ = losses.adversarial_loss(probes, feats, data["classes"], 1.0, "uniform")
        total = total + adv + losses.class_mean_loss(feats, data["classes"], data["groups"])
        b = data["country"]  # the other-city term: its cities' states without gradient, a ridge probe of them
        with torch.no_grad():
            hs = forward(net, b, head=False).hidden_states
        fit = [hs[l + 1][torch.arange(len(b["last"])), b["last"]] for l in layers]
        total = total + losses.transfer_ridge_loss(feats, data["classes"], fit, data["country_classes"])
        for k in ("retrieval", "rag"):  # answer losses where the targets are
            at, targets = losses.labelled_positions(data[k]["labels"])
            total = total + F.cross_entropy(forward(net, data[k], at).logits.float(), targets)
        b = data["retain"]  # GSM8K: its prefix once per step, shared with the anchor
        h = None
        if prefix:
            with autocast():
                h = prefix(b["input_ids"], b["attention_mask"], cache=False)
        logits = forward(net, b, states=h).logits
        with torch.no_grad():
            ref = forward(anchor_net, b, states=h).logits
        total = total + losses.lm_loss(logits, b["labels"]) + losses.kl_to_anchor(logits, ref, b["attention_mask"])
        b = data["locality"]
        at, _ = losses.labelled_positions(b["labels"])
        out = forward(net, b, at)
        with torch.no_grad():
            ref_logits, ref_states = locality_ref(b, at)
        rows = torch.arange(len(b["last"]))
        total = total + losses.kl_to_anchor(out.logits, ref_logits) + losses.state_drift(
            [out.hidden_states[l + 1][rows, b["last"]] for l in layers], list(ref_states),
            torch.ones(len(rows), dtype=torch.bool))
        opt.zero_grad()
        total.backward()
        opt.step()
        return total.item()

    first_loss = step()  # warm-up: fills the caches, allocates optimizer state
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / steps
    return {"variant": name, "first_loss": first_loss, "step_s": dt, "tokens_per_step": tokens, "tokens_per_s": tokens / dt,
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
