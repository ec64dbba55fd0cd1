"""The frozen prefix, computed once: `deep` training runs only the blocks it trains.

In `deep` mode the blocks below the first GRL layer (and the tied embeddings) never change, so the
input of the first trained block is a fixed function of the prompt. `PrefixCache` computes it once per
distinct prompt (fact prompts recur every step) and `DeepSuffix` runs the rest of the model from it.
The frozen anchor shares that prefix exactly, so its forward pass starts from the same cached states.

Written by hand because transformers has no "start at block k" entry point; it repeats the ~15 lines of
the Llama/Qwen2 `forward` (causal mask, rotary embeddings, the block loop, final norm) and a test checks
that its logits and hidden states match the full model's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask


def _run_blocks(config, rotary_emb, blocks, hidden: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
    """Run `blocks` on right-padded `hidden` (B, T, C); return [input, output of each block]."""
    cache_position = torch.arange(hidden.shape[1], device=hidden.device)
    position_ids = cache_position[None]  # what the HF forward uses without a KV cache (right padding)
    kw = dict(config=config, input_embeds=hidden, attention_mask=attention_mask, cache_position=cache_position,
              past_key_values=None, position_ids=position_ids)
    masks = {"full_attention": create_causal_mask(**kw)}
    if "sliding_attention" in (getattr(config, "layer_types", None) or []):
        masks["sliding_attention"] = create_sliding_window_causal_mask(**kw)
    rope = rotary_emb(hidden, position_ids)
    states = [hidden]
    for block in blocks:
        out = block(hidden, attention_mask=masks[getattr(block, "attention_type", "full_attention")],
                    position_ids=position_ids, cache_position=cache_position, position_embeddings=rope)
        hidden = out[0] if isinstance(out, tuple) else out
        states.append(hidden)
    return states


class DeepSuffix(nn.Module):
    """Blocks `first_layer`.. of a Llama/Qwen2-style causal LM with its final norm and LM head.

    Shares its parameters with `model`. forward(h, mask) takes the input of block `first_layer`
    (B, T, C) and returns (logits, states) with states[i] == model's hidden_states[first_layer + i]
    (the last one after the final norm, as transformers reports it).
    """

    bucket_overhead = 64  # tokens a length group must save to be worth its own forward pass (`length_buckets`)

    def __init__(self, model, first_layer: int):
        super().__init__()
        inner = model.model
        self.config = model.config
        self.first_layer = first_layer
        self.layers = nn.ModuleList(list(inner.layers)[first_layer:])
        self.norm, self.rotary_emb, self.lm_head = inner.norm, inner.rotary_emb, model.lm_head

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, head: bool = True,
                positions: torch.Tensor | None = None) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """head=False skips the LM head and returns (None, states). `positions` (B, T) bool runs the head
        only there and returns logits (N, V) for the N chosen positions in row-major order: the head is
        a large share of a small model's compute, and most losses read a few positions.

        The rows run in groups of similar length (`length_buckets`), each padded only to its own longest
        row: a step's fact batches were a quarter padding. Outputs come back in input order and width;
        what they hold at padded positions means nothing."""
        lengths = attention_mask.sum(1).tolist()
        width = hidden.shape[1]
        parts = []  # (rows, their index tensor, their states at their group's width)
        for rows in length_buckets(lengths, self.bucket_overhead):
            w = max(lengths[i] for i in rows)
            idx = torch.tensor(rows, device=hidden.device)
            states = _run_blocks(self.config, self.rotary_emb, self.layers, hidden[idx, :w], attention_mask[idx, :w])
            states[-1] = self.norm(states[-1])
            parts.append((rows, idx, states))
        inverse = torch.cat([idx for _, idx, _ in parts]).argsort()

        def stitch(tensors: list[torch.Tensor]) -> torch.Tensor:  # per group (n_g, w_g, ...) -> (B, width, ...)
            return torch.cat([F.pad(t, (0, 0, 0, width - t.shape[1])) for t in tensors])[inverse]

        states = [stitch([st[k] for _, _, st in parts]) for k in range(len(parts[0][2]))]
        if not head:
            return None, states
        if positions is None:
            return stitch([self.lm_head(st[-1]) for _, _, st in parts]), states
        per_row = {}
        for rows, idx, st in parts:
            at = positions[idx.to(positions.device)]
            w = st[-1].shape[1]
            if at[:, w:].any():
                raise ValueError("positions include padding; the head reads only real tokens")
            at = at[:, :w]
            per_row.update(zip(rows, self.lm_head(st[-1][at]).split(at.sum(1).tolist())))
        return torch.cat([per_row[r] for r in range(len(lengths))]), states


def length_buckets(lengths: list[int], overhead: int = 64) -> list[list[int]]:
    """Row indices grouped by length so that padding each group to its longest row computes the fewest
    tokens, counting `overhead` tokens per group for the fixed cost of a forward pass: the optimal
    split of the rows sorted by length (dynamic programming over split points, O(n^2))."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    ls = [lengths[i] for i in order]
    best, cut = [0.0] + [float("inf")] * len(ls), [0] * (len(ls) + 1)
    for j in range(1, len(ls) + 1):  # best[j]: cheapest grouping of the j shortest rows
        for i in range(j):  # last group = sorted rows i..j-1, padded to ls[j-1]
            cost = best[i] + (j - i) * ls[j - 1] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(ls)
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def row_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[tuple[int, ...]]:
    """Each row's token ids without its (right) padding: the key of a prompt in the caches below."""
    return [tuple(row[:n].tolist()) for row, n in zip(input_ids, attention_mask.sum(1).tolist())]


