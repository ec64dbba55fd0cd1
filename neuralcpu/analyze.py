"""Analysis of an RLCP (or baseline) run against its original model.

    python -m neuralcpu analyze --original smollm2-135m --run runs/rlcp [--out runs/rlcp/analysis]

(a) Fresh linear probes for every layer: fitted on training-template prompts of the forget set, scored
    on held-out-template prompts (regularisation chosen by leave-one-template-out cross-validation),
    before and after, with the chance level drawn.
(b) Effective rank (exp of the entropy of the normalised singular values) of the hidden states per
    layer, before and after: the "structural crystallization" measure.
(c) The phase transition: forget accuracy and training-probe accuracy against step, from metrics.jsonl.
(d) Perplexity of held-out GSM8K test solutions, before and after (the retain target: within +10%).
Writes PNG plots and analysis.json holding every plotted number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from neuralcpu.data import gsm8k_text, load_gsm8k
from neuralcpu.facts import FactSets, prompts_for
from neuralcpu.models import load_model


@torch.inference_mode()
def last_token_states(model, tokenizer, prompts: list[str], batch_size: int = 32) -> np.ndarray:
    """Residual-stream state at the last prompt token for every layer: (L+1, N, C), index 0 = embeddings."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # the last position is then the last prompt token for every row
    chunks = []
    try:
        for i in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True)
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
            chunks.append(torch.stack([h[:, -1].float() for h in out.hidden_states]))  # (L+1, B, C)
    finally:
        tokenizer.padding_side = side
    return torch.cat(chunks, 1).numpy()


@torch.inference_mode()
def token_states(model, tokenizer, texts: list[str], max_len: int = 128) -> list[np.ndarray]:
    """All non-pad token states per layer for `texts`: list over layers of (tokens, C)."""
    per_layer = None
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_len).input_ids
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
        rows = [h[0].float().numpy() for h in hs]
        per_layer = rows if per_layer is None else [np.concatenate([a, b]) for a, b in zip(per_layer, rows)]
    return per_layer


def effective_rank(x: np.ndarray) -> float:
    """exp(H(p)) with p the singular values of the centred matrix, normalised to sum to 1 (Roy & Vetterli 2007)."""
    s = np.linalg.svd(x - x.mean(0, keepdims=True), compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, train_groups: np.ndarray,
                   test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Held-out-template accuracy of a logistic-regression probe, C chosen by leave-one-template-out CV."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import LeaveOneGroupOut
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cv = list(LeaveOneGroupOut().split(train_x, train_y, train_groups))
    from threadpoolctl import threadpool_limits

    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[0.01, 0.1, 1.0, 10.0], cv=cv, max_iter=2000, tol=1e-3))
    # One BLAS thread: these fits are tiny, and threads fighting torch's idle OpenMP workers made them
    # ~8x slower (5.6 s vs 0.7 s per layer measured on SmolLM2's 90 prompts).
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", FutureWarning)  # sklearn 1.8 announces an attribute change; we use none
        clf.fit(train_x, train_y)
    return float((clf.predict(test_x) == test_y).mean())


@torch.inference_mode()
def solution_perplexity(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 8) -> float:
    """exp(mean next-token loss) over the solution tokens of (question, solution) pairs."""
    import torch.nn.functional as F

    from neuralcpu.losses import labelled_positions
    from neuralcpu.rlcp import encode

    nll, count = 0.0, 0
    order = sorted(pairs, key=lambda p: len(p[0]) + len(p[1]))  # similar lengths share a batch: less padding
    for i in range(0, len(order), batch_size):
        batch = encode(tokenizer, order[i : i + batch_size], max_len=512)
        hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        at, targets = labelled_positions(batch["labels"])  # the LM head runs only on the solution's positions
        logits = model.get_output_embeddings()(hidden[at]).float()
        nll, count = nll + F.cross_entropy(logits, targets, reduction="sum").item(), count + len(targets)
    return float(np.exp(nll / max(count, 1)))


def analyze_model(model, tokenizer, facts: FactSets, texts: list[str], ppl_pairs: list[tuple[str, str]]) -> dict:
    """Per-layer probe accuracy (train templates -> held-out templates), effective rank, GSM8K perplexity."""
    classes = {o: i for i, o in enumerate(facts.classes)}
    train_p, train_y, train_g, test_p, test_y = [], [], [], [], []
    for f in facts.forget:
        for g, p in enumerate(prompts_for(f, "train")):
            train_p.append(p), train_y.append(classes[f.object]), train_g.append(g)
        for p in prompts_for(f, "eval"):
            test_p.append(p), test_y.append(classes[f.object])
    tr, te = last_token_states(model, tokenizer, train_p), last_token_states(model, tokenizer, test_p)
    train_y, test_y, train_g = map(np.array, (train_y, test_y, train_g))
    probes = [probe_accuracy(tr[l], train_y, train_g, te[l], test_y) for l in tqdm(range(len(tr)), desc="probes")]
    states = token_states(model, tokenizer, texts)
    ranks = [effective_rank(s) for s in states]
    return {"probe_acc": probes, "effective_rank": ranks, "gsm8k_perplexity": solution_perplexity(model, tokenizer, ppl_pairs)}


