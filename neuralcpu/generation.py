"""Batched greedy generation (left padding, explicit pad token, KV cache) shared by every evaluator."""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache


def adds_bos(tokenizer, prompts: list[str]) -> bool:
    """Whether to let the tokenizer add its special tokens: not when every prompt already starts with
    the BOS text (a rendered chat template, e.g. SmolLM2's "<|im_start|>"), which would double it."""
    bos = tokenizer.bos_token
    return not (bos and all(p.startswith(bos) for p in prompts))


@torch.inference_mode()
def greedy_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                  end_ids: set[int] | frozenset[int] = frozenset(),
                  stop: Callable[[int, list[int]], bool] | None = None,
                  on_token: Callable[[int, int], None] | None = None) -> list[list[int]]:
    """Greedy continuations of a left-padded batch (input_ids, attention_mask: (B, T)), with a KV cache.

    A row leaves the batch as soon as it ends: an id in `end_ids` (not returned), `stop(row, ids)` true
    after a token (that token is kept), or `max_new_tokens`. `on_token(row, id)` sees every kept token
    as it is chosen (streaming). Its cache rows are dropped with it, so later
    steps cost only the rows still running; `model.generate` keeps computing finished rows until the
    whole batch ends (on GSM8K about half of a batch's row-steps). transformers' continuous batching
    (`generate_batch`) would also refill the batch, but in 4.57 it sizes its paged cache from CUDA memory
    and fails on CPU, hence this loop.

    Returns the new token ids of every row, in batch order.
    """
    rows = torch.arange(len(input_ids))
    new: list[list[int]] = [[] for _ in rows]
    mask = attention_mask
    positions = (mask.long().cumsum(-1) - 1).clamp_min(0)  # left padding: a row's first real token is position 0
    cache = DynamicCache()
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1]
    next_pos = positions[:, -1] + 1
    for _ in range(max_new_tokens):
        tokens = logits.argmax(-1)  # (b,)
        running = []
        for j, (row, t) in enumerate(zip(rows.tolist(), tokens.tolist())):
            if t in end_ids:
                continue
            new[row].append(t)
            if on_token:
                on_token(row, t)
            if len(new[row]) < max_new_tokens and not (stop and stop(row, new[row])):
                running.append(j)
        if not running:
            break
        if len(running) < len(rows):
            keep = torch.tensor(running, device=input_ids.device)
            cache.batch_select_indices(keep)
            rows, tokens, mask, next_pos = rows[keep.cpu()], tokens[keep], mask[keep], next_pos[keep]
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                       past_key_values=cache, use_cache=True).logits[:, -1]
        next_pos = next_pos + 1
    return new


def stop_token_ids(tokenizer) -> set[int]:
    """The ids that end a row: EOS and the pad token."""
    return {tokenizer.pad_token_id, tokenizer.eos_token_id} - {None}


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
) -> list[list[int]]:
    """Greedy new token ids for every prompt (EOS/pad not included), in prompt order: the one batching
    wrapper around `greedy_decode` that every evaluator and the bridge use.

    Prompts are batched longest first, so rows of similar length share a batch (less padding), with
    left padding so that every prompt ends at the last position.

    Args:
        stop: stop(index of the prompt, its ids so far) after each token; True ends that row.
        add_special_tokens: let the tokenizer add BOS; None decides per batch with `adds_bos` (no second
            BOS before a rendered chat template).
        progress: tqdm bar over batches.
    """
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    ends = stop_token_ids(tokenizer)
    out: list[list[int]] = [[] for _ in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for b in tqdm(range(0, len(order), batch_size), disable=not progress, desc="generate"):
            idx = order[b : b + batch_size]
            texts = [prompts[i] for i in idx]
            special = adds_bos(tokenizer, texts) if add_special_tokens is None else add_special_tokens
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=special).to(model.device)
            row_stop = (lambda row, ids, idx=idx: stop(idx[row], ids)) if stop else None
            for i, ids in zip(idx, greedy_decode(model, enc["input_ids"], enc["attention_mask"], max_new_tokens,
                                                 ends, row_stop)):
                out[i] = ids
    finally:
        tokenizer.padding_side = side
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
        batch_size: prompts per forward batch.
        progress: show a tqdm bar over batches.
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
