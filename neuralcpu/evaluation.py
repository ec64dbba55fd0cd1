"""Closed-book evaluation of a fact set: greedy answers under one split's templates, in both layouts.

    from neuralcpu.evaluation import closed_book
    report = closed_book(model, tokenizer, facts.forget, split="test", expect_lookup=True)
    report["acc"], report["call_ok_rate"], report["by_family"]["passage"]["acc"]

A row is scored on the first `Prompt.window` characters of its answer (40 in the completion layout,
120 in chat, where answers come as sentences); a lookup call counts when it is well formed and names
the fact's subject (`common.toolcall.is_lookup`).
"""

from __future__ import annotations

from common.facts import Fact, matches_answer
from common.toolcall import CALL_CLOSE, CALL_OPEN, is_lookup, parse_calls
from neuralcpu.facts import Prompt, fact_prompts
from neuralcpu.generation import greedy_generate


def _settled(prompt: Prompt, text: str) -> bool:
    """Nothing left to score: no call started, and the answer window is full (or, completion, the line ended)."""
    if CALL_OPEN in text:
        return False
    return len(text) >= prompt.window or (prompt.layout == "completion" and "\n" in text.lstrip())


def rates(rows: list[tuple[Prompt, str]]) -> dict:
    """{n, correct, acc, lookup_rate, call_ok, call_ok_rate} of (prompt, answer) rows."""
    n = len(rows)
    right = sum(matches_answer(o, p.fact, p.window) for p, o in rows)
    calls = sum(CALL_OPEN in o for _, o in rows)
    ok = sum(any(is_lookup(c, p.fact.subject) for c in parse_calls(o)) for p, o in rows)
    return {"n": n, "correct": right, "acc": right / n if n else float("nan"),
            "lookup_rate": calls / n if n else float("nan"), "call_ok": ok, "call_ok_rate": ok / n if n else float("nan")}


def answer_rows(model, tokenizer, facts: list[Fact], split: str, expect_lookup: bool = False,
                layouts: tuple[str, ...] = ("completion", "chat"), max_new_tokens: int | None = None,
                batch_size: int = 64) -> list[tuple[Prompt, str]]:
    """(prompt, greedy answer) for every prompt of `facts` under the `split` templates, in `layouts`.

    `expect_lookup`: rows get room for a whole call (forget sets); otherwise a row stops at its right
    answer (locality sets). Score a row with `matches_answer(answer, prompt.fact, prompt.window)`.
    """
    prompts = [p for f in facts for p in fact_prompts(f, split, tokenizer, layouts)]
    if not prompts:
        return []
    if expect_lookup:
        stop = lambda i, text: _settled(prompts[i], text)
        tokens = max_new_tokens or 48  # room for a whole call
    else:
        stop = lambda i, text: matches_answer(text, prompts[i].fact, prompts[i].window) or _settled(prompts[i], text)
        tokens = max_new_tokens or 24
    outs = greedy_generate(model, tokenizer, [p.text for p in prompts], max_new_tokens=tokens, batch_size=batch_size,
                           stop_strings=[CALL_CLOSE], stop_when=stop)
    return list(zip(prompts, outs))


def closed_book(model, tokenizer, facts: list[Fact], split: str, expect_lookup: bool = False,
                layouts: tuple[str, ...] = ("completion", "chat"), max_new_tokens: int | None = None,
                batch_size: int = 64) -> dict:
    """Greedy closed-book answers to `facts` under the `split` templates of their relations.

    `expect_lookup`: rows get room for a whole call (forget sets); otherwise a row stops at its right
    answer (locality sets). Returns overall rates (acc, lookup_rate, call_ok_rate, n), the same per
    layout and per family, and a few samples and misses.
    """
    rows = answer_rows(model, tokenizer, facts, split, expect_lookup, layouts, max_new_tokens, batch_size)
    if not rows:
        return {"n": 0, "acc": float("nan"), "by_layout": {}, "by_family": {}, "by_relation": {}, "samples": [],
                "misses": []}
    report = rates(rows)
    report["by_layout"] = {lay: rates([r for r in rows if r[0].layout == lay]) for lay in dict.fromkeys(p.layout for p, _ in rows)}
    report["by_family"] = {fam: rates([r for r in rows if r[0].family == fam]) for fam in dict.fromkeys(p.family for p, _ in rows)}
    report["by_relation"] = {rel: rates([r for r in rows if r[0].fact.relation == rel])
                             for rel in dict.fromkeys(p.fact.relation for p, _ in rows)}
    report["samples"] = [f"{p.text[-80:]!r} -> {o!r}" for p, o in rows[:3]]
    report["misses"] = [f"{p.text[-80:]!r} -> {o!r}" for p, o in rows if not matches_answer(o, p.fact, p.window)][:4]
    return report


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95% by default)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def heldout_report(model, tokenizer, facts, split: str = "test") -> dict:
    """What a report reads (test split, both layouts): the forget set with its lookups, the untouched
    locality sets (same relation; other relations) with their false lookups, and the anchored locality
    set as a diagnostic. Each rate with its N and 95% Wilson CI."""
    was_training = model.training
    model.eval()
    sets = {"forget": closed_book(model, tokenizer, facts.forget, split, expect_lookup=True)}
    for name in ("untouched", "other", "locality"):
        facts_of = getattr(facts, name)
        if facts_of:
            sets["anchored" if name == "locality" else name] = closed_book(model, tokenizer, facts_of, split)
    model.train(was_training)
    for r in sets.values():
        for rows in [r, *r.get("by_layout", {}).values(), *r.get("by_family", {}).values(),
                     *r.get("by_relation", {}).values()]:
            if rows.get("n"):
                rows["acc_ci"] = wilson(rows["correct"], rows["n"])
                rows["call_ok_ci"] = wilson(rows["call_ok"], rows["n"])
    return {"split": split, **sets}
