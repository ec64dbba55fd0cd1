"""Fact sets of several relations: a symbolic_ram store as the source, sets drawn in turns across the
relations, the other-city term's fit subjects per relation, and per-relation evaluation."""

from __future__ import annotations

from collections import Counter

import pytest

from common.facts import Fact
from neuralcpu import facts as facts_mod
from neuralcpu.facts import (FactFileError, FactSets, at_most_per_relation, build_fact_sets, spread_relations,
                             load_store_facts)
from neuralcpu.rlcp import country_probe_fit_cities

ROWS = ([(f"Town{i}", "country", f"Land{i % 4}") for i in range(12)]
        + [(f"Land{i}", "capital", f"Cap{i}") for i in range(6)]
        + [(f"Land{i}", "continent", ["Europe", "Asia"][i % 2]) for i in range(6)]
        + [(f"Land{i}", "currency", f"Coin{i}") for i in range(6)]
        + [("Iron", "made_up_relation", "26")])  # a relation without a relation file: skipped


@pytest.fixture
def store_dir(tmp_path):
    from symbolic_ram import KnowledgeStore, StoreConfig, ingest_facts

    path = tmp_path / "kb"
    with KnowledgeStore(path, StoreConfig(embedder="hash")) as store:
        report = ingest_facts(store, [{"subject": s, "relation": r, "object": o} for s, r, o in ROWS], source="test")
        assert report.added == len(ROWS)
    return path


def test_a_store_gives_its_facts_of_relations_with_a_relation_file_shuffled_by_seed(store_dir):
    facts = load_store_facts(store_dir)
    assert Counter(f.relation for f in facts) == {"country": 12, "capital": 6, "continent": 6, "currency": 6}
    assert {(f.subject, f.relation, f.object) for f in facts} == {r for r in ROWS if r[1] != "made_up_relation"}
    assert [f.subject for f in load_store_facts(store_dir, seed=0)] == [f.subject for f in facts]
    assert [f.subject for f in load_store_facts(store_dir, seed=1)] != [f.subject for f in facts]
    only = load_store_facts(store_dir, ["capital", "currency"])
    assert {f.relation for f in only} == {"capital", "currency"} and len(only) == 12
    assert next(f for f in only if f.relation == "currency").answers()  # aliases from the relation file


def test_a_store_source_gives_file_errors_that_say_what_is_wrong(store_dir, tmp_path):
    with pytest.raises(FactFileError, match="not a symbolic_ram store"):
        load_store_facts(tmp_path)
    with pytest.raises(FactFileError, match=r"\['symbol'\] are not in the store"):
        load_store_facts(store_dir, ["capital", "symbol"])
    with pytest.raises(FactFileError, match="made_up_relation"):
        load_store_facts(store_dir, ["made_up_relation"])  # asked for by name, but it has no relation file


