"""Which RLCP stream moves the model's own reasoning: each stream alone, from the original, for a few steps.

    .venv/bin/python -m benchmarks.stream_drift --model qwen2.5-coder-0.5b --facts runs/rlcp/facts.json \
        --steps 5 --out results/stream_drift

Every variant runs rlcp.setup and rlcp.step at RLCPConfig's defaults (lr, blocks, batches), with the
weights of every stream group but its own at 0 ("all" keeps every weight; "no-G" leaves group G out and
keeps the rest):
  adversarial  --w-forget, --w-class-mean, --w-country-probe
  lookup       --w-retrieval
  retain       --w-retain-lm, --w-kl (gold GSM8K solutions; "retain-own": the original's own answers)
  locality     --w-locality, --w-locality-states
  rag          --w-rag
After `--steps` steps it reads, teacher-forced on the original model's own greedy answers to held-out
GSM8K problems (the last `--problems` rows of the train split, every other one under the step-by-step
system message, as `--retain-source own` asks; the retain pools read the first rows), KL(original || trained) per answer token and the answers' NLL
under the trained model (the original's is the "before" row). Small KL: the stream leaves the text the
model's free answers visit where it was. Why this and not GSM8K accuracy: accuracy on 32 problems moves
in steps of 0.03 and costs minutes an evaluation; the KL is read on every answer token in seconds, and
the Qwen runs that lost GSM8K had drifted there (docs/history.md). A stream alone under AdamW moves the
weights by about lr a step whatever its loss weight, so a stream alone ranks the *direction* it pushes,
not its share in the summed step (a stream whose loss is already near 0 still takes full steps alone);
the "no-G" variants against "all" read each group's share in the recipe as it runs.

Each variant runs in its own subprocess (a fresh model); results go to OUT/stream_drift.json as each ends,
so a killed run keeps the variants it finished and a rerun skips them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GROUPS = {
    "adversarial": ("w_forget", "w_class_mean", "w_country_probe", "w_heldout_probe"),
    "lookup": ("w_retrieval",),
    "retain": ("w_retain_lm", "w_kl"),
    "locality": ("w_locality", "w_locality_states"),
    "rag": ("w_rag",),
}
ALONE = ("all", "adversarial", "lookup", "retain", "retain-own", "locality", "rag")
VARIANTS = ALONE + tuple(f"no-{g}" for g in GROUPS)  # "no-rag": every stream but the RAG one


def variant_config(name: str, model: str, out: str, **extra):
    """RLCPConfig at its defaults with every weight outside `name`'s group at 0 ('all': as is; 'no-G': only
    group G's weights at 0)."""
    from neuralcpu.rlcp import RLCPConfig

    cfg = RLCPConfig(model=model, out=out, **extra)
    if name == "all":
        return cfg
    if name.startswith("no-"):
        return dataclasses.replace(cfg, **{w: 0.0 for w in GROUPS[name[3:]]})
    group = "retain" if name == "retain-own" else name
    zero = {w: 0.0 for g, ws in GROUPS.items() if g != group for w in ws}
    own = {"retain_source": "own", "retain_max_len": 512} if name == "retain-own" else {}
    return dataclasses.replace(cfg, **zero, **own)


def answer_drift(model, anchor, tokenizer, pairs: list[tuple[str, str]], batch: int = 4) -> dict:
    """Mean KL(anchor || model) per answer token and the answers' mean NLL under each, teacher-forced."""
    import torch
    import torch.nn.functional as F

    from neuralcpu import losses
    from neuralcpu.training import encode

    kl_sum = nll_sum = ref_nll_sum = 0.0
    n = 0
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(pairs), batch):
            enc = encode(tokenizer, pairs[i:i + batch], max_len=1024)
            at, targets = losses.labelled_positions(enc["labels"])
            kw = dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            logits, ref = model(**kw).logits[at].float(), anchor(**kw).logits[at].float()
            kl_sum += losses.kl_to_anchor(logits, ref).item() * len(targets)
            nll_sum += F.cross_entropy(logits, targets, reduction="sum").item()
            ref_nll_sum += F.cross_entropy(ref, targets, reduction="sum").item()
            n += len(targets)
    return {"kl": kl_sum / n, "nll": nll_sum / n, "nll_original": ref_nll_sum / n, "tokens": n}


def gradient_sizes(params) -> dict:
    """The first step's clipped gradient: its RMS per element, and the share of elements below each
    size. AdamW's first step moves an element by about lr * |g| / (|g| + eps), so the share under eps is
    the share that steps less than lr."""
    import torch

    g = torch.cat([p.grad.detach().flatten() for p in params if p.grad is not None]).abs()
    return {"rms": g.pow(2).mean().sqrt().item(), "elements": g.numel(),
            **{f"share_below_{t:g}": (g < t).float().mean().item() for t in (1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5)}}


def parse_overrides(items: list[str]) -> dict:
    """--set FIELD=VALUE pairs as RLCPConfig keyword arguments, each value cast to the field's type; a
    ValueError naming the bad item otherwise."""
    from neuralcpu.rlcp import RLCPConfig

    fields = {f.name: f for f in dataclasses.fields(RLCPConfig)}
    cast = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes")}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD an RLCPConfig field "
                             "(python -m neuralcpu rlcp --help lists them, with - for _)")
        try:
            out[key] = cast.get(str(fields[key].type), str)(value)
        except ValueError as e:
            raise ValueError(f"--set {item!r}: {e}") from e
    return out


