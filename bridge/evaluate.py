"""Score the bridge on held-out templates: tool-call rate, accuracy per mode, answers given without a lookup.

    python -m bridge.evaluate --model runs/rlcp --store stores/geo                 # facts: <run>/facts.json
    python -m bridge.evaluate --model smollm2-135m --store stores/geo --facts runs/rlcp/facts.json \\
        --set forget --modes closed,just-rag,tool --out results/bridge_original.json
    python -m bridge.evaluate --model runs/toolsft_iso --facts runs/toolsft_iso/held_out_facts.jsonl \\
        --modes tool --layouts completion,chat           # a toolsft run: its store, relations, held-out facts

Every fact is asked under its *test-split* templates only (`--split`; no training recipe, RLCP or
toolsft, ever uses them), and scored with `common.facts.matches_answer`. `--layouts` picks the
templates by the layout their relation file declares; a chat template's question is asked in the
bridge's own layout (as toolsft trains it), not wrapped in the model's chat template.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from common.facts import Fact, matches_answer, normalize_name
from common.relations import LAYOUTS
from neuralcpu.facts import FactSets, load_jsonl_facts, relation_of
from common.toolcall import is_lookup

from .loop import MODES, Bridge
from .prompts import FORMATS


@dataclass
class Record:
    """One question asked in one mode, and how it went."""

    subject: str
    relation: str
    object: str
    prompt: str
    family: str  # the template family of the relation file the prompt comes from
    mode: str
    answer: str | None
    correct: bool
    called: bool  # at least one well-formed lookup of the fact's subject *and* relation
    answered_without_lookup: bool
    supported: bool
    stop_reason: str
    steps: int
    # every call the model wrote: {"subject", "relation"} of a well-formed lookup, {"error"} of malformed
    # markup, {"tool"} of another tool; `call_verdict` reads why a lookup was not right from these
    calls: list = field(default_factory=list)


VERDICTS = ("right", "no_call", "malformed", "wrong_subject", "wrong_relation", "wrong_both")


def call_summary(call) -> dict:
    """What `Record.calls` keeps of one parsed call."""
    if call.error is not None:
        return {"error": call.error}
    if not is_lookup(call):
        return {"tool": call.name}
    return {"subject": str(call.arguments.get("subject", "")), "relation": str(call.arguments.get("relation", ""))}


def call_verdict(record: Record) -> str:
    """Why a question's lookups were or were not right (one of `VERDICTS`): "right" when one names the fact's
    subject and relation; else, over its well-formed lookups, "wrong_relation" when one has the subject,
    "wrong_subject" when one has the relation, "wrong_both"; "malformed" when it only wrote broken call
    markup; "no_call" when it wrote none (or only other tools)."""
    if record.called:
        return "right"
    lookups = [c for c in record.calls if "subject" in c]
    if not lookups:
        return "malformed" if any("error" in c for c in record.calls) else "no_call"
    if any(normalize_name(c["subject"]) == normalize_name(record.subject) for c in lookups):
        return "wrong_relation"
    if any(c["relation"] == record.relation for c in lookups):
        return "wrong_subject"
    return "wrong_both"


def run_eval(bridge: Bridge, facts: list[Fact], modes=MODES, split: str = "test", progress: bool = False,
             layouts: tuple[str, ...] = ("completion",)) -> list[Record]:
    """Ask every fact under every `split` template of `layouts` in every mode; one Record per (prompt, mode)."""
    jobs = [(f, t.render(f.subject), t.family) for f in facts for t in relation_of(f).select(split) if t.layout in layouts]
    # one batched pass per mode (`Bridge.ask_many`)
    results = {m: bridge.ask_many([p for _, p, _ in jobs], mode=m) for m in tqdm(modes, desc="bridge eval", disable=not progress)}
    records = []
    for i, (fact, prompt, family) in enumerate(jobs):
        for mode in modes:
            res = results[mode][i]
            records.append(Record(
                fact.subject, fact.relation, fact.object, prompt, family, mode, res.answer,
                matches_answer(res.answer or "", fact),
                any(is_lookup(c, fact.subject) and c.arguments.get("relation") == fact.relation for c in res.calls),
                res.answered_without_lookup, res.supported, res.stop_reason, res.steps,
                [call_summary(c) for c in res.calls]))
    return records


def _of(records: list[Record], mode: str) -> list[Record]:
    return [r for r in records if r.mode == mode]


def _rate(flags) -> float | None:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else None


def accuracy(records: list[Record], mode: str) -> float | None:
    """Fraction of `mode` questions answered correctly (None if the mode was not run)."""
    return _rate(r.correct for r in _of(records, mode))


def tool_call_rate(records: list[Record]) -> float | None:
    """Fraction of tool-mode questions with a well-formed lookup naming the fact's subject and relation."""
    return _rate(r.called for r in _of(records, "tool"))


