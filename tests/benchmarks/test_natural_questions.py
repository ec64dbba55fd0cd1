"""benchmarks.natural_questions: the suite is held out from training phrasings, its questions come from
the store, the scoring keeps single-hop, two-hop and not-found apart, and a rerun resumes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import natural_questions as nq
from common.facts import normalize_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bridge"))
from fakes import Scripted  # noqa: E402

GRAPH = [("Lagos", "country", "Nigeria"), ("Kano", "country", "Nigeria"), ("Mumbai", "country", "India"),
         ("Nigeria", "capital", "Abuja"), ("India", "capital", "New Delhi"), ("Nigeria", "currency", "Naira"),
         ("India", "currency", "Rupee"), ("Nigeria", "continent", "Africa"), ("India", "continent", "Asia"),
         ("Valencia", "country", "Spain"), ("Valencia", "country", "Venezuela"),  # two objects: never asked
         ("Colmar", "country", "France")]  # in the store: its not-found question is dropped


@pytest.fixture
def gstore(hash_store):
    return hash_store(GRAPH)


SUITES = [nq.DATA, nq.DATA.with_name("natural_questions_heldout.yaml"), nq.DATA.with_name("natural_questions_heldout2.yaml"),
          nq.DATA.with_name("natural_questions_heldout3.yaml"), nq.DATA.with_name("natural_questions_heldout4.yaml"),
          nq.DATA.with_name("natural_questions_heldout5.yaml"), nq.DATA.with_name("natural_questions_heldout6.yaml"),
          nq.DATA.with_name("natural_questions_heldout7.yaml"),
          nq.DATA.with_name("natural_questions_heldout8.yaml"),
          nq.DATA.with_name("natural_questions_heldout9.yaml"),
          nq.DATA.with_name("natural_questions_heldout10.yaml"),
          nq.DATA.with_name("natural_questions_heldout11.yaml"),
          nq.DATA.with_name("natural_questions_heldout12.yaml"),
          nq.DATA.with_name("natural_questions_heldout13.yaml"),
          nq.DATA.with_name("natural_questions_heldout14.yaml"),
          nq.DATA.with_name("natural_questions_heldout15.yaml"),
          # the element suite (symbol, atomic_number): another knowledge base, checked against the templates too;
          # last, so the earlier-suite test below (indices 1-15, geography suites) keeps its meaning
          nq.DATA.with_name("natural_questions_elements.yaml")]


@pytest.mark.parametrize("suite", SUITES, ids=lambda p: p.name)
def test_no_suite_wording_is_a_training_or_validation_template(suite):
    data = nq.load_suite(suite)
    templates = nq.training_templates()
    assert len(templates) > 50  # the shipped relation files were read
    clashes = [(where, w, fam, t) for where, w in nq.suite_wordings(data) for fam, t in templates
               if nq.near_duplicate(w, t)]
    assert clashes == []


@pytest.mark.parametrize("later", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15])
def test_a_held_out_suite_shares_no_wording_or_not_found_subject_with_an_earlier_one(later):
    suites = [nq.load_suite(p) for p in SUITES]
    names = lambda d: {normalize_name(q["subject"]) for q in d["not_found"]}
    for earlier in suites[:later]:
        shared = [(w, v) for _, w in nq.suite_wordings(suites[later]) for _, v in nq.suite_wordings(earlier)
                  if nq.near_duplicate(w, v)]
        assert shared == []
        assert len(names(suites[later])) >= 16 and not names(earlier) & names(suites[later])


def test_near_duplicate_catches_copies_up_to_subject_case_and_punctuation():
    assert nq.near_duplicate("Which country is {subject} in?", "which country is {subject} in")
    assert nq.near_duplicate("Which country is {subject} in?", "Which country is {subject} in ?!")
    assert nq.near_duplicate("What is the capital of {subject}?", "What's the capital of {subject}?")
    assert not nq.near_duplicate("Hey, quick one: {subject} is a city in what country?", "Which country is {subject} in?")


def test_a_bad_suite_file_names_the_field(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("single_hop: {country: {chat: ['no slot here']}}\ntwo_hop: {}\nnot_found: []\n")
    with pytest.raises(nq.SuiteFileError, match=r"s.yaml: single_hop.country.chat: 'no slot here' needs exactly one"):
        nq.load_suite(bad)
    bad.write_text("single_hop: {}\ntwo_hop: {}\n")
    with pytest.raises(nq.SuiteFileError, match="top level"):
        nq.load_suite(bad)


def test_questions_come_from_the_store_and_the_graph(gstore):
    data = nq.load_suite()
    qs, notes = nq.build_questions(data, gstore, "chat", n_subjects=2, seed=0)
    single = [q for q in qs if q.kind == "single_hop"]
    assert {q.relations[0] for q in single} == {"country", "capital", "currency", "continent"}
    assert all(q.subject != "Valencia" for q in qs)  # two stored objects: ambiguous, never asked
    assert all(q.text == q.wording.replace("{subject}", q.subject) for q in qs)
    two = [q for q in qs if q.kind == "two_hop"]
    expect = {("Lagos", "Abuja"), ("Kano", "Abuja"), ("Mumbai", "New Delhi"), ("Lagos", "Naira"), ("Kano", "Naira"),
              ("Mumbai", "Rupee"), ("Lagos", "Africa"), ("Kano", "Africa"), ("Mumbai", "Asia")}
    assert {(q.subject, q.expected) for q in two} <= expect and len(two) == 2 * 8  # 8 chat two-hop wordings
    none = [q for q in qs if q.kind == "not_found"]
    assert "Colmar" not in {q.subject for q in none} and any("Colmar" in n for n in notes)
    assert all(q.expected is None for q in none) and len(none) == len(data["not_found"]) - 1


def test_subjects_restrict_the_questions_to_a_runs_forget_facts(gstore, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    forget = [{"subject": "Lagos", "relation": "country", "object": "Nigeria"}]
    (run / "facts.json").write_text(json.dumps({"forget": forget, "locality": []}), encoding="utf-8")
    subjects = nq.load_subjects(str(run))
    assert subjects == {"Lagos"}
    qs, notes = nq.build_questions(nq.load_suite(), gstore, "chat", n_subjects=2, seed=0, subjects=subjects)
    asked = [q for q in qs if q.kind != "not_found"]
    assert asked and {q.subject for q in asked} == {"Lagos"}
    assert {q.relations for q in asked if q.kind == "single_hop"} == {("country",)}
    assert {q.expected for q in asked if q.kind == "two_hop"} == {"Abuja", "Naira", "Africa"}  # the first hop is the forget fact
    assert any("capital" in n and "--subjects" in n for n in notes)
    with pytest.raises(SystemExit):
        nq.parse_args(["--model", "m", "--store", str(tmp_path), "--out", "o.json", "--subjects", str(tmp_path / "nope")])


def test_interleave_covers_every_kind_early(gstore):
    qs, _ = nq.build_questions(nq.load_suite(), gstore, "chat", n_subjects=2, seed=0)
    mixed = nq.interleave(qs)
    assert sorted(q.id for q in mixed) == sorted(q.id for q in qs)
    groups = {(q.kind, q.relations) for q in qs}
    assert {(q.kind, q.relations) for q in mixed[:len(groups)]} == groups


def test_scoring_keeps_the_kinds_apart_and_a_rerun_resumes(gstore, tmp_path):
    from bridge.loop import Bridge
    from bridge.prompts import CompletionFormat
    from bridge.tools import make_bridge_tools
    from common.toolcall import render_lookup

    data = nq.load_suite()
    qs, _ = nq.build_questions(data, gstore, "plain", n_subjects=1, seed=0)
    qs = [q for q in qs if q.kind == "single_hop"][:2] + [q for q in qs if q.kind == "not_found"][:2]
    q0, q1, n0, n1 = qs
    outputs = [" " + render_lookup(q0.subject, q0.relations[0]), " The answer is Mars.",  # q0 looks up; q1 guesses
               " " + render_lookup(n0.subject, n0.relations[0]), " Austria.",  # not found, then a guess: flagged
               " " + q0.expected + ".", " Austria."]  # round 2: q0 answers from its fact, n0 guesses again
    model = Scripted(*outputs)
    bridge = Bridge(model, CompletionFormat(), make_bridge_tools(gstore), max_steps=2)
    path = tmp_path / "r.records.jsonl"
    records = nq.run_layout(bridge, qs, path, "m", batch=4, progress=False)
    by_id = {r["id"]: r for r in records}
    assert by_id[q0.id]["correct"] and by_id[q0.id]["status"] == "store"
    assert not by_id[q1.id]["correct"] and by_id[q1.id]["status"] == "not_found"  # no lookup: a flagged guess
    assert by_id[n0.id]["status"] == "not_found" and by_id[n1.id]["status"] == "not_found"
    s = nq.summarise(records)
    assert s["single_hop"]["acc"]["k"] == 1 and s["single_hop"]["n"] == 2
    assert s["single_hop"]["acc"]["ci95"][0] < 0.5 < s["single_hop"]["acc"]["ci95"][1]
    # n0 asked the store and found nothing: said so; n1 never asked: a flagged guess, not "said not found"
    assert s["not_found"]["said_not_found"]["k"] == 1 and s["not_found"]["no_lookup"] == 1
    # the loop's own lookup counts as asking the store (the model ignored a check); records without the
    # field (earlier runs) count as before
    looped = [dict(r, loop_lookup="lookup of every question span: no stored subject") if r["id"] == n1.id else r
              for r in records]
    s2 = nq.summarise(looped)["not_found"]
    assert s2["said_not_found"]["k"] == 2 and s2["loop_asked"] == 1 and s2["no_lookup"] == 0
    assert s["not_found"]["presented_as_store"]["k"] == 0
    # A rerun with the same records file asks nothing again and gives the same records.
    again = Scripted()
    bridge2 = Bridge(again, CompletionFormat(), make_bridge_tools(gstore), max_steps=2)
    assert nq.run_layout(bridge2, qs, path, "m", batch=4, progress=False) == records and again.prompts == []
    assert len(path.read_text().splitlines()) == 4
    md = nq.markdown({"model": "m", "store": "s", "command": "c", "commit": "x", "seed": 0, "machine": "cpu",
                      "layouts": {"plain": s, "chat": {"skipped": "no tools"}}})
    assert "| plain | 0.50 [" in md and "skipped: no tools" in md
    json.dumps(s)  # serialisable


def test_cli_on_the_tiny_model_writes_json_markdown_and_resumes(tiny_qwen2_dir, gstore, tmp_path):
    store_dir = gstore.root
    gstore.close()
    out = tmp_path / "nq.json"
    argv = ["--model", str(tiny_qwen2_dir), "--store", str(store_dir), "--out", str(out), "--n-subjects", "1",
            "--max-new-tokens", "4", "--max-steps", "1", "--batch-size", "16"]
    assert nq.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["layouts"]["chat"] == {"skipped": "the tokenizer has no chat template"}
    plain = result["layouts"]["plain"]
    assert plain["format"] == "completion"
    assert plain["single_hop"]["n"] == 12 and plain["two_hop"]["n"] == 5  # 4 relations x 3 wordings; 5 wordings
    assert plain["not_found"]["n"] == len(nq.load_suite()["not_found"]) - 1  # Colmar is in this store
    for key in ("command", "commit", "machine", "seed"):
        assert key in result
    assert out.with_suffix(".md").read_text().startswith("# Natural questions")
    n_records = len(out.with_suffix(".records.jsonl").read_text().splitlines())
    assert nq.main(argv) == 0  # resumed: nothing asked again
    assert len(out.with_suffix(".records.jsonl").read_text().splitlines()) == n_records
    # --report-only summarises the records without a model; a cut-down records file reads as partial
    records = out.with_suffix(".records.jsonl")
    records.write_text("".join(records.read_text().splitlines(keepends=True)[:10]))
    assert nq.main(argv + ["--report-only"]) == 0
    partial = json.loads(out.read_text())["layouts"]["plain"]
    assert partial["partial"] == f"10 of {n_records} questions"
    assert sum(partial[k]["n"] for k in nq.KINDS if k in partial) == 10
    assert "partial: 10 of" in out.with_suffix(".md").read_text()


def test_cli_lists_every_bad_argument(tmp_path, capsys):
    with pytest.raises(SystemExit):
        nq.main(["--model", "m", "--store", str(tmp_path), "--out", "o.json", "--layouts", "chat,voice",
                 "--n-subjects", "0"])
    err = capsys.readouterr().err
    assert "'voice' is not one of" in err and "no knowledge store" in err and "--n-subjects must be >= 1" in err
