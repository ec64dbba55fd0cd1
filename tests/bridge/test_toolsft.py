"""bridge.toolsft on the tiny random Qwen2: the examples are the loop's layout and train templates only,
any relation file works (one the test invents), chains are built from the graph, the loss falls and
only trainable weights move."""

from __future__ import annotations

import json

import pytest
import torch

from common.facts import Fact
from common.relations import load_relation
from common.toolcall import RESULT_OPEN, render_lookup

CITIES = [("Tokyo", "Japan"), ("Lagos", "Nigeria"), ("Paris", "France"), ("Cairo", "Egypt"), ("Lima", "Peru"),
          ("Oslo", "Norway"), ("Rome", "Italy"), ("Quito", "Ecuador"), ("Kyiv", "Ukraine"), ("Hanoi", "Vietnam"),
          ("Osaka", "Japan"), ("Kano", "Nigeria")]

# A relation no code of the project names: airport code -> the city it serves.
SERVES = """\
name: serves
description: The city an airport (IATA code) serves.
subject: airport
answer: city
context: "The airport {subject} serves the city of {object}."
families:
  code_first:
    split: train
    layout: completion
    templates:
      - "The airport code {subject} belongs to the city of"
      - "Flights to {subject} land in the city of"
  chat_wh:
    split: train
    layout: chat
    templates:
      - "Which city does the airport {subject} serve?"
  record:
    split: test
    layout: completion
    templates:
      - "Airport: {subject}\\nCity served:"
"""
AIRPORTS = [("NRT", "Tokyo"), ("LOS", "Lagos"), ("CDG", "Paris"), ("CAI", "Cairo"), ("LIM", "Lima"), ("OSL", "Oslo"),
            ("FCO", "Rome"), ("UIO", "Quito"), ("KBP", "Kyiv"), ("HAN", "Hanoi")]


@pytest.fixture
def serves_yaml(tmp_path):
    path = tmp_path / "relations" / "serves.yaml"
    path.parent.mkdir()
    path.write_text(SERVES)
    return path


@pytest.fixture
def geo_store(tmp_path):
    from symbolic_ram import KnowledgeStore, StoreConfig, ingest_facts

    with KnowledgeStore(tmp_path / "store", StoreConfig(embedder="hash", index="numpy")) as s:
        ingest_facts(s, [(c, "country", o) for c, o in CITIES] + [("Japan", "capital", "Tokyo")]
                     + [(a, "serves", c) for a, c in AIRPORTS], source="test")
    return tmp_path / "store"


def test_examples_use_the_loop_layout_and_train_templates_only(geo_store):
    from symbolic_ram import KnowledgeStore

    from bridge.prompts import CompletionFormat
    from bridge.tools import make_bridge_tools
    from bridge.toolsft import make_examples, sample_facts

    with KnowledgeStore(geo_store, create=False) as store:
        facts = sample_facts(store, ["country"], 50, {"kano"}, seed=0)
        assert len(facts) == len(CITIES) - 1 and "Kano" not in {f.subject for f in facts}
        tools = {t.name: t for t in make_bridge_tools(store)}
        calls, answers, owners = make_examples([Fact("Tokyo", "country", "Japan")], CompletionFormat(), tools, None)
    country = load_relation("country")
    train = country.prompts("Tokyo", "train")
    assert [p for p, _ in calls] == train and owners == [Fact("Tokyo", "country", "Japan")] * len(train)
    assert {t.layout for t in country.select("train")} == {"completion", "chat"}  # both layouts are used
    held_out = set(country.prompts("Tokyo", "validation") + country.prompts("Tokyo", "test"))
    assert not held_out & {p for p, _ in calls}
    assert all(t == " " + render_lookup("Tokyo", "country") for _, t in calls)
    prompt, target = answers[0]
    assert target == " Japan." and RESULT_OPEN in prompt and prompt.endswith("\nTokyo is a city in Japan. " + train[0])