class RowCache:
    """Per-prompt outputs of a frozen computation, computed once per distinct prompt."""

    def __init__(self):
        self.rows: dict[tuple[int, ...], object] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, keys: list[tuple[int, ...]], compute) -> list:
        """The outputs for `keys`; compute(indices of the rows not cached yet) returns theirs, in order."""
        missing = [i for i, k in enumerate(keys) if k not in self.rows]
        if missing:
            for i, value in zip(missing, compute(missing)):
                self.rows[keys[i]] = value
        return [self.rows[k] for k in keys]


class PrefixCache:
    """Input of block `first_layer` for each distinct prompt, computed once with the frozen prefix."""

    def __init__(self, model, first_layer: int):
        self.model, self.first_layer = model, first_layer
        self.states = RowCache()  # token ids -> (T, C), on the model's device

    @torch.no_grad()
    def compute(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The prefix states of a right-padded batch, (B, T, C), without caching."""
        inner = self.model.model
        hidden = inner.embed_tokens(input_ids)
        blocks = list(inner.layers)[: self.first_layer]
        return _run_blocks(self.model.config, inner.rotary_emb, blocks, hidden, attention_mask)[-1]

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: bool = True) -> torch.Tensor:
        """Prefix states (B, T, C) of a right-padded batch; `cache=False` for one-off text (GSM8K)."""
        if not cache:
            return self.compute(input_ids, attention_mask)
        lengths = attention_mask.sum(1).tolist()

        def compute(missing):
            fresh = self.compute(input_ids[missing], attention_mask[missing])
            return [fresh[j, : lengths[i]] for j, i in enumerate(missing)]

        rows = self.states.get(row_keys(input_ids, attention_mask), compute)
        out = torch.zeros(*input_ids.shape, rows[0].shape[-1], dtype=rows[0].dtype, device=input_ids.device)
        for i, r in enumerate(rows):
            out[i, : lengths[i]] = r
        return out


class AnchorReference:
    """The frozen anchor's outputs on recurring prompts (the locality set), computed once per prompt:
    its logits at the positions a KL term reads and its states at chosen probe sites (position, block).
    The anchor never changes, so recomputing them every step (a forward of every trained block, and the
    LM head) is wasted work.

    `anchor_forward(batch, positions)` must return an object with `.logits` (N, V) at `positions` (B, T)
    bool, in row-major order, and `.hidden_states` indexed as transformers does.
    """

    def __init__(self, anchor_forward, sites: list):
        # sites: (position key of the batch, block) pairs, e.g. ("last", 20), ("subject", 12); a plain
        # block index means the last prompt token.
        self.anchor_forward, self.cache = anchor_forward, RowCache()
        self.sites = [s if isinstance(s, tuple) else ("last", s) for s in sites]

    @torch.no_grad()
    def __call__(self, batch: dict, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N, V) at `positions`, row-major; states (len(sites), B, C) at the sites)."""

        def compute(missing):
            sub = {k: v[missing] for k, v in batch.items()}
            ref = self.anchor_forward(sub, positions[missing])
            logits = ref.logits.split(positions[missing].sum(1).tolist())
            rows = torch.arange(len(missing))
            states = torch.stack([ref.hidden_states[l + 1][rows, sub[key].to(ref.logits.device)] for key, l in self.sites], 1)
            return list(zip(logits, states))  # per row: ((k, V), (L, C))

        rows = self.cache.get(row_keys(batch["input_ids"], batch["attention_mask"]), compute)
        return torch.cat([r[0] for r in rows]), torch.stack([r[1] for r in rows], 1)
