"""`python -m neuralcpu <command>`: the logic-core CLI. Each subcommand is a thin wrapper over a function.

    python -m neuralcpu smoke                  # load the default model and answer a few fact prompts
    python -m neuralcpu rlcp --help            # the RLCP unlearning recipe
    python -m neuralcpu analyze --help         # probes, effective rank and phase-transition plots
    python -m neuralcpu locate --help          # where a model recalls a fact: probe sweep, causal trace

Tool-use SFT trains the bridge's protocol and lives there: `python -m bridge.toolsft --help`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

SMOKE_PROMPTS = [
    ("The capital of France is", "Paris"),
    ("Tokyo is a city in the country of", "Japan"),
    ("The capital of Italy is", "Rome"),
    ("Berlin is a city in the country of", "Germany"),
]


def smoke(model: str, dtype: str, cache_dir: str | None) -> int:
    """Load `model` and complete a few fact prompts; exit status 1 if none is answered."""
    from neuralcpu.generation import greedy_generate
    from neuralcpu.models import load_model

    t0 = time.perf_counter()
    lm, tokenizer = load_model(model, dtype=dtype, cache_dir=cache_dir)
    print(f"loaded {model} ({sum(p.numel() for p in lm.parameters()) / 1e6:.0f}M params, {dtype}) "
          f"in {time.perf_counter() - t0:.1f}s")
    outs = greedy_generate(lm, tokenizer, [p for p, _ in SMOKE_PROMPTS], max_new_tokens=8)
    hits = 0
    for (prompt, answer), out in zip(SMOKE_PROMPTS, outs):
        ok = answer.lower() in out.lower()
        hits += ok
        print(f"  [{'ok' if ok else '--'}] {prompt}{out!r}")
    print(f"{hits}/{len(SMOKE_PROMPTS)} fact prompts answered")
    return 0 if hits else 1


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neuralcpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("smoke", help="load a model and answer a few fact prompts")
    p.add_argument("--model", default="smollm2-135m", help="preset, .gguf file, save_pretrained dir or hub id")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--cache-dir", default=None, help="cache for dequantized GGUFs (default ~/.cache/neuralcpu)")

    for name, module in (("rlcp", "neuralcpu.rlcp"), ("analyze", "neuralcpu.analyze"), ("locate", "neuralcpu.locate")):
        sub.add_parser(name, help=f"see `python -m neuralcpu {name} --help`", add_help=False)

    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "smoke":
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return smoke(args.model, args.dtype, args.cache_dir)
    import importlib

    try:
        mod = importlib.import_module(f"neuralcpu.{args.command}")
    except ModuleNotFoundError as e:
        if e.name == f"neuralcpu.{args.command}":
            parser.error(f"`{args.command}` is not available in this version")
        raise
    return mod.main(rest)


def main(argv=None) -> int:
    """Run the command; a user error is one line and exit 2, -v shows its traceback (common/cli.py)."""
    from common.cli import run_main

    return run_main(_main, argv, strip_verbose=True)


if __name__ == "__main__":
    sys.exit(main())
