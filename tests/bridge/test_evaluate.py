"""bridge.evaluate: the metrics from known loop outcomes (scripted model), and the CLI's argument checks."""

from __future__ import annotations

import pytest
from fakes import LookupModel

from bridge import evaluate
from bridge.loop import Bridge
from bridge.prompts import CompletionFormat
from common.facts import Fact
from neuralcpu.facts import prompts_for


# The scripted model answers one exact phrasing: this test's relation puts it (and a second phrasing the
# fake does not answer) in the test split.
COUNTRY = """\
name: country
context: "{subject} is a city in {object}."
families:
  train_family:
    split: train
    templates: ["{subject} is a city in the country of"]
  test_family:
    split: test
    templates: ["The city of {subject} is in the country of", "{subject} is a large city in the country of"]
"""


@pytest.fixture(autouse=True)
def two_test_templates(monkeypatch):
    from common import relations

    monkeypatch.setitem(relations._REGISTERED, "country", relations.parse_relation(COUNTRY, "country.yaml"))


def test_metrics_with_a_model_that_always_looks_up(tools):
    facts = [Fact("Tokyo", "country", "Japan"), Fact("Lagos", "country", "Nigeria"), Fact("Atlantis", "country", "Greece")]
    records = evaluate.run_eval(Bridge(LookupModel(), CompletionFormat(), tools), facts)
    n = sum(len(prompts_for(f, "test")) for f in facts)
    assert len(records) == 3 * n and {r.mode for r in records} == {"closed", "just-rag", "tool"}
    assert all("The city of" in r.prompt or "large city" in r.prompt for r in records)  # eval templates only
    s = evaluate.summarize(records)
    # The fake answers only "The city of X is in the country of" (1 of the 2 eval templates) and only from
    # context; Atlantis is not in the store, so its lookup returns nothing and the fake keeps asking.
    per_fact = 1 / len(prompts_for(facts[0], "test"))
    assert s["closed_acc"] == 0.0
    assert s["tool_acc"] == pytest.approx(2 * per_fact / 3)
    assert s["tool_call_rate"] == pytest.approx(3 * per_fact / 3)
    assert s["tool_stop_reasons"]["repeated_call"] == 1  # Atlantis: the same lookup again, cut off
    assert s["answered_without_lookup"] == pytest.approx(3 * (1 - per_fact) / 3)  # "I don't know." on the other template
    assert s["just_rag_acc"] == evaluate.accuracy(records, "just-rag") and 0 < s["just_rag_acc"] <= s["tool_acc"]
    assert evaluate.tool_call_rate([]) is None


def test_cli_checks_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--model", str(tmp_path), "--modes", "tool,oracle"])
    err = capsys.readouterr().err
    assert "unknown mode 'oracle'" in err and "no such file" in err and "no knowledge store" in err


def test_a_call_counts_only_with_the_right_subject_and_relation(tools):
    from fakes import stream

    from common.toolcall import RESULT_OPEN, render_lookup

    fact = Fact("Tokyo", "country", "Japan")
    n = len(prompts_for(fact, "test"))
    cases = ((render_lookup("Tokyo", "country"), True, "right"), (render_lookup("Tokyo", "capital"), False, "wrong_relation"),
             (render_lookup("Tokio", "country"), False, "wrong_subject"),
             (render_lookup("Tokyo is a city", "capital"), False, "wrong_both"),
             ("<tool_call>{not json</tool_call>", False, "malformed"), ("I think Japan.", False, "no_call"))
    for call, counted, verdict in cases:
        def model(prompt, *, stop=None, on_text=None, add_special_tokens=True, call=call):
            return stream(" Japan." if RESULT_OPEN in prompt else " " + call, stop, on_text)

        records = evaluate.run_eval(Bridge(model, CompletionFormat(), tools), [fact], modes=("tool",))
        assert [r.called for r in records] == [counted] * n, call
        assert [evaluate.call_verdict(r) for r in records] == [verdict] * n, call
        assert evaluate.summarize(records)["tool_call_verdicts"][verdict] == n


def test_split_and_layouts_choose_the_templates_asked(tools, monkeypatch):
    from common import relations

    rel = relations.parse_relation(COUNTRY.replace('''  test_family:''', '''  val_family:
    split: validation
    templates: ["Which country is {subject} in, do you know? It is"]
  chat_family:
    split: test
    layout: chat
    templates: ["Which country is {subject} in?"]
  test_family:'''), "country.yaml")
    monkeypatch.setitem(relations._REGISTERED, "country", rel)
    bridge = Bridge(LookupModel(), CompletionFormat(), tools)
    fact = Fact("Tokyo", "country", "Japan")
    asked = lambda **kw: [(r.prompt, r.family) for r in evaluate.run_eval(bridge, [fact], modes=("closed",), **kw)]
    assert asked() == [("The city of Tokyo is in the country of", "test_family"),
                       ("Tokyo is a large city in the country of", "test_family")]  # completion only, as before
    assert asked(layouts=("completion", "chat"))[0] == ("Which country is Tokyo in?", "chat_family")
    assert asked(layouts=("chat",)) == [("Which country is Tokyo in?", "chat_family")]
    assert asked(split="validation") == [("Which country is Tokyo in, do you know? It is", "val_family")]


def test_cli_refuses_an_unknown_layout(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--model", str(tmp_path), "--layouts", "completion,voice"])
    assert "unknown layout 'voice'" in capsys.readouterr().err