def test_chains_from_an_invented_relation_and_the_graph(geo_store, serves_yaml):
    from symbolic_ram import KnowledgeStore

    from bridge.prompts import CompletionFormat
    from bridge.tools import make_bridge_tools
    from bridge.toolsft import ToolSFTConfig, make_chain_examples, sample_chains

    cfg = ToolSFTConfig(store=str(geo_store), relations=f"{serves_yaml},country")
    assert [r.name for r in cfg.relation_list()] == ["serves", "country"]
    with KnowledgeStore(geo_store, create=False) as store:
        chains = sample_chains(store, ["serves", "country"], 50, set(), seed=0)
        assert len(chains) == len(AIRPORTS)  # every airport's city has a country
        assert all(a.relation == "serves" and b.relation == "country" and a.object == b.subject for a, b in chains)
        tools = {t.name: t for t in make_bridge_tools(store)}
        first, second = next((a, b) for a, b in chains if a.subject == "LOS")
        pairs, owners = make_chain_examples([(first, second)], CompletionFormat(), tools, None)
    questions = load_relation("country").prompts("the city of LOS", "train")
    assert len(pairs) == 3 * len(questions) and owners == [(first, second)] * len(pairs)
    (p1, t1), (p2, t2), (p3, t3) = pairs[:3]
    assert p1 == questions[0] and t1 == " " + render_lookup("LOS", "serves")
    assert t2 == " " + render_lookup("Lagos", "country") and "The airport LOS serves the city of Lagos." in p2
    assert t3 == " Nigeria." and "Lagos is a city in Nigeria." in p3 and p3.count(RESULT_OPEN) == 2


def test_toolsft_trains_on_an_invented_relation_and_saves(tmp_path, tiny_qwen2_dir, geo_store, serves_yaml):
    from transformers import AutoModelForCausalLM

    from bridge.toolsft import main
    from neuralcpu.facts import FactSets

    FactSets([Fact("Osaka", "country", "Japan")], []).save(tmp_path / "facts.json")
    out = tmp_path / "sft"
    argv = ["--model", str(tiny_qwen2_dir), "--store", str(geo_store), "--out", str(out),
            "--exclude", str(tmp_path / "facts.json"), "--relations", f"{serves_yaml},country", "--n-facts", "8",
            "--eval-facts", "2", "--chains", "3", "--steps", "8", "--batch-size", "6", "--lr", "3e-3",
            "--trainable", "deep", "--max-len", "384"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["relations"] == ["serves", "country"] and summary["train_chains"] == 3
    assert summary["after"]["fixed_loss"] < summary["before"]["fixed_loss"]
    held = summary["after"]["held_out"]
    assert summary["held_out_facts"] == 2 and 0 <= held["call_rate"] <= 1 and held["chain_n"] >= 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 8
    assert json.loads((out / "toolsft_config.json").read_text())["steps"] == 8
    # The files the main job's pipeline reads to skip a finished stage and restart a killed one (issue #33:
    # it looked for a file toolsft never wrote, so a killed stage could never resume).
    from benchmarks import pipeline
    assert (out / pipeline.TOOLSFT_FIRST).is_file() and pipeline.finished_json(out / pipeline.TOOLSFT_DONE)
    trained = {f["subject"] for f in json.loads((out / "train_facts.json").read_text())}
    assert len(trained) == 8 and "Osaka" not in trained  # the RLCP run's facts are held out

    before = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    first = 4 - 4 // 3  # "deep": the last third of the 4 blocks trains
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith(f"model.layers.{first}.") for k in changed)
    assert not any(k.startswith(("model.embed_tokens", "model.layers.0.", "model.layers.1.", "model.layers.2."))
                   for k in changed), sorted(changed)[:5]


def test_config_errors_are_listed_together(tmp_path, capsys):
    from bridge.toolsft import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--store", str(tmp_path), "--relations", "color", "--steps", "0", "--trainable", "most"])
    err = capsys.readouterr().err
    for problem in ("no knowledge store", "no relation file for 'color'", "steps must be >= 1", "trainable 'most'"):
        assert problem in err


def test_neuralcpu_never_imports_bridge():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("neuralcpu", "symbolic_ram", "common"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] == "bridge"]
    assert offenders == []


def test_relations_take_turns_in_the_sample(geo_store):
    from symbolic_ram import KnowledgeStore

    from bridge.toolsft import sample_facts

    with KnowledgeStore(geo_store, create=False) as store:
        facts = sample_facts(store, ["country", "capital"], 4, set(), seed=0)
    assert [f.relation for f in facts][:2] == ["country", "capital"]  # capital's only fact is not crowded out
    assert sum(f.relation == "capital" for f in facts) == 1 and len(facts) == 4
