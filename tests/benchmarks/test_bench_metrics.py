"""Scoring functions of the benchmark: GSM8K answer extraction, the CoT measure, Wilson intervals."""

from __future__ import annotations

import pytest

from benchmarks import metrics
from benchmarks.metrics import cot_steps, extract_answer, gold_answer, is_cot, wilson_ci
from common.facts import Fact


@pytest.mark.parametrize("text, expected", [
    ("She makes 9 * 2 = $18 every day.\n#### 18", "18"),
    ("#### 70,000", "70000"),
    ("#### $1,234.50.", "1234.5"),
    ("####18", "18"),
    ("#### $18.00", "18"),
    ("16 - 3 = 13 ... #### 13\nQuestion: next one has 5", "13"),  # first number after ####
    ("#### -5 degrees", "-5"),
    ("#### 3.5 hours", "3.5"),
    ("#### 12,34 more", "12"),  # not a thousands comma
    ("#### " + "9" * 40, "9" * 40),  # longer than Decimal's 28-digit context: no InvalidOperation
    ("#### 1e40", "1"),  # "e40" is not part of a number here
    # Issue #33: no fallback to the last number anywhere, with no marker or a marker without a number.
    ("The answer is 42.", None),
    ("So the total is 16-3-4=9", None),
    ("#### eighteen. So 18", None),
    ("####", None),
    ("no digits here", None),
])
def test_extract_answer_reads_only_the_number_right_after_the_marker(text, expected):
    assert extract_answer(text) == expected


def test_gold_answer():
    assert gold_answer("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\n#### 1,800") == "1800"
    with pytest.raises(ValueError, match="no '####'"):
        gold_answer("no final line 5")
    with pytest.raises(ValueError, match="no number after"):
        gold_answer("16 - 3 = 13\n#### thirteen")


# Hand-made outputs and their CoT verdicts (the definition is in benchmarks/metrics.py).
COT = [
    ("#### 18", 0, False),
    ("The answer is 18.", 0, False),
    ("16 - 3 - 4 = 9, 9 * 2 = 18\n#### 18", 1, False),  # one line with two operations = one step
    ("Janet has 16 - 3 - 4 = 9 eggs left.\nShe makes 9 * 2 = $18.\n#### 18", 2, True),
    ("She eats 3 and bakes 4, so 9 remain. Each sells for $2, so she makes $18.", 2, True),  # connectives + numbers
    ("First, 3 * 4 = 12. Then 12 + 5 = 17. So the answer is 17.", 2, True),  # "So the answer is" has no number before 17
    ("He ran 3.5 miles. The answer is 7", 0, False),  # a decimal is not a sentence end; no step
    ("Step 1: cost = $80,000 + $50,000 = $130,000\nStep 2: value = 80,000 * 2.5 = 200,000\n"
     "Step 3: profit = 200,000 - 130,000 = 70,000\n#### 70000", 3, True),
    ("Josh buys a house. It is nice. He is happy. 70000", 0, False),  # prose without computation
]


@pytest.mark.parametrize("text, steps, cot", COT)
def test_cot_measure(text, steps, cot):
    assert cot_steps(text) == steps
    assert is_cot(text) is cot


def test_cot_ignores_text_after_the_answer_mark():
    tail = "\nQuestion: 1 + 1 = 2. 2 + 2 = 4. 3 + 3 = 6."
    assert cot_steps("#### 5" + tail) == 0


def test_wilson_known_values():
    lo, hi = wilson_ci(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_ci(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-4)
    lo, hi = wilson_ci(5, 40)  # 12.5%
    assert (lo, hi) == (pytest.approx(0.05459, abs=1e-4), pytest.approx(0.26111, abs=1e-4))
    lo, hi = wilson_ci(50, 100)
    assert (lo, hi) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    assert wilson_ci(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_ci(5, 3)


def test_wilson_contains_estimate_and_shrinks():
    for k, n in [(1, 7), (3, 30), (30, 300)]:
        lo, hi = wilson_ci(k, n)
        assert lo < k / n < hi
    width = lambda k, n: wilson_ci(k, n)[1] - wilson_ci(k, n)[0]
    assert width(3, 30) > width(30, 300) > width(300, 3000)


def test_proportion_and_fact_match():
    p = metrics.proportion(3, 4)
    assert p["acc"] == 0.75 and p["k"] == 3 and p["n"] == 4 and p["ci95"][0] < 0.75 < p["ci95"][1]
    assert metrics.proportion(0, 0)["acc"] is None
    fact = Fact("São Paulo", "country", "Brazil")
    assert metrics.fact_correct(" Brazil, in South America", fact)
    assert not metrics.fact_correct(" a large country in South America, which is Brazil", fact, window=20)
    assert metrics.fact_correct(" a large country in South America, which is Brazil", fact, window=80)
