"""Tool-use SFT: teach any model the bridge's protocol (lookup calls, answers from results, two-hop
chains) on examples generated from a store's facts, for any relation that has a relation file.

    python -m bridge.toolsft --model smollm2-135m --store stores/geo --out runs/toolsft \\
        --relations country,capital,currency --exclude runs/rlcp/facts.json
    python -m bridge.toolsft --model runs/rlcp --store stores/kb --out runs/toolsft_kb \\
        --relations kb/relations/iata.yaml,country                      # a relation no code names

It lives in `bridge` because it trains the bridge's protocol (`neuralcpu` never imports `bridge`).
Three kinds of examples, all laid out exactly as the loop lays them out for this tokenizer
(`bridge.prompts.make_format`; tool results come from the store through the same tools and escaping):
  1. call:   a train-split question of a relation  ->  lookup(subject, relation);
  2. answer: the question, that call, the store's real result  ->  the object;
  3. chain (two hops, `--chains`): "the capital of the country of Mumbai" -> lookup(Mumbai, country)
     -> result -> lookup(India, capital) -> result -> "New Delhi". The question is a train template
     of the second relation with "the <answer type of the first> of <subject>" as its subject.
Three guards against what a small model learns besides the protocol (all off by default):
  - `--augment P`: a share P of the questions get a neutral lead-in sentence first ("Quick question. ").
    Trained on templates alone, SmolLM2-135M copies the question's opening words as the subject, so a
    question that does not open with the subject gets `lookup("I'm filling in a form ...")`;
  - `--keep SOURCE`: facts of other relations ("geonames", a JSONL or an RLCP facts.json) whose
    train-template prompts, both layouts, are trained toward the starting model's own greedy answer
    (self-distillation). Without it the lookup habit spreads to every question, and closed-book answers
    to facts the model knows turn into calls;
  - `--copy-subjects N` (with `--keep`): N more call examples about names of the keep facts. Trained on a
    few hundred subjects, the model writes the trained subject nearest to a new one ("Bangladesh" for
    Bhutan) or misspells it; lookups of names it never trained on teach it to copy the question's.
Only *train*-split templates are used, of both layouts (completion and chat wordings); the held-out
facts are scored before and after under the `--eval-split` templates (test by default). `--model`
is any preset, save_pretrained dir or RLCP run dir.

The output folder carries what the bridge needs to use the run: the model, `relations/<name>.yaml`
(a copy of every relation file trained on: `bridge.chat` and `bridge.evaluate` register them, so a
fact reads in the sentence the run trained on) and `held_out_facts.jsonl` (up to 1000 store facts of
the trained relations it never trained on, the `--eval-facts` ones first, each line naming its relation
file: `bridge.evaluate --facts` and `benchmarks/new_kb.py` score them).
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

from common.facts import Fact, find_answer, normalize_name
from common.relations import Relation, load_relation, register_relation, relation_named
from common.toolcall import CALL_CLOSE, is_lookup, parse_calls, render_lookup
from neuralcpu import losses
from neuralcpu.config import config_parser, parse_config
from neuralcpu.generation import greedy_generate
from neuralcpu.models import load_model

from neuralcpu.training import encode, resolve_layers, set_trainable

from .loop import make_turn, run_tool, tool_schemas
from .prompts import make_format


@dataclass
class ToolSFTConfig:
    """Every knob of a run; written to <out>/toolsft_config.json so the folder reproduces the run."""

    model: str = field(default="smollm2-135m", metadata={"help": "preset, .gguf, save_pretrained dir or RLCP run dir"})
    store: str = field(default="stores/geo", metadata={"help": "symbolic_ram store whose facts make the examples"})
    out: str = field(default="runs/toolsft", metadata={"help": "output directory (save_pretrained model)"})
    exclude: str | None = field(default=None, metadata={"help": "facts.json of an RLCP run: its subjects are held out"})
    relations: str = field(default="country,capital", metadata={
        "help": "comma-separated relations: shipped names (common/relations) or paths to relation YAML files"})
    n_facts: int = field(default=200, metadata={"help": "store facts turned into training examples"})
    eval_facts: int = field(default=16, metadata={"help": "held-out store facts scored before and after"})
    chains: int = field(default=0, metadata={"help": "two-hop chains (r1 then r2) to train on; 0: none"})
    augment: float = field(default=0.0, metadata={
        "help": "share of training questions given a neutral lead-in sentence first, so the subject is not always first"})
    keep: str | None = field(default=None, metadata={
        "help": "facts of other relations to keep answering closed-book: 'geonames', a JSONL or an RLCP facts.json"})
    keep_prompts: int = field(default=400, metadata={"help": "--keep prompts (train templates) trained toward the "
                                                             "starting model's own answer"})
    copy_subjects: int = field(default=0, metadata={
        "help": "extra call examples whose subjects are names of the --keep facts, so the call copies the question's "
                "subject instead of recalling a trained one; 0: none"})
    eval_split: str = field(default="test", metadata={"help": "template split the held-out facts are scored on"})
    steps: int = field(default=40, metadata={"help": "optimisation steps"})
    batch_size: int = field(default=8, metadata={"help": "examples per step, split between calls, answers, chains"})
    lr: float = field(default=5e-5, metadata={"help": "learning rate (AdamW)"})
    trainable: str = field(default="full", metadata={"help": "'full', 'deep' (last third of the blocks) or 'lora'"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (trainable=lora)"})
    max_len: int = field(default=256, metadata={"help": "max tokens of an example"})
    format: str = field(default="auto", metadata={"help": "bridge prompt layout: auto, completion, chat or chat-text (bridge.prompts)"})
    seed: int = field(default=0, metadata={"help": "random seed"})

    def relation_list(self) -> list[Relation]:
        """The relations named, loading (and registering) the ones given as YAML paths."""
        out = []
        for name in filter(None, (r.strip() for r in self.relations.split(","))):
            rel = load_relation(name) if name.endswith((".yaml", ".yml")) else relation_named(name)
            register_relation(rel)
            out.append(rel)
        return out

    def validate(self) -> None:
        """Raise one ValueError listing every bad field."""
        errs = []
        if not (Path(self.store) / "facts.sqlite").is_file():
            errs.append(f"store {self.store!r}: no knowledge store there")
        if self.exclude is not None and not Path(self.exclude).is_file():
            errs.append(f"exclude {self.exclude!r}: no such file")
        if self.keep is not None and self.keep != "geonames" and not Path(self.keep).is_file():
            errs.append(f"keep {self.keep!r}: neither 'geonames' nor a file")
        if not 0.0 <= self.augment <= 1.0:
            errs.append(f"augment must be in [0, 1], got {self.augment}")
        try:
            if not self.relation_list():
                errs.append("relations: none given")
        except (KeyError, ValueError) as e:
            errs.append(f"relations: {e.args[0] if e.args else e}")
        if self.trainable not in ("full", "deep", "lora"):
            errs.append(f"trainable {self.trainable!r} not in ('full', 'deep', 'lora')")
        if self.format not in ("auto", "completion", "chat"):
            errs.append(f"format {self.format!r} not in ('auto', 'completion', 'chat')")
        if self.eval_split not in ("validation", "test"):
            errs.append(f"eval_split {self.eval_split!r} not in ('validation', 'test')")
        for name in ("n_facts", "steps", "batch_size", "max_len"):
            if getattr(self, name) < 1:
                errs.append(f"{name} must be >= 1")
        if self.copy_subjects and self.keep is None:
            errs.append("copy_subjects needs --keep (its facts' subjects are the names copied)")
        for name in ("eval_facts", "chains", "keep_prompts", "copy_subjects"):
            if getattr(self, name) < 0:
                errs.append(f"{name} must be >= 0")
        if errs:
            raise ValueError("invalid toolsft config:\n  " + "\n  ".join(errs))


ANSWER_CHARS = 60  # characters of an answer that `score` reads
HELD_OUT_FILE = 1000  # most facts never trained on that <out>/held_out_facts.jsonl lists for later scoring

# Lead-ins that name nothing: put before a training question (`--augment`), they move the subject away
# from the opening words, which a small model otherwise copies into the call. Some open with "I" or "In".
LEAD_INS = ("Quick question. ", "I have a question for you. ", "I am not sure about this one. ", "In case you know: ",
            "Sorry to bother you again. ", "Here is something I need for a report. ", "From the notes of a meeting: ",
            "Please answer in a few words. ", "My friend and I disagree about this. ", "For a quiz tonight: ",
            "Note to self, to check later. ", "Hello! ", "In our office we keep a small reference list. ",
            "It came up at work today. ", "One more thing. ", "A reader wrote in with a question. ")

# ----------------------------------------------------------------------------- data -------------------

def _single_objects(store, relations: list[str]) -> dict[tuple[str, str], str]:
    """{(subject, relation): object} for the (subject, relation) pairs of `relations` with exactly one
    object, whose object is not named by the subject."""
    by_key: dict[tuple[str, str], set[str]] = {}
    for _, s, r, o in store.db.iter_edges():
        if r in relations:
            by_key.setdefault((s, r), set()).add(o)
    return {k: next(iter(v)) for k, v in by_key.items()
            if len(v) == 1 and find_answer(k[0], [next(iter(v))]) is None}


def sample_facts(store, relations: list[str], n: int, exclude: set[str], seed: int) -> list[Fact]:
    """Up to `n` random store facts of `relations` whose (subject, relation) has exactly one object,
    the relations taking turns.

    Subjects in `exclude` (case- and accent-folded) are skipped, as are subjects the answer already names.
    """
    single = _single_objects(store, relations)
    rng = random.Random(seed)
    queues = []
    for rel in relations:  # relations take turns, so a big one (6k cities) does not crowd out the others
        keys = sorted(k for k in single if k[1] == rel and normalize_name(k[0]) not in exclude)
        rng.shuffle(keys)
        queues.append(keys)
    facts = []
    while len(facts) < n and any(queues):
        for keys in queues:
            while keys:
                s, r = keys.pop(0)
                if len({f.object for f in store.lookup(s, r)}) == 1:  # aliases may join other subjects' facts
                    facts.append(Fact(s, r, single[(s, r)], relation_named(r).aliases_of(single[(s, r)])))
                    break
            if len(facts) >= n:
                break
    return facts


def sample_chains(store, relations: list[str], n: int, exclude: set[str], seed: int) -> list[tuple[Fact, Fact]]:
    """Up to `n` two-hop chains (s -r1-> o, o -r2-> x) over `relations`, r1 != r2, both hops single-valued."""
    single = _single_objects(store, relations)
    by_subject: dict[str, list[tuple[str, str]]] = {}
    for (s, r), o in single.items():
        by_subject.setdefault(normalize_name(s), []).append((r, o))
    chains = sorted((s, r1, o1, r2, o2) for (s, r1), o1 in single.items() if normalize_name(s) not in exclude
                    for r2, o2 in by_subject.get(normalize_name(o1), []) if r2 != r1)
    rng = random.Random(seed)
    rng.shuffle(chains)
    return [(Fact(s, r1, o1), Fact(o1, r2, o2, relation_named(r2).aliases_of(o2))) for s, r1, o1, r2, o2 in chains[:n]]


def templates_of(fact: Fact, split: str) -> list[str]:
    """`fact` in every template of `split`, both layouts (a chat wording is also a plain-text question)."""
    return relation_named(fact.relation).prompts(fact.subject, split)


def chain_question(first: Fact, second: Fact, split: str = "train") -> list[str]:
    """Two-hop questions: the second relation's `split` templates about "the <answer of r1> of <subject>"."""
    noun = relation_named(first.relation).answer
    return relation_named(second.relation).prompts(f"the {noun} of {first.subject}", split)


