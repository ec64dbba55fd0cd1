"""Scoring for the benchmarks: GSM8K answer extraction, fact exact-match, Wilson CIs, and the CoT rate.

GSM8K answer extraction (`extract_answer`)
    The number right after the first `####` (white space between them allowed), else None: an output
    without the marker, or with no number right after it, has no answer. There is no fallback to the
    last number in the text, which would score "9 * 2 = 18 eggs" as an answer of 18.
    Numbers may carry a sign, a `$`, thousands commas ("1,234") and decimals; a trailing period is not
    part of the number. Answers compare numerically ("18.00" == "18").

Chain of thought (`cot_steps`, `is_cot`)
    The *pre-answer text* of an output is everything before its first `####`; without `####`, it is
    everything before the last number (the extracted answer). It is split into segments at newlines
    and at sentence ends (`.`, `!`, `?` followed by whitespace; "3.5" is not a sentence end).
    A segment is a *reasoning step* if it contains
      (a) an arithmetic expression: a number, an operator (+ - * / x × ÷ ^), a number ("16 - 3", "9*2"), or
      (b) an equation result: `=` followed by a number ("= 9", "=<<...>>"), or
      (c) a reasoning connective (so, therefore, thus, hence, then, because, since, which means,
          that means, in total, altogether) together with at least one number.
    An output is chain-of-thought iff it has >= 2 reasoning steps (MIN_COT_STEPS). The CoT rate of a
    system is the fraction of its GSM8K outputs that are chain-of-thought. "#### 18" alone, "The
    answer is 18." or a single "16-3-4=9" line are direct answers; two worked lines are CoT.

Confidence intervals are Wilson score intervals at 95% (z = 1.959964): unlike the normal
approximation they stay inside [0, 1] and are sensible at 0/n and n/n, which small subsets hit.
"""

from __future__ import annotations

import math
import re

from common.facts import ANSWER_WINDOW, Fact, matches_answer
# GSM8K answers are read in neuralcpu.data (RLCP reads them in its runs too); the names stay importable here.
from neuralcpu.data import NUMBER, extract_answer, gold_answer, normalize_number  # noqa: F401

Z95 = 1.959963984540054
MIN_COT_STEPS = 2

_NUMBER_RE = re.compile(NUMBER)
_ANSWER_MARK = "####"
_ARITH_RE = re.compile(r"\d\s*[-+*/x×÷^]\s*\(?\s*\$?\s*\d")
_EQUALS_RE = re.compile(r"=\s*(?:<<[^>]*>>)?\s*\$?\s*-?\d")
_CONNECTIVE_RE = re.compile(
    r"\b(so|therefore|thus|hence|then|because|since|which means|that means|in total|altogether)\b", re.I)
_SEGMENT_SPLIT_RE = re.compile(r"\n+|(?<=[.!?])\s+")


# ----------------------------------------------------------------------------- GSM8K answers ----------

# ----------------------------------------------------------------------------- chain of thought -------

def pre_answer_text(output: str) -> str:
    """The text before the final answer: before the first `####`, else before the last number."""
    if _ANSWER_MARK in output:
        return output.split(_ANSWER_MARK, 1)[0]
    last = None
    for last in _NUMBER_RE.finditer(output):
        pass
    return output[: last.start()] if last else output


def is_step(segment: str) -> bool:
    """Whether one segment is a reasoning step (arithmetic, an `= number` result, or a connective with a number)."""
    if _ARITH_RE.search(segment) or _EQUALS_RE.search(segment):
        return True
    return bool(_CONNECTIVE_RE.search(segment) and re.search(r"\d", segment))


def cot_steps(output: str) -> int:
    """Number of reasoning-step segments in the pre-answer text (see the module docstring)."""
    return sum(is_step(s) for s in _SEGMENT_SPLIT_RE.split(pre_answer_text(output)) if s.strip())


def is_cot(output: str, min_steps: int = MIN_COT_STEPS) -> bool:
    """Whether `output` is chain-of-thought: at least `min_steps` reasoning steps before the answer."""
    return cot_steps(output) >= min_steps


# ----------------------------------------------------------------------------- facts and statistics ---

def fact_correct(completion: str, fact: Fact, window: int = ANSWER_WINDOW) -> bool:
    """Exact match for fact QA: an accepted answer of `fact` (case/diacritics folded) in the first `window` characters."""
    return matches_answer(completion, fact, window)


def wilson_ci(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion; (0.0, 1.0) when n == 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, center - half)  # exact bounds at 0/n and n/n (no rounding drift)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return lo, hi


def proportion(successes: int, n: int) -> dict:
    """{"k", "n", "acc", "ci95"}: a proportion with its Wilson 95% interval (acc is None when n == 0)."""
    lo, hi = wilson_ci(successes, n)
    return {"k": successes, "n": n, "acc": successes / n if n else None, "ci95": [lo, hi]}


def mean(values) -> float | None:
    """Arithmetic mean, or None for no values."""
    values = list(values)
    return sum(values) / len(values) if values else None
