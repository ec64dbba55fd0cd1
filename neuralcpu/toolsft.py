"""Tool-use SFT: teach any model the lookup format on examples generated from a store's facts.

    python -m neuralcpu toolsft --model smollm2-135m --store stores/geo --out runs/toolsft \\
        --exclude runs/rlcp/facts.json

RLCP's metabolized models learn the lookup call in their retrieval-signal stream; this recipe gives
the *original* model the same skill, so that it can run in bridge's `tool` mode for a fair comparison.
Two kinds of examples, both in the layout `bridge` will use for this tokenizer (`bridge.prompts`):
  1. call:   a training-template question  ->  the lookup call (`common.toolcall.render_lookup`);
  2. answer: the question, that call, the store's real answer to it (through the same langchain tool
             and escaping as the loop) and the fact in context  ->  the object.
Facts come from the store, restricted to relations with templates and with one unambiguous object.
Only *training* templates are used; `--exclude` holds out the facts of an RLCP run (its facts.json),
and a held-out sample of store facts is scored before and after under the evaluation templates.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from neuralcpu import losses
from neuralcpu.config import config_parser, parse_config
from common.facts import Fact, matches_answer, normalize_name
from common.relations import shipped_relations
from neuralcpu.facts import FactSets, prompts_for
from neuralcpu.generation import greedy_generate
from neuralcpu.models import load_model
from neuralcpu.training import encode, resolve_layers, set_trainable
from common.toolcall import is_lookup, parse_calls, render_lookup


@dataclass
class ToolSFTConfig:
    """Every knob of a run; written to <out>/toolsft_config.json so the folder reproduces the run."""

    model: str = field(default="smollm2-135m", metadata={"help": "preset, hub id, .gguf or save_pretrained dir"})
    store: str = field(default="stores/geo", metadata={"help": "symbolic_ram store whose facts make the examples"})
    out: str = field(default="runs/toolsft", metadata={"help": "output directory (save_pretrained model)"})
    exclude: str | None = field(default=None, metadata={"help": "facts.json of an RLCP run: its subjects are held out"})
    relations: str = field(default="country,capital", metadata={"help": "comma-separated relations to train on"})
    n_facts: int = field(default=200, metadata={"help": "store facts turned into training examples"})
    eval_facts: int = field(default=16, metadata={"help": "held-out store facts scored before and after"})
    steps: int = field(default=40, metadata={"help": "optimisation steps"})
    batch_size: int = field(default=8, metadata={"help": "examples per step, half call and half answer"})
    lr: float = field(default=5e-5, metadata={"help": "learning rate (AdamW)"})
    trainable: str = field(default="full", metadata={"help": "'full', 'deep' (last third of the blocks) or 'lora'"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (trainable=lora)"})
    max_len: int = field(default=192, metadata={"help": "max tokens of an example"})
    format: str = field(default="auto", metadata={"help": "bridge prompt layout: auto, completion or chat"})
    seed: int = field(default=0, metadata={"help": "random seed"})

    def validate(self) -> None:
        """Raise one ValueError listing every bad field."""
        errs = []
        if not (Path(self.store) / "facts.sqlite").is_file():
            errs.append(f"store {self.store!r}: no knowledge store there")
        if self.exclude is not None and not Path(self.exclude).is_file():
            errs.append(f"exclude {self.exclude!r}: no such file")
        unknown = [r for r in self.relations.split(",") if r not in shipped_relations()]
        if unknown:
            errs.append(f"relations {unknown} have no templates; known: {shipped_relations()}")
        if self.trainable not in ("full", "deep", "lora"):
            errs.append(f"trainable {self.trainable!r} not in ('full', 'deep', 'lora')")
        if self.format not in ("auto", "completion", "chat"):
            errs.append(f"format {self.format!r} not in ('auto', 'completion', 'chat')")
        for name in ("n_facts", "steps", "batch_size", "max_len"):
            if getattr(self, name) < 1:
                errs.append(f"{name} must be >= 1")
        if self.eval_facts < 0:
            errs.append("eval_facts must be >= 0")
        if errs:
            raise ValueError("invalid toolsft config:\n  " + "\n  ".join(errs))


# ----------------------------------------------------------------------------- data -------------------

def sample_facts(store, relations: list[str], n: int, exclude: set[str], seed: int) -> list[Fact]:
    """Up to `n` random store facts of `relations` whose (subject, relation) has exactly one object.

    Subjects in `exclude` (case- and accent-folded) are skipped, as are subjects the answer already names.
    """
    by_key: dict[tuple[str, str], set[str]] = {}
    for _, s, r, o in store.db.iter_edges():
        if r in relations and normalize_name(s) not in exclude and normalize_name(o) not in normalize_name(s):
            by_key.setdefault((s, r), set()).add(o)
    keys = sorted(k for k, objs in by_key.items() if len(objs) == 1)
    random.Random(seed).shuffle(keys)
    facts = []
    for s, r in keys:
        if len({f.object for f in store.lookup(s, r)}) == 1:  # aliases may join other subjects' facts
            facts.append(Fact(s, r, next(iter(by_key[(s, r)]))))
        if len(facts) >= n:
            break
    return facts


def make_examples(facts: list[Fact], fmt, tools: dict, tokenizer, split: str = "train"):
    """(call pairs, answer pairs, owners): (prompt, target) pairs laid out exactly as the bridge loop lays
    them out, one of each per (fact, `split` template); owners[i] is the fact of pair i."""
    from bridge.loop import make_turn, run_tool

    calls, answers, owners = [], [], []
    for f in facts:
        text = fmt.call_target(render_lookup(f.subject, f.relation))
        obs = [run_tool(tools, c) for c in parse_calls(text)]  # the store's real answer, escaped as in the loop
        for p in prompts_for(f, split):
            calls.append((fmt.prompt(p, [], tools=True), text))
            answers.append((fmt.prompt(p, [make_turn(text, obs)], tools=True), fmt.answer_target(f.object, tokenizer)))
            owners.append(f)
    return calls, answers, owners


def score(model, tokenizer, calls, answers, owners: list[Fact]) -> dict:
    """Call rate (a well-formed lookup of the right subject) and answer-from-result accuracy, greedy."""
    was_training = model.training
    model.eval()
    prompts = [p for p, _ in calls + answers]
    outs = greedy_generate(model, tokenizer, prompts, max_new_tokens=48, batch_size=16)  # a call is ~35 tokens
    model.train(was_training)
    call_outs, answer_outs = outs[: len(calls)], outs[len(calls):]
    called = [any(is_lookup(c, f.subject) for c in parse_calls(o)) for o, f in zip(call_outs, owners)]
    right = [matches_answer(o, f) for o, f in zip(answer_outs, owners)]
    return {"call_rate": sum(called) / max(1, len(called)), "answer_acc": sum(right) / max(1, len(right)),
            "samples": call_outs[:2] + answer_outs[:2]}


# ----------------------------------------------------------------------------- the run ---------------

def train(cfg: ToolSFTConfig) -> dict:
    """Run the recipe per `cfg`; save the model to cfg.out and return the summary."""
    from symbolic_ram import KnowledgeStore, make_tools

    from bridge.loop import tool_schemas
    from bridge.prompts import make_format

    cfg.validate()
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "toolsft_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    model, tokenizer = load_model(cfg.model)
    exclude = set()
    if cfg.exclude:
        sets = FactSets.load(cfg.exclude)
        exclude = {normalize_name(f.subject) for f in sets.forget + sets.locality}
    with KnowledgeStore(cfg.store, create=False) as store:
        tool_list = make_tools(store)
        tools = {t.name: t for t in tool_list}
        fmt = make_format(tokenizer, tool_schemas(tool_list), cfg.format)
        facts = sample_facts(store, cfg.relations.split(","), cfg.n_facts + cfg.eval_facts, exclude, cfg.seed)
        train_facts, held_out = facts[: cfg.n_facts], facts[cfg.n_facts:]
        call_pairs, answer_pairs, _ = make_examples(train_facts, fmt, tools, tokenizer, "train")
        held_out_examples = make_examples(held_out, fmt, tools, tokenizer, "test")
    if not train_facts:
        raise ValueError(f"store {cfg.store} has no usable facts of relations {cfg.relations}")
    (out / "train_facts.json").write_text(json.dumps([dataclasses.asdict(f) for f in train_facts], ensure_ascii=False))

    def evaluate_held_out() -> dict | None:
        return score(model, tokenizer, *held_out_examples) if held_out else None

    first_layer = resolve_layers("auto", model.config.num_hidden_layers)[0]
    model = set_trainable(model, cfg.trainable, first_layer, cfg.lora_r)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    probe = encode(tokenizer, (call_pairs[:8] + answer_pairs[:8]), cfg.max_len)  # fixed batch: loss before/after

    def fixed_loss() -> float:
        with torch.no_grad():
            logits = model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits  # (B, T, V)
            return losses.lm_loss(logits, probe["labels"]).item()

    before = {"fixed_loss": fixed_loss(), "held_out": evaluate_held_out()}
    rng = random.Random(cfg.seed)
    n_call = max(1, cfg.batch_size // 2)
    t0 = time.perf_counter()
    model.train()
    with open(out / "metrics.jsonl", "w") as log:
        for step in range(cfg.steps):
            pairs = rng.sample(call_pairs, min(n_call, len(call_pairs))) + \
                rng.sample(answer_pairs, min(cfg.batch_size - n_call, len(answer_pairs)))
            batch = encode(tokenizer, pairs, cfg.max_len)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
            loss = losses.lm_loss(logits, batch["labels"])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            log.write(json.dumps({"step": step + 1, "loss": loss.item(), "elapsed_s": time.perf_counter() - t0}) + "\n")
            log.flush()
            print(f"step {step + 1}/{cfg.steps} loss {loss.item():.4f}", flush=True)
    model.eval()
    after = {"fixed_loss": fixed_loss(), "held_out": evaluate_held_out()}

    final = model.merge_and_unload() if cfg.trainable == "lora" else model
    final.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    summary = {"model": cfg.model, "store": cfg.store, "layout": fmt.name, "train_facts": len(train_facts),
               "examples": len(call_pairs) + len(answer_pairs), "held_out_facts": len(held_out), "steps": cfg.steps,
               "seconds": round(time.perf_counter() - t0, 1), "before": before, "after": after}
    (out / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1))
    return summary


def parse_args(argv: list[str] | None) -> ToolSFTConfig:
    """CLI flags generated from the config dataclass (one flag per field, with its help)."""
    return parse_config(ToolSFTConfig, config_parser(ToolSFTConfig, "python -m neuralcpu toolsft", __doc__), argv)[0]


def main(argv: list[str] | None = None) -> int:
    summary = train(parse_args(argv))
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