def lead_in(rng: random.Random, share: float) -> str:
    """A neutral lead-in sentence with probability `share`, else ""."""
    return rng.choice(LEAD_INS) if share and rng.random() < share else ""


def make_examples(facts: list[Fact], fmt, tools: dict, tokenizer, split: str = "train", augment: float = 0.0,
                  seed: int = 0):
    """(call pairs, answer pairs, owners): (prompt, target) pairs laid out exactly as the bridge loop lays
    them out, one of each per (fact, `split` template); owners[i] is the fact of pair i. A share `augment`
    of the questions opens with a lead-in sentence (`LEAD_INS`)."""
    calls, answers, owners = [], [], []
    rng = random.Random(seed)
    for f in facts:
        text = fmt.call_target(render_lookup(f.subject, f.relation))
        obs = [run_tool(tools, c) for c in parse_calls(text)]  # the store's real answer, escaped as in the loop
        for p in (lead_in(rng, augment) + q for q in templates_of(f, split)):
            calls.append((fmt.prompt(p, [], tools=True), text))
            answers.append((fmt.prompt(p, [make_turn(text, obs)], tools=True), fmt.answer_target(f.object, tokenizer)))
            owners.append(f)
    return calls, answers, owners


def make_chain_examples(chains: list[tuple[Fact, Fact]], fmt, tools: dict, tokenizer, split: str = "train"):
    """(pairs, owners): for each chain and question, three (prompt, target) pairs: first call, second call
    after the first result, answer after both results. owners[i] is the chain of pair i."""
    pairs, owners = [], []
    for first, second in chains:
        c1 = fmt.call_target(render_lookup(first.subject, first.relation))
        c2 = fmt.call_target(render_lookup(first.object, second.relation))
        t1 = make_turn(c1, [run_tool(tools, c) for c in parse_calls(c1)])
        t2 = make_turn(c2, [run_tool(tools, c) for c in parse_calls(c2)])
        for q in chain_question(first, second, split):
            pairs += [(fmt.prompt(q, [], tools=True), c1), (fmt.prompt(q, [t1], tools=True), c2),
                      (fmt.prompt(q, [t1, t2], tools=True), fmt.answer_target(second.object, tokenizer))]
            owners += [(first, second)] * 3
    return pairs, owners


