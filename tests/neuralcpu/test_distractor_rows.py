"""The exact rows --distractors adds to the lookup-request (here a baseline's forget) and locality pools:
which prompt gets which drawn opening, in which order, with which target. Pinned against an explicit
rebuild of the draw order (forget prompts first, then locality prompts; each prompt's copies together;
one RNG seeded by the run's seed), so a refactor of how the rows are built cannot change a run."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

from transformers import AutoTokenizer

from common.facts import Fact
from neuralcpu.facts import FactSets, fact_prompts
from neuralcpu.rlcp import RLCPConfig, opening_sentences, streams_for, target_text, with_distractors
from neuralcpu.streams import LocalityKL, Unlikelihood

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GSM8K = [{"question": f"Tom has {i} red apples and buys {i + 2} more. How many does he have now?",
          "answer": f"{i}+{i + 2}={2 * i + 2}\n#### {2 * i + 2}"} for i in range(1, 9)]


def build_pools(tiny_qwen2_dir, tmp_path, distractors: int, seed: int):
    """(tokenizer, facts, sentences, forget pool, locality pool) from `streams_for` with an unlikelihood
    config (its forget stream holds the target pool; no model forward is needed to build it)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    tokenizer.chat_template = CHATML  # both layouts get opened copies
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("".join(json.dumps(r) + "\n" for r in GSM8K))
    facts = FactSets([Fact("Alphaville", "country", "Norland"), Fact("Betatown", "country", "Sudria")],
                     [Fact("Thetaford", "country", "Quarnia")])
    cfg = RLCPConfig(method="unlikelihood", distractors=distractors, seed=seed, gsm8k_path=str(gsm),
                     retain_max_len=256, w_rag=0.0)
    streams = streams_for(cfg, SimpleNamespace(tokenizer=tokenizer), facts, [], None, None)
    forget = next(s for s in streams if isinstance(s, Unlikelihood)).pool
    locality = next(s for s in streams if isinstance(s, LocalityKL)).pool
    return tokenizer, facts, opening_sentences(GSM8K), forget, locality


def test_distractor_rows_are_drawn_prompt_by_prompt_forget_then_locality(tiny_qwen2_dir, tmp_path):
    tokenizer, facts, sentences, forget, locality = build_pools(tiny_qwen2_dir, tmp_path, distractors=2, seed=7)
    forget_prompts = [p for f in facts.forget for p in fact_prompts(f, "train", tokenizer)]
    local_prompts = [p for f in facts.locality for p in fact_prompts(f, "train", tokenizer)]
    assert {p.layout for p in forget_prompts} == {"completion", "chat"}
    rng, cls = random.Random("distractors-7"), facts.class_index
    want_forget = [((with_distractors(p, rng.choice(sentences), tokenizer), target_text(p, p.fact.object)),
                    cls[p.fact.object], -1, p.fact.subject) for p in forget_prompts for _ in range(2)]
    want_local = [((with_distractors(p, rng.choice(sentences), tokenizer), target_text(p, p.fact.object)),
                   p.fact.subject) for p in local_prompts for _ in range(2)]
    # the plain rows come first, unchanged; the opened copies follow them
    assert len(forget) == len(forget_prompts) + len(want_forget)
    assert forget[len(forget_prompts):] == want_forget
    assert [row[0][0] for row in forget[:len(forget_prompts)]] == [p.text for p in forget_prompts]
    assert len(locality) == len(local_prompts) + len(want_local)
    assert locality[len(local_prompts):] == want_local
    # several openings are drawn (the seed matters), each copy is an opening before its own prompt
    assert len({next(s for s in sentences if s in text) for (text, _), *_ in want_forget}) > 1
    completion = [(row, p) for row, p in zip(want_forget, [p for p in forget_prompts for _ in range(2)])
                  if p.layout == "completion"]
    assert all(text.endswith(" " + p.text) and text[: -len(p.text) - 1] in sentences
               for ((text, _), *_), p in completion)


def test_distractor_rows_follow_the_seed_and_vanish_at_zero(tiny_qwen2_dir, tmp_path):
    _, _, _, forget7, _ = build_pools(tiny_qwen2_dir, tmp_path, distractors=2, seed=7)
    _, _, _, forget8, _ = build_pools(tiny_qwen2_dir, tmp_path, distractors=2, seed=8)
    _, facts, _, plain, local = build_pools(tiny_qwen2_dir, tmp_path, distractors=0, seed=7)
    assert forget7 != forget8 and len(forget7) == len(forget8)
    assert all(g != -1 for _, _, g, _ in plain) and not any("Tom has" in row[0][0] for row in local)
