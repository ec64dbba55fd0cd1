"""The embedder's run-time choices: bf16 only on native hardware, explicit threads, ONNX beside torch."""

from __future__ import annotations

import numpy as np
import pytest

from symbolic_ram import embeddings
from symbolic_ram.embeddings import native_bf16, resolve_backend

NO_ONNX = 'onnxruntime/optimum not installed: the onnx extra, `pip install -e ".[onnx]"` (scripts/setup.sh installs it)'


@pytest.mark.parametrize("flags, expected", [
    ({"avx512f", "avx512_vnni"}, False),  # this development machine: bf16 would be emulated
    ({"avx512f", "avx512_bf16"}, True),
    ({"amx_bf16", "amx_tile"}, True),
    (set(), False),
])
def test_bf16_only_where_the_cpu_has_it(monkeypatch, flags, expected):
    monkeypatch.setattr(embeddings, "cpu_flags", lambda: flags)
    assert native_bf16() is expected


def test_backend_names(monkeypatch):
    with pytest.raises(ValueError, match="not one of"):
        resolve_backend("tensorrt")
    monkeypatch.setattr(embeddings, "onnx_available", lambda: False)
    assert resolve_backend("auto") == "torch"
    with pytest.raises(ImportError, match="optimum"):
        resolve_backend("onnx")
    monkeypatch.setattr(embeddings, "onnx_available", lambda: True)
    monkeypatch.setattr(embeddings, "cpu_flags", lambda: {"avx2"})
    assert resolve_backend("auto") == "onnx"
    monkeypatch.setattr(embeddings, "cpu_flags", lambda: {"avx512f", "avx512_vnni"})
    assert resolve_backend("auto") == "onnx-int8"  # int8 kernels where the CPU has VNNI


@pytest.mark.slow
def test_onnx_agrees_with_torch_fp32(tmp_path, monkeypatch):
    if not embeddings.onnx_available():
        pytest.skip(NO_ONNX)
    monkeypatch.setenv("SYMBOLIC_RAM_CACHE", str(tmp_path))  # the export is made from the local copy, offline
    texts = ["Lagos country: Nigeria", "Iron symbol: Fe", "Which country is Kano in?", "Japan capital: Tokyo"] * 8
    ref = embeddings.load_embedder(backend="torch", threads=1).encode(texts, normalize_embeddings=True)
    onnx = embeddings.load_embedder(backend="onnx", threads=1).encode(texts, normalize_embeddings=True)
    assert ref.dtype == np.float32 and np.min(np.sum(ref * onnx, axis=1)) > 0.999
    assert any(tmp_path.rglob("model.onnx"))


def test_onnx_export_from_a_local_copy_and_int8_agree(tmp_path, monkeypatch):
    """A tiny random BERT in sentence-transformers layout: the export path in seconds, no hub."""
    if not embeddings.onnx_available():
        pytest.skip(NO_ONNX)
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    source = embeddings.packaged_embedder_dir()
    if source is None:
        pytest.skip("the packaged MiniLM (its tokenizer) is not installed")
    tok = BertTokenizerFast.from_pretrained(str(source))
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    SentenceTransformer(modules=[models.Transformer(str(tmp_path / "bert")), models.Pooling(32)]).save(str(tmp_path / "st"))
    monkeypatch.setenv("SYMBOLIC_RAM_CACHE", str(tmp_path / "cache"))
    # the reference is torch in fp32: on a CPU with native bf16 the torch backend runs in bf16, whose
    # rounding alone (cosine ~0.998) is below the fp32 export's floor
    monkeypatch.setattr(embeddings, "native_bf16", lambda: False)
    texts = ["Lagos country: Nigeria", "Which country is Kano in?"]
    ref = embeddings.load_embedder(str(tmp_path / "st"), backend="torch", threads=1).encode(texts, normalize_embeddings=True)
    for backend, floor in (("onnx", 0.9999), ("onnx-int8", 0.99)):
        got = embeddings.load_embedder(str(tmp_path / "st"), backend=backend, threads=1).encode(texts, normalize_embeddings=True)
        assert np.min(np.sum(ref * got, axis=1)) > floor, backend
    assert not (tmp_path / "st" / "onnx").exists()  # the source copy is never written to
    assert len(list((tmp_path / "cache").rglob("*.onnx"))) == 2