def plot(results: dict, metrics: list[dict], grl_layers: list[int], out: Path) -> list[str]:
    """Write the three PNGs; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    layers = np.arange(len(results["before"]["probe_acc"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(layers, results["before"]["probe_acc"], "o-", label="original")
    ax.plot(layers, results["after"]["probe_acc"], "s-", label="after run")
    ax.axhline(results["chance"], color="grey", ls="--", label=f"chance (1/{results['num_classes']})")
    if grl_layers:
        ax.axvspan(grl_layers[0] + 0.5, grl_layers[-1] + 1.5, color="orange", alpha=0.15, label="GRL layers")
    ax.set(xlabel="layer (0 = embeddings)", ylabel="held-out-template probe accuracy", ylim=(0, 1.05),
           title="Linear decodability of the forget-set objects")
    ax.legend()
    fig.tight_layout(), fig.savefig(out / "probe_accuracy.png", dpi=120), plt.close(fig)
    files.append("probe_accuracy.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(layers, results["before"]["effective_rank"], "o-", label="original")
    ax.plot(layers, results["after"]["effective_rank"], "s-", label="after run")
    ax.set(xlabel="layer (0 = embeddings)", ylabel="effective rank", title="Effective rank of hidden states")
    ax.legend()
    fig.tight_layout(), fig.savefig(out / "effective_rank.png", dpi=120), plt.close(fig)
    files.append("effective_rank.png")

    if metrics:
        steps = [m["step"] for m in metrics]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(steps, [m["forget_acc"] for m in metrics], "o-", label="forget acc (held-out templates)")
        ax.plot(steps, [m["locality_acc"] for m in metrics], "s-", label="locality acc")
        probe = [(m["step"], float(np.mean(m["probe_acc"]))) for m in metrics if m.get("probe_acc")]
        if probe:
            ax.plot(*zip(*probe), "^-", label="training-probe acc (mean over GRL layers)")
        if any("forget_lookup_rate" in m for m in metrics):
            ax.plot(steps, [m.get("forget_lookup_rate", 0) for m in metrics], "x--", label="lookup rate (forget)")
        ax.axhline(results["chance"], color="grey", ls="--", label="chance")
        ax.set(xlabel="step", ylabel="accuracy / rate", ylim=(-0.02, 1.05), title="Phase transition")
        ax.legend(fontsize=8)
        fig.tight_layout(), fig.savefig(out / "phase_transition.png", dpi=120), plt.close(fig)
        files.append("phase_transition.png")
    return files


def analyze(original: str, run: str, out: str | None = None, n_texts: int = 16, gsm8k_path: str | None = None,
            n_ppl: int = 64) -> dict:
    """Run (a), (b), (c) for `run` against `original`; write analysis.json and PNGs to `out`."""
    run_dir = Path(run)
    out_dir = Path(out) if out else run_dir / "analysis"
    out_dir.mkdir(parents=True, exist_ok=True)
    facts = FactSets.load(run_dir / "facts.json")
    rows = load_gsm8k("test", gsm8k_path, limit=max(n_texts, n_ppl))  # held out: RLCP trains on the train split
    texts = ["".join(gsm8k_text(r)) for r in rows[:n_texts]]
    ppl_pairs = [gsm8k_text(r) for r in rows[:n_ppl]]
    results = {"original": original, "run": str(run_dir), "num_classes": len(facts.classes),
               "chance": 1 / len(facts.classes)}
    for key, source in (("before", original), ("after", str(run_dir))):
        model, tokenizer = load_model(source)
        results[key] = analyze_model(model, tokenizer, facts, texts, ppl_pairs)
        del model
    cfg_file = run_dir / "rlcp_config.json"
    grl = []
    if cfg_file.is_file():
        from neuralcpu.rlcp import resolve_layers

        n_layers = len(results["before"]["probe_acc"]) - 1
        grl = resolve_layers(json.loads(cfg_file.read_text()).get("grl_layers", "auto"), n_layers)
    results["grl_layers"] = grl
    results["gsm8k_perplexity_ratio"] = results["after"]["gsm8k_perplexity"] / results["before"]["gsm8k_perplexity"]
    metrics_file = run_dir / "metrics.jsonl"
    metrics = [json.loads(l) for l in metrics_file.read_text().splitlines()] if metrics_file.is_file() else []
    results["phase_transition"] = [{k: m.get(k) for k in ("step", "forget_acc", "locality_acc", "probe_acc",
                                                          "forget_lookup_rate", "locality_lookup_rate")} for m in metrics]
    results["plots"] = plot(results, metrics, grl, out_dir)
    tmp = out_dir / "analysis.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, out_dir / "analysis.json")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neuralcpu analyze", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", required=True, help="the original model (preset, id or path)")
    parser.add_argument("--run", required=True, help="an RLCP/baseline run directory (has facts.json)")
    parser.add_argument("--out", default=None, help="output dir (default: <run>/analysis)")
    parser.add_argument("--n-texts", type=int, default=16, help="GSM8K test texts for the effective rank")
    parser.add_argument("--n-ppl", type=int, default=64, help="GSM8K test solutions for the perplexity")
    parser.add_argument("--gsm8k-path", default=None, help="GSM8K test JSONL (default: shared copy, else hub)")
    args = parser.parse_args(argv)
    if not (Path(args.run) / "facts.json").is_file():
        parser.error(f"{args.run} has no facts.json: not a run directory")
    res = analyze(args.original, args.run, args.out, args.n_texts, args.gsm8k_path, args.n_ppl)
    grl = res["grl_layers"]
    for key in ("before", "after"):
        acc = res[key]["probe_acc"]
        print(f"{key:>6}: probe acc on GRL layers {[round(acc[l + 1], 2) for l in grl]} "
              f"(chance {res['chance']:.2f}); mean effective rank {np.mean(res[key]['effective_rank']):.1f}")
    print(f"GSM8K solution perplexity {res['before']['gsm8k_perplexity']:.3f} -> {res['after']['gsm8k_perplexity']:.3f} "
          f"({res['gsm8k_perplexity_ratio']:.3f}x)")
    print(f"wrote {', '.join(res['plots'])} and analysis.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
