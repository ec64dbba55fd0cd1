"""benchmarks/rlcp_relations.py: floors, the per-relation table, and its refusals."""

from __future__ import annotations

import json

import pytest

from benchmarks import rlcp_relations
from common.facts import Fact
from neuralcpu.facts import FactSets


def test_the_floor_is_the_share_of_a_relations_most_common_forget_object():
    facts = FactSets([Fact("a", "continent", "Asia"), Fact("b", "continent", "Asia"), Fact("c", "continent", "Europe"),
                      Fact("x", "capital", "X"), Fact("y", "capital", "Y")], [])
    assert rlcp_relations.floors(facts) == {"continent": pytest.approx(2 / 3), "capital": 0.5}


def _rates(acc, n, call_ok=0.0):
    return {"n": n, "acc": acc, "acc_ci": [max(0.0, acc - 0.1), min(1.0, acc + 0.1)], "call_ok_rate": call_ok,
            "call_ok_ci": [0.0, min(1.0, call_ok + 0.1)], "lookup_rate": 0.0}


def test_the_table_has_a_row_per_relation_with_the_untouched_ratio_and_the_cost():
    data = {"relations": ["capital", "country"], "model": "m", "seed": 0, "step": 30, "machine": "cpu",
            "n_forget_by_relation": {"capital": 8, "country": 260}, "floors": {"capital": 0.125, "country": 0.05},
            "n_facts": {"forget": 268}, "cost": {"minutes": 53.6, "loop_minutes": 40.0, "minutes_per_100_facts": 20.0},
            "original": {"by_relation": {"forget": {"capital": _rates(0.9, 32), "country": _rates(0.8, 3120)},
                                         "untouched": {"capital": _rates(0.5, 8), "country": _rates(0.8, 800)}}},
            "after": {"by_relation": {"forget": {"capital": _rates(0.2, 32, 0.5), "country": _rates(0.1, 3120, 0.7)},
                                      "untouched": {"capital": _rates(0.25, 8), "country": _rates(0.6, 800)}}}}
    text = rlcp_relations.table(data)
    rows = [line for line in text.splitlines() if line.startswith("| capital") or line.startswith("| country")]
    assert len(rows) == 2
    assert "(0.50×)" in rows[0] and "(0.75×)" in rows[1]  # untouched after / original
    assert "0.50 [0.00, 0.60]" in rows[0]  # right lookups with their CI
    assert "**20.0 min per 100 facts**" in text
    assert text.count("| capital") == 1 and rlcp_relations.readme_table(data)["rows"][0][0] == "capital"


def test_a_directory_that_is_not_a_finished_run_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        rlcp_relations.main(["--run", str(tmp_path), "--out", str(tmp_path / "x.json")])
    assert "not a finished RLCP run" in capsys.readouterr().err
    for name in ("facts.json", "rlcp_config.json"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "summary.json").write_text(json.dumps({"step": 3, "timing": {"seconds_this_process": 9.0, "resumed": True}}))
    (tmp_path / "rlcp_config.json").write_text(json.dumps({"seed": 0, "model": "m"}))
    with pytest.raises(SystemExit):
        rlcp_relations.main(["--run", str(tmp_path), "--out", str(tmp_path / "x.json")])
    assert "resumed" in capsys.readouterr().err
