"""The embedder's run-time choices: bf16 only on native hardware, explicit threads, ONNX beside torch."""

from __future__ import annotations

import numpy as np
import pytest

from symbolic_ram import embeddings
from symbolic_ram.embeddings import native_bf16, resolve_backend


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
    assert resolve_backend("auto") == "onnx"


@pytest.mark.slow
def test_onnx_agrees_with_torch_fp32(tmp_path, monkeypatch):
    if not embeddings.onnx_available():
        pytest.skip("onnxruntime/optimum not installed")
    monkeypatch.setenv("SYMBOLIC_RAM_CACHE", str(tmp_path))  # the export is made from the local copy, offline
    texts = ["Lagos country: Nigeria", "Iron symbol: Fe", "Which country is Kano in?", "Japan capital: Tokyo"] * 8
    ref = embeddings.load_embedder(backend="torch", threads=1).encode(texts, normalize_embeddings=True)
    onnx = embeddings.load_embedder(backend="onnx", threads=1).encode(texts, normalize_embeddings=True)
    assert ref.dtype == np.float32 and np.min(np.sum(ref * onnx, axis=1)) > 0.999
    assert any(tmp_path.rglob("model.onnx"))
