"""GSM8K evaluation: a seeded subset, three prompt formats, batched greedy generation with
answer-complete stopping, and per-problem scoring (accuracy, CoT, generated tokens).

Prompt formats (`FORMATS`), each with its own answer marker, read strictly:
- "chat" (format only): the chat template with CHAT_INSTRUCTION; it asks for `#### <number>` and
  nothing else, so the CoT rate measures what the model does unasked. Answer: the number after `####`.
- "fewshot": 8 worked train examples, "Question: ...\nAnswer:" (base models). Answer: after `####`.
- "boxed": the instruct model's own math prompt (Qwen2.5's system message SYSTEM_BOXED). Answer: the
  content of the last `\boxed{...}`.
An output without its format's marker has no answer (it scores wrong): taking "the last number
anywhere" instead would credit a model for a number it never gave as its answer (issue #33).

Used by benchmarks/run.py (`--suite gsm8k`), benchmarks/gsm8k_paired.py and generation_bench.py.
"""

from __future__ import annotations

import random
import re
import time

from benchmarks import metrics
from neuralcpu.data import SYSTEM_BOXED, ANSWER_DONE, boxed_answer, boxed_content, number_in_box, same_number  # noqa: F401
from neuralcpu.generation import generate_ids, tail_matches

# Zero-shot instruction for chat models. It asks for the answer format only, not for step-by-step
# reasoning, so that the CoT rate measures what the model does on its own.
CHAT_INSTRUCTION = "Give the final answer as a number on the last line, in the form '#### <number>'."
FORMATS = ("chat", "fewshot", "boxed")
ALIASES = {"format-only": "chat", "qwen-boxed": "boxed"}  # the names the reports use
N_SHOTS = 8
_CALC_NOTE = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations: not text a model should imitate
# Generation may stop early once the answer is complete: a `#### number` followed by a non-number
# character, or (few-shot) the start of the next exemplar.
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
    """"chat" when the tokenizer has a chat template (instruct model), else "fewshot"; or `requested`
    (one of FORMATS or ALIASES). "chat" and "boxed" need a chat template."""
    requested = ALIASES.get(requested, requested)
    if requested not in ("auto", *FORMATS):
        raise ValueError(f"prompt format {requested!r} not in {('auto', *FORMATS, *ALIASES)}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if requested == "auto":
        return "chat" if has_template else "fewshot"
    if requested != "fewshot" and not has_template:
        raise ValueError(f"prompt format {requested!r} needs a chat template; this tokenizer has none (use 'fewshot')")
    return requested


def user_messages(question: str, fmt: str) -> list[dict]:
    """The chat messages of one question under "chat" or "boxed"."""
    if fmt == "boxed":
        return [{"role": "system", "content": SYSTEM_BOXED}, {"role": "user", "content": question}]
    return [{"role": "user", "content": f"{question}\n{CHAT_INSTRUCTION}"}]


def build_prompts(tokenizer, questions: list[str], fmt: str, prefix: str = "") -> list[str]:
    """Prompt strings: the chat template over `user_messages` ("chat", "boxed"), or (few-shot)
    `prefix` + "Question: q\\nAnswer:"."""
    if fmt in ("chat", "boxed"):
        return [tokenizer.apply_chat_template(user_messages(q, fmt), tokenize=False, add_generation_prompt=True)
                for q in questions]
    return [f"{prefix}Question: {q}\nAnswer:" for q in questions]


# ----------------------------------------------------------------------------- answers, strictly -----



def extract(output: str, fmt: str) -> str | None:
    """The final answer of `output` under prompt format `fmt`, or None: the number right after the first
    `####` ("chat", "fewshot"), the number in the last `\\boxed{}` ("boxed"). No fallback to other numbers."""
    if fmt == "boxed":
        return boxed_answer(output)
    if fmt not in ("chat", "fewshot"):
        raise ValueError(f"prompt format {fmt!r} not in {FORMATS}")
    return metrics.extract_answer(output)


def is_correct(pred: str | None, gold: str) -> bool:
    """Whether an extracted answer equals the reference numerically."""
    return same_number(pred, gold)


def cot_steps(output: str, fmt: str) -> int:
    """Reasoning steps (`metrics.cot_steps`) in the text before the format's answer marker: the first
    `####`, or the last `\\boxed` (the whole output when it has none)."""
    cut = output.rfind("\\boxed") if fmt == "boxed" else output.find("####")
    pre = output if cut < 0 else output[:cut]
    return metrics.cot_steps(pre.replace("####", "") + "\n####")  # the marker makes all of `pre` pre-answer text


def score(output: str, gold: str, fmt: str) -> dict:
    """{"pred", "correct", "cot_steps", "cot"} of one output under prompt format `fmt`."""
    pred = extract(output, fmt)
    steps = cot_steps(output, fmt)
    return {"pred": pred, "correct": is_correct(pred, gold), "cot_steps": steps,
            "cot": steps >= metrics.MIN_COT_STEPS}


def _truncate(text: str, patterns: list[re.Pattern]) -> str:
    """Cut `text` after the first answer-complete match or before the next few-shot question."""
    cut = len(text)
    for p in patterns:
        m = p.search(text)
        if m:
            cut = min(cut, m.start() if p is _NEXT_QUESTION else m.end() - 1)
    return text[:cut]


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 512, batch_size: int = 16,
             stop: bool = True, progress: bool = False, fmt: str | None = None) -> list[dict]:
    """Batched greedy generation (`neuralcpu.generation.generate_ids`: left padding, KV cache, finished
    rows leave the batch, no second BOS before a rendered chat template); one {"text", "tokens", "ids"}
    per prompt, in order.

    Args:
        prompts: formatted prompt strings.
        max_new_tokens: generation cap per prompt.
        batch_size: prompts per batch.
        stop: stop a row at `#### number` or at the next "Question:" (its text is cut there too); under
            fmt="boxed" only EOS ends a row (the last `\\boxed{}` is the answer, so none may be cut off).
        progress: tqdm bar over batches.
        fmt: the prompt format (None: one of the `####` formats).
    """
    patterns = [ANSWER_DONE, _NEXT_QUESTION] if stop and fmt != "boxed" else []
    stop = bool(patterns)
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
        fmt: "auto" or one of FORMATS (answers are read strictly per format: `extract`).
    """
    fmt = prompt_format(tokenizer, fmt)
    idx = select_problems(test_rows, n, seed)
    prefix = fewshot_prefix(train_rows or [], seed) if fmt == "fewshot" else ""
    prompts = build_prompts(tokenizer, [test_rows[i]["question"] for i in idx], fmt, prefix)
    t0 = time.perf_counter()
    questions = ([f"{test_rows[i]['question']}\n{CHAT_INSTRUCTION}" for i in idx] if fmt == "chat"
                 else [test_rows[i]["question"] for i in idx] if fmt == "boxed" else prompts)
    outs = answer_fn(prompts, max_new_tokens, questions=questions, layout=("auto", "eos"))
    seconds = time.perf_counter() - t0
    items = []
    for i, out in zip(idx, outs):
        gold = metrics.gold_answer(test_rows[i]["answer"])
        sc = score(out["text"], gold, fmt)
        items.append({"index": i, "gold": gold, "pred": sc["pred"], "correct": sc["correct"],
                      "cot_steps": sc["cot_steps"], "tokens": out["tokens"], "output": out["text"]})
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
