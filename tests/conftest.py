"""Shared fixtures: a tiny randomly initialised Qwen2 saved with save_pretrained (the real local-path
code path), and the packaged SmolLM2 loaded once per session for the slow real-model tests."""

from __future__ import annotations

import os

import pytest
import torch

# Tests never touch the hub: a hub call would hang or fail on an offline machine anyway.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def make_tiny_qwen2(path, vocab_source=None, seed: int = 0, num_layers: int = 4):
    """Write a tiny random Qwen2ForCausalLM plus a tokenizer to `path`; return `path`.

    The tokenizer is SmolLM2's (from the packaged GGUF cache) so the tiny model tokenizes real text.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from neuralcpu.models import load_tokenizer

    tokenizer = load_tokenizer(vocab_source or "smollm2-135m")
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory):
    """Path to a tiny random Qwen2 save_pretrained dir (4 layers, hidden 64)."""
    return make_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the packaged default, float32, loaded once."""
    from neuralcpu.models import load_model

    return load_model("smollm2-135m", dtype="float32")
