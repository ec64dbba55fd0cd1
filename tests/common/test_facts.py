"""Answer matching: whole names on word boundaries, never the tail of another name."""

import pytest

from common.facts import Fact, find_answer, matches_answer, normalize_name


def fact(obj, *aliases):
    return Fact("x", "country", obj, tuple(aliases))


@pytest.mark.parametrize("text, f", [
    (" South America.", fact("United States", "America")),
    (" North Korea.", fact("South Korea", "Korea")),
    (" Nigeria, in West Africa", fact("Niger")),
    (" the Republic of the Congo", fact("Democratic Republic of the Congo", "DR Congo", "DRC")),
    (" the Democratic Republic of the Congo", fact("Republic of the Congo")),  # the other Congo, both ways
    (" Niger", fact("Nigeria")),
])
def test_false_matches_of_the_old_substring_test_are_refused(text, f):
    assert not matches_answer(text, f)


@pytest.mark.parametrize("text, f", [
    (" Niger.", fact("Niger")),
    (" the Democratic Republic of the Congo", fact("Democratic Republic of the Congo")),
    (" America", fact("United States", "America")),
    (" Korea, of course", fact("South Korea", "Korea")),
    (" In China.", fact("China")),
    ("Shanghai is located in China.", fact("China")),
    (" são paulo", fact("São Paulo")),
    (" SAO PAULO", fact("São Paulo")),
])
def test_right_answers_match(text, f):
    assert matches_answer(text, f)


def test_window_limits_what_is_read():
    assert not matches_answer("x" * 50 + " China", fact("China"), window=40)
    assert matches_answer("x" * 50 + " China", fact("China"), window=80)


def test_find_answer_returns_the_earliest_alias_named():
    assert find_answer("It is the UK, not the United States", ["United States", "UK"]) == "UK"


def test_normalize_name_folds_case_diacritics_and_spaces():
    assert normalize_name("  São   Paulo ") == normalize_name("sao paulo") == "sao paulo"
