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
                  stop: Callable[[int, list[int]], bool] | None = None) -> list[list[int]]:
    """Greedy continuations of a left-padded batch (input_ids, attention_mask: (B, T)), with a KV cache.

    A row leaves the batch as soon as it ends: an id in `end_ids` (not returned), `stop(row, ids)` true
    after a token (that token is kept), or `max_new_tokens`. Its cache rows are dropped with it, so later
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


def tail_matches(tokenizer, ids: list[int], test: Callable[[str], bool], window: int = 24) -> bool:
    """test() on the decoded last `window` tokens: stop texts are short, so the tail is enough."""
    return test(tokenizer.decode(ids[-window:], skip_special_tokens=True))


@torch.inference_mode()
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
    """Greedy continuations of `prompts` (decoded, prompt stripped), batched with left padding.

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
    end_ids = {tokenizer.pad_token_id, tokenizer.eos_token_id} - {None}
    stops = list(stop_strings or []) + (["\n"] if stop_at_newline else [])

    def stop(offset: int, row: int, ids: list[int]) -> bool:
        return bool((stops and tail_matches(tokenizer, ids, lambda text: any(s in text for s in stops)))
                    or (stop_when and stop_when(offset + row, tokenizer.decode(ids, skip_special_tokens=True))))

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only models must see the prompt end at the last position
    outputs: list[str] = []
    try:
        for i in tqdm(range(0, len(prompts), batch_size), disable=not progress, desc="generate"):
            batch = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True).to(model.device)
            new = greedy_decode(model, batch["input_ids"], batch["attention_mask"], max_new_tokens, end_ids,
                                (lambda row, ids, i=i: stop(i, row, ids)) if stops or stop_when else None)
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            outputs += [t.split("\n")[0] if stop_at_newline else t for t in texts]
    finally:
        tokenizer.padding_side = side
    return outputs
