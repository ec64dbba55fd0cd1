"""GSM8K evaluation: a seeded subset, zero-shot chat or 8-shot prompts, batched greedy generation with
answer-complete stopping, and per-problem scoring (accuracy, CoT, generated tokens).

Used by benchmarks/run.py (`--suite gsm8k`) and benchmarks/generation_bench.py.
"""

from __future__ import annotations

import random
import re
import time

from benchmarks import metrics
from neuralcpu.generation import generate_ids, tail_matches

# Zero-shot instruction for chat models. It asks for the answer format only, not for step-by-step
# reasoning, so that the CoT rate measures what the model does on its own.
CHAT_INSTRUCTION = "Give the final answer as a number on the last line, in the form '#### <number>'."
N_SHOTS = 8
_CALC_NOTE = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations: not text a model should imitate
# Generation may stop early once the answer is complete: a `#### number` followed by a non-number
# character, or (few-shot) the start of the next exemplar.
_ANSWER_DONE = re.compile(r"####\s*\$?\s*-?\d[\d,]*(?:\.\d+)?[^\d.,]")
_NEXT_QUESTION = re.compile(r"\n\s*Question:")


def select_problems(rows: list[dict], n: int | None, seed: int) -> list[int]:
    """Indices of a seeded random subset of `n` rows (all rows, in order, when n is None or >= len)."""
    if n is None or n >= len(rows):
        return list(range(len(rows)))
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return sorted(random.Random(seed).sample(range(len(rows)), n))


def fewshot_prefix(train_rows: list[dict], seed: int, k: int = N_SHOTS) -> str:
    """k worked train examples ("Question: ...\\nAnswer: ...#### N\\n\\n"), chosen with `seed`."""
    if len(train_rows) < k:
        raise ValueError(f"need {k} train rows for {k}-shot prompts, got {len(train_rows)}")
    shots = random.Random(seed).sample(train_rows, k)
    return "".join(f"Question: {r['question']}\nAnswer: {_CALC_NOTE.sub('', r['answer'])}\n\n" for r in shots)


def prompt_format(tokenizer, requested: str = "auto") -> str:
    """"chat" when the tokenizer has a chat template (instruct model), else "fewshot"; or `requested`."""
    if requested not in ("auto", "chat", "fewshot"):
        raise ValueError(f"prompt format {requested!r} not in ('auto', 'chat', 'fewshot')")
    if requested != "auto":
        return requested
    return "chat" if getattr(tokenizer, "chat_template", None) else "fewshot"


def build_prompts(tokenizer, questions: list[str], fmt: str, prefix: str = "") -> list[str]:
    """Prompt strings: the chat template with CHAT_INSTRUCTION, or `prefix` + "Question: q\\nAnswer:"."""
    if fmt == "chat":
        return [tokenizer.apply_chat_template([{"role": "user", "content": f"{q}\n{CHAT_INSTRUCTION}"}],
                                              tokenize=False, add_generation_prompt=True) for q in questions]
    return [f"{prefix}Question: {q}\nAnswer:" for q in questions]


def _truncate(text: str, patterns: list[re.Pattern]) -> str:
    """Cut `text` after the first answer-complete match or before the next few-shot question."""
    cut = len(text)
    for p in patterns:
        m = p.search(text)
        if m:
            cut = min(cut, m.start() if p is _NEXT_QUESTION else m.end() - 1)
    return text[:cut]


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 512, batch_size: int = 16,
             stop: bool = True, progress: bool = False) -> list[dict]:
    """Batched greedy generation (`neuralcpu.generation.generate_ids`: left padding, KV cache, finished
    rows leave the batch, no second BOS before a rendered chat template); one {"text", "tokens", "ids"}
    per prompt, in order.

    Args:
        prompts: formatted prompt strings.
        max_new_tokens: generation cap per prompt.
        batch_size: prompts per batch.
        stop: stop a row at `#### number` or at the next "Question:" (its text is cut there too).
        progress: tqdm bar over batches.
    """
    patterns = [_ANSWER_DONE, _NEXT_QUESTION] if stop else []
    stop_row = (lambda i, ids: tail_matches(tokenizer, ids, lambda text: any(p.search(text) for p in patterns))) if stop else None
    new = generate_ids(model, tokenizer, prompts, max_new_tokens, batch_size, stop_row, progress=progress)
    return [{"text": _truncate(tokenizer.decode(ids, skip_special_tokens=True), patterns), "tokens": len(ids), "ids": ids}
            for ids in new]


def evaluate(answer_fn, tokenizer, test_rows: list[dict], train_rows: list[dict] | None, n: int | None,
             seed: int, max_new_tokens: int = 512, fmt: str = "auto") -> dict:
    """GSM8K accuracy (Wilson 95% CI), CoT rate, mean generated tokens and cap rate for one system.

    Args:
        answer_fn: callable(prompts, max_new_tokens, questions, layout) -> list of {"text", "tokens"}
            (benchmarks.systems.closed_answerer or bridge_answerer; bridge lays out `questions` itself).
        tokenizer: the system's tokenizer (decides chat vs few-shot under fmt="auto").
        test_rows, train_rows: GSM8K rows; train_rows supply the few-shot exemplars.
        n: subset size (None = all); seed: subset and exemplar seed.
        fmt: "auto", "chat" or "fewshot".
    """
    fmt = prompt_format(tokenizer, fmt)
    idx = select_problems(test_rows, n, seed)
    prefix = fewshot_prefix(train_rows or [], seed) if fmt == "fewshot" else ""
    prompts = build_prompts(tokenizer, [test_rows[i]["question"] for i in idx], fmt, prefix)
    t0 = time.perf_counter()
    questions = ([f"{test_rows[i]['question']}\n{CHAT_INSTRUCTION}" for i in idx] if fmt == "chat" else prompts)
    outs = answer_fn(prompts, max_new_tokens, questions=questions, layout=("auto", "eos"))
    seconds = time.perf_counter() - t0
    items = []
    for i, out in zip(idx, outs):
        gold = metrics.gold_answer(test_rows[i]["answer"])
        items.append({"index": i, "gold": gold, "pred": metrics.extract_answer(out["text"]),
                      "correct": metrics.gsm8k_correct(out["text"], gold), "cot_steps": metrics.cot_steps(out["text"]),
                      "tokens": out["tokens"], "output": out["text"]})
    k_cot = sum(it["cot_steps"] >= metrics.MIN_COT_STEPS for it in items)
    return {
        "format": fmt, "n": len(items), "max_new_tokens": max_new_tokens, "indices": idx,
        "accuracy": metrics.proportion(sum(it["correct"] for it in items), len(items)),
        "cot_rate": metrics.proportion(k_cot, len(items)),
        "cot_accuracy": metrics.proportion(sum(it["correct"] for it in items if it["cot_steps"] >= metrics.MIN_COT_STEPS), k_cot),
        "mean_tokens": metrics.mean(it["tokens"] for it in items),
        "cap_rate": metrics.mean(it["tokens"] >= max_new_tokens for it in items),
        "seconds": seconds, "items": items,
    }
