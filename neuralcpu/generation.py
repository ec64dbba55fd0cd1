"""Batched greedy generation (left padding, explicit pad token, KV cache) shared by every evaluator."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


def adds_bos(tokenizer, prompts: list[str]) -> bool:
    """Whether to let the tokenizer add its special tokens: not when every prompt already starts with
    the BOS text (a rendered chat template, e.g. SmolLM2's "<|im_start|>"), which would double it."""
    bos = tokenizer.bos_token
    return not (bos and all(p.startswith(bos) for p in prompts))


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
) -> list[str]:
    """Greedy continuations of `prompts` (decoded, prompt stripped), batched with left padding.

    Args:
        prompts: raw prompt strings (apply a chat template before calling if wanted).
        max_new_tokens: generation budget per prompt.
        batch_size: prompts per forward batch.
        progress: show a tqdm bar over batches.
        stop_at_newline: cut each continuation at its first newline.
        stop_strings: a row stops generating after any of these (kept in its text); the batch ends
            when every row has stopped, so short answers do not pay for the longest budget.
    """
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only models must see the prompt end at the last position
    outputs: list[str] = []
    try:
        for i in tqdm(range(0, len(prompts), batch_size), disable=not progress, desc="generate"):
            batch = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True).to(model.device)
            gen = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
                **({"stop_strings": stop_strings, "tokenizer": tokenizer} if stop_strings else {}),
            )
            texts = tokenizer.batch_decode(gen[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            outputs += [t.split("\n")[0] if stop_at_newline else t for t in texts]
    finally:
        tokenizer.padding_side = side
    return outputs
