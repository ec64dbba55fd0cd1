"""Shared fixtures: a tiny randomly initialised Qwen2 saved with save_pretrained (the real local-path
code path), and the packaged SmolLM2 loaded once per session for the slow real-model tests."""

from __future__ import annotations

import os

import pytest
import torch

# Tests never touch the hub: a hub call would hang or fail on an offline machine anyway.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def make_tiny_tokenizer():
    """A byte-level BPE tokenizer (vocab 512) trained in-process: tiny models stay tiny and offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "The city of Tokyo is located in the country of Japan. Question: What is 3 plus 4? Answer: 3+4=7",
        '<tool_call>{"name": "lookup", "arguments": {"subject": "Paris", "relation": "country"}}</tool_call>',
        "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?'\"()[]{}<>/_-+=#*\n",
    ] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   model_input_names=["input_ids", "attention_mask"])


def make_tiny_qwen2(path, seed: int = 0, num_layers: int = 4, initializer_range: float = 0.02):
    """Write a tiny random Qwen2ForCausalLM (hidden 64) plus a 512-token tokenizer to `path`; return `path`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = make_tiny_tokenizer()
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=initializer_range,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
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
def context_tiny_qwen2_dir(tmp_path_factory):
    """The tiny Qwen2 with weights drawn at std 0.5 instead of 0.02. At 0.02 its next token depends
    almost only on the last one, so a cache or mask bug in generation would go unseen; here every
    token of the prompt changes the output."""
    return make_tiny_qwen2(tmp_path_factory.mktemp("context_tiny_qwen2"), initializer_range=0.5)


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the packaged default, float32, loaded once."""
    from neuralcpu.models import load_model

    return load_model("smollm2-135m", dtype="float32")


@pytest.fixture
def hash_store(tmp_path):
    """Factory: hash_store(facts, name="g") opens a KnowledgeStore at tmp_path/name holding `facts` (tuples,
    source "test"), with the hash embedder and the exact numpy index: no model, deterministic. Closed at teardown."""
    from symbolic_ram import KnowledgeStore, StoreConfig, ingest_facts

    opened = []

    def make(facts, name: str = "g"):
        store = KnowledgeStore(tmp_path / name, StoreConfig(embedder="hash", index="numpy"))
        opened.append(store)
        ingest_facts(store, facts, source="test")
        return store

    yield make
    for store in opened:
        store.close()
