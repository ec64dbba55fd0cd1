"""Where a committed result came from: the command, the commit, the machine, the seed and the versions.

Every benchmark that writes a results file takes its "commit" and "machine" fields from here, so the
files of docs/results/ describe the machine the same way. Light to import (no torch until
`provenance()` is called): the store benchmarks use it too.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The vector extensions that decide speed and precision here: torch's bf16 path (avx512_bf16, amx_bf16)
# and ONNX int8 (avx512_vnni, amx_int8).
_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def machine() -> str:
    """The CPU model name, its vector flags that matter to torch and ONNX and the core count, e.g.
    "Intel(R) Xeon(R) Processor @ 2.80GHz; avx2 avx512f avx512_vnni; no avx512_bf16/amx; 2 cores"."""
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


def git_state() -> dict:
    """{"commit", "dirty"} of the checkout (None when git is unavailable)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True, check=True).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def commit() -> str:
    """The checkout's HEAD commit, or "unknown" outside a git checkout (results files need a string)."""
    return git_state()["commit"] or "unknown"


def provenance(argv: list[str], script: str, seed: int | None) -> dict:
    """{"command", "commit", "dirty", "machine", "seed", "threads", "versions", "date"} for a results file."""
    import torch
    import transformers

    git = git_state()
    return {"command": " ".join([".venv/bin/python", script, *map(shlex.quote, argv)]),
            "commit": git.get("commit"), "dirty": git.get("dirty"), "machine": machine(), "seed": seed,
            "threads": torch.get_num_threads(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
