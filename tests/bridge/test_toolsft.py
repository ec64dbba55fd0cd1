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
    assert summary["held_out_file_facts"] == len(AIRPORTS) + len(CITIES) - 1 - 8  # all but Osaka and the trained
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


def test_a_toolsft_run_dir_is_all_the_bridge_needs(tmp_path, tiny_qwen2_dir, geo_store, serves_yaml, monkeypatch):
    """The run dir carries its relation files and held-out facts: with the relation forgotten by the process
    (as in a fresh `bridge.evaluate` or `bridge.chat`), evaluate and the issue-31 reading still find it
    there, the store comes from the run's config, and the held-out facts are facts it never trained on."""
    from bridge import evaluate
    from bridge.chat import register_run_relations, resolve_store_arg
    from bridge.toolsft import main
    from common import relations

    out = tmp_path / "sft"
    keep = tmp_path / "keep.jsonl"
    keep.write_text("".join(json.dumps({"subject": c, "relation": "country", "object": o}) + "\n" for c, o in CITIES[3:]))
    assert main(["--model", str(tiny_qwen2_dir), "--store", str(geo_store), "--out", str(out), "--relations",
                 str(serves_yaml), "--n-facts", "6", "--eval-facts", "3", "--steps", "2", "--batch-size", "4",
                 "--trainable", "deep", "--augment", "0.5", "--keep", str(keep), "--keep-prompts", "5",
                 "--copy-subjects", "3"]) == 0
    assert json.loads((out / "summary.json").read_text())["keep_pairs"] >= 1
    assert json.loads((out / "summary.json").read_text())["copy_pairs"] == 3
    assert (out / "relations" / "serves.yaml").read_text() == serves_yaml.read_text()
    held = [json.loads(line) for line in (out / "held_out_facts.jsonl").read_text().splitlines()]
    trained = {f["subject"] for f in json.loads((out / "train_facts.json").read_text())}
    assert len(held) == len(AIRPORTS) - 6 and not {h["subject"] for h in held} & trained  # every fact not trained on
    assert {h["relation_file"] for h in held} == {"relations/serves.yaml"}
    assert {(h["subject"], h["object"]) for h in held} <= set(AIRPORTS)

    monkeypatch.setattr(relations, "_REGISTERED", {})  # a fresh process: no code knows "serves"
    assert resolve_store_arg(str(out), None) == str(geo_store) and resolve_store_arg(str(out), "x") == "x"
    assert register_run_relations(str(out)) == ["serves"]
    assert register_run_relations(str(tiny_qwen2_dir)) == []
    assert relations.relation_named("serves").render_context("NRT", "Tokyo") == "The airport NRT serves the city of Tokyo."

    monkeypatch.setattr(relations, "_REGISTERED", {})
    report = tmp_path / "eval.json"
    assert evaluate.main(["--model", str(out), "--facts", str(out / "held_out_facts.jsonl"), "--modes", "tool",
                          "--layouts", "completion,chat", "--split", "test", "--max-new-tokens", "8",
                          "--out", str(report)]) == 0
    summary = json.loads(report.read_text())["summary"]
    assert summary["store"] == str(geo_store) and summary["layouts"] == ["completion", "chat"]
    assert summary["questions_per_mode"] == len(held) * len(load_relation(str(serves_yaml)).select("test"))

    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("new_kb", Path(__file__).resolve().parents[2] / "benchmarks" / "new_kb.py")
    new_kb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(new_kb)
    unrelated = tmp_path / "unrelated.jsonl"
    unrelated.write_text("".join(json.dumps({"subject": c, "relation": "country", "object": o}) + "\n" for c, o in CITIES[:3]))
    monkeypatch.setattr(relations, "_REGISTERED", {})
    res_path = tmp_path / "new_kb.json"
    assert new_kb.main(["--run", str(out), "--unrelated", str(unrelated), "--split", "test", "--max-new-tokens", "8",
                        "--out", str(res_path)]) == 0
    res = json.loads(res_path.read_text())
    assert res["relations"] == ["serves"] and res["original"] == str(tiny_qwen2_dir)
    n_test = len(load_relation(str(serves_yaml)).select("test"))
    assert res["new_relation"]["right_lookups"]["n"] == len(held) * n_test and res["new_relation"]["by_family"]["record"]["layout"] == "completion"
    country_test = load_relation("country").select("test", "completion")  # the tiny tokenizer has no chat template
    assert res["unrelated"]["original"]["n"] == res["unrelated"]["after"]["n"] == 3 * len(country_test)
    wrong = res["new_relation"]["wrong_calls"]
    assert wrong["n"] == res["new_relation"]["right_lookups"]["n"] == sum(wrong["verdicts"].values())
    assert wrong["verdicts"]["right"] == res["new_relation"]["right_lookups"]["k"]
    assert set(res["targets"]) == {"right_lookups", "tool_acc", "unrelated_closed_book_ratio"}
    assert {"command", "commit", "machine", "seed"} <= set(res)
    assert res["toolsft_command"].startswith(f"python -m bridge.toolsft --model {tiny_qwen2_dir} ")
    assert " --copy-subjects 3 " in res["toolsft_command"] and " --augment 0.5 " in res["toolsft_command"]


