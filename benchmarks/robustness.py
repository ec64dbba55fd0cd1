"""Robustness of forgetting: a relearning attack and probe decodability before and after it.

The attack fine-tunes a fresh copy of a model on a seeded `fraction` (default 20%) of the forget set
(training-template prompt -> " answer", all parameters, AdamW, a fixed small budget of steps) and
reports closed-book accuracy on the *other* facts (held-out templates) before and after. Knowledge
that was only suppressed comes back on facts the attack never showed; removed knowledge does not.

Probe decodability: per layer, a fresh linear probe (neuralcpu.analyze's logistic regression) is fit
on the last-prompt-token states of the training-template prompts of every forget fact and scored on
the held-out-template prompts; chance = 1 / number of forget classes.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

import torch

from benchmarks import metrics
from neuralcpu import losses
from common.facts import Fact, matches_answer
from neuralcpu.facts import FactSets, prompts_for
from neuralcpu.generation import greedy_generate
from neuralcpu.training import encode


@dataclass
class AttackConfig:
    """The relearning attack's fixed budget (recorded with its results)."""

    fraction: float = 0.2  # share of the forget set the attacker fine-tunes on
    steps: int = 20  # optimisation steps, full batch
    lr: float = 1e-4  # AdamW learning rate, all parameters
    seed: int = 0


def split_forget(facts: list[Fact], fraction: float, seed: int) -> tuple[list[Fact], list[Fact]]:
    """(attack facts, held-out facts): a seeded shuffle, at least one fact on each side."""
    if len(facts) < 2:
        raise ValueError(f"the relearning attack needs >= 2 forget facts, got {len(facts)}")
    order = list(facts)
    random.Random(seed).shuffle(order)
    k = min(len(order) - 1, max(1, round(fraction * len(order))))
    return order[:k], order[k:]


def closed_book_accuracy(model, tokenizer, facts: list[Fact], split: str = "test") -> dict:
    """Exact-match accuracy of `facts` under the `split` templates (test: held out; proportion with Wilson CI)."""
    items = [(f, p) for f in facts for p in prompts_for(f, split)]
    outs = greedy_generate(model, tokenizer, [p for _, p in items], max_new_tokens=10, batch_size=32)
    return metrics.proportion(sum(matches_answer(o, f) for (f, _), o in zip(items, outs)), len(items))


def probe_decodability(model, tokenizer, facts: list[Fact]) -> dict:
    """Per-layer held-out-template accuracy of fresh linear probes for the object class of each fact.

    The probe is neuralcpu.analyze's (logistic regression, C by leave-one-template-out CV), so these
    numbers compare with `python -m neuralcpu analyze`. per_layer[0] is the embedding layer.
    """
    from neuralcpu.analyze import labelled_states, per_layer_probes

    classes = FactSets(facts, []).class_index
    test_x, test_y, _ = labelled_states(model, tokenizer, facts, "test", classes)
    train = labelled_states(model, tokenizer, facts, "train", classes)
    accs = per_layer_probes(train, {"acc": (test_x, test_y)})["acc"]
    blocks = accs[1:]
    deep = blocks[len(blocks) - len(blocks) // 3 :] or blocks  # the last third of the blocks: RLCP's probe layers
    return {"per_layer": accs, "deep_mean": sum(deep) / len(deep), "chance": 1 / len(classes), "n_eval": len(test_y)}


def relearn(model, tokenizer, facts: list[Fact], steps: int, lr: float, seed: int,
            batch_size: int | None = None) -> list[float]:
    """Fine-tune `model` in place on the training-template prompts of `facts`; return the loss per step.

    All parameters, AdamW (no weight decay), the answer with its full stop as the target. `batch_size`
    None: every step is the full batch; else each step takes the next `batch_size` rows of a seeded
    shuffle, reshuffled at every pass (benchmarks/relearning.py fixes its budget in steps x batch).
    """
    torch.manual_seed(seed)
    # the answer with its full stop: an answer the attack leaves without an ending runs on ("Estaviavia")
    # and word-boundary matching rightly refuses it
    batch = encode(tokenizer, [(p, " " + f.object + ".") for f in facts for p in prompts_for(f, "train")])
    n = len(batch["input_ids"])
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    model.requires_grad_(True)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    history = []
    for _ in range(steps):
        if batch_size is None or batch_size >= n:
            rows = slice(None)
        else:
            while len(order) < batch_size:
                order += torch.randperm(n, generator=gen).tolist()
            rows, order = order[:batch_size], order[batch_size:]
        ids, mask, labels = batch["input_ids"][rows], batch["attention_mask"][rows], batch["labels"][rows]  # (b, T)
        logits = model(input_ids=ids, attention_mask=mask).logits  # (b, T, V)
        loss = losses.lm_loss(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    model.eval()
    return history


def relearning_attack(model_path: str, facts: FactSets, cfg: AttackConfig, loader=None) -> dict:
    """Run the attack on a fresh copy of the model at `model_path`; before/after accuracy and probes.

    Args:
        model_path: anything neuralcpu.models.load_model accepts.
        facts: the run's fact sets; only the forget set is used.
        cfg: the attack budget and seed.
        loader: model loader (default neuralcpu.models.load_model; float32).
    """
    if loader is None:
        from neuralcpu.models import load_model as loader
    t0 = time.perf_counter()
    model, tokenizer = loader(model_path)
    attack, held = split_forget(facts.forget, cfg.fraction, cfg.seed)
    before = {"heldout": closed_book_accuracy(model, tokenizer, held),
              "attack_set": closed_book_accuracy(model, tokenizer, attack),
              "probe": probe_decodability(model, tokenizer, facts.forget)}
    loss = relearn(model, tokenizer, attack, cfg.steps, cfg.lr, cfg.seed)
    after = {"heldout": closed_book_accuracy(model, tokenizer, held),
             "attack_set": closed_book_accuracy(model, tokenizer, attack),
             "probe": probe_decodability(model, tokenizer, facts.forget)}
    del model
    return {"config": asdict(cfg), "attack_facts": [f.subject for f in attack],
            "heldout_facts": [f.subject for f in held], "before": before, "after": after,
            "loss_first_last": [loss[0], loss[-1]] if loss else None, "seconds": time.perf_counter() - t0}
