"""Wall time of `locate.probe_sweep`'s fits one after another against `--jobs` at a time, side by side in one run.

    flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/probe_sweep_bench.py --model smollm2-135m \
        --facts /work/runs/r40/facts.json --blocks 20,25 --out docs/results/probe_sweep_bench_smollm2.json [--jobs 2]

The prompt states are collected once (their forward passes timed apart) and shared by both sweeps, so the
two timings hold the probe fits alone. Both sweeps must give the same numbers; the script fails otherwise.
The fit set is `analyze`'s: `analyze.other_city_facts` of the run's facts.json (so the forget set must be
city -> country).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: this checkout's packages, not the installed ones
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from benchmarks.provenance import provenance
    from benchmarks.report import write_json_atomic
    from neuralcpu import locate
    from neuralcpu.analyze import other_city_facts
    from neuralcpu.facts import FactSets
    from neuralcpu.models import load_model
    from neuralcpu.probes import usable_cores

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="preset, .gguf or save_pretrained dir")
    parser.add_argument("--facts", required=True, help="a run's facts.json (city -> country forget set)")
    parser.add_argument("--blocks", default=None, help="comma-separated blocks to fit on (default: every block)")
    parser.add_argument("--jobs", type=int, default=usable_cores(), help="fits at a time in the parallel sweep")
    parser.add_argument("--out", default=None, help="write the timings as JSON here")
    args = parser.parse_args(argv)
    layers = [int(b) for b in args.blocks.split(",")] if args.blocks else None
    facts = FactSets.load(args.facts)
    others = other_city_facts(facts)
    if others is None:
        parser.error(f"{args.facts}: the forget set is not city -> country with two other cities per country")

    model, tokenizer = load_model(args.model)
    cache: dict[int, dict] = {}
    collect = locate.site_states

    def cached_states(model, tokenizer, prompts, batch_size=32):  # the same states for both sweeps
        key = hash(tuple(prompts))
        if key not in cache:
            cache[key] = collect(model, tokenizer, prompts, batch_size)
        return cache[key]

    locate.site_states = cached_states
    t0 = time.perf_counter()
    locate.probe_sweep(model, tokenizer, facts, others, "test", kinds=(), layers=layers)  # fills the cache
    t_states = time.perf_counter() - t0
    timings, sweeps = {}, {}
    for jobs in (1, args.jobs):
        t0 = time.perf_counter()
        sweeps[jobs] = locate.probe_sweep(model, tokenizer, facts, others, "test", layers=layers, jobs=jobs)
        timings[jobs] = time.perf_counter() - t0
    if sweeps[1] != sweeps[args.jobs]:
        print(f"the sweeps differ: {sweeps[1]} against {sweeps[args.jobs]}", file=sys.stderr)
        return 1
    n_fits = 2 * len(locate.POSITIONS) * len(sweeps[1]["layers"])
    argv = sys.argv[1:] if argv is None else argv
    res = {**provenance(argv, "benchmarks/probe_sweep_bench.py", seed=0),  # seed: every MLP probe's random_state
           "model": args.model, "blocks": sweeps[1]["layers"], "n_fits": n_fits, "n_fit_prompts": sweeps[1]["n_fit"],
           "n_test_prompts": sweeps[1]["n"], "states_s": round(t_states, 1), "serial_s": round(timings[1], 1),
           "jobs": args.jobs, "parallel_s": round(timings[args.jobs], 1), "ratio": round(timings[1] / timings[args.jobs], 2),
           "usable_cores": usable_cores(), "equal": True,
           "sweep": {k: sweeps[1][k] for k in ("layers", "linear", "mlp", "chance", "n")}}
    print(json.dumps({k: v for k, v in res.items() if k not in ("sweep", "versions")}))
    if args.out:
        write_json_atomic(Path(args.out), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
