"""Where a committed result came from: the command, the commit, the machine, the seed and the versions."""

from __future__ import annotations

import datetime
import os
import platform
import shlex

import torch

from benchmarks.run import git_state

_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def machine() -> str:
    """The CPU model name, its vector flags that matter to torch and the core count, e.g.
    "Intel(R) Xeon(R) Processor @ 2.80GHz; avx2 avx512f; no avx512_bf16/amx; 2 cores"."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    have = [f for f in _CPU_FLAGS if f in flags]
    bf16 = "" if {"avx512_bf16", "amx_bf16"} & flags else "; no avx512_bf16/amx"
    return f"{name}; {' '.join(have) or 'no avx2/avx512'}{bf16}; {os.cpu_count()} cores"


def provenance(argv: list[str], script: str, seed: int | None) -> dict:
    """{"command", "commit", "dirty", "machine", "seed", "threads", "versions", "date"} for a results file."""
    import transformers

    git = git_state()
    return {"command": " ".join([".venv/bin/python", script, *map(shlex.quote, argv)]),
            "commit": git.get("commit"), "dirty": git.get("dirty"), "machine": machine(), "seed": seed,
            "threads": torch.get_num_threads(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