def test_the_unrelated_ratio_resamples_facts_in_pairs():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("new_kb", Path(__file__).resolve().parents[2] / "benchmarks" / "new_kb.py")
    new_kb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(new_kb)
    row = lambda s, ok: {"subject": s, "relation": "r", "correct": ok}
    before = [row("a", True), row("a", True), row("b", True), row("b", False), row("c", False), row("c", False)]
    after = [row("a", True), row("a", False), row("b", True), row("b", False), row("c", False), row("c", True)]
    r = new_kb.paired_ratio(before, after, seed=0, reps=500)
    assert r["ratio"] == pytest.approx(1.0) and r["facts"] == 3
    json.dumps(r)  # plain floats: a numpy scalar once failed the results file at the very end of a run
    lo, hi = r["ci95"]
    assert lo < 1.0 < hi
    same = new_kb.paired_ratio(before, before, seed=0, reps=200)
    assert same["ci95"] == [1.0, 1.0]


def test_scoring_stops_a_call_row_only_at_its_whole_call(monkeypatch):
    """A call is longer than the answer window: a call row cut at the window would never count (a bug
    once read call rate 0.00 off a run whose loop lookups were right)."""
    from bridge import toolsft

    call = " " + render_lookup("The Democratic Republic of the Congo", "serves")
    answer = " Kinshasa." + " and more text" * 10

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size, stop_when):
        outs = []
        for i, p in enumerate(prompts):
            full, text = (answer if p.startswith("A") else call + " trailing"), ""
            for ch in full:  # one character a step: stop where stop_when first says so
                text += ch
                if stop_when(i, text):
                    break
            outs.append(text)
        return outs

    monkeypatch.setattr(toolsft, "greedy_generate", fake_generate)
    fact = Fact("The Democratic Republic of the Congo", "serves", "Kinshasa")
    model = torch.nn.Linear(1, 1)
    res = toolsft.score(model, None, [("Q", "")], [("A", "")], [fact], [("Q", ""), ("Q", ""), ("A", "")],
                        [(fact, fact)] * 3)
    assert res["call_rate"] == 1.0 and res["answer_acc"] == 1.0 and res["samples"][0] == call
    assert len(res["samples"][1]) == toolsft.ANSWER_CHARS
    assert res["chain_second_call_rate"] == 1.0 and res["chain_answer_acc"] == 1.0


