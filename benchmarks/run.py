"""The benchmark: fact QA, GSM8K and a relearning attack over a matrix of systems; results.json,
report.md and PNG plots in --out.

    .venv/bin/python benchmarks/run.py --model smollm2-135m --suite all --out results/smol \\
        --rlcp-dir runs/rlcp [--unlikelihood-dir runs/ul --graddiff-dir runs/gd --npo-dir runs/npo] \\
        [--toolsft-dir runs/toolsft --store stores/facts] [--n-gsm8k 100 --seed 0]

(`python -m benchmarks.run ...` from the repository root works too.) Systems whose model dir is not
given or not there are skipped with the reason; see benchmarks/systems.py for the matrix and
docs/benchmarks.md for what every number means.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and the packages importable
    sys.path.insert(0, str(ROOT))

from benchmarks import facts_suite, gsm8k, report, robustness, systems  # noqa: E402
from benchmarks.provenance import git_state  # noqa: E402

SUITES = ("facts", "gsm8k", "robustness")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate every argument up front; one error lists every problem."""
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="original model: preset, hub id, .gguf or save_pretrained dir")
    p.add_argument("--suite", nargs="+", default=["all"], choices=[*SUITES, "all"], help="suites to run")
    p.add_argument("--systems", nargs="+", default=["all"], choices=[*systems.SYSTEM_NAMES, "all"],
                   help="systems to evaluate (default all; unavailable ones are skipped)")
    p.add_argument("--gsm8k-systems", nargs="+", default=["all"], choices=[*systems.SYSTEM_NAMES, "all"],
                   help="of those, the systems that also run GSM8K (default all)")
    p.add_argument("--out", required=True, help="output dir, e.g. results/<name>")
    p.add_argument("--seed", type=int, default=0, help="seed of the GSM8K subset, few-shot exemplars and the attack")
    p.add_argument("--n-gsm8k", type=int, default=100, help="GSM8K test problems (0 = all 1319)")
    p.add_argument("--gsm8k-max-new-tokens", type=int, default=512, help="generation cap per GSM8K problem")
    p.add_argument("--gsm8k-format", default="auto", choices=["auto", "chat", "fewshot"],
                   help="auto: zero-shot chat template if the tokenizer has one, else 8-shot")
    p.add_argument("--gsm8k-test", default=None, help="GSM8K test JSONL (default: ../shared/data copy, else hub)")
    p.add_argument("--gsm8k-train", default=None, help="GSM8K train JSONL for few-shot exemplars (same default)")
    p.add_argument("--facts", default=None, help="facts.json with forget/locality sets (default: the first run dir's)")
    p.add_argument("--tofu-path", default=None, help="TOFU world_facts_perturbed.json (default: ../shared/data copy, else hub)")
    p.add_argument("--tofu-format", default="auto", choices=["auto", "chat", "completion"],
                   help="auto: chat template if the tokenizer has one, else 'Question: ...\\nAnswer:'")
    p.add_argument("--no-tofu", action="store_true", help="skip the TOFU world facts")
    p.add_argument("--n-tofu", type=int, default=0, help="only the first N TOFU questions (0 = all 117)")
    for key, flag in systems.MODEL_FLAGS.items():
        if key != "original":
            p.add_argument(flag, default=None, help=f"output dir of the {key} run (save_pretrained model)")
    p.add_argument("--store", default=None, help="symbolic_ram store for just-rag/tool systems (default: the one "
                   "the RLCP run names, else <out>/store built from the forget set)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="dtype for evaluation")
    p.add_argument("--batch-size", type=int, default=64,
                   help="prompts per generation batch (finished rows leave the batch, so a large one costs little)")
    p.add_argument("--attack-fraction", type=float, default=0.2, help="share of the forget set the attack trains on")
    p.add_argument("--attack-steps", type=int, default=20, help="relearning-attack optimisation steps")
    p.add_argument("--attack-lr", type=float, default=1e-4, help="relearning-attack learning rate")
    p.add_argument("--resume", action="store_true",
                   help="keep the per-system results an interrupted run with the same settings left in "
                        "--out/results.json (a system whose model files changed since is run again)")
    args = p.parse_args(argv)
    args.suite = list(SUITES) if "all" in args.suite else list(dict.fromkeys(args.suite))
    args.systems = list(systems.SYSTEM_NAMES) if "all" in args.systems else list(dict.fromkeys(args.systems))
    problems = []
    for flag in ("n_gsm8k",):
        if getattr(args, flag) < 0:
            problems.append(f"--{flag.replace('_', '-')} must be >= 0")
    for flag in ("gsm8k_max_new_tokens", "batch_size", "attack_steps"):
        if getattr(args, flag) < 1:
            problems.append(f"--{flag.replace('_', '-')} must be >= 1")
    if not 0 < args.attack_fraction < 1:
        problems.append("--attack-fraction must be in (0, 1)")
    for flag in ("gsm8k_test", "gsm8k_train", "facts", "tofu_path"):
        path = getattr(args, flag)
        if path is not None and not Path(path).is_file():
            problems.append(f"--{flag.replace('_', '-')} {path}: no such file")
    if args.store is not None and not (Path(args.store) / "facts.sqlite").is_file():
        problems.append(f"--store {args.store}: no knowledge store there (no facts.sqlite)")
    if problems:
        p.error("\n  " + "\n  ".join(problems))
    return args


def model_dirs(args) -> dict[str, str | None]:
    """Model source -> path for every source the matrix knows."""
    return {key: (args.model if key == "original" else getattr(args, flag.lstrip("-").replace("-", "_")))
            for key, flag in systems.MODEL_FLAGS.items()}


def find_facts(args) -> tuple[str | None, list[str]]:
    """The facts.json to evaluate on (--facts, else the first given run dir that has one) and warnings."""
    if args.facts:
        return args.facts, []
    for key in (*systems.UNLEARNED, "toolsft"):
        d = model_dirs(args)[key]
        if d and (Path(d) / "facts.json").is_file():
            return str(Path(d) / "facts.json"), []
    return None, ["no facts.json (pass --facts or a run dir): forget/locality sets and the relearning attack are skipped"]


def find_store(args) -> str | None:
    """--store, else the store the RLCP run's rlcp_config.json names (if it exists), else None."""
    if args.store:
        return args.store
    cfg = Path(args.rlcp_dir or "/nonexistent") / "rlcp_config.json"
    named = json.loads(cfg.read_text()).get("store") if cfg.is_file() else None
    return named if named and (Path(named) / "facts.sqlite").is_file() else None


def run_analyses(args, out: Path) -> tuple[dict, list[str]]:
    """`python -m neuralcpu analyze` results of the given runs (probes and effective rank before/after):
    their analysis.json, and their PNGs copied into `out` as <run>_<name>.png."""
    analyses, plots = {}, []
    for key in systems.UNLEARNED:
        d = model_dirs(args)[key]
        adir = Path(d) / "analysis" if d else None
        if adir and (adir / "analysis.json").is_file():
            analyses[key] = json.loads((adir / "analysis.json").read_text())
            for png in sorted(adir.glob("*.png")):
                shutil.copyfile(png, out / f"{key}_{png.name}")
                plots.append(f"{key}_{png.name}")
    return analyses, plots


def training_curves(args) -> dict[str, list[dict]]:
    """metrics.jsonl rows (without samples) of every given run dir, for the phase-transition plots."""
    curves = {}
    for key in systems.UNLEARNED:
        d = model_dirs(args)[key]
        f = Path(d) / "metrics.jsonl" if d else None
        if f and f.is_file():
            rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
            curves[key] = [{k: v for k, v in r.items() if k not in ("forget_samples", "locality_misses")} for r in rows]
    return curves


def suites_for(spec, args) -> list[str]:
    """The requested suites that apply to a system: GSM8K only for --gsm8k-systems, the relearning attack
    only for closed-book models that can be fine-tuned (the original and the unlearned runs)."""
    applies = {"facts": True, "gsm8k": "all" in args.gsm8k_systems or spec.name in args.gsm8k_systems,
               "robustness": spec.mode == "closed" and spec.model in ("original", *systems.UNLEARNED)}
    return [suite for suite in SUITES if suite in args.suite and applies[suite]]


def model_stamp(path: str) -> str:
    """What identifies a system's weights for --resume: a dir's weight files with size and mtime, else the name."""
    d = Path(path)
    if not d.is_dir():
        return f"{path} {d.stat().st_size} {d.stat().st_mtime_ns}" if d.is_file() else str(path)
    files = sorted(f for f in d.iterdir() if f.suffix in (".safetensors", ".bin", ".gguf") or f.name == "config.json")
    return " ".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


def previous_results(path: Path, config: dict) -> dict | None:
    """The results.json an interrupted run left, if it was written with the same settings; else an error."""
    if not path.is_file():
        return None
    try:
        prev = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"--resume: {path} is not valid JSON ({e}); remove it to start over")
    old = {k: v for k, v in prev.get("config", {}).items() if k != "resume"}
    new = {k: v for k, v in config.items() if k != "resume"}
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        raise SystemExit(f"--resume: {path} was written with other settings ("
                         + "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in changed)
                         + "); pass a new --out or remove it")
    return prev


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(args) -> dict:
    """Run the requested suites over the available systems; write results.json, report.md, plots."""
    import torch

    from neuralcpu.data import load_gsm8k
    from neuralcpu.facts import FactSets
    from neuralcpu.models import load_model

    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    facts_path, warnings = find_facts(args)
    facts = FactSets.load(facts_path) if facts_path else None
    store_dir = find_store(args)
    available, skipped = systems.resolve(args.systems, model_dirs(args), store_dir)
    for name, why in skipped.items():
        log(f"skip {name}: {why}")
    for key in systems.UNLEARNED:
        cfg_file = Path(model_dirs(args)[key] or "/nonexistent") / "rlcp_config.json"
        if cfg_file.is_file() and json.loads(cfg_file.read_text()).get("model") != args.model:
            warnings.append(f"{key} run was trained from {json.loads(cfg_file.read_text()).get('model')!r}, "
                            f"not --model {args.model!r}")
    results = {
        "model": args.model, "seed": args.seed, "config": {k: v for k, v in vars(args).items()},
        "template_split": {"facts": "test", "templates": facts_suite.template_split()},
        "facts_file": facts_path, "store": store_dir, "git": git_state(), "warnings": warnings,
        "systems": [{"name": s.name, "model": path, "mode": s.mode, "description": s.description} for s, path in available],
        "skipped": skipped, "facts": {}, "gsm8k": {}, "robustness": {}, "plots": [],
        "model_stamps": {s.name: model_stamp(path) for s, path in available}, "invocation_seconds": [],
    }
    previous = previous_results(out / "results.json", results["config"]) if args.resume else None
    earlier_seconds = previous.get("invocation_seconds", []) if previous else []
    # "git" is this invocation's checkout; results kept by --resume may come from earlier ones, so every
    # invocation's checkout is listed in order, as invocation_seconds lists their times.
    earlier_git = (previous.get("invocation_git") or [previous.get("git")]) if previous else []
    results["invocation_git"] = [*earlier_git, results["git"]]
    if not available:
        log("no system is available")

    tofu = None
    if "facts" in args.suite and not args.no_tofu:
        tofu = facts_suite.load_tofu(args.tofu_path)
        tofu = tofu[: args.n_tofu] if args.n_tofu > 0 else tofu  # the bridge systems ask one question at a time
    test_rows = train_rows = None
    if "gsm8k" in args.suite:
        test_rows = load_gsm8k("test", args.gsm8k_test)
        train_rows = load_gsm8k("train", args.gsm8k_train, limit=2000)
    n_gsm8k = args.n_gsm8k or None

    store = None
    loaded_path, model, tokenizer = None, None, None
    generates = "facts" in args.suite or "gsm8k" in args.suite  # robustness alone loads its own copies
    for spec, path in available:
        if spec.mode != "closed" and not generates:
            continue
        if previous and previous.get("model_stamps", {}).get(spec.name) == results["model_stamps"][spec.name]:
            kept = [suite for suite in SUITES if spec.name in previous.get(suite, {})]
            for suite in kept:
                results[suite][spec.name] = previous[suite][spec.name]
            if kept:
                log(f"{spec.name}: kept {', '.join(kept)} from the earlier run's results.json")
        wanted = [suite for suite in suites_for(spec, args) if spec.name not in results[suite]]
        if not wanted:
            continue
        if generates and path != loaded_path:  # systems sharing a model (rlcp, rlcp+just-rag, rlcp+tool) reuse it
            model = tokenizer = None
            gc.collect()
            log(f"loading {path}")
            model, tokenizer = load_model(path, dtype=args.dtype)
            loaded_path = path
        if spec.mode == "closed":
            answer = systems.closed_answerer(model, tokenizer, args.batch_size)
        else:
            try:
                store = store or systems.open_store(store_dir, facts, out)
            except ValueError as e:
                results["skipped"][spec.name] = str(e)
                results["systems"] = [s for s in results["systems"] if s["name"] != spec.name]
                log(f"skip {spec.name}: {e}")
                continue
            answer = systems.bridge_answerer(model, tokenizer, spec.mode, store, args.batch_size)
        if "facts" in wanted:
            t0 = time.perf_counter()
            results["facts"][spec.name] = facts_suite.evaluate(answer, facts, tofu, tokenizer, args.tofu_format)
            summary = ", ".join(f"{k} {v['acc']:.2f}" for k, v in results["facts"][spec.name].items())
            log(f"{spec.name} facts: {summary} ({time.perf_counter() - t0:.0f}s)")
        if "gsm8k" in wanted:
            progress_answer = (systems.closed_answerer(model, tokenizer, args.batch_size, progress=True)
                               if spec.mode == "closed" else answer)
            r = gsm8k.evaluate(progress_answer, tokenizer, test_rows, train_rows, n_gsm8k, args.seed,
                               args.gsm8k_max_new_tokens, args.gsm8k_format)
            results["gsm8k"][spec.name] = r
            log(f"{spec.name} gsm8k: acc {r['accuracy']['acc']:.3f} ({r['accuracy']['k']}/{r['n']}), "
                f"CoT {r['cot_rate']['acc']:.2f}, {r['mean_tokens']:.0f} tokens, {r['seconds']:.0f}s")
        if "robustness" in wanted:
            if facts is None:
                results["skipped"].setdefault(f"{spec.name} (robustness)", "no facts.json")
            else:
                cfg = robustness.AttackConfig(args.attack_fraction, args.attack_steps, args.attack_lr, args.seed)
                r = robustness.relearning_attack(path, facts, cfg)
                results["robustness"][spec.name] = r
                log(f"{spec.name} relearning: held-out {r['before']['heldout']['acc']:.2f} -> "
                    f"{r['after']['heldout']['acc']:.2f} ({r['seconds']:.0f}s)")
        results["invocation_seconds"] = [*earlier_seconds, time.perf_counter() - t_start]
        results["wall_seconds"] = sum(results["invocation_seconds"])
        report.write_json_atomic(out / "results.json", results)  # partial results survive a crash and --resume keeps them

    results["training_curves"] = training_curves(args)
    results["analysis"], copied = run_analyses(args, out)
    results["plots"] = make_plots(results, out) + copied
    results["invocation_seconds"] = [*earlier_seconds, time.perf_counter() - t_start]
    results["wall_seconds"] = sum(results["invocation_seconds"])  # over every invocation a --resume continued
    report.write_json_atomic(out / "results.json", results)
    report.write_text_atomic(out / "report.md", report.markdown(results))
    if store is not None:
        store.close()
    log(f"wrote {out / 'results.json'} and {out / 'report.md'} in {results['wall_seconds']:.0f}s")
    return results


def make_plots(results: dict, out: Path) -> list[str]:
    """Draw every plot the results support; return their file names (relative to `out`)."""
    plots = []
    if results["gsm8k"]:
        plots.append(report.plot_gsm8k_vs_cot(results["gsm8k"], out / "gsm8k_acc_vs_cot.png"))
    for name, rows in results.get("training_curves", {}).items():
        if name in results.get("analysis", {}):  # `neuralcpu analyze` drew this run's phase transition already
            continue
        plots.append(report.plot_phase_transition(name, rows, out / f"phase_transition_{name}.png"))
    if results["robustness"]:
        plots.append(report.plot_probe_attack(results["robustness"], out / "probe_before_after_attack.png"))
    return [p.name for p in plots]


def _main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


def main(argv=None) -> int:
    """Run the command; a user error is one line and exit 2, -v shows its traceback (common/cli.py)."""
    from common.cli import run_main

    return run_main(_main, argv, strip_verbose=True)


if __name__ == "__main__":
    sys.exit(main())
