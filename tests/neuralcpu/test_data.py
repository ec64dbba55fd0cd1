"""JSONL reading shared by GSM8K, fact files and TOFU: bad lines are named by file, line and field."""

from __future__ import annotations

import json

import pytest

from benchmarks.facts_suite import load_tofu
from neuralcpu.data import DataFileError, jsonl_rows, load_gsm8k
from neuralcpu.facts import FactFileError, load_jsonl_facts


def write(path, *lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("bad, message", [
    ("{oops", ":3: not valid JSON"),
    ("[1, 2]", ":3: expected a JSON object, got list"),
    ('{"question": "q"}', ":3: field 'answer' is missing"),
    ('{"question": "q", "answer": "  "}', ":3: field 'answer' is missing or not a non-empty string"),
])
def test_bad_line_is_named(tmp_path, bad, message):
    f = write(tmp_path / "g.jsonl", json.dumps({"question": "q", "answer": "a"}), "", bad)
    with pytest.raises(DataFileError, match=str(f) + message):
        list(jsonl_rows(f, ("question", "answer")))
    with pytest.raises(DataFileError, match=message):
        load_gsm8k("test", f)


def test_rows_and_limit(tmp_path):
    f = write(tmp_path / "g.jsonl", *[json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) for i in range(5)])
    assert [n for n, _ in jsonl_rows(f)] == [1, 2, 3, 4, 5]
    assert [r["question"] for r in load_gsm8k("test", f, limit=2)] == ["q0", "q1"]
    with pytest.raises(DataFileError, match="no such file"):
        load_gsm8k("test", tmp_path / "missing.jsonl")


def test_fact_and_tofu_files_use_their_own_errors(tmp_path):
    facts = write(tmp_path / "f.jsonl", json.dumps({"subject": "Oslo", "relation": "country", "object": "Norway"}),
                  json.dumps({"subject": "Oslo", "relation": "country"}))
    with pytest.raises(FactFileError, match=r"f.jsonl:2: field 'object'"):
        load_jsonl_facts(facts)
    tofu = write(tmp_path / "t.json", json.dumps({"question": "q", "answer": "a", "perturbed_answer": ["b"]}))
    assert load_tofu(tofu) == [{"question": "q", "answer": "a", "perturbed_answer": ["b"]}]
    with pytest.raises(DataFileError, match=r"t2.json:1: field 'answer'"):
        load_tofu(write(tmp_path / "t2.json", json.dumps({"question": "q"})))


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_retain_texts_keep_whole_solutions_in_both_layouts(tiny_qwen2_dir):
    from transformers import AutoTokenizer

    from neuralcpu.data import gsm8k_text
    from neuralcpu.rlcp import retain_texts

    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    tok.chat_template = CHATML
    short = {"question": "What is 2 plus 2?", "answer": "2+2=4\n#### 4"}
    long = {"question": "How many apples? " * 40, "answer": "Many.\n#### 7"}
    plain, chat = retain_texts(tok, [short, long], max_len=120, chat=True)  # the long row does not fit
    assert plain == gsm8k_text(short)
    assert chat == ("<|im_start|>user\nWhat is 2 plus 2?<|im_end|>\n<|im_start|>assistant\n",
                    "2+2=4\n#### 4<|im_end|>\n")  # the solution shows where the turn ends
    assert retain_texts(tok, [short, long], max_len=120, chat=False) == [plain]
    tok.chat_template = None
    assert retain_texts(tok, [short], max_len=120, chat=True) == [plain]  # no template: plain only
    with pytest.raises(ValueError, match="retain_max_len=120"):
        retain_texts(tok, [long], max_len=120, chat=True)


def test_encode_adds_no_second_bos_to_a_rendered_chat_prompt(smollm2):
    from neuralcpu.data import gsm8k_chat_text, gsm8k_text
    from neuralcpu.training import encode

    _, tok = smollm2  # SmolLM2's tokenizer adds <|im_start|> as BOS, and its chat template starts with it
    row = {"question": "What is 2 plus 2?", "answer": "2+2=4\n#### 4"}
    chat_ids = encode(tok, [gsm8k_chat_text(row, tok)])["input_ids"][0].tolist()
    plain_ids = encode(tok, [gsm8k_text(row)])["input_ids"][0].tolist()
    assert chat_ids[0] == tok.bos_token_id and chat_ids[1] != tok.bos_token_id
    assert plain_ids[0] == tok.bos_token_id  # plain prompts still get their BOS
    assert tok.decode(chat_ids).startswith(tok.apply_chat_template([{"role": "user", "content": row["question"]}],
                                                                   tokenize=False))
