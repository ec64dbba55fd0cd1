"""benchmarks/new_kb.py: the wrong-call breakdown from known records (the end-to-end reading on a tiny
toolsft run is in tests/bridge/test_toolsft.py)."""

from __future__ import annotations

from bridge.evaluate import Record
from benchmarks import new_kb


def record(family: str, called: bool, calls: list[dict]) -> Record:
    return Record("Cape Verde", "numeric_code", "132", "Record. Country name: Cape Verde. Numeric code:", family,
                  "tool", None, False, called, False, False, "answer", 1, calls)


def test_wrong_calls_say_which_part_of_the_call_was_wrong():
    right = {"subject": "cape verde", "relation": "numeric_code"}
    records = [
        record("form", True, [right]),
        record("form", False, [{"subject": "Record. Country name: Cape Verde", "relation": "numeric_code"}]),
        record("form", False, [{"subject": "Verde", "relation": "numeric_code"}]),
        record("chat", False, [{"subject": "Cape Verde", "relation": "iso_code"}]),
        record("chat", False, [{"subject": "Peru", "relation": "iso_code"}]),
        record("chat", False, [{"error": "bad json"}]),
        record("chat", False, []),
        record("chat", False, [{"tool": "search"}]),
    ]
    b = new_kb.wrong_call_breakdown(records)
    assert b["n"] == 8 and sum(b["verdicts"].values()) == 8
    assert b["verdicts"] == {"right": 1, "no_call": 2, "malformed": 1, "wrong_subject": 2, "wrong_relation": 1,
                             "wrong_both": 1}
    assert b["by_family"]["form"] == {"right": 1, "no_call": 0, "malformed": 0, "wrong_subject": 2,
                                      "wrong_relation": 0, "wrong_both": 0}
    assert b["relations_written"] == {"iso_code": 2}
    assert b["wrong_subject_shapes"] == {"extra_words": 1, "part_of_subject": 1, "other": 1}
    assert {e["wrote"] for e in b["wrong_subject_examples"]} == {"Record. Country name: Cape Verde", "Verde", "Peru"}
