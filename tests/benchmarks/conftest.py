"""benchmarks/ is not an installed package: put the repository root first on sys.path so that
`import benchmarks` finds it (not this tests/benchmarks folder) under any pytest invocation."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[:1] != [ROOT]:
    sys.path.insert(0, ROOT)