def score(model, tokenizer, calls, answers, owners: list[Fact], chain_pairs=(), chain_owners=()) -> dict:
    """Greedy: call rate (a well-formed lookup of the right subject *and* relation), answer-from-result
    accuracy, and for chains the second call's rate and the final answer's accuracy."""
    was_training = model.training
    model.eval()
    prompts = [p for p, _ in list(calls) + list(answers) + list(chain_pairs)]
    # A row is settled at its first whole call (the loop acts on that); an answer row also once its answer
    # window is full. Call rows never stop on length: a call is longer than the window.
    answer_row = [False] * len(calls) + [True] * len(answers) + [k % 3 == 2 for k in range(len(chain_pairs))]
    done = lambda i, text: CALL_CLOSE in text or (answer_row[i] and len(text) >= ANSWER_CHARS)
    outs = greedy_generate(model, tokenizer, prompts, max_new_tokens=48, batch_size=16, stop_when=done) if prompts else []
    model.train(was_training)
    call_outs, answer_outs = outs[: len(calls)], outs[len(calls): len(calls) + len(answers)]
    chain_outs = outs[len(calls) + len(answers):]

    def right_call(text: str, fact: Fact) -> bool:
        return any(is_lookup(c, fact.subject) and c.arguments.get("relation") == fact.relation for c in parse_calls(text))

    out = {"call_rate": sum(right_call(o, f) for o, f in zip(call_outs, owners)) / max(1, len(call_outs)),
           "answer_acc": sum(find_answer(o[:ANSWER_CHARS], f.answers()) is not None for o, f in zip(answer_outs, owners))
           / max(1, len(answer_outs)), "n": len(call_outs), "samples": call_outs[:2] + answer_outs[:2]}
    if chain_outs:
        second = [right_call(o, ch[1]) for o, ch in zip(chain_outs[1::3], chain_owners[1::3])]
        final = [find_answer(o[:ANSWER_CHARS], ch[1].answers()) is not None for o, ch in zip(chain_outs[2::3], chain_owners[2::3])]
        out.update({"chain_second_call_rate": sum(second) / len(second), "chain_answer_acc": sum(final) / len(final),
                    "chain_n": len(final), "chain_samples": chain_outs[1:3]})
    return out


