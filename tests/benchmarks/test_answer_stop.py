"""benchmarks/answer_stop.py: the next-token scores after a reference answer, and the script's flow."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from benchmarks import answer_stop

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class LastTokenModel(torch.nn.Module):
    """Next-token logits set by the last real token: after a text ending in "0" it ends the row, after
    any other it writes "5". Rows are left-padded, so the last column must be each row's last token."""

    def __init__(self, tokenizer):
        super().__init__()
        self.zero, self.five, self.eos = tokenizer.convert_tokens_to_ids(["0", "5", tokenizer.eos_token])
        self.vocab = len(tokenizer)
        self.generation_config = SimpleNamespace(eos_token_id=self.eos)

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, input_ids, attention_mask, position_ids=None, logits_to_keep=0):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        ends = input_ids == self.zero
        logits[..., self.eos] = torch.where(ends, 20.0, 0.0)
        logits[..., self.five] = torch.where(ends, 0.0, 20.0)
        return SimpleNamespace(logits=logits)


@pytest.fixture
def tok(tiny_qwen2_dir):
    """The tiny model's 512-token byte-level BPE tokenizer (single digits are tokens of their own)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_qwen2_dir)


def test_number_token_mask_marks_tokens_that_go_on_with_a_number(tok):
    mask = answer_stop.number_token_mask(tok)
    assert mask[tok.convert_tokens_to_ids("7")] and mask[tok.convert_tokens_to_ids("0")]
    assert not mask[tok.convert_tokens_to_ids("a")] and not mask[tok.eos_token_id]
    assert not mask[tok.convert_tokens_to_ids(".")]  # a full stop ends a number; ".5" would go on with it
    assert 0 < mask.sum() < len(tok)


def test_next_token_scores_read_each_rows_last_token_under_left_padding(tok):
    model = LastTokenModel(tok)
    texts = ["Answer: #### 10", "#### 5", "a much longer answer that pads the others #### 12", "#### 100"]
    scores = answer_stop.next_token_scores(model, tok, texts, batch_size=4)
    assert [s["greedy_ends"] for s in scores] == [True, False, False, True]
    z = torch.exp(torch.tensor(20.0)).item() + len(tok) - 1  # one logit at 20, the rest at 0
    for s, ends in zip(scores, [True, False, False, True]):
        assert s["p_end"] == pytest.approx((z - len(tok) + 1) / z if ends else 1 / z, rel=1e-4)
        assert (s["p_number"] > 0.9) is (not ends)
    summary = answer_stop.summarize(scores)
    assert summary["greedy_ends"] == 0.5 and summary["number_beats_end"] == 0.5
    assert tok.padding_side == "right"  # put back


def test_script_scores_models_writes_outputs_and_resumes(tiny_qwen2_dir, context_tiny_qwen2_dir, tmp_path, monkeypatch):
    # The tiny models get a chat template (the check reads answers to the chat prompt); both share a vocabulary.
    from transformers import AutoTokenizer

    models = []
    for name, src in [("a", tiny_qwen2_dir), ("b", context_tiny_qwen2_dir)]:
        dst = tmp_path / name
        shutil.copytree(src, dst)
        tok = AutoTokenizer.from_pretrained(dst)
        tok.chat_template = CHAT_TEMPLATE
        tok.save_pretrained(dst)
        models.append(str(dst))
    rows = [{"question": f"What is {i} plus 1?", "answer": f"#### {i + 1}"} for i in range(5)]
    monkeypatch.setattr("neuralcpu.data.load_gsm8k", lambda split, path=None, limit=None: rows[:limit])
    # The tiny random model writes no "#### N": the reference's answers are set here, two without a number.
    answers = iter([[{"text": t} for t in ["#### 2", "no answer", "3 + 1 = 4\n#### 4", "#### 5,0", "####"]]])
    monkeypatch.setattr(answer_stop.gsm8k, "generate", lambda *a, **k: next(answers))
    out = tmp_path / "out"
    assert answer_stop.main(["--reference", models[0], "--models", models[0], "--n", "5", "--out", str(out)]) == 0
    res = json.loads((out / "answer_stop.json").read_text())
    assert res["n_answers"] == 3 and res["answers"][1] is None and res["answers"][4] is None
    first = res["models"][models[0]]
    assert [s["index"] for s in first["scores"]] == [0, 2, 3]
    assert 0 <= first["summary"]["mean_p_end"] <= 1 and first["summary"]["n"] == 3
    assert (out / "answer_stop.png").stat().st_size > 0 and models[0] in (out / "report.md").read_text()

    # --resume: no new reference answers (generate would raise StopIteration), the first model kept as it was
    assert answer_stop.main(["--reference", models[0], "--models", models[0], models[1], "--n", "5",
                             "--out", str(out), "--resume"]) == 0
    res2 = json.loads((out / "answer_stop.json").read_text())
    assert res2["models"][models[0]] == first and set(res2["models"]) == set(models)
    with pytest.raises(SystemExit):  # other settings than the kept file's
        answer_stop.main(["--reference", models[0], "--models", models[1], "--n", "4", "--out", str(out), "--resume"])
