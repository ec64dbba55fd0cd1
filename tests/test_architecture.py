"""The layering: bridge depends on neuralcpu and symbolic_ram, never the reverse; common imports none."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_packages(package: str) -> dict[str, set[str]]:
    """{module file: top-level packages it imports} for every module of `package`."""
    out = {}
    for path in (ROOT / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


@pytest.mark.parametrize("package, forbidden", [
    ("neuralcpu", {"bridge", "benchmarks"}),
    ("symbolic_ram", {"bridge", "neuralcpu", "benchmarks"}),
    ("common", {"bridge", "neuralcpu", "symbolic_ram", "benchmarks", "torch"}),
])
def test_no_upward_imports(package, forbidden):
    bad = {f: sorted(names & forbidden) for f, names in imported_packages(package).items() if names & forbidden}
    assert not bad, f"{package} imports what it must not: {bad}"