# ----------------------------------------------------------------------------- the run ---------------

def load_keep_facts(source: str, relations: list[str], exclude: set[str]) -> list[Fact]:
    """Facts for `--keep`: "geonames" (city -> country and country -> capital, the shipped relations), a JSONL
    of triples or an RLCP facts.json (every set); never of a trained relation, never an excluded subject."""
    from neuralcpu.facts import FactSets, geonames_capital_facts, geonames_city_facts, load_jsonl_facts

    if source == "geonames":
        facts = geonames_city_facts() + geonames_capital_facts()
    elif source.endswith(".jsonl"):
        facts = load_jsonl_facts(source)
    else:
        sets = FactSets.load(source)
        facts = sets.forget + sets.locality + sets.untouched + sets.other
    return [f for f in facts if f.relation not in relations and normalize_name(f.subject) not in exclude]


def make_copy_pairs(fmt, relations: list[str], names: list[str], n: int, augment: float, seed: int) -> list[tuple[str, str]]:
    """`n` call-only (prompt, target) pairs: a train template of a trained relation about a name taken from
    other facts (`names`, not subjects of the trained facts), and the lookup of that very name. Trained on
    a few hundred subjects alone, SmolLM2-135M writes the trained subject nearest to an unseen one
    ("Bangladesh" for Bhutan) or a misspelling of it; names it never looked up teach it to copy."""
    rng = random.Random(seed + 1)
    names = rng.sample(names, min(n, len(names)))
    pairs = []
    for i, name in enumerate(names):
        relation = relations[i % len(relations)]
        question = lead_in(rng, augment) + rng.choice(relation_named(relation).prompts(name, "train"))
        pairs.append((fmt.prompt(question, [], tools=True), fmt.call_target(render_lookup(name, relation))))
    return pairs


