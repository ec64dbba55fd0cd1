"""JSONL reading shared by GSM8K, fact files and TOFU: bad lines are named by file, line and field."""

from __future__ import annotations

import json

import pytest

from benchmarks.facts_suite import load_tofu
from neuralcpu.data import DataFileError, jsonl_rows, load_gsm8k
from neuralcpu.facts import FactFileError, load_jsonl_facts


def write(path, *lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("bad, message", [
    ("{oops", ":3: not valid JSON"),
    ("[1, 2]", ":3: expected a JSON object, got list"),
    ('{"question": "q"}', ":3: field 'answer' is missing"),
    ('{"question": "q", "answer": "  "}', ":3: field 'answer' is missing or not a non-empty string"),
])
def test_bad_line_is_named(tmp_path, bad, message):
    f = write(tmp_path / "g.jsonl", json.dumps({"question": "q", "answer": "a"}), "", bad)
    with pytest.raises(DataFileError, match=str(f) + message):
        list(jsonl_rows(f, ("question", "answer")))
    with pytest.raises(DataFileError, match=message):
        load_gsm8k("test", f)


def test_rows_and_limit(tmp_path):
    f = write(tmp_path / "g.jsonl", *[json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) for i in range(5)])
    assert [n for n, _ in jsonl_rows(f)] == [1, 2, 3, 4, 5]
    assert [r["question"] for r in load_gsm8k("test", f, limit=2)] == ["q0", "q1"]
    with pytest.raises(DataFileError, match="no such file"):
        load_gsm8k("test", tmp_path / "missing.jsonl")


def test_fact_and_tofu_files_use_their_own_errors(tmp_path):
    facts = write(tmp_path / "f.jsonl", json.dumps({"subject": "Oslo", "relation": "country", "object": "Norway"}),
                  json.dumps({"subject": "Oslo", "relation": "country"}))
    with pytest.raises(FactFileError, match=r"f.jsonl:2: field 'object'"):
        load_jsonl_facts(facts)
    tofu = write(tmp_path / "t.json", json.dumps({"question": "q", "answer": "a", "perturbed_answer": ["b"]}))
    assert load_tofu(tofu) == [{"question": "q", "answer": "a", "perturbed_answer": ["b"]}]
    with pytest.raises(DataFileError, match=r"t2.json:1: field 'answer'"):
        load_tofu(write(tmp_path / "t2.json", json.dumps({"question": "q"})))
