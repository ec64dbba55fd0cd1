"""Where a model recalls a fact: a probe sweep over blocks and positions, and causal tracing.

    python -m neuralcpu locate --model smollm2-135m --facts runs/rlcp/facts.json --out runs/locate [--probe-jobs 2]

(a) Probe sweep. At every block, at the subject's last token and at the last prompt token: a probe of
    the object (the country) fitted on *other* subjects of the same objects (other cities of the forget
    countries, never the forget subjects), scored on the forget facts. Two probe families: linear
    (logistic regression) and an MLP. With one forget subject per class, a probe fitted on the forget
    subjects would read which subject a prompt names; one fitted on other subjects can only read what
    they share, the object. Chance is 1/K for K objects.
(b) Causal tracing (Meng et al. 2022, ROME, arXiv 2202.05262): the subject's token embeddings are
    corrupted with Gaussian noise; then one block's clean output at one position is restored, and the
    probability of the right answer's first token is read. The indirect effect of a (block, position)
    is how much of the clean probability that single restore brings back.
Both are drawn in one plot (locate.png) and written to locate.json. RLCP's `--subject-layers` and
`--grl-layers` put the forget stream where these point.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from common.facts import Fact
from neuralcpu.facts import FactSets, fact_prompts
from neuralcpu.probes import run_fits, score_site_probe
from neuralcpu.training import encode

POSITIONS = ("subject", "last")


@torch.inference_mode()
def site_states(model, tokenizer, prompts: list[tuple[str, str]], batch_size: int = 32) -> dict[str, np.ndarray]:
    """States at the subject's last token and the last prompt token, every block: {position: (L+1, N, C)}
    for (prompt, subject) pairs (index 0 = the embeddings, as transformers counts hidden states)."""
    out = {p: [] for p in POSITIONS}
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        batch = encode(tokenizer, [(p, "") for p, _ in chunk], subjects=[s for _, s in chunk])
        hs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True).hidden_states
        rows = torch.arange(len(chunk))
        for pos in POSITIONS:
            out[pos].append(torch.stack([h[rows, batch[pos]].float() for h in hs]))  # (L+1, B, C)
    return {p: torch.cat(v, 1).numpy() for p, v in out.items()}


def _prompts(facts: list[Fact], split: str, tokenizer, classes: dict[str, int]):
    ps = [p for f in facts for p in fact_prompts(f, split, tokenizer)]
    return [(p.text, p.fact.subject) for p in ps], np.array([classes[p.fact.object] for p in ps])


def probe_sweep(model, tokenizer, facts: FactSets, fit_facts: list[Fact], split: str = "test",
                kinds: tuple[str, ...] = ("linear", "mlp"), layers: list[int] | None = None,
                jobs: int | None = None) -> dict:
    """Accuracy per block of object probes fitted on `fit_facts` (other subjects of the forget objects,
    train-split prompts) and scored on the forget facts' `split` prompts, at both positions.

    The states are collected once; the fits (one per family, position and block, each with its fixed
    seed) then run `jobs` at a time (`probes.run_fits`; None: every usable core, 1: one after another). The
    numbers do not depend on `jobs`.
    Returns {"chance", "n", "layers", kind: {position: [acc per block]}}."""
    from joblib import delayed

    classes = facts.class_index
    fit_facts = [f for f in fit_facts if f.object in classes]
    fit_p, fit_y = _prompts(fit_facts, "train", tokenizer, classes)
    test_p, test_y = _prompts(facts.forget, split, tokenizer, classes)
    fit_s, test_s = site_states(model, tokenizer, fit_p), site_states(model, tokenizer, test_p)
    n_layers = fit_s["last"].shape[0] - 1
    layers = list(range(n_layers)) if layers is None else layers
    result = {"chance": 1 / len(classes), "n": len(test_y), "n_fit": len(fit_y), "layers": layers, "split": split}
    # The slow MLP fits go first: the cheap linear ones then fill the workers' tail.
    sites = sorted(((k, p, l) for k in kinds for p in POSITIONS for l in layers), key=lambda s: s[0] != "mlp")
    accs = run_fits([delayed(score_site_probe)(k, fit_s[p][l + 1], fit_y, test_s[p][l + 1], test_y) for k, p, l in sites],
                    jobs, "probe sweep")
    for kind in kinds:
        result[kind] = {pos: [] for pos in POSITIONS}
    for (kind, pos, _), acc in zip(sites, accs):  # sorted() is stable: each list keeps the blocks' order
        result[kind][pos].append(acc)
    return result


@torch.inference_mode()
def causal_trace(model, tokenizer, facts: list[Fact], noise_scale: float = 3.0, seed: int = 0,
                 template_split: str = "train") -> dict:
    """ROME's causal trace on the first completion template of `template_split` for each fact.

    Returns {"layers", "clean", "corrupt", position: [indirect effect per block]}: the share of the gap
    between the mean clean and mean corrupted answer probability that restoring one block's clean output
    at that position closes."""
    prompts = [next(p for p in fact_prompts(f, template_split, layouts=("completion",))) for f in facts]
    batch = encode(tokenizer, [(p.text, "") for p in prompts], subjects=[p.fact.subject for p in prompts])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    answer = torch.tensor([tokenizer(" " + p.fact.object, add_special_tokens=False).input_ids[0] for p in prompts])
    rows = torch.arange(len(prompts))
    # the subject's token span: from its first token to its last (`subject`)
    spans = []
    for p, end in zip(prompts, batch["subject"].tolist()):
        width = len(tokenizer(" " + p.fact.subject, add_special_tokens=False).input_ids)
        spans.append((max(0, end - width + 1), end))
    emb = model.get_input_embeddings()
    gen = torch.Generator().manual_seed(seed)
    sigma = noise_scale * emb.weight.float().std().item()
    noise = torch.randn(*ids.shape, emb.embedding_dim, generator=gen) * sigma
    noise_mask = torch.zeros(ids.shape, dtype=torch.bool)
    for i, (a, b) in enumerate(spans):
        noise_mask[i, a : b + 1] = True

    def prob(logits):  # (B, T, V) -> probability of the answer token after the last prompt token
        return torch.softmax(logits[rows, batch["last"]].float(), -1)[rows, answer]

    # Each block's raw output in the clean run (transformers' last hidden state is after the final norm,
    # so it is not what the last block hands on).
    blocks = model.model.layers
    clean_states = []

    def keep(_module, _inputs, output):
        clean_states.append((output[0] if isinstance(output, tuple) else output).detach())

    handles = [b.register_forward_hook(keep) for b in blocks]
    try:
        p_clean = prob(model(input_ids=ids, attention_mask=mask).logits)
    finally:
        for h in handles:
            h.remove()

    def corrupt_hook(_module, _inputs, output):
        return output + (noise * noise_mask[..., None]).to(output.dtype)

    handle = emb.register_forward_hook(corrupt_hook)
    try:
        p_corrupt = prob(model(input_ids=ids, attention_mask=mask).logits)
        effects = {pos: [] for pos in POSITIONS}
        for layer, block in enumerate(blocks):
            for pos in POSITIONS:
                where = batch[pos]

                def restore(_module, _inputs, output, layer=layer, where=where):
                    hidden = output[0] if isinstance(output, tuple) else output
                    hidden = hidden.clone()
                    hidden[rows, where] = clean_states[layer][rows, where].to(hidden.dtype)
                    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

                h2 = block.register_forward_hook(restore)
                try:
                    p = prob(model(input_ids=ids, attention_mask=mask).logits)
                finally:
                    h2.remove()
                # on the means (ROME's average indirect effect): per-row ratios blow up where the noise
                # barely moves a row's answer probability
                gap = float(p_clean.mean() - p_corrupt.mean())
                effects[pos].append(float(p.mean() - p_corrupt.mean()) / gap if abs(gap) > 1e-9 else 0.0)
    finally:
        handle.remove()
    return {"layers": list(range(len(blocks))), "clean": float(p_clean.mean()), "corrupt": float(p_corrupt.mean()),
            "n": len(prompts), **effects}


def plot_locate(sweep: dict, trace: dict | None, path: Path, title: str = "") -> None:
    """Probe accuracy (both positions, both families) and causal effect per block in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if trace else 1, figsize=(11 if trace else 6, 3.6), squeeze=False)
    ax = axes[0][0]
    for kind, style in (("linear", "-"), ("mlp", "--")):
        for pos, color in (("subject", "tab:red"), ("last", "tab:blue")):
            if kind in sweep:
                ax.plot(sweep["layers"], sweep[kind][pos], style, color=color, label=f"{kind}, {pos} token")
    ax.axhline(sweep["chance"], color="gray", lw=0.8, ls=":", label="chance")
    ax.set(xlabel="block", ylabel="object probe accuracy", ylim=(0, 1.02),
           title=f"probe fitted on other subjects ({sweep['split']}, n={sweep['n']})")
    ax.legend(fontsize=7)
    if trace:
        ax = axes[0][1]
        for pos, color in (("subject", "tab:red"), ("last", "tab:blue")):
            ax.plot(trace["layers"], trace[pos], color=color, label=f"restore at {pos} token")
        ax.set(xlabel="block", ylabel="indirect effect (share of clean p)",
               title=f"causal trace (n={trace['n']}, p clean {trace['clean']:.2f}, corrupt {trace['corrupt']:.2f})")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from neuralcpu.facts import ANALYSIS_OTHER_CITIES, other_cities
    from neuralcpu.models import load_model

    parser = argparse.ArgumentParser(prog="python -m neuralcpu locate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="preset, hub id, .gguf or save_pretrained dir")
    parser.add_argument("--facts", required=True, help="a run's facts.json (forget set and the rest)")
    parser.add_argument("--out", required=True, help="output directory (locate.json, locate.png)")
    parser.add_argument("--split", default="validation", help="templates the sweep scores on (default validation: "
                        "it chooses the blocks RLCP trains; reports use test)")
    parser.add_argument("--probe-jobs", type=int, default=None, help="probe fits run at a time, each on one core "
                        "(default: every usable core; 1: one after another); the numbers do not depend on it")
    args = parser.parse_args(argv)
    if args.probe_jobs is not None and args.probe_jobs < 1:
        parser.error(f"--probe-jobs: {args.probe_jobs} is not a count of jobs (>= 1)")
    model, tokenizer = load_model(args.model)
    model.eval()
    facts = FactSets.load(args.facts)
    fit = other_cities(facts, ANALYSIS_OTHER_CITIES) + [f for f in facts.locality if f.object in facts.class_index]
    sweep = probe_sweep(model, tokenizer, facts, fit, args.split, jobs=args.probe_jobs)
    trace = causal_trace(model, tokenizer, facts.forget)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "locate.json").write_text(json.dumps({"model": args.model, "sweep": sweep, "trace": trace}, indent=1))
    plot_locate(sweep, trace, out / "locate.png", args.model)
    print(json.dumps({k: sweep[k] for k in ("linear",)} | {"trace_subject": trace["subject"], "trace_last": trace["last"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