def make_keep_pairs(model, tokenizer, facts: list[Fact], n: int, augment: float, seed: int) -> list[tuple[str, str]]:
    """`n` (prompt, target) pairs: a random train-template prompt of a keep fact (chat templates through the
    model's chat template, when it has one), and the model's own greedy answer to it, cut where the answer
    is named, at the end of a completion's line, or after 24 tokens. Training toward these keeps the model
    answering what it answered: it is the model's behaviour that is kept, right or wrong."""
    from neuralcpu.facts import chat_prompt, has_chat, relation_of

    rng = random.Random(seed)
    jobs = [(f, t) for f in facts for t in relation_of(f).select("train") if t.layout == "completion" or has_chat(tokenizer)]
    jobs = rng.sample(jobs, min(n, len(jobs)))
    prompts = []
    for f, t in jobs:
        text = lead_in(rng, augment) + t.render(f.subject)
        prompts.append(chat_prompt(tokenizer, text) if t.layout == "chat" else text)

    def settled(i: int, text: str) -> bool:
        f, t = jobs[i]
        return find_answer(text, list(f.answers())) is not None or (t.layout == "completion" and "\n" in text.lstrip())

    was_training = model.training
    model.eval()
    outs = greedy_generate(model, tokenizer, prompts, max_new_tokens=24, batch_size=32, stop_when=settled)
    model.train(was_training)
    pairs = []
    for (f, t), p, o in zip(jobs, prompts, outs):
        o = o.split("\n")[0] if t.layout == "completion" and o.strip() else o
        if o.strip():
            pairs.append((p, o))
    return pairs


def write_run_relations(relations: list[Relation], out: Path) -> dict[str, str]:
    """Copy each relation's file to <out>/relations/<name>.yaml; {name: path relative to out}."""
    folder = out / "relations"
    folder.mkdir(exist_ok=True)
    for rel in relations:
        (folder / f"{rel.name}.yaml").write_text(Path(rel.path).read_text(encoding="utf-8"), encoding="utf-8")
    return {rel.name: f"relations/{rel.name}.yaml" for rel in relations}


def write_held_out(facts: list[Fact], files: dict[str, str], path: Path) -> None:
    """The held-out facts as a JSONL of triples that `neuralcpu.facts.load_jsonl_facts` (and so
    `bridge.evaluate --facts`) reads, each line naming its relation file relative to the JSONL."""
    path.write_text("".join(json.dumps({**dataclasses.asdict(f), "aliases": list(f.aliases),
                                        "relation_file": files[f.relation]}, ensure_ascii=False) + "\n"
                            for f in facts), encoding="utf-8")


def _excluded_subjects(path: str | None) -> set[str]:
    if not path:
        return set()
    from neuralcpu.facts import FactSets  # an RLCP run's forget/locality sets

    return {normalize_name(s) for s in FactSets.load(path).all_subjects()}  # every set: untouched ones are readings too


