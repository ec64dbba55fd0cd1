"""Generation shared by every evaluator and the bridge: continuous batching, left padding, an explicit pad
token and an in-place KV cache. Greedy everywhere, except where a caller asks for top-p samples (RLCP's
recall prompts)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AttentionInterface, AttentionMaskInterface, DynamicCache, TopPLogitsWarper
from transformers.cache_utils import DynamicLayer
from transformers.masking_utils import sdpa_mask


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). Without them torch emulates bf16
    matmuls through fp32 conversions, slower than fp32 itself, so callers fall back to fp32."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        if fn is not None and fn():
            return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def fast_dtype(requested: str = "auto") -> str:
    """The dtype to generate in: "bfloat16" for "auto" only where `native_bf16()`, else "float32";
    an explicit "float32"/"bfloat16" is returned as it is."""
    if requested == "auto":
        return "bfloat16" if native_bf16() else "float32"
    if requested not in ("float32", "bfloat16"):
        raise ValueError(f"dtype {requested!r} not in ('auto', 'float32', 'bfloat16')")
    return requested


def int8_dynamic(model):
    """A copy of `model` for generation with every nn.Linear (the LM head included) dynamically quantized
    to int8: weights int8 per output channel, activations quantized per call (torch's
    `quantize_dynamic`, fbgemm/x86 kernels). Batched decoding on CPU is bound by reading the weights, and
    int8 reads a quarter of fp32's bytes. Greedy outputs are not identical to fp32's: compare them
    (benchmarks/generation_bench.py --int8) before trusting a score read in int8."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=False)


def adds_bos(tokenizer, prompts: list[str]) -> bool:
    """Whether to let the tokenizer add its special tokens: not when every prompt already starts with
    the BOS text (a rendered chat template, e.g. SmolLM2's "<|im_start|>"), which would double it."""
    bos = tokenizer.bos_token
    return not (bos and all(p.startswith(bos) for p in prompts))


def sdpa_gqa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' "sdpa" attention, except that grouped-query heads read their shared keys/values
    inside the kernel (`enable_gqa`) also when there is a mask. transformers 4.57 does that only without
    a mask; with one (any padded batch) it first copies every key/value head per query head
    (`repeat_kv`): at 16 rows x 400 tokens, a 5.8 ms copy-and-attend per SmolLM2 block against 1.2 ms,
    with bit-identical outputs (measured on this CPU)."""
    if attention_mask is not None and attention_mask.ndim == 4:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    if is_causal is None:
        is_causal = query.shape[2] > 1 and attention_mask is None and getattr(module, "is_causal", True)
    gqa = {"enable_gqa": True} if key.shape[1] != query.shape[1] else {}
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
                                         is_causal=is_causal, **gqa)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register("sdpa_gqa", sdpa_gqa_attention)
AttentionMaskInterface.register("sdpa_gqa", sdpa_mask)  # the same boolean masks as "sdpa"


@contextmanager
def _grouped_query_attention(model):
    """Run a model that uses "sdpa" attention with `sdpa_gqa_attention` for the duration (decoding only)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("sdpa_gqa")
    try:
        yield
    finally:
        model.set_attn_implementation("sdpa")


class _AppendLayer(DynamicLayer):
    """A DynamicLayer that appends in place. Its keys/values are views of buffers with spare columns,
    so a decode step writes one column instead of copying the whole cache as DynamicLayer's torch.cat
    does (a third of a SmolLM2 decode step at 16 rows x 400 tokens). Keys replaced from outside (rows
    selected, caches joined or cropped) are copied into a fresh buffer at the next append."""

    spare = 128  # columns allocated ahead; a buffer is re-allocated (one copy) every `spare` steps

    def __init__(self):
        super().__init__()
        self._key_buf = self._value_buf = self._key_view = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, cache_kwargs=None):
        if not self.is_initialized:
            self.lazy_initialization(key_states)
        length, n = self.get_seq_length(), key_states.shape[-2]
        if self._key_buf is None or self.keys is not self._key_view or length + n > self._key_buf.shape[-2]:
            width = length + n + self.spare
            self._key_buf = key_states.new_empty(*key_states.shape[:2], width, key_states.shape[-1])
            self._value_buf = value_states.new_empty(*value_states.shape[:2], width, value_states.shape[-1])
            if length:
                self._key_buf[:, :, :length], self._value_buf[:, :, :length] = self.keys, self.values
        self._key_buf[:, :, length : length + n] = key_states
        self._value_buf[:, :, length : length + n] = value_states
        self.keys, self.values = self._key_buf[:, :, : length + n], self._value_buf[:, :, : length + n]
        self._key_view = self.keys
        return self.keys, self.values


class _AppendCache(DynamicCache):
    """DynamicCache made of `_AppendLayer`s."""

    def __init__(self):
        super().__init__()
        self.layer_class_to_replicate = _AppendLayer


def encode_left_padded(tokenizer, texts: list[str], add_special_tokens: bool | None = None):
    """Tokenize `texts` as one left-padded batch (every row ends at the last column); the tokenizer's
    padding side is left as it was. add_special_tokens=None decides with `adds_bos`."""
    special = adds_bos(tokenizer, texts) if add_special_tokens is None else add_special_tokens
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=special)
    finally:
        tokenizer.padding_side = side


def padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: a row's first real token is position 0 (pads get 0 too)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def _prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Run left-padded prompts into a fresh KV cache: (last-position logits, cache, mask, next positions)."""
    width = int(attention_mask.sum(1).max())  # drop the padding columns every row has
    input_ids, attention_mask = input_ids[:, -width:], attention_mask[:, -width:]
    positions = padded_positions(attention_mask)
    cache = _AppendCache()
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, past_key_values=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1]
    return logits, cache, attention_mask, positions[:, -1] + 1


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    pad = width - t.shape[dim]
    return t if pad == 0 else torch.cat([t.new_zeros(*t.shape[:dim], pad, *t.shape[dim + 1:]), t], dim)


def _join(cache: DynamicCache, mask: torch.Tensor, other: DynamicCache, other_mask: torch.Tensor) -> torch.Tensor:
    """Append `other`'s rows to `cache` (in place), left-padding the shorter one; return the joined mask.
    Keys already carry their rotary positions, so left padding (masked out) changes no attention score."""
    width = max(mask.shape[1], other_mask.shape[1])
    for layer, extra in zip(cache.layers, other.layers):
        layer.keys = torch.cat([_left_pad(layer.keys, width, 2), _left_pad(extra.keys, width, 2)])
        layer.values = torch.cat([_left_pad(layer.values, width, 2), _left_pad(extra.values, width, 2)])
    return torch.cat([_left_pad(mask, width, 1), _left_pad(other_mask, width, 1)])


def _crop_left(cache: DynamicCache, mask: torch.Tensor) -> torch.Tensor:
    """Drop the leading columns no running row attends to (left after a long row left); return the mask."""
    lead = int((mask.sum(0) == 0).long().cumprod(0).sum())
    if lead:
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[:, :, lead:], layer.values[:, :, lead:]
    return mask[:, lead:]


@torch.inference_mode()
def greedy_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                  end_ids: set[int] | frozenset[int] = frozenset(),
                  stop: Callable[[int, list[int]], bool] | None = None,
                  on_token: Callable[[int, int], None] | None = None,
                  batch_size: int | None = None, progress: bool = False,
                  top_p: float | None = None, generator: torch.Generator | None = None) -> list[list[int]]:
    """Greedy continuations of left-padded prompts (input_ids, attention_mask: (N, T)), with a KV cache;
    with `top_p`, nucleus samples at temperature 1 instead, drawn from `generator` (seeded by the caller).

    At most `batch_size` rows run at once (all when None); the others wait, in order, and join as
    running rows end (continuous batching): their prompts are prefilled into a cache of their own,
    which is then joined to the running one. A row leaves as soon as it ends: an id in `end_ids` (not
    returned), `stop(row, ids)` true after a token (that token is kept), or `max_new_tokens`; its
    cache rows leave with it, so every step computes only running rows. `on_token(row, id)` sees each
    kept token as it is chosen (streaming). `model.generate` instead computes finished rows until its
    whole batch ends (on GSM8K about half of a batch's row-steps). transformers' own continuous
    batching (`generate_batch`) sizes its paged cache from CUDA memory in 4.57 and fails on CPU, hence
    this loop. `progress` shows a tqdm bar over finished rows.

    Returns the new token ids of every row, in input order.
    """
    n = len(input_ids)
    batch_size = batch_size or n
    new: list[list[int]] = [[] for _ in range(n)]
    if max_new_tokens < 1 or n == 0:
        return new
    bar = tqdm(total=n, disable=not progress, desc="generate")
    with _grouped_query_attention(model):  # padded rows: keys/values shared by query groups in the kernel
        rows = torch.arange(min(batch_size, n))
        waiting = list(range(len(rows), n))
        logits, cache, mask, next_pos = _prefill(model, input_ids[rows], attention_mask[rows])
        while len(rows):
            tokens = logits.argmax(-1) if top_p is None else sample_top_p(logits, top_p, generator)  # (b,)
            running = []
            for j, (row, t) in enumerate(zip(rows.tolist(), tokens.tolist())):
                if t in end_ids:
                    continue
                new[row].append(t)
                if on_token:
                    on_token(row, t)
                if len(new[row]) < max_new_tokens and not (stop and stop(row, new[row])):
                    running.append(j)
            if len(running) < len(rows):
                bar.update(len(rows) - len(running))
                keep = torch.tensor(running, dtype=torch.long, device=input_ids.device)
                cache.batch_select_indices(keep)
                rows, tokens, mask, next_pos = rows[keep.cpu()], tokens[keep], mask[keep], next_pos[keep]
                mask = _crop_left(cache, mask)
            if len(rows):  # one step of the running rows
                mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
                logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                               past_key_values=cache, use_cache=True).logits[:, -1]
                next_pos = next_pos + 1
            if waiting and len(rows) < batch_size:  # free places: prefill waiting prompts and join them
                enter = torch.tensor(waiting[: batch_size - len(rows)])
                waiting = waiting[len(enter):]
                new_logits, new_cache, new_mask, new_pos = _prefill(model, input_ids[enter], attention_mask[enter])
                if len(rows):
                    mask = _join(cache, mask, new_cache, new_mask)
                    logits, next_pos = torch.cat([logits, new_logits]), torch.cat([next_pos, new_pos])
                else:
                    logits, cache, mask, next_pos = new_logits, new_cache, new_mask, new_pos
                rows = torch.cat([rows, enter])
    bar.close()
    return new