def heldout_answers(path: Path, model, tokenizer, rows: list[dict], max_new_tokens: int) -> list[tuple[str, str]]:
    """The original's greedy answers to `rows` as (prompt, answer) pairs in its chat layout, every other one
    under the step-by-step system message; answers the budget cut are kept (they are text its free answers
    visit too). Written once to `path`; later variants read it back."""
    if path.is_file():
        return [(r["prompt"], r["answer"]) for r in json.loads(path.read_text())["pairs"]]
    from neuralcpu.data import SYSTEM_BOXED, gsm8k_chat_text, gsm8k_text
    from neuralcpu.generation import generate_ids

    chat = bool(getattr(tokenizer, "chat_template", None))  # without one: "Question: ... Answer:"
    systems = [SYSTEM_BOXED if i % 2 else None for i in range(len(rows))]
    prompts = [gsm8k_chat_text(r, tokenizer, system=s)[0] if chat else gsm8k_text(r)[0] for r, s in zip(rows, systems)]
    new = generate_ids(model, tokenizer, prompts, max_new_tokens, batch_size=len(prompts))
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in new]
    # an answer that ended gets the template's end of turn (generate_ids leaves EOS out); a cut one ends as cut
    pairs = [gsm8k_chat_text(r, tokenizer, system=s, answer=t.strip()) if chat and len(ids) < max_new_tokens
             else (p, t) for r, s, p, t, ids in zip(rows, systems, prompts, texts, new)]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"max_new_tokens": max_new_tokens, "pairs": [{"prompt": p, "answer": a} for p, a in pairs]},
                              indent=1, ensure_ascii=False))
    tmp.replace(path)
    return pairs


def run_variant(name: str, args) -> dict:
    """`name` for args.steps steps from the original; its drift on the held-out answers."""
    from accelerate import Accelerator

    from neuralcpu.data import load_gsm8k
    from neuralcpu.facts import FactSets
    from neuralcpu.rlcp import load_models, other_city_fit_cities, setup, step

    out = Path(args.out)
    vdir = out / name
    vdir.mkdir(parents=True, exist_ok=True)
    if name == "retain-own" and (out / "retain_answers.json").is_file() and not (vdir / "retain_answers.json").is_file():
        (vdir / "retain_answers.json").write_text((out / "retain_answers.json").read_text())
    cfg = variant_config(name, args.model, str(vdir), seed=args.seed, gsm8k_path=args.gsm8k_path,
                         **parse_overrides(args.set))
    accel = Accelerator(cpu=True)
    model, anchor, tokenizer = load_models(cfg, accel)
    rows = load_gsm8k("train", args.gsm8k_path)[-args.problems:]
    held_out = heldout_answers(out / "heldout_answers.json", anchor, tokenizer, rows, args.max_new_tokens)
    facts = FactSets.load(args.facts)
    cfg, shared = other_city_fit_cities(cfg, facts, args.facts)
    state = setup(cfg, accel, model, anchor, tokenizer, facts, shared)
    t0 = time.perf_counter()
    first_grads, step_logs = None, []
    for i in range(args.steps):
        _, logs = step(state, i)
        step_logs.append({k: round(v, 5) for k, v in logs.items() if isinstance(v, float)})
        if i == 0:
            first_grads = gradient_sizes(state.params)
    seconds = time.perf_counter() - t0
    drift = answer_drift(state.model, anchor, tokenizer, held_out)
    return {"variant": name, "steps": args.steps, "lr": cfg.lr,
            "step_seconds": seconds / max(args.steps, 1), "held_out_answers": len(held_out), **drift,
            "adam_eps": cfg.adam_eps, "grad_surgery": cfg.grad_surgery, "first_step_gradients": first_grads,
            "step_logs": step_logs,
            "weights": {w: getattr(cfg, w) for ws in GROUPS.values() for w in ws},
            "retain_source": cfg.retain_source}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stream_drift", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen2.5-coder-0.5b", help="preset, hub id, .gguf or save_pretrained dir")
    p.add_argument("--facts", required=True, help="a run's facts.json (its forget and locality sets)")
    p.add_argument("--steps", type=int, default=5, help="RLCP steps per variant (default: 5)")
    p.add_argument("--problems", type=int, default=16,
                   help="held-out GSM8K problems, the last rows of train, that the original answers (default: 16)")
    p.add_argument("--max-new-tokens", type=int, default=384, help="tokens per held-out answer (default: 384)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--gsm8k-path", default=None, help="GSM8K train JSONL (default: shared copy, else hub)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default: 0)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="an RLCPConfig field for every variant, before the variant's own weights, e.g. "
                        "--set retain_source=own --set lr=5e-5 (repeatable)")
    p.add_argument("--out", required=True, help="output directory (OUT/stream_drift.json)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one variant, print its JSON
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        p.error(f"--variants: unknown {bad}; choose from {list(VARIANTS)}")
    if not Path(args.facts).is_file():
        p.error(f"--facts {args.facts}: no such file")
    try:
        parse_overrides(args.set)
    except ValueError as e:
        p.error(str(e))
    if args.one:
        print(json.dumps(run_variant(args.one, args)))
        return 0

    from benchmarks.provenance import commit, machine

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "stream_drift.json"
    result = json.loads(path.read_text()) if path.is_file() else {
        "command": "python -m benchmarks.stream_drift " + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": commit(), "machine": machine(), "seed": args.seed, "model": args.model, "facts": args.facts,
        "variants": {}}
    for name in variants:
        if name in result["variants"]:
            print(f"{name}: done already", flush=True)
            continue
        cmd = [sys.executable, "-m", "benchmarks.stream_drift", "--one", name] + [
            x for x in (sys.argv[1:] if argv is None else argv)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-3000:])
            raise SystemExit(f"variant {name} failed (exit {proc.returncode})")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        result["variants"][name] = row
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(path)
        print(f"{name}: KL {row['kl']:.4f}  NLL {row['nll_original']:.3f} -> {row['nll']:.3f}  "
              f"({row['step_seconds']:.0f} s/step)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
