"""benchmarks/replay_records: a run's recorded calls replayed through the current loop and store, no model."""

from __future__ import annotations

import json

import pytest

from benchmarks.replay_records import UNRECORDED_ANSWER, generations, main

FACTS = [("Lagos", "country", "Nigeria"), ("Nigeria", "capital", "Abuja")]


def _record(**kw):
    rec = {"id": "two:0", "kind": "two_hop", "text": "What is the capital of the country where Lagos is?",
           "expected": "Abuja", "aliases": [], "answer": "Nigeria", "correct": False, "status": "store",
           "answer_source": "tool_result",
           "calls": [{"name": "lookup", "arguments": {"subject": "Lagos", "relation": "capital"}, "error": None},
                     {"name": "lookup", "arguments": {"subject": "Lagos", "relation": "country"}, "error": None}],
           "trace": ["step 1: lookup(subject='Lagos', relation='capital') -> Lagos -country-> Nigeria "
                     "[matched_by any_relation]"]}
    return {**rec, **kw}


def test_replay_shows_the_old_and_the_new_store_answer(hash_store, tmp_path, capsys):
    store = hash_store(FACTS)
    root = store.root
    store.close()
    records = tmp_path / "r.records.jsonl"
    records.write_text(json.dumps(_record()) + "\n", encoding="utf-8")
    out = tmp_path / "replay.json"
    assert main(["--records", str(records), "--store", str(root), "--out", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["old_first"] == "Lagos -country-> Nigeria [matched_by any_relation]"
    assert row["new_first"].startswith("Lagos -country-> Nigeria; Nigeria -capital-> Abuja [matched_by via_neighbour")
    assert row["old"]["correct"] is False
    assert (row["new"]["answer"], row["new"]["correct"], row["new"]["status"]) == ("Abuja", True, "store")
    assert "| two_hop |" in capsys.readouterr().out


def test_generations_feed_the_calls_then_the_models_answer():
    assert generations(_record(answer_source="model", answer="Abuja."))[-1] == "Abuja."
    assert len(generations(_record())) == 2  # the loop took the answer from a tool result: nothing to replay


def test_an_answer_from_the_weights_is_replayed_where_the_trace_says_it_was_given(hash_store, tmp_path):
    # the run: the model answered twice without a lookup, and the loop looked the fact up itself
    rec = _record(text="Which country is Lagos in?", expected="Nigeria", answer="Nigeria", calls=[],
                  trace=["step 1: answered without a lookup although the question names 'Lagos', which the store "
                         "holds: asked to check with the tools",
                         "step 2: asked to check, the model answered again without a lookup: the loop looked up "
                         "lookup(subject='Lagos', relation='country') -> Lagos -country-> Nigeria [matched_by exact]",
                         "step 3: the store answered the question at step 2 (Lagos -country-> Nigeria) and the model "
                         "said nothing after the results: that fact is the answer"])
    assert generations(rec) == [UNRECORDED_ANSWER, UNRECORDED_ANSWER]
    store = hash_store(FACTS)
    root = store.root
    store.close()
    records = tmp_path / "r.records.jsonl"
    records.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    out = tmp_path / "replay.json"
    assert main(["--records", str(records), "--store", str(root), "--out", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert (row["new"]["answer"], row["new"]["correct"]) == ("Nigeria", True)
    # a call in a step is fed as the call, in order
    assert generations(_record(trace=["step 1: lookup(subject='Lagos', relation='capital') -> no facts",
                                      "step 2: lookup(subject='Lagos', relation='country') -> x"]))[:2] == [
        generations(_record())[0], generations(_record())[1]]


def test_a_bad_records_line_is_named(tmp_path):
    records = tmp_path / "r.records.jsonl"
    records.write_text(json.dumps(_record()) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"r.records.jsonl:2: not a JSON record"):
        main(["--records", str(records), "--store", str(tmp_path / "none")])