def train(cfg: ToolSFTConfig) -> dict:
    """Run the recipe per `cfg`; save the model to cfg.out and return the summary."""
    from symbolic_ram import KnowledgeStore

    from .tools import make_bridge_tools

    cfg.validate()
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "toolsft_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    relation_list = cfg.relation_list()
    relations = [r.name for r in relation_list]
    relation_files = write_run_relations(relation_list, out)
    model, tokenizer = load_model(cfg.model)
    exclude = _excluded_subjects(cfg.exclude)
    with KnowledgeStore(cfg.store, create=False) as store:
        tool_list = make_bridge_tools(store)
        tools = {t.name: t for t in tool_list}
        fmt = make_format(tokenizer, tool_schemas(tool_list), cfg.format)
        facts = sample_facts(store, relations, cfg.n_facts + max(cfg.eval_facts, HELD_OUT_FILE), exclude, cfg.seed)
        train_facts, held_out_all = facts[: cfg.n_facts], facts[cfg.n_facts:]  # the sample's order: a prefix is stable
        held_out = held_out_all[: cfg.eval_facts]
        call_pairs, answer_pairs, _ = make_examples(train_facts, fmt, tools, tokenizer, "train", cfg.augment, cfg.seed)
        held_out_examples = make_examples(held_out, fmt, tools, tokenizer, cfg.eval_split)
        chains = sample_chains(store, relations, cfg.chains + (cfg.eval_facts if cfg.chains else 0), exclude,
                               cfg.seed) if cfg.chains else []
        train_chains, held_chains = chains[: cfg.chains], chains[cfg.chains:]
        chain_pairs, _ = make_chain_examples(train_chains, fmt, tools, tokenizer, "train")
        held_chain_examples = make_chain_examples(held_chains, fmt, tools, tokenizer, cfg.eval_split)
    if not train_facts:
        raise ValueError(f"store {cfg.store} has no usable facts of relations {relations}")
    (out / "train_facts.json").write_text(json.dumps([dataclasses.asdict(f) for f in train_facts], ensure_ascii=False))
    write_held_out(held_out_all, relation_files, out / "held_out_facts.jsonl")

    def evaluate_held_out() -> dict | None:
        return score(model, tokenizer, *held_out_examples, *held_chain_examples) if held_out else None

    keep_facts = load_keep_facts(cfg.keep, relations, exclude) if cfg.keep else []
    keep_pairs = make_keep_pairs(model, tokenizer, keep_facts, cfg.keep_prompts, cfg.augment,
                                 cfg.seed) if cfg.keep else []  # the starting model's answers
    trained = {normalize_name(f.subject) for f in train_facts + held_out_all}
    names = sorted({f.subject for f in keep_facts if normalize_name(f.subject) not in trained})
    copy_pairs = make_copy_pairs(fmt, relations, names, cfg.copy_subjects, cfg.augment, cfg.seed)
    call_pairs = call_pairs + copy_pairs  # the call stream: its share of each batch stays the same
    first_layer = resolve_layers("auto", model.config.num_hidden_layers)[0]
    model = set_trainable(model, cfg.trainable, first_layer, cfg.lora_r)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    probe = encode(tokenizer, call_pairs[:6] + answer_pairs[:6] + chain_pairs[:4] + keep_pairs[:4], cfg.max_len)  # fixed batch

    def fixed_loss() -> float:
        with torch.no_grad():
            logits = model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits  # (B, T, V)
            return losses.lm_loss(logits, probe["labels"]).item()

    before = {"fixed_loss": fixed_loss(), "held_out": evaluate_held_out()}
    rng = random.Random(cfg.seed)
    streams = [s for s in (call_pairs, answer_pairs, chain_pairs, keep_pairs) if s]
    t0 = time.perf_counter()
    model.train()
    with open(out / "metrics.jsonl", "w") as log:
        for step in range(cfg.steps):
            pairs = [rng.choice(streams[i % len(streams)]) for i in range(cfg.batch_size)]  # streams in turn
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
    summary = {"model": cfg.model, "store": cfg.store, "layout": fmt.name, "relations": relations,
               "train_facts": len(train_facts), "train_chains": len(train_chains),
               "examples": len(call_pairs) + len(answer_pairs) + len(chain_pairs), "keep_pairs": len(keep_pairs),
               "copy_pairs": len(copy_pairs),
               "held_out_facts": len(held_out), "held_out_file_facts": len(held_out_all),
               "held_out_chains": len(held_chains), "eval_split": cfg.eval_split, "steps": cfg.steps,
               "seconds": round(time.perf_counter() - t0, 1), "before": before, "after": after}
    (out / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1))  # last: marks a finished run
    return summary


def parse_args(argv: list[str] | None) -> ToolSFTConfig:
    """CLI flags generated from the config dataclass (one flag per field, with its help)."""
    return parse_config(ToolSFTConfig, config_parser(ToolSFTConfig, "python -m bridge.toolsft", __doc__), argv)[0]


def main(argv: list[str] | None = None) -> int:
    summary = train(parse_args(argv))
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