def test_spread_keeps_each_relations_share_in_every_prefix_and_its_order():
    fs = [Fact("a", "r1", "x"), Fact("b", "r1", "y"), Fact("c", "r1", "z"), Fact("d", "r2", "u"), Fact("e", "r3", "v")]
    assert [f.subject for f in spread_relations(fs)] == ["a", "b", "d", "e", "c"]
    assert spread_relations([]) == []
    many = [Fact(f"c{i}", "country", "x") for i in range(60)] + [Fact(f"k{i}", "capital", "y") for i in range(20)]
    spread = spread_relations(many)
    for n in (8, 20, 40, 80):  # three countries to one capital in every prefix
        assert Counter(f.relation for f in spread[:n]) == {"country": 3 * n // 4, "capital": n // 4}
    assert [f.subject for f in spread if f.relation == "capital"] == [f"k{i}" for i in range(20)]
    assert [f.subject for f in at_most_per_relation(fs, 1)] == ["a", "d", "e"]


def test_build_fact_sets_spreads_every_set_over_the_relations(store_dir, monkeypatch):
    # every fact counts as known: this test is about how the known facts are split, not the screen
    monkeypatch.setattr(facts_mod, "known_facts", lambda model, tok, fs, **kw: list(fs))
    sets = build_fact_sets(None, None, str(store_dir), n_forget=10, n_locality_same=5, n_locality_other=3,
                           n_untouched=10, n_other=3, relations=["country", "capital", "continent", "currency"])
    # 12 countries and 6 of each other relation: 2 : 1 : 1 : 1 in every set
    assert Counter(f.relation for f in sets.forget) == {"country": 4, "capital": 2, "continent": 2, "currency": 2}
    assert Counter(f.relation for f in sets.untouched) == {"country": 4, "capital": 2, "continent": 2, "currency": 2}
    # `candidates` of each relation are screened: 3 of each, 12 facts for the 4 + 4 + 4 asked
    capped = build_fact_sets(None, None, str(store_dir), n_forget=4, n_locality_same=4, n_untouched=4, n_other=0,
                             candidates=3)
    assert Counter(f.relation for f in capped.forget + capped.locality + capped.untouched) == {
        "country": 3, "capital": 3, "continent": 3, "currency": 3}
    assert len(sets.locality) == 5 and len({f.relation for f in sets.locality}) >= 3
    keys = lambda fs: {(f.subject, f.relation) for f in fs}
    assert not keys(sets.forget) & keys(sets.locality) and not keys(sets.forget) & keys(sets.untouched)
    assert not keys(sets.locality) & keys(sets.untouched) and sets.other == []
    # with several relations an untouched fact may share a forget object (two countries on one continent):
    # those neighbours are what an erasure damages first, so they stay
    forgotten = {(f.relation, f.object) for f in sets.forget}
    assert any((f.relation, f.object) in forgotten for f in sets.untouched + sets.locality)


def test_other_subject_fit_set_is_per_relation():
    forget = [Fact("Town0", "country", "Land0"), Fact("Land1", "continent", "Asia")]
    locality = [Fact("Town4", "country", "Land0"),   # shares the country: a fit subject
                Fact("Land3", "continent", "Asia"),  # shares the continent: a fit subject
                Fact("Cap", "capital", "Asia"),      # same object name, another relation: not one
                Fact("Town5", "country", "Land9")]
    shared = country_probe_fit_cities(FactSets(forget, locality), per_country=0)
    assert [f.subject for f in shared] == ["Town4", "Land3"]


def test_closed_book_reports_each_relation(tiny_qwen2_dir):
    from neuralcpu.evaluation import closed_book
    from neuralcpu.models import load_model

    model, tok = load_model(str(tiny_qwen2_dir))
    fs = [Fact("Paris", "country", "France"), Fact("France", "capital", "Paris"), Fact("Peru", "currency", "Sol")]
    report = closed_book(model, tok, fs, "test", expect_lookup=True, layouts=("completion",), max_new_tokens=4)
    assert set(report["by_relation"]) == {"country", "capital", "currency"}
    assert sum(r["n"] for r in report["by_relation"].values()) == report["n"]
    assert all(r["n"] > 0 for r in report["by_relation"].values())


def test_a_run_on_several_relations_reports_each_and_records_its_cost(tiny_qwen2_dir, tmp_path):
    import json

    from neuralcpu.rlcp import RLCPConfig, train

    sets = FactSets([Fact("Town0", "country", "Land0"), Fact("Town1", "country", "Land1"),
                     Fact("Land2", "continent", "Asia"), Fact("Land3", "continent", "Europe")],
                    [Fact("Town4", "country", "Land0"), Fact("Land5", "continent", "Asia")],
                    [Fact("Town6", "country", "Land1"), Fact("Land7", "continent", "Europe")])
    sets.save(tmp_path / "facts.json")
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"})
                           + "\n" for i in range(8)))
    out = tmp_path / "run"
    cfg = RLCPConfig(model=str(tiny_qwen2_dir), facts=str(tmp_path / "facts.json"), gsm8k_path=str(gsm), out=str(out),
                     steps=2, eval_every=2, ckpt_every=2, grl_layers="2,3", subject_layers="1", early_stop=False,
                     retain_max_len=48, probe_templates=2, w_country_probe=1.0, country_probe_cities=0)
    final = train(cfg)
    assert set(final["forget_by_relation"]) == {"country", "continent"}
    assert set(final["call_ok_by_relation"]) == {"country", "continent"}
    assert set(final["locality_by_relation"]) == {"country", "continent"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["relations"] == ["continent", "country"]
    assert summary["n_facts"] == {"forget": 4, "locality": 2, "untouched": 2, "other": 0}
    t = summary["timing"]
    assert 0 < t["loop_seconds_this_process"] <= t["seconds_this_process"] and t["resumed"] is False
    # the other-city term fits on the locality facts that share a forget (relation, object), one of each
    # relation: two forget objects in all, so the term stays on
    assert json.loads((out / "rlcp_config.json").read_text())["w_country_probe"] == 1.0