def test_lead_ins_go_before_train_templates_only_when_asked(geo_store):
    from symbolic_ram import KnowledgeStore

    from bridge.prompts import CompletionFormat
    from bridge.tools import make_bridge_tools
    from bridge.toolsft import LEAD_INS, make_examples

    fact = Fact("Tokyo", "country", "Japan")
    train = load_relation("country").prompts("Tokyo", "train")
    with KnowledgeStore(geo_store, create=False) as store:
        tools = {t.name: t for t in make_bridge_tools(store)}
        plain, _, _ = make_examples([fact], CompletionFormat(), tools, None)
        led, answers, _ = make_examples([fact], CompletionFormat(), tools, None, augment=1.0, seed=3)
        half, _, _ = make_examples([fact], CompletionFormat(), tools, None, augment=0.5, seed=3)
    assert [p for p, _ in plain] == train
    assert all(p.endswith(q) and p[: -len(q)] in LEAD_INS for (p, _), q in zip(led, train))
    assert all(p.endswith(q) for (p, _), q in zip(answers, train))  # the answer step repeats the whole question
    assert 0 < sum(p != q for (p, _), q in zip(half, train)) < len(train)
    assert not any(name in " ".join(LEAD_INS) for name, _ in CITIES)  # lead-ins name nothing


def test_keep_pairs_are_the_starting_models_own_answers(tmp_path, tiny_qwen2_dir):
    from bridge.toolsft import load_keep_facts, make_keep_pairs
    from neuralcpu.generation import greedy_generate
    from neuralcpu.models import load_model

    keep = tmp_path / "keep.jsonl"
    keep.write_text("".join(json.dumps({"subject": c, "relation": r, "object": o}) + "\n"
                            for c, r, o in [("Tokyo", "country", "Japan"), ("Lagos", "country", "Nigeria"),
                                            ("Japan", "capital", "Tokyo"), ("NRT", "serves", "Tokyo")]))
    facts = load_keep_facts(str(keep), ["serves"], {"lagos"})
    assert [(f.subject, f.relation) for f in facts] == [("Tokyo", "country"), ("Japan", "capital")]
    model, tok = load_model(str(tiny_qwen2_dir))
    pairs = make_keep_pairs(model, tok, facts, 6, augment=0.0, seed=0)
    train = set(load_relation("country").prompts("Tokyo", "train", "completion")
                + load_relation("capital").prompts("Japan", "train", "completion"))
    assert 1 <= len(pairs) <= 6 and all(p in train for p, _ in pairs)  # no chat template: completion only
    prompt, target = pairs[0]
    own = greedy_generate(model, tok, [prompt], max_new_tokens=24)[0]
    assert own.startswith(target) and target.strip() and "\n" not in target


def test_copy_pairs_look_up_the_very_name_the_question_names(tmp_path, serves_yaml, monkeypatch):
    from bridge.prompts import CompletionFormat
    from bridge.toolsft import LEAD_INS, ToolSFTConfig, make_copy_pairs
    from common import relations

    monkeypatch.setitem(relations._REGISTERED, "serves", load_relation(str(serves_yaml)))
    names = [c for c, _ in CITIES]
    pairs = make_copy_pairs(CompletionFormat(), ["serves"], names, 5, augment=0.5, seed=0)
    assert len(pairs) == 5 and len({t for _, t in pairs}) == 5
    train = {n: load_relation(str(serves_yaml)).prompts(n, "train") for n in names}
    for prompt, target in pairs:
        name = next(n for n in names if target == " " + render_lookup(n, "serves"))
        assert any(prompt == q or (prompt.endswith(q) and prompt[: -len(q)] in LEAD_INS) for q in train[name])
    assert len(make_copy_pairs(CompletionFormat(), ["serves"], names, 50, 0.0, 0)) == len(names)  # each name once
    with pytest.raises(ValueError, match="copy_subjects needs --keep"):
        ToolSFTConfig(model="m", store=str(tmp_path), out=str(tmp_path / "o"), relations=str(serves_yaml),
                      copy_subjects=3).validate()
