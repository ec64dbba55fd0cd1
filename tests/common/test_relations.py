"""Relation files: every shipped file parses, splits are disjoint by family, bad files give file:line."""

import pytest

from common.relations import RelationFileError, load_relation, parse_relation, shipped_relations

GOOD = """\
name: iata
description: The IATA code of an airport.
context: "The IATA code of {subject} is {object}."
families:
  first:
    split: train
    templates: ["{subject} has the IATA code"]
  asked:
    split: test
    layout: chat
    templates: ["What is the IATA code of {subject}?"]
"""


@pytest.mark.parametrize("name", shipped_relations())
def test_every_shipped_relation_parses_with_all_three_splits_and_both_layouts(name):
    rel = load_relation(name)
    assert rel.name == name
    for split in ("train", "validation", "test"):
        assert rel.select(split), f"{name} has no {split} templates"
    assert rel.select("train", "chat") and rel.select("train", "completion")
    assert rel.select("test", "chat") and rel.select("test", "completion")


@pytest.mark.parametrize("name", shipped_relations())
def test_splits_are_disjoint_by_family_and_by_text(name):
    rel = load_relation(name)
    fams = {s: set(rel.families(s)) for s in ("train", "validation", "test")}
    assert not (fams["train"] & fams["validation"]) and not (fams["train"] & fams["test"])
    assert not (fams["validation"] & fams["test"])
    texts = {s: {t.text.casefold() for t in rel.select(s)} for s in fams}
    assert not (texts["train"] & texts["test"]) and not (texts["train"] & texts["validation"])


def test_country_and_capital_have_at_least_40_and_30_templates():
    assert len(load_relation("country").templates) >= 40
    assert len(load_relation("capital").templates) >= 30


def test_a_good_file_renders_prompts_and_context():
    rel = parse_relation(GOOD, "iata.yaml")
    assert rel.prompts("Heathrow", "train") == ["Heathrow has the IATA code"]
    assert rel.select("test")[0].layout == "chat"
    assert rel.render_context("Heathrow", "LHR") == "The IATA code of Heathrow is LHR."
    assert rel.question_words() == ("iata",)  # no `words`: the name alone
    worded = parse_relation(GOOD.replace("families:", "words: [airport code, three-letter code]\nfamilies:"), "iata.yaml")
    assert worded.question_words() == ("iata", "airport code", "three-letter code")


@pytest.mark.parametrize("text, where", [
    (GOOD.replace("split: test", "split: holdout"), "iata.yaml:9: field 'split'"),
    (GOOD.replace("layout: chat", "layout: voice"), "iata.yaml:10: field 'layout'"),
    (GOOD.replace('context: "The IATA code of {subject} is {object}."', 'context: "no slots"'), "iata.yaml:3: field 'context'"),
    (GOOD.replace('["{subject} has the IATA code"]', '["no subject here"]'), "iata.yaml:7: field 'templates'"),
    (GOOD.replace("name: iata\n", ""), "field 'name'"),
    (GOOD.replace("families:", "families: [\n"), "iata.yaml:"),
    (GOOD.replace("split: train", "split: test"), "no family has split: train"),
    (GOOD.replace("families:", "words: money\nfamilies:"), "iata.yaml:4: field 'words'"),
])
def test_bad_files_name_file_line_and_field(text, where):
    with pytest.raises(RelationFileError, match=where.replace("(", r"\(").replace("[", r"\[")):
        parse_relation(text, "iata.yaml")


def test_unknown_relation_name_lists_the_shipped_ones():
    with pytest.raises(KeyError, match="country"):
        load_relation("no_such_relation")


def test_an_unknown_split_is_an_error_not_an_empty_list():
    with pytest.raises(ValueError, match="eval"):
        load_relation("country").select("eval")