def sample_top_p(logits: torch.Tensor, top_p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of `logits` (b, V) from the smallest set of tokens holding `top_p` of the
    probability (transformers' TopPLogitsWarper, as `generate(do_sample=True, top_p=...)` uses)."""
    scores = TopPLogitsWarper(top_p)(None, logits.float())
    return torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(-1)


def stop_token_ids(tokenizer, model=None) -> set[int]:
    """The ids that end a row: the tokenizer's EOS and pad token, and the EOS ids of the model's generation
    config, which `generate` stops at. They differ for chat models: Qwen2.5's tokenizer ends text with
    <|endoftext|>, its generation config ends a turn at <|im_end|>."""
    ids = {tokenizer.pad_token_id, tokenizer.eos_token_id}
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(eos) if isinstance(eos, (list, tuple)) else {eos}
    return ids - {None}


def tail_matches(tokenizer, ids: list[int], test: Callable[[str], bool], window: int = 24) -> bool:
    """test() on the decoded last `window` tokens: stop texts are short, so the tail is enough."""
    return test(tokenizer.decode(ids[-window:], skip_special_tokens=True))


@torch.inference_mode()
def generate_ids(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 16,
    stop: Callable[[int, list[int]], bool] | None = None,
    add_special_tokens: bool | None = None,
    progress: bool = False,
    on_token: Callable[[int, int], None] | None = None,
    top_p: float | None = None,
    seed: int = 0,
) -> list[list[int]]:
    """Greedy new token ids for every prompt (EOS/pad not included), in prompt order: the one batching
    wrapper around `greedy_decode` that every evaluator and the bridge use. With `top_p`, nucleus
    samples instead, from a generator seeded with `seed` (the global RNG is not touched); a prompt given
    k times gets k samples.

    At most `batch_size` prompts run at once; a prompt that ends makes room for the next (continuous
    batching). Prompts enter longest first, so rows of similar length run together (less padding),
    left-padded so that every prompt ends at the last position.

    Args:
        stop: stop(index of the prompt, its ids so far) after each token; True ends that row.
        add_special_tokens: let the tokenizer add BOS; None decides per batch with `adds_bos` (no second
            BOS before a rendered chat template).
        progress: tqdm bar over finished prompts.
        on_token: on_token(index of the prompt, id) for each kept token as it is chosen (streaming).
        top_p: sample from the top-p nucleus at temperature 1 instead of taking the argmax.
        seed: the sampler's seed (with `top_p`).
    """
    if not prompts:
        return []
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    texts = [prompts[i] for i in order]
    enc = encode_left_padded(tokenizer, texts, add_special_tokens).to(model.device)
    new = greedy_decode(model, enc["input_ids"], enc["attention_mask"], max_new_tokens, stop_token_ids(tokenizer, model),
                        (lambda row, ids: stop(order[row], ids)) if stop else None,
                        (lambda row, t: on_token(order[row], t)) if on_token else None, batch_size=batch_size,
                        progress=progress, top_p=top_p,
                        generator=None if top_p is None else torch.Generator(device=model.device).manual_seed(seed))
    out: list[list[int]] = [[] for _ in prompts]
    for i, ids in zip(order, new):
        out[i] = ids
    return out


def greedy_generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 16,
    batch_size: int = 16,
    progress: bool = False,
    stop_at_newline: bool = False,
    stop_strings: list[str] | None = None,
    stop_when: Callable[[int, str], bool] | None = None,
) -> list[str]:
    """Greedy continuations of `prompts` (decoded, prompt stripped): `generate_ids`, decoded.

    Args:
        prompts: raw prompt strings (apply a chat template before calling if wanted).
        max_new_tokens: generation budget per prompt.
        batch_size: prompts running at once (continuous batching).
        progress: show a tqdm bar over finished prompts.
        stop_at_newline: a row stops at its first newline, and its text is cut there.
        stop_strings: a row stops generating after any of these (kept in its text) and leaves the
            batch (`greedy_decode`), so short answers do not pay for the longest budget.
        stop_when: a row also stops once stop_when(index of its prompt, its text so far) is true.
    """
    stops = list(stop_strings or []) + (["\n"] if stop_at_newline else [])

    def stop(i: int, ids: list[int]) -> bool:
        return bool((stops and tail_matches(tokenizer, ids, lambda text: any(s in text for s in stops)))
                    or (stop_when and stop_when(i, tokenizer.decode(ids, skip_special_tokens=True))))

    new = generate_ids(model, tokenizer, prompts, max_new_tokens, batch_size,
                       stop if stops or stop_when else None, progress=progress)
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    return [t.split("\n")[0] if stop_at_newline else t for t in texts]
