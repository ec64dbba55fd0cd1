"""GGUF load time: first load (dequantize + cache) against the cached second load, in one process.

    .venv/bin/python benchmarks/load_bench.py [--model smollm2-135m qwen2.5-coder-0.5b]

Each model is loaded into a fresh temporary cache dir, so the first load really dequantizes.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from neuralcpu.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["smollm2-135m", "qwen2.5-coder-0.5b"])
    args = parser.parse_args()
    rows = []
    for name in args.model:
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            m1, tok = load_model(name, cache_dir=cache)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            m2, _ = load_model(name, cache_dir=cache)
            second = time.perf_counter() - t0
            ids = tok("The capital of France is", return_tensors="pt").input_ids
            with torch.no_grad():
                same = torch.equal(m1(ids).logits, m2(ids).logits)
            rows.append((name, first, second, first / second, same))
            del m1, m2
    print(f"{'model':<22}{'first (s)':>10}{'cached (s)':>12}{'speedup':>9}  identical logits")
    for name, first, second, ratio, same in rows:
        print(f"{name:<22}{first:>10.1f}{second:>12.2f}{ratio:>8.1f}x  {same}")


if __name__ == "__main__":
    main()
