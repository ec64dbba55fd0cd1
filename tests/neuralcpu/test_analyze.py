"""`python -m neuralcpu analyze` on a tiny run: per-layer probes, effective rank, perplexity, plots."""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from neuralcpu.analyze import effective_rank, main, solution_perplexity
from neuralcpu.rlcp import train
from tests.neuralcpu.test_rlcp import tiny_cfg


def test_effective_rank_counts_directions():
    rng = np.random.default_rng(0)
    assert effective_rank(rng.normal(size=(200, 1)) @ rng.normal(size=(1, 16))) < 1.5  # one direction
    assert effective_rank(rng.normal(size=(200, 16))) > 12  # isotropic


def test_solution_perplexity_matches_hf_loss(tiny_qwen2_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    prompt, solution = "Question: what is two plus two?\nAnswer:", " 2+2=4\n#### 4"
    p_ids = tok(prompt).input_ids
    ids = torch.tensor([p_ids + tok(solution, add_special_tokens=False).input_ids])
    labels = ids.clone()
    labels[0, : len(p_ids)] = -100  # HF averages over the solution tokens only
    with torch.no_grad():
        ref = math.exp(model(input_ids=ids, labels=labels).loss.item())
    assert abs(solution_perplexity(model, tok, [(prompt, solution)]) - ref) < 1e-3 * ref
    # batched, padded and reordered by length: the same token-weighted mean as one pair at a time
    pairs = [(prompt, solution), ("Q: 1+1?\nA:", " 2"), ("Question: a long one, three times four?\nAnswer:", " 3*4=12\n#### 12")]
    one_by_one = solution_perplexity(model, tok, pairs, batch_size=1)
    assert abs(solution_perplexity(model, tok, pairs, batch_size=3) - one_by_one) < 1e-4 * one_by_one
    assert abs(one_by_one - ref) > 1e-3 * ref  # the other pairs count


def test_analyze_cli_writes_every_figure(tiny_qwen2_dir, tmp_path, capsys):
    cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, "run", steps=2, eval_every=2, ckpt_every=2)
    train(cfg)
    assert main(["--original", str(tiny_qwen2_dir), "--run", cfg.out, "--gsm8k-path", cfg.gsm8k_path,
                 "--n-texts", "4", "--n-ppl", "4"]) == 0
    res = json.loads((tmp_path / "run" / "analysis" / "analysis.json").read_text())
    n_layers = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).config.num_hidden_layers
    for key in ("before", "after"):
        assert len(res[key]["probe_acc"]) == len(res[key]["effective_rank"]) == n_layers + 1
        assert all(0.0 <= a <= 1.0 for a in res[key]["probe_acc"])
        assert res[key]["gsm8k_perplexity"] > 1.0
    assert res["gsm8k_perplexity_ratio"] == res["after"]["gsm8k_perplexity"] / res["before"]["gsm8k_perplexity"]
    assert res["grl_layers"] == [2, 3] and res["chance"] == 1 / 6
    for png in ("probe_accuracy.png", "effective_rank.png", "phase_transition.png"):
        assert (tmp_path / "run" / "analysis" / png).stat().st_size > 1000
    assert "perplexity" in capsys.readouterr().out
