"""toolsft on the tiny random Qwen2: the examples are the loop's layout, the loss falls, only trainable weights move."""

from __future__ import annotations

import json

import pytest
import torch

from common.facts import Fact
from neuralcpu.facts import TEMPLATES, FactSets
from common.toolcall import RESULT_OPEN, render_lookup

CITIES = [("Tokyo", "Japan"), ("Lagos", "Nigeria"), ("Paris", "France"), ("Cairo", "Egypt"), ("Lima", "Peru"),
          ("Oslo", "Norway"), ("Rome", "Italy"), ("Quito", "Ecuador"), ("Kyiv", "Ukraine"), ("Hanoi", "Vietnam"),
          ("Osaka", "Japan"), ("Kano", "Nigeria")]


@pytest.fixture
def geo_store(tmp_path):
    from symbolic_ram import KnowledgeStore, StoreConfig, ingest_facts

    with KnowledgeStore(tmp_path / "store", StoreConfig(embedder="hash", index="numpy")) as s:
        ingest_facts(s, [(c, "country", o) for c, o in CITIES] + [("Japan", "capital", "Tokyo")], source="test")
    return tmp_path / "store"


def test_examples_use_the_loop_layout_and_training_templates(geo_store):
    from symbolic_ram import KnowledgeStore, make_tools

    from bridge.prompts import CompletionFormat
    from neuralcpu.toolsft import make_examples, sample_facts

    with KnowledgeStore(geo_store, create=False) as store:
        facts = sample_facts(store, ["country"], 50, {"kano"}, seed=0)
        assert len(facts) == len(CITIES) - 1 and "Kano" not in {f.subject for f in facts}
        tools = {t.name: t for t in make_tools(store)}
        calls, answers, owners = make_examples([Fact("Tokyo", "country", "Japan")], CompletionFormat(), tools, None)
    train = [t.format(subject="Tokyo") for t in TEMPLATES["country"]["train"]]
    assert [p for p, _ in calls] == train and owners == [Fact("Tokyo", "country", "Japan")] * len(train)
    assert all(t == " " + render_lookup("Tokyo", "country") for _, t in calls)
    prompt, target = answers[0]
    assert target == " Japan." and RESULT_OPEN in prompt and prompt.endswith("\nTokyo is a city in Japan. " + train[0])


def test_toolsft_trains_and_saves(tmp_path, tiny_qwen2_dir, geo_store):
    from transformers import AutoModelForCausalLM

    from neuralcpu.__main__ import main

    FactSets([Fact("Osaka", "country", "Japan")], []).save(tmp_path / "facts.json")
    out = tmp_path / "sft"
    argv = ["toolsft", "--model", str(tiny_qwen2_dir), "--store", str(geo_store), "--out", str(out),
            "--exclude", str(tmp_path / "facts.json"), "--relations", "country", "--n-facts", "8", "--eval-facts", "2",
            "--steps", "8", "--batch-size", "4", "--lr", "3e-3", "--trainable", "deep", "--max-len", "320"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["after"]["fixed_loss"] < summary["before"]["fixed_loss"]
    assert summary["held_out_facts"] == 2 and 0 <= summary["after"]["held_out"]["call_rate"] <= 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 8
    assert json.loads((out / "toolsft_config.json").read_text())["steps"] == 8
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
    from neuralcpu.toolsft import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--store", str(tmp_path), "--relations", "color", "--steps", "0", "--trainable", "most"])
    err = capsys.readouterr().err
    for problem in ("no knowledge store", "have no templates", "steps must be >= 1", "trainable 'most'"):
        assert problem in err
