"""Library plumbing for the training recipes (RLCP, its baselines, tool-use SFT): batching prompts with
their target and probe positions, reading states at probe sites, choosing and freezing blocks, and
saving models and resumable checkpoints atomically."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import torch

from neuralcpu.generation import adds_bos


def subject_end(tokenizer, prompt: str, subject: str, n_tokens: int) -> int:
    """Index of the last token of `subject` in `prompt`'s tokens (its first occurrence), or the last
    prompt token when the subject is not found (or the tokenizer gives no offsets)."""
    start = prompt.find(subject) if subject else -1
    if start < 0:
        return n_tokens - 1
    end = start + len(subject)
    try:
        offsets = tokenizer(prompt, add_special_tokens=adds_bos(tokenizer, [prompt]),
                            return_offsets_mapping=True).offset_mapping
    except (NotImplementedError, ValueError):  # slow tokenizers have no offsets
        return n_tokens - 1
    inside = [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]
    return min(inside[-1], n_tokens - 1) if inside else n_tokens - 1


def encode(tokenizer, pairs: list[tuple[str, str]], max_len: int = 256, subjects: list[str] | None = None
           ) -> dict[str, torch.Tensor]:
    """Right-padded batch of prompt+target; labels are -100 outside the target.

    Positions: `last` = each row's last prompt token, `subject` = the last token of its subject
    (`subjects[i]` in prompt i; the last prompt token where no subject is given)."""
    ids, labels, last, subj = [], [], [], []
    for i, (prompt, target) in enumerate(pairs):
        p = tokenizer(prompt, add_special_tokens=adds_bos(tokenizer, [prompt])).input_ids  # chat prompts have theirs
        t = tokenizer(target, add_special_tokens=False).input_ids if target else []
        seq = (p + t)[:max_len]
        ids.append(seq)
        labels.append(([-100] * len(p) + t)[:max_len])
        last.append(min(len(p), max_len) - 1)
        subj.append(min(subject_end(tokenizer, prompt, subjects[i], len(p)), max_len - 1) if subjects else last[-1])
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([s + [pad] * (width - len(s)) for s in ids]),  # (B, T)
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids]),
        "labels": torch.tensor([s + [-100] * (width - len(s)) for s in labels]),
        "last": torch.tensor(last),  # (B,)
        "subject": torch.tensor(subj),  # (B,)
    }


def last_token_feats(hidden_states, batch, layers: list[int]) -> list[torch.Tensor]:
    """Each layer's state at every row's last prompt token, (B, C) per layer in `layers` (hidden_states
    indexed as transformers does: index 0 is the embeddings)."""
    return site_feats(hidden_states, batch, [("last", l) for l in layers])


# A probe site: a token position of the batch ("last" prompt token or "subject"'s last token) at a block.
Site = tuple[str, int]


def site_feats(hidden_states, batch, sites: list[Site]) -> list[torch.Tensor]:
    """The state at each site, (B, C) per site (hidden_states indexed as transformers does)."""
    rows = torch.arange(len(batch["last"]))
    return [hidden_states[layer + 1][rows, batch[position].to(hidden_states[layer + 1].device)]
            for position, layer in sites]


def resolve_sites(last_layers: str, subject_layers: str, num_layers: int) -> list[Site]:
    """Probe sites: the last prompt token at `last_layers` ('auto' = the last third of the blocks) and
    the subject's last token at `subject_layers` ('auto' = the middle third, where fact editors find a
    subject's attributes; '' = none)."""
    sites = [("last", l) for l in resolve_layers(last_layers, num_layers)] if last_layers else []
    if subject_layers == "auto":
        sites += [("subject", l) for l in range(num_layers // 3, num_layers - num_layers // 3)]
    elif subject_layers:
        sites += [("subject", l) for l in resolve_layers(subject_layers, num_layers)]
    return sites


def resolve_layers(spec: str, num_layers: int) -> list[int]:
    """Block indices for the probes: 'auto' = the last third of the blocks."""
    if spec == "auto":
        return list(range(num_layers - num_layers // 3, num_layers))
    layers = sorted({int(x) for x in spec.split(",")})
    if not layers or layers[0] < 0 or layers[-1] >= num_layers:
        raise ValueError(f"grl_layers {spec!r} outside 0..{num_layers - 1}")
    return layers


def set_trainable(model, mode: str, first_layer: int, lora_r: int = 16):
    """Freeze per `mode`; return the (possibly peft-wrapped) model."""
    if mode == "full":
        model.requires_grad_(True)
        return model
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                         "gate_proj", "up_proj", "down_proj"], layers_to_transform=list(range(first_layer,
                         model.config.num_hidden_layers)))
        return get_peft_model(model, cfg)
    # deep: blocks below the first GRL layer (and the tied embeddings) stay frozen.
    # mlp: of those blocks only the MLPs train, where fact editors (ROME, MEMIT) find a subject's
    # attributes stored; attention and the norms, which route every token (arithmetic included), stay put.
    if mode not in ("deep", "mlp"):
        raise ValueError(f"trainable {mode!r} not in ('deep', 'mlp', 'full', 'lora')")
    model.requires_grad_(False)
    for block in model.model.layers[first_layer:]:
        (block if mode == "deep" else block.mlp).requires_grad_(True)
    if mode == "deep":
        model.model.norm.requires_grad_(True)
    return model


def save_model(model, tokenizer, path: Path, lora: bool, same_as: Path | None = None) -> None:
    """save_pretrained of the model and its tokenizer into `path`, never half-written: everything goes to a
    temp dir first, which is then renamed to `path` (or, when `path` exists and holds other files, as a
    run's OUT does, moved into it file by file). A LoRA model is merged on a copy, so training can go
    on with its adapters. `same_as`, a directory save_model wrote from this very model, is hard-linked
    (copied where links fail) instead of serialised again: 2 GB less disk for Qwen2.5-0.5B."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if same_as is not None:
        tmp.mkdir(parents=True)
        for f in same_as.iterdir():
            try:
                os.link(f, tmp / f.name)
            except OSError:  # another filesystem, or one without hard links
                shutil.copy2(f, tmp / f.name)
    else:
        (copy.deepcopy(model).merge_and_unload() if lora else model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    if not path.exists():
        os.replace(tmp, path)
        return
    for f in tmp.iterdir():
        os.replace(f, path / f.name)
    tmp.rmdir()


def save_checkpoint(accel, ckpt: Path, step: int) -> None:
    """Atomic resumable checkpoint: write to a temp dir, then swap it in."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if accel.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accel.wait_for_everyone()
    accel.save_state(str(tmp))  # every process calls it: each writes its own RNG state
    accel.wait_for_everyone()
    if not accel.is_main_process:
        return
    (tmp / "step.json").write_text(json.dumps({"step": step}))
    old = ckpt.with_name(ckpt.name + ".old")
    if ckpt.exists():
        os.replace(ckpt, old)
    os.replace(tmp, ckpt)
    shutil.rmtree(old, ignore_errors=True)
