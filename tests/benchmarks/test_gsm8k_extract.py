"""GSM8K answers read strictly per prompt format: `####` for the format-only and few-shot prompts, the
last `\\boxed{}` for the instruct model's own prompt; and the CoT count before each format's marker."""

from __future__ import annotations

import pytest

from benchmarks import gsm8k


@pytest.mark.parametrize("text, expected", [
    (r"so the answer is \boxed{18}.", "18"),
    (r"\boxed{1,000}", "1000"),                         # thousands comma
    (r"\boxed{-5}", "-5"),                              # negative
    (r"\boxed{\$18.00}", "18"),                         # LaTeX dollar, trailing zeros
    (r"\boxed{$1,250}", "1250"),                        # plain dollar and comma
    (r"\boxed{18.0}", "18"),                            # trailing .0
    (r"\boxed{0.5}", "0.5"),
    (r"\boxed{{42}}", "42"),                            # nested braces
    (r"\boxed{\frac{3}{4}}", "0.75"),                   # nested braces inside a fraction
    (r"\boxed{20 \text{ dollars}}", "20"),              # units in \text{}
    (r"\boxed{10\%}", "10"),
    (r"\boxed{x = 7}", "7"),
    (r"first \boxed{3}, then corrected: \boxed{4}", "4"),  # the last box counts
    (r"\boxed{2+3}", None),                             # an expression, not a number
    (r"\boxed{12", None),                               # never closed
    ("The answer is 18.", None),                        # no box: no answer
])
def test_boxed_extraction(text, expected):
    assert gsm8k.extract(text, "boxed") == expected


@pytest.mark.parametrize("text, expected", [
    ("16 - 3 - 4 = 9\n#### 18", "18"),
    ("#### $1,800.00.", "1800"),
    ("#### -3", "-3"),
    ("so 13\n#### 13\nand 14 more", "13"),  # the first number right after the first ####
    ("####", None),
    ("#### eighteen", None),
])
def test_hash_extraction(text, expected):
    assert gsm8k.extract(text, "chat") == expected == gsm8k.extract(text, "fewshot")


def test_no_marker_means_no_answer():
    """Issue #33: an output without `####` used to score by its last number anywhere. "12 eggs ... 18"
    is not an answer given in the asked format, so it is wrong, whatever the last number is."""
    output = "Janet has 16 - 3 - 4 = 9 eggs left. She makes 9 * 2 = 18 dollars."
    assert gsm8k.extract(output, "chat") is None
    assert not gsm8k.score(output, "18", "chat")["correct"]
    assert not gsm8k.score(output, "18", "boxed")["correct"]
    assert gsm8k.score(output + "\n#### 18", "18", "chat")["correct"]
    assert gsm8k.score(output + r" \boxed{18}", "18", "boxed")["correct"]


def test_evaluate_scores_strictly():
    """gsm8k.evaluate (benchmarks/run.py's GSM8K suite) scores with the strict reader."""
    rows = [{"question": "q0?", "answer": "#### 18"}, {"question": "q1?", "answer": "#### 5"}]

    class Tok:
        chat_template = "x"

        @staticmethod
        def apply_chat_template(messages, tokenize=False, add_generation_prompt=True):
            return " | ".join(m["content"] for m in messages)

    def answer_fn(prompts, max_new_tokens, questions=None, layout=None):
        return [{"text": "2 + 3 = 5, 5 + 13 = 18.", "tokens": 9}, {"text": "#### 5", "tokens": 3}]

    r = gsm8k.evaluate(answer_fn, Tok(), rows, None, None, seed=0, fmt="chat")
    assert [it["correct"] for it in r["items"]] == [False, True]
    assert r["accuracy"]["k"] == 1


def test_cot_counted_before_the_marker():
    worked = "Janet has 16 - 3 - 4 = 9 eggs left.\nShe makes 9 * 2 = $18.\n"
    assert gsm8k.cot_steps(worked + r"So the answer is \boxed{18}.", "boxed") == 2
    assert gsm8k.cot_steps(r"\boxed{18}", "boxed") == 0
    assert gsm8k.cot_steps(worked + "#### 18", "chat") == 2
    assert gsm8k.cot_steps("#### 18\n16 - 3 = 13\n13 + 5 = 18", "chat") == 0  # after the answer: not reasoning


def test_prompt_formats():
    class Tok:
        chat_template = "x"

        @staticmethod
        def apply_chat_template(messages, tokenize=False, add_generation_prompt=True):
            return "\n".join(f"{m['role']}: {m['content']}" for m in messages)

    boxed = gsm8k.build_prompts(Tok(), ["What is 2+2?"], gsm8k.prompt_format(Tok(), "qwen-boxed"))[0]
    assert boxed == f"system: {gsm8k.SYSTEM_BOXED}\nuser: What is 2+2?"
    chat = gsm8k.build_prompts(Tok(), ["What is 2+2?"], gsm8k.prompt_format(Tok(), "format-only"))[0]
    assert chat.endswith(gsm8k.CHAT_INSTRUCTION) and "step" not in chat
    with pytest.raises(ValueError, match="needs a chat template"):
        gsm8k.prompt_format(object(), "boxed")
    with pytest.raises(ValueError, match="not in"):
        gsm8k.prompt_format(Tok(), "zero-shot")
