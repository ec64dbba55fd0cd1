"""benchmarks.provenance: one description of the machine and the commit for every results file."""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

from benchmarks import provenance

BENCHMARKS = Path(provenance.__file__).parent


def test_machine_names_the_cpu_its_bf16_support_and_the_cores():
    m = provenance.machine()
    assert m.endswith(f"; {os.cpu_count()} cores")
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        cpuinfo = f.read()
    model = next(line.partition(":")[2].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
    assert m.startswith(model)
    assert ("no avx512_bf16/amx" in m) == ("avx512_bf16" not in cpuinfo and "amx_bf16" not in cpuinfo)


def test_commit_is_head_in_a_checkout_and_unknown_outside_one(monkeypatch):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=provenance.ROOT, capture_output=True, text=True).stdout.strip()
    assert provenance.commit() == head

    def no_git(*args, **kwargs):
        raise OSError("no git")

    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    assert provenance.commit() == "unknown" and provenance.git_state() == {"commit": None, "dirty": None}


def test_no_benchmark_keeps_its_own_copy_of_machine_or_commit():
    """Four copies of machine() once described the machine four ways; they import this one now."""
    copies = [f"{p.name}:{node.name}" for p in sorted(BENCHMARKS.glob("*.py")) if p.name != "provenance.py"
              for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
              if isinstance(node, ast.FunctionDef) and node.name in ("machine", "commit", "git_state")]
    assert copies == []