def answered_without_lookup_rate(records: list[Record]) -> float | None:
    """Fraction of tool-mode questions answered although no lookup returned a fact (flagged answers)."""
    return _rate(r.answered_without_lookup for r in _of(records, "tool"))


def summarize(records: list[Record]) -> dict:
    """All headline numbers: accuracy per mode, tool-call rate, flagged and unsupported answers, stop reasons."""
    tool = _of(records, "tool")
    return {
        "questions_per_mode": max((len(_of(records, m)) for m in MODES), default=0),
        "closed_acc": accuracy(records, "closed"),
        "just_rag_acc": accuracy(records, "just-rag"),
        "tool_acc": accuracy(records, "tool"),
        "tool_call_rate": tool_call_rate(records),
        "answered_without_lookup": answered_without_lookup_rate(records),
        "tool_unsupported_answers": _rate(r.answer is not None and not r.answered_without_lookup and not r.supported
                                          for r in tool),
        "tool_stop_reasons": {s: sum(r.stop_reason == s for r in tool) for s in sorted({r.stop_reason for r in tool})},
        "tool_mean_steps": _rate(r.steps for r in tool),
        "tool_call_verdicts": {v: sum(call_verdict(r) == v for r in tool) for v in VERDICTS} if tool else {},
    }


def load_eval_facts(path: str, which: str) -> list[Fact]:
    """Facts to ask: a FactSets facts.json (`which` = forget, locality or all) or a JSONL of triples."""
    if path.endswith(".jsonl"):
        return load_jsonl_facts(path)
    sets = FactSets.load(path)
    return {"forget": sets.forget, "locality": sets.locality, "all": sets.forget + sets.locality}[which]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="preset, save_pretrained dir or RLCP run dir")
    parser.add_argument("--store", default=None, help="symbolic_ram store (default: the one a run dir (RLCP or toolsft) names)")
    parser.add_argument("--facts", default=None, help="facts.json of an RLCP run or a JSONL (default: <model>/facts.json)")
    parser.add_argument("--set", default="forget", choices=["forget", "locality", "all"], help="which facts of a facts.json")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes (default: all three)")
    parser.add_argument("--split", default="test", choices=["validation", "test"],
                        help="template split the facts are asked under (validation: for choosing settings)")
    parser.add_argument("--layouts", default="completion",
                        help="comma-separated template layouts asked: completion, chat (default: completion)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N facts")
    parser.add_argument("--max-steps", type=int, default=4, help="generations per question in tool mode")
    parser.add_argument("-k", type=int, default=3, help="facts retrieved up front in just-rag mode")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per generation (a call is ~35)")
    parser.add_argument("--format", default="auto", choices=FORMATS,
                        help="prompt layout (bridge.prompts): auto, completion, chat (tools in the template) or chat-text")
    parser.add_argument("--out", default=None, help="write summary and records as JSON here")
    args = parser.parse_args(argv)

    from symbolic_ram import KnowledgeStore, make_tools

    from .chat import load_generator, register_run_relations, resolve_store_arg
    from .loop import tool_schemas
    from .prompts import make_format

    args.store = resolve_store_arg(args.model, args.store)
    args.facts = args.facts or str(Path(args.model) / "facts.json")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    layouts = tuple(x.strip() for x in args.layouts.split(",") if x.strip())
    problems = [f"unknown mode {m!r} (modes: {', '.join(MODES)})" for m in modes if m not in MODES]
    problems += [f"--layouts: unknown layout {x!r} (layouts: {', '.join(LAYOUTS)})" for x in layouts if x not in LAYOUTS]
    if not layouts:
        problems.append("--layouts: none given")
    if not Path(args.facts).is_file():
        problems.append(f"--facts {args.facts}: no such file")
    if any(m != "closed" for m in modes) and not (args.store and (Path(args.store) / "facts.sqlite").is_file()):
        problems.append(f"--store {args.store}: no knowledge store there (needed by just-rag and tool)")
    if problems:
        parser.error("\n  " + "\n  ".join(problems))

    register_run_relations(args.model)  # a toolsft run's relation files: the sentences it trained on
    facts = load_eval_facts(args.facts, args.set)[: args.limit]
    store = KnowledgeStore(args.store, create=False) if args.store else None
    tools = make_tools(store) if store is not None else None
    generate, tokenizer = load_generator(args.model, "float32", args.max_new_tokens)
    bridge = Bridge(generate, make_format(tokenizer, tool_schemas(tools or []), args.format), tools,
                    mode=modes[0], max_steps=args.max_steps, k=args.k)
    t0 = time.perf_counter()
    records = run_eval(bridge, facts, modes, args.split, progress=True, layouts=layouts)
    summary = {"model": args.model, "store": args.store, "facts": args.facts, "set": args.set, "n_facts": len(facts),
               "split": args.split, "layouts": list(layouts),
               "layout": bridge.fmt.name, **summarize(records), "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"summary": summary, "records": [asdict(r) for r in records]},
                                             ensure_ascii=False, indent=1))
    if store is not None:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
