"""The cached frozen prefix + DeepSuffix reproduce the full model, and deep-mode RLCP trains the same with it."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from neuralcpu.prefix_cache import AnchorReference, DeepSuffix, PrefixCache, length_buckets
from neuralcpu.rlcp import train
from neuralcpu.training import encode
from tests.neuralcpu.test_rlcp import tiny_cfg


@pytest.mark.parametrize("first_layer", [1, 3])
def test_suffix_of_cached_prefix_matches_full_model(tiny_qwen2_dir, first_layer):
    from transformers import AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    batch = encode(tok, [("Alphaville is a city in the country of", " Norland"), ("Hi", "")])  # right-padded
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert mask[1].sum() < mask[0].sum()  # the second row is padded
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        cache = PrefixCache(model, first_layer)
        h0 = cache(ids, mask)
        cache(ids, mask)  # second call served from the cache
        logits, states = DeepSuffix(model, first_layer)(h0, mask)
    assert len(cache.states) == 2
    real = mask.bool()
    torch.testing.assert_close(logits[real], full.logits[real], rtol=1e-4, atol=1e-4)
    for i, h in enumerate(states):
        torch.testing.assert_close(h[real], full.hidden_states[first_layer + i][real], rtol=1e-4, atol=1e-4)
    at = torch.zeros_like(real)
    at[0, 2], at[0, 5], at[1, 0] = True, True, True  # the head runs only there, rows in row-major order
    with torch.no_grad():
        picked, _ = DeepSuffix(model, first_layer)(h0, mask, positions=at)
    assert picked.shape == (3, model.config.vocab_size)
    torch.testing.assert_close(picked, full.logits[at], rtol=1e-4, atol=1e-4)


def test_length_buckets_minimise_padded_tokens():
    assert length_buckets([5, 5, 5]) == [[0, 1, 2]]
    assert length_buckets([100, 10, 10, 100], overhead=0) == [[1, 2], [0, 3]]
    assert length_buckets([100, 10, 10, 100], overhead=1000) == [[1, 2, 0, 3]]  # a group costs more than it saves
    lengths = [7, 30, 8, 9, 31, 12, 7, 29]
    groups = length_buckets(lengths, overhead=10)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    cost = sum(len(g) * max(lengths[i] for i in g) + 10 for g in groups)
    assert cost <= len(lengths) * max(lengths) + 10 and len(groups) > 1


def test_suffix_in_length_groups_matches_full_model_and_keeps_row_order(tiny_qwen2_dir):
    """Rows run in several length groups (forced here) come back in input order, with the same logits,
    states and gradients as one padded batch."""
    from transformers import AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    pairs = [("Alphaville is a city in the country of the north", " Norland"), ("Hi", " there"),
             ("Bo is in", " Zed"), ("A much longer prompt that goes on and on for a while", " end"), ("Yo", "")]
    batch = encode(tok, pairs)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    at = torch.zeros_like(mask, dtype=torch.bool)
    for r, n in enumerate(mask.sum(1).tolist()):
        at[r, n - 1] = True
        at[r, 0] = True
    h0 = PrefixCache(model, 2)(ids, mask)
    suffix = DeepSuffix(model, 2)
    outs = {}
    for overhead in (10**6, 0):  # one group, then one group per distinct length
        suffix.bucket_overhead = overhead
        model.zero_grad()
        picked, states = suffix(h0, mask, positions=at)
        full, _ = suffix(h0, mask)
        (picked.square().mean() + states[1][:, 0].sum()).backward()
        outs[overhead] = (picked, full, states, model.model.layers[2].mlp.up_proj.weight.grad.clone())
    assert len(length_buckets(mask.sum(1).tolist(), 0)) > 2
    real = mask.bool()
    (p1, f1, s1, g1), (p2, f2, s2, g2) = outs[10**6], outs[0]
    torch.testing.assert_close(p2, p1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(f2[real], f1[real], rtol=1e-4, atol=1e-5)
    for a, b in zip(s1, s2):
        torch.testing.assert_close(b[real], a[real], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(p2, want[at], rtol=1e-4, atol=1e-4)


def test_anchor_reference_serves_what_the_anchor_computes(tiny_qwen2_dir):
    """Cached rows, fresh rows and a different padding width all give the anchor's own outputs."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from neuralcpu.losses import labelled_positions

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    layers, calls = [1, 3], []

    def anchor_forward(batch, at):
        calls.append(len(batch["input_ids"]))
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        return SimpleNamespace(logits=out.logits[at], hidden_states=out.hidden_states)

    ref = AnchorReference(anchor_forward, layers)
    pairs = [("Alphaville is a city in the country of", " Norland"), ("Hi", " there you"), ("Bo is in", " Zed")]
    with torch.no_grad():
        for chosen in ([0, 1], [2, 1, 0], [1]):  # the second batch has one new row, the third none
            batch = encode(tok, [pairs[i] for i in chosen])
            at, _ = labelled_positions(batch["labels"])
            logits, states = ref(batch, at)
            want = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
            torch.testing.assert_close(logits, want.logits[at], rtol=1e-4, atol=1e-4)
            rows = torch.arange(len(chosen))
            assert states.shape == (len(layers), len(chosen), model.config.hidden_size)
            for k, l in enumerate(layers):
                torch.testing.assert_close(states[k], want.hidden_states[l + 1][rows, batch["last"]], rtol=1e-4, atol=1e-4)
    assert calls == [2, 1]  # each prompt went through the anchor once


def test_suffix_parameters_are_the_models(tiny_qwen2_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    suffix = DeepSuffix(model, 2)
    assert suffix.layers[0].mlp.up_proj.weight is model.model.layers[2].mlp.up_proj.weight
    assert len(suffix.layers) == model.config.num_hidden_layers - 2


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one process-wide state, set by the first Accelerator; a test that asks for another
    precision starts and leaves it empty, even when it fails (accelerate's own tests do the same)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("trainable,mixed_precision", [("deep", "no"), ("lora", "no"), ("deep", "bf16")])
def test_rlcp_same_losses_with_and_without_prefix_cache(tiny_qwen2_dir, tmp_path, trainable, mixed_precision,
                                                        fresh_accelerator_state):
    rows = {}
    for cache in (True, False):
        cfg = tiny_cfg(tiny_qwen2_dir, tmp_path, f"cache{cache}", steps=2, eval_every=2, ckpt_every=2,
                       cache_prefix=cache, trainable=trainable, mixed_precision=mixed_precision)
        train(cfg)
        rows[cache] = json.loads((tmp_path / f"cache{cache}" / "metrics.jsonl").read_text().splitlines()[-1])
    # bf16 keeps 8 bits of mantissa (relative step 2**-8 = 0.4%): the cached and uncached paths round their
    # different matrix shapes differently, so bf16 is held to 1%, fp32 to 0.1%.
    rel = 1e-2 if mixed_precision == "bf16" else 1e-3
    for key in ("retain_loss", "kl", "kl_locality", "locality_drift", "rag_loss", "retrieval_loss", "class_mean", "probe_loss"):
        assert rows[True][key] == pytest.approx(rows[False][key], rel=rel, abs=1e-5), key
