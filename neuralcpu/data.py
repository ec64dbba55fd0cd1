"""Reasoning text for the retain stream and the benchmarks: GSM8K from a local JSONL, else the hub, and its
answers read strictly (the number after `####`, or in the last `\\boxed{}`)."""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterator

# Where this project's shared data sits next to a checkout; a normal user passes a path or uses the hub.
SHARED_GSM8K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"


class DataFileError(ValueError):
    """A data file has a bad line; the message names file, line and field."""


def jsonl_rows(path: str | Path, required: tuple[str, ...] = (), error: type[Exception] = DataFileError
               ) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file.

    Raises `error` naming the file, line and field of the first bad line: not JSON, not an object, or a
    `required` field missing or not a non-empty string. A missing file raises `error` naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise error(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            for key in required:
                if not isinstance(row.get(key), str) or not row[key].strip():
                    raise error(f"{path}:{lineno}: field {key!r} is missing or not a non-empty string")
            yield lineno, row


def default_gsm8k_path(split: str) -> Path | None:
    """The shared GSM8K file for `split` ("train"/"test") if it exists beside the checkout, else None."""
    path = SHARED_GSM8K / f"{split}.jsonl"
    return path if path.is_file() else None


def load_gsm8k(split: str = "train", path: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """GSM8K rows {"question", "answer"} from `path`, the shared copy, or the hub (`openai/gsm8k`).

    Raises DataFileError naming file:line for a malformed row.
    """
    path = Path(path) if path else default_gsm8k_path(split)
    if path is None:
        from datasets import load_dataset  # the fallback a normal user with hub access has

        try:
            data = load_dataset("openai/gsm8k", "main", split=split)
        except Exception as e:  # offline, no cache: say where the data can come from instead
            raise DataFileError(f"GSM8K {split} split: no local file at {SHARED_GSM8K / (split + '.jsonl')} and the hub "
                                f"failed ({type(e).__name__}: {e}); pass a JSONL path "
                                f"(rlcp: --gsm8k-path; benchmarks: --gsm8k-{split})") from e
        rows = [dict(question=r["question"], answer=r["answer"]) for r in data]
        return rows[:limit] if limit else rows
    rows = []
    for _, row in jsonl_rows(path, ("question", "answer")):
        rows.append({"question": row["question"], "answer": row["answer"]})
        if limit and len(rows) >= limit:
            break
    return rows


def gsm8k_text(row: dict) -> tuple[str, str]:
    """(prompt, solution) for LM training: the solution is the worked answer with its `#### N` line."""
    return f"Question: {row['question']}\nAnswer:", " " + row["answer"]


# Qwen2.5(-Math/-Coder)'s own system message for math, from its model cards and evaluation code.
SYSTEM_BOXED = "Please reason step by step, and put your final answer within \\boxed{}."


def gsm8k_chat_text(row: dict, tokenizer, system: str | None = None, answer: str | None = None) -> tuple[str, str]:
    """(prompt, solution) in the model's chat layout: the question as the user's turn (after a `system`
    message, if given); the solution is `answer` (default: the row's worked answer) and whatever the
    template closes the assistant's turn with (its end-of-turn token), so training on it also shows
    where an answer stops."""
    user = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": row["question"]}]
    prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    reply = row["answer"] if answer is None else answer
    whole = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": reply}], tokenize=False)
    if not whole.startswith(prompt):
        raise ValueError("the chat template renders the conversation differently from its generation prompt")
    return prompt, whole[len(prompt):]


# ----------------------------------------------------------------------------- answers, strictly -----
# Shared by the benchmarks (benchmarks.metrics, benchmarks.gsm8k) and RLCP's in-run reasoning check.

# A number: optional sign and $, digits with proper thousands commas or plain digits, optional decimals.
# A minus right after a digit or ")" is subtraction ("16-3"), not a sign.
NUMBER = r"(?:(?<![\w)])-)?\$?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
_ANSWER_MARK = "####"
# A `#### N` line that is complete: the number and one character after it (a row may stop there).
ANSWER_DONE = re.compile(r"####\s*\$?\s*-?\d[\d,]*(?:\.\d+)?[^\d.,]")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_FRAC = re.compile(r"\\[dt]?frac\{?(-?\d+(?:\.\d+)?)\}?\{?(-?\d+(?:\.\d+)?)\}?")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{[^{}]*\}")
_LATEX_NOISE = ("\\$", "$", "\\%", "%", "\\,", "\\!", "\\;", "\\ ", "\\left", "\\right", "~", " ")


def normalize_number(text: str) -> str | None:
    """Canonical form of a number string ("$1,234.50" -> "1234.5", "18.00" -> "18"), or None."""
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        # not quantize(): it raises for integers longer than the context's 28 digits (models do emit those)
        return format(value.to_integral_value(), "f")
    return format(value.normalize(), "f")


def extract_answer(output: str) -> str | None:
    """The number right after the first `####` of `output` as a canonical number string, else None."""
    if _ANSWER_MARK not in output:
        return None
    m = re.match(r"\s*(" + NUMBER + ")", output.split(_ANSWER_MARK, 1)[1])
    return normalize_number(m.group(1)) if m else None


def gold_answer(solution: str) -> str:
    """The reference answer of a GSM8K solution (the number after its `####`)."""
    if _ANSWER_MARK not in solution:
        raise ValueError(f"GSM8K solution has no '####' line: {solution[-80:]!r}")
    answer = extract_answer(solution)
    if answer is None:
        raise ValueError(f"GSM8K solution has no number after '####': {solution[-80:]!r}")
    return answer


def boxed_content(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`), nested braces balanced; None when
    there is none or it never closes."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    depth, i = 1, starts[-1]
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def number_in_box(content: str) -> str | None:
    """A boxed answer as a canonical number string, or None when it is not one number.

    "\\$1,000.00" -> "1000", "-5", "18.0" -> "18", "{{42}}" -> "42", "\\frac{1}{2}" -> "0.5",
    "x = 7" -> "7", "20 \\text{ dollars}" -> "20". Units in \\text{}, `$`, `%` and LaTeX spaces are dropped.
    """
    s = _TEXT.sub("", content).split("=")[-1]
    for junk in _LATEX_NOISE:
        s = s.replace(junk, "")
    m = _FRAC.fullmatch(s)
    if m:
        num, den = Decimal(m.group(1)), Decimal(m.group(2))
        return normalize_number(str(num / den)) if den else None
    s = s.replace("{", "").replace("}", "")
    m = re.fullmatch(NUMBER + r"\.?", s)
    return normalize_number(m.group()) if m else None


def boxed_answer(output: str) -> str | None:
    """The number in the last `\\boxed{}` of `output` as a canonical number string, else None."""
    content = boxed_content(output)
    return None if content is None else number_in_box(content)


def same_number(pred: str | None, gold: str) -> bool:
    """Whether an extracted answer equals the reference numerically ("18.0" == "18")."""
    return pred is not None and Decimal(pred) == Decimal(gold)
