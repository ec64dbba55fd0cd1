"""Fact QA suite: the forget set and the locality set of an RLCP run under held-out templates, and the
TOFU world-fact questions as general knowledge; exact-match accuracy with Wilson CIs and a floor.

Floor of a set: the accuracy of a model that knows none of the facts and always gives the same answer
per relation, the best such answer among the set's own objects (the most frequent object, in effect),
scored like every system (`constant_answer_floor`). The systems generate freely, so 1/(number of
objects) is not their chance level: that is the chance of a probe choosing among the objects (the
analysis and the relearning attack report it for their probes). A greedy answer can do worse than the
floor (it names no object at all) or better by guessing from the subject's name.

Prompts: forget/locality facts use the completion templates of neuralcpu.facts (the eval split) and
are correct if an accepted answer is in the first 40 characters of a 10-token greedy answer. TOFU
questions go through the chat template when the tokenizer has one, else "Question: ...\nAnswer:";
correct if the answer is in the first 80 characters of a 24-token greedy answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks import metrics
from neuralcpu.data import jsonl_rows
from common.facts import Fact
from neuralcpu.facts import FactSets, prompts_for
from common.toolcall import CALL_OPEN

# Where this project's shared data sits next to a checkout; elsewhere pass --tofu-path or use the hub.
SHARED_TOFU = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tofu" / "world_facts_perturbed.json"
TOFU_HUB = ("locuslab/TOFU", "world_facts_perturbed")
FACT_NEW_TOKENS, FACT_WINDOW = 10, 40  # as RLCP's own evaluation (neuralcpu.rlcp.evaluate)
TOFU_NEW_TOKENS, TOFU_WINDOW = 24, 80  # chat answers restate the question before the answer


def load_tofu(path: str | Path | None = None) -> list[dict]:
    """TOFU world facts {"question", "answer", "perturbed_answer"}: from `path`, the shared copy, or the hub.

    The file is JSON lines despite its .json name. Raises FileNotFoundError naming the missing path
    when neither the file nor the hub is available.
    """
    path = Path(path) if path else (SHARED_TOFU if SHARED_TOFU.is_file() else None)
    if path is None:
        try:
            from datasets import load_dataset

            ds = load_dataset(*TOFU_HUB, split="train")
        except Exception as e:  # offline, or the hub layout changed
            raise FileNotFoundError(f"TOFU world facts not found at {SHARED_TOFU} and the hub dataset "
                                    f"{'/'.join(TOFU_HUB)} failed ({type(e).__name__}: {e}); pass --tofu-path") from e
        return [{"question": r["question"], "answer": r["answer"], "perturbed_answer": list(r["perturbed_answer"])}
                for r in ds]
    if not path.is_file():
        raise FileNotFoundError(f"TOFU world facts file not found: {path}")
    return [{"question": row["question"], "answer": row["answer"], "perturbed_answer": list(row.get("perturbed_answer", []))}
            for _, row in jsonl_rows(path, ("question", "answer"))]


def tofu_format(tokenizer, requested: str = "auto") -> str:
    """"chat" when the tokenizer has a chat template, else "completion"; or `requested`.

    Completion prompts suit base models; SmolLM2-135M-Instruct ends 24 of the first 40 TOFU
    "Question: ...\nAnswer:" prompts at once with its end-of-turn token, and answers all 40 in chat form.
    """
    if requested not in ("auto", "chat", "completion"):
        raise ValueError(f"TOFU format {requested!r} not in ('auto', 'chat', 'completion')")
    if requested != "auto":
        return requested
    return "chat" if getattr(tokenizer, "chat_template", None) else "completion"


def tofu_prompt(question: str, tokenizer=None, fmt: str = "completion") -> str:
    """The prompt for a TOFU question: the chat template (fmt "chat") or "Question: ...\nAnswer:"."""
    if fmt == "chat":
        return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
    return f"Question: {question}\nAnswer:"


def split_locality(facts: FactSets) -> tuple[list[Fact], list[Fact]]:
    """(locality facts of a forget-set relation, locality facts of other relations): the untouched sets,
    which no loss reads, where the run has them; the anchored locality set only for runs made before
    there were untouched sets."""
    if facts.untouched or facts.other:
        return list(facts.untouched), list(facts.other)
    relations = {f.relation for f in facts.forget}
    return ([f for f in facts.locality if f.relation in relations],
            [f for f in facts.locality if f.relation not in relations])


def constant_answer_floor(facts: list[Fact], window: int) -> tuple[float, dict[str, str]]:
    """(accuracy, {relation: answer}) of the best fixed answer per relation, over `facts` (one per item).

    The candidates are the objects of the relation's facts; each is scored on every fact of that
    relation with `metrics.fact_correct`, as a system's output is, so aliases and word boundaries count
    the same way. A model that never knew the facts and always answered this reaches the floor.
    """
    if not facts:
        return 0.0, {}
    by_relation: dict[str, list[Fact]] = {}
    for f in facts:
        by_relation.setdefault(f.relation, []).append(f)
    right, answers = 0, {}
    for relation, group in by_relation.items():
        candidates = list(dict.fromkeys(f.object for f in group))
        scores = [sum(metrics.fact_correct(" " + c, f, window) for f in group) for c in candidates]
        best = max(range(len(candidates)), key=lambda i: scores[i])  # ties: the first object in set order
        right += scores[best]
        answers[relation] = candidates[best]
    return right / len(facts), answers


@dataclass
class FactSet:
    """One scored set: items (fact, prompt for closed systems, question for bridge), layout, budget, floor."""

    items: list[tuple[Fact, str, str]]
    floor: float  # accuracy of the best fixed answer per relation (`constant_answer_floor`)
    floor_answers: dict[str, str]
    layout: tuple[str, str]  # bridge prompt layout (kind, answer_end), see systems.bridge_answerer
    max_new_tokens: int
    window: int  # characters of the answer searched for an accepted answer


def fact_sets(facts: FactSets | None, tofu_rows: list[dict] | None, tokenizer=None, tofu_fmt: str = "auto"
              ) -> dict[str, FactSet]:
    """{set name: FactSet} for every non-empty set: forget/locality under test templates, then TOFU."""
    sets: dict[str, FactSet] = {}
    if facts is not None:
        same, other = split_locality(facts)
        for name, group in (("forget", facts.forget), ("locality_same", same), ("locality_other", other)):
            if group:
                items = [(f, p, p) for f in group for p in prompts_for(f, "test")]
                floor, answers = constant_answer_floor([f for f, _, _ in items], FACT_WINDOW)
                sets[name] = FactSet(items, floor, answers, ("completion", "sentence"), FACT_NEW_TOKENS, FACT_WINDOW)
    if tofu_rows:
        fmt = tofu_format(tokenizer, tofu_fmt)
        items = [(Fact(r["question"], "tofu", r["answer"]), tofu_prompt(r["question"], tokenizer, fmt),
                  r["question"] if fmt == "chat" else tofu_prompt(r["question"])) for r in tofu_rows]
        floor, answers = constant_answer_floor([f for f, _, _ in items], TOFU_WINDOW)
        layout = ("auto", "line") if fmt == "chat" else ("completion", "line")
        sets["tofu"] = FactSet(items, floor, answers, layout, TOFU_NEW_TOKENS, TOFU_WINDOW)
    return sets


def evaluate(answer_fn, facts: FactSets | None, tofu_rows: list[dict] | None, tokenizer=None,
             tofu_fmt: str = "auto") -> dict:
    """Exact-match accuracy per set for one system.

    Args:
        answer_fn: callable(prompts, max_new_tokens, questions, layout) -> list of {"text", "tokens"}
            (benchmarks.systems.closed_answerer or bridge_answerer).
        facts: forget and locality sets (None: TOFU only).
        tofu_rows: TOFU world facts (None or empty: skipped).
        tokenizer, tofu_fmt: decide the TOFU prompt format (see `tofu_format`).
    Returns:
        {set: {"k", "n", "acc", "ci95", "floor", "floor_answers", "lookup_rate", "samples"}} (+ "format" for
        TOFU); "floor" is the best fixed answer's accuracy (`constant_answer_floor`), "floor_answers" that answer.
    """
    out = {}
    for name, fs in fact_sets(facts, tofu_rows, tokenizer, tofu_fmt).items():
        outs = answer_fn([p for _, p, _ in fs.items], fs.max_new_tokens, questions=[q for _, _, q in fs.items],
                         layout=fs.layout)
        texts = [o["text"] for o in outs]
        correct = [metrics.fact_correct(t, f, fs.window) for (f, _, _), t in zip(fs.items, texts)]
        out[name] = {**metrics.proportion(sum(correct), len(fs.items)), "floor": fs.floor,
                     "floor_answers": fs.floor_answers,
                     # a lookup call in the closed-book text, or a call made inside the bridge loop
                     "lookup_rate": metrics.mean(CALL_OPEN in o["text"] or o.get("calls", 0) > 0 for o in outs),
                     "samples": [{"prompt": p, "answer": f.object, "output": t, "correct": c}
                                 for (f, p, _), t, c in list(zip(fs.items, texts, correct))[:5]]}
        if name == "tofu":
            out[name]["format"] = tofu_format(tokenizer, tofu_fmt)
    return out


def template_split() -> dict:
    """The test-split templates per shipped relation (recorded in results.json)."""
    from common.relations import load_relation, shipped_relations

    return {rel: [t.text for t in load_relation(rel).select("test")] for rel in shipped_relations()}
