"""Natural-question suite: questions as people type them, held out from every training phrasing, through
the bridge with a store. Single-hop, two-hop (city -> country -> X, built from the store's graph) and
not-found questions, scored separately with N and Wilson 95% CIs; JSON + markdown; resumable.

    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.natural_questions \\
        --model qwen2.5-coder-0.5b --store stores/nq --layouts chat,plain \\
        --out docs/results/natural_questions_qwen2.5-coder-0.5b.json
    ... --model runs/rlcp          # an RLCP run dir (or any save_pretrained dir) the same way

Wordings live in benchmarks/natural_questions.yaml (none equals or nearly equals a train/validation
template of common/relations: a test checks). Layouts: "chat" sends the wording as a user message
through the model's chat template, with the tools offered where the template renders them (Qwen2.5:
`bridge.prompts.ChatFormat`), else in the layout RLCP trains in chat (SmolLM2: "chat-text", calls as
text, facts before the question in a fresh user turn); "plain" continues the text (the completion
layout). Each layout's summary names the format it ran in.

Scores:
- single_hop / two_hop: `acc` = the answer names the expected object (word boundaries, aliases of
  the relation file); `store_acc` = right *and* backed by a fact a tool returned (status "store").
- not_found: `said_not_found` = the store was asked (by the model, or by the loop after the model,
  asked to check, answered again without a lookup: `loop_asked` counts those), no tool returned a fact,
  and the system says so (status "not_found"; a weights-only guess is shown flagged); `no_lookup`
  counts questions where the store was never asked (the guess is flagged, but nothing was found out); `presented_as_store` = an answer was presented as a store
  answer (a wrong fact from a fallback): should be 0. `similar_name_flagged`: answered from a fuzzy
  match of the name (status "store_guess", shown flagged), neither "not found" nor a store answer.
Per-question records go to <out>.records.jsonl; a rerun with the same --out skips questions already
there (same model, layout, question id), so a killed run resumes, and `--report-only` summarises the
records so far without a model (marked partial). Questions run interleaved over kinds and relations.
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from benchmarks.metrics import proportion
from benchmarks.provenance import commit, machine
from benchmarks.report import write_json_atomic, write_text_atomic
from common.facts import find_answer, normalize_name
from common.relations import SHIPPED, load_relation, relation_named

DATA = Path(__file__).with_name("natural_questions.yaml")
ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = ("chat", "plain")
KINDS = ("single_hop", "two_hop", "not_found")
NEAR_DUPLICATE = 0.9  # difflib ratio of normalised wordings at or above which two wordings are one


# ----------------------------------------------------------------------------- the data file -----------

class SuiteFileError(ValueError):
    """The suite's YAML is malformed; the message names the file and field."""


@dataclass(frozen=True)
class Question:
    """One question of the suite. `expected` is None for not-found questions."""

    id: str
    kind: str
    layout: str
    relations: tuple[str, ...]
    subject: str
    wording: str
    text: str
    expected: str | None
    aliases: tuple[str, ...] = ()


def load_suite(path: str | Path = DATA) -> dict:
    """The suite file, validated: raise SuiteFileError naming path and field on a bad entry."""
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))

    def need(ok: bool, where: str, why: str):
        if not ok:
            raise SuiteFileError(f"{path}: {where}: {why}")

    need(isinstance(data, dict) and all(k in data for k in KINDS), "top level", f"needs the keys {KINDS}")
    for rel, layouts in data["single_hop"].items():
        for layout, wordings in layouts.items():
            need(layout in LAYOUTS, f"single_hop.{rel}.{layout}", f"layout must be one of {LAYOUTS}")
            for w in wordings:
                need(isinstance(w, str) and w.count("{subject}") == 1, f"single_hop.{rel}.{layout}",
                     f"{w!r} needs exactly one {{subject}}")
    for name, spec in data["two_hop"].items():
        need(isinstance(spec.get("relations"), list) and len(spec["relations"]) == 2, f"two_hop.{name}.relations",
             "a list of two relations")
        for layout in LAYOUTS:
            for w in spec.get(layout, []):
                need(isinstance(w, str) and w.count("{subject}") == 1, f"two_hop.{name}.{layout}",
                     f"{w!r} needs exactly one {{subject}}")
    for i, item in enumerate(data["not_found"]):
        need(isinstance(item, dict) and {"subject", "relation"} <= set(item), f"not_found[{i}]",
             "needs subject and relation")
        need(item["relation"] in data["single_hop"], f"not_found[{i}].relation",
             f"{item['relation']!r} has no single_hop wordings to ask it with")
    return data


def suite_wordings(data: dict) -> list[tuple[str, str]]:
    """Every (where, wording) of the suite: for the held-out check."""
    out = [(f"single_hop.{r}.{lay}", w) for r, lays in data["single_hop"].items() for lay, ws in lays.items() for w in ws]
    out += [(f"two_hop.{n}.{lay}", w) for n, spec in data["two_hop"].items() for lay in LAYOUTS for w in spec.get(lay, [])]
    return out


def normalise_wording(text: str) -> str:
    """A wording compared across files: subject slot replaced, case, accents, punctuation and spacing folded."""
    text = normalize_name(text.replace("{subject}", " X "))
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def near_duplicate(a: str, b: str, threshold: float = NEAR_DUPLICATE) -> bool:
    """`a` and `b` are the same wording up to the subject, case and punctuation, or nearly (difflib ratio)."""
    na, nb = normalise_wording(a), normalise_wording(b)
    return na == nb or difflib.SequenceMatcher(None, na, nb).ratio() >= threshold


def training_templates() -> list[tuple[str, str]]:
    """(relation:family, text) of every train and validation template of the shipped relation files."""
    out = []
    for path in sorted(SHIPPED.glob("*.yaml")):
        rel = load_relation(str(path))
        out += [(f"{rel.name}:{t.family}", t.text) for t in rel.templates if t.split in ("train", "validation")]
    return out


# ----------------------------------------------------------------------------- questions from the store -

def _single_valued(store, relation: str) -> dict[str, str]:
    """{subject: object} of `relation` for subjects with exactly one object and one stored spelling,
    whose answer is not named in the subject (Mexico City -> Mexico says nothing)."""
    objs: dict[str, set] = {}
    names: dict[str, set] = {}
    for _, s, r, o in store.db.iter_edges():
        if r == relation:
            objs.setdefault(s, set()).add(o)
            names.setdefault(normalize_name(s), set()).add(s)
    return {s: next(iter(o)) for s, o in objs.items()
            if len(o) == 1 and len(names[normalize_name(s)]) == 1
            and find_answer(s, [next(iter(o))]) is None and find_answer(next(iter(o)), [s]) is None}


def _aliases(relation: str, obj: str) -> tuple[str, ...]:
    try:
        return relation_named(relation).aliases_of(obj)
    except (KeyError, ValueError):
        return ()


def load_subjects(path: str) -> set[str]:
    """The subjects `--subjects` allows: an RLCP run dir or its facts.json (the forget facts: the ones the
    run took out of the weights), or a JSONL of triples (every line's subject)."""
    from neuralcpu.facts import FactSets, load_jsonl_facts

    p = Path(path)
    if p.is_dir():
        p = p / "facts.json"
    facts = load_jsonl_facts(p) if p.suffix == ".jsonl" else FactSets.load(p).forget
    return {f.subject for f in facts}


def build_questions(data: dict, store, layout: str, n_subjects: int, seed: int,
                    subjects: set[str] | None = None) -> tuple[list[Question], list[str]]:
    """(questions, notes) for `layout`: each wording with `n_subjects` store subjects (distinct across
    a relation's wordings where the store has enough), the two-hop chains the graph completes, and
    the not-found subjects the store really lacks (notes say which were dropped). `subjects`: ask only
    about these (single-hop subjects, two-hop first subjects); relations with none of them are skipped."""
    rng = random.Random(seed)
    questions, notes = [], []
    single = {r: _single_valued(store, r) for r in {*data["single_hop"], *(r for s in data["two_hop"].values()
                                                                          for r in s["relations"])}}
    allowed = (lambda s: True) if subjects is None else (lambda s: s in subjects)
    for rel, lays in data["single_hop"].items():
        pool = sorted(s for s in single[rel] if allowed(s))
        rng.shuffle(pool)
        if not pool:
            notes.append(f"single_hop {rel}: the store has no facts of this relation"
                         + ("" if subjects is None else " about --subjects") + "; skipped")
            continue
        for wi, wording in enumerate(lays.get(layout, [])):
            for j in range(n_subjects):
                s = pool[(wi * n_subjects + j) % len(pool)]
                obj = single[rel][s]
                questions.append(Question(f"single:{rel}:{wi}:{s}", "single_hop", layout, (rel,), s, wording,
                                          wording.replace("{subject}", s), obj, _aliases(rel, obj)))
    for name, spec in data["two_hop"].items():
        r1, r2 = spec["relations"]
        chains = sorted((s, o1, single[r2][o1]) for s, o1 in single[r1].items() if o1 in single[r2] and allowed(s))
        rng.shuffle(chains)
        if not chains:
            notes.append(f"two_hop {name}: the graph has no {r1} -> {r2} chains; skipped")
            continue
        for wi, wording in enumerate(spec.get(layout, [])):
            for j in range(n_subjects):
                s, _, obj = chains[(wi * n_subjects + j) % len(chains)]
                questions.append(Question(f"two:{name}:{wi}:{s}", "two_hop", layout, (r1, r2), s, wording,
                                          wording.replace("{subject}", s), obj, _aliases(r2, obj)))
    for i, item in enumerate(data["not_found"]):
        s, rel = item["subject"], item["relation"]
        if store.lookup(s, rel) or store.lookup(s):
            notes.append(f"not_found {s!r}: the store holds facts about it; dropped")
            continue
        wordings = data["single_hop"][rel].get(layout, [])
        if wordings:
            wording = wordings[i % len(wordings)]
            questions.append(Question(f"none:{rel}:{s}", "not_found", layout, (rel,), s, wording,
                                      wording.replace("{subject}", s), None))
    return questions, notes


# ----------------------------------------------------------------------------- scoring ------------------

def interleave(questions: list[Question]) -> list[Question]:
    """The questions round-robin over (kind, relations), each group in its own order: a partial run
    (killed, or the summary of records so far) covers every kind and relation."""
    groups: dict[tuple, list[Question]] = {}
    for q in questions:
        groups.setdefault((q.kind, q.relations), []).append(q)
    out, queues = [], [list(g) for g in groups.values()]
    while any(queues):
        out += [g.pop(0) for g in queues if g]
    return out


def record(q: Question, res) -> dict:
    """One question's outcome as a JSON record (what the .records.jsonl holds)."""
    correct = q.expected is not None and res.answer is not None and \
        find_answer(res.answer, [q.expected, *q.aliases]) is not None
    return {**asdict(q), "answer": res.answer, "correct": correct, "status": res.status, "forced": res.forced,
            "checked": res.checked, "next_hop": res.next_hop, "loop_lookup": res.loop_lookup, "answer_source": res.answer_source, "stop_reason": res.stop_reason, "steps": res.steps,
            "calls": [{"name": c.name, "arguments": c.arguments, "error": c.error} for c in res.calls],
            "matched_by": [o.matched_by for o in res.observations], "trace": res.trace}


def summarise(records: list[dict]) -> dict:
    """Per kind: proportions with N and Wilson 95% CIs, plus how the answers came about."""
    out = {}
    for kind in KINDS:
        rs = [r for r in records if r["kind"] == kind]
        if not rs:
            continue
        n = len(rs)
        s = {"n": n}
        if kind == "not_found":
            # "said": the store was asked (a call was made, by the model or the loop) and nothing came
            # back; where it never was, the answer is a guess, flagged, counted under no_lookup instead
            s["said_not_found"] = proportion(sum(r["status"] == "not_found" and _asked(r) for r in rs), n)
            s["loop_asked"] = sum(r["status"] == "not_found" and not r["calls"] and _asked(r) for r in rs)
            s["no_lookup"] = sum(not _asked(r) for r in rs)
            s["presented_as_store"] = proportion(sum(r["status"] == "store" for r in rs), n)
            s["similar_name_flagged"] = sum(r["status"] == "store_guess" for r in rs)
            s["guess_flagged"] = sum(r["answer"] is not None and r["status"] == "not_found" for r in rs)
        else:
            s["acc"] = proportion(sum(r["correct"] for r in rs), n)
            s["store_acc"] = proportion(sum(r["correct"] and r["status"] == "store" for r in rs), n)
            s["by_relation"] = {}
            for rel in sorted({"->".join(r["relations"]) for r in rs}):
                sub = [r for r in rs if "->".join(r["relations"]) == rel]
                s["by_relation"][rel] = proportion(sum(r["correct"] for r in sub), len(sub))
        s["forced"] = sum(r["forced"] for r in rs)
        s["asked_to_check"] = sum(bool(r.get("checked")) for r in rs)  # answered unasked, then asked to look it up
        s["next_hop_by_loop"] = sum(bool(r.get("next_hop")) for r in rs)  # stopped at the first hop, the loop went on
        s["answer_source"] = dict(Counter(str(r["answer_source"]) for r in rs))
        s["matched_by"] = dict(Counter(str(m) for r in rs for m in r["matched_by"]))
        s["calls_per_question"] = round(sum(len(r["calls"]) for r in rs) / n, 2)
        s["tools_called"] = dict(Counter(c["name"] or "malformed" for r in rs for c in r["calls"]))
        wrong = [r for r in rs if (not r["correct"] if kind != "not_found" else
                                   r["status"] != "not_found" or not _asked(r))]
        s["examples_wrong"] = [{"q": r["text"], "expected": r["expected"], "answer": r["answer"],
                                "status": r["status"], "trace": r["trace"][-3:]} for r in wrong[:4]]
        out[kind] = s
    return out


def _asked(r: dict) -> bool:
    """The store was asked during the question: a call of the model's, or the loop's own lookup."""
    return bool(r["calls"]) or bool(r.get("loop_lookup"))


def _cell(p: dict | None) -> str:
    if not p or p.get("acc") is None:
        return "-"
    return f"{p['acc']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}] (N={p['n']})"


def markdown(result: dict) -> str:
    """The summary as markdown tables (one row per layout)."""
    lines = [f"# Natural questions: {result['model']} + store `{result['store']}`", "",
             f"Command: `{result['command']}`  ", f"Commit {result['commit']}, seed {result['seed']}, "
             f"{result['machine']}", "",
             "| layout | single-hop acc | single-hop store-backed | two-hop acc | two-hop store-backed | "
             "not found: said so | not found: presented as store answer |",
             "|---|---|---|---|---|---|---|"]
    for layout, res in result["layouts"].items():
        if "skipped" in res:
            lines.append(f"| {layout} | skipped: {res['skipped']} | | | | | |")
            continue
        s, t, nf = res.get("single_hop", {}), res.get("two_hop", {}), res.get("not_found", {})
        partial = f" (partial: {res['partial']})" if res.get("partial") else ""
        lines.append(f"| {layout}{partial} | {_cell(s.get('acc'))} | {_cell(s.get('store_acc'))} | {_cell(t.get('acc'))} | "
                     f"{_cell(t.get('store_acc'))} | {_cell(nf.get('said_not_found'))} | "
                     f"{_cell(nf.get('presented_as_store'))} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the run -----------------

def load_records(records_path: Path, model: str) -> dict:
    """{(layout, question id): record} of `model` in a records file ({} when there is none)."""
    done = {}
    if records_path.is_file():
        for line in records_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("model") == model:
                    done[(r["layout"], r["id"])] = r
    return done


def run_layout(bridge, questions: list[Question], records_path: Path, model: str, batch: int = 8,
               progress: bool = True) -> list[dict]:
    """Ask every question not already in `records_path` (for this model and layout), appending records
    as batches finish; return all records of these questions."""
    done = load_records(records_path, model)
    todo = [q for q in questions if (q.layout, q.id) not in done]
    t0 = time.perf_counter()
    with open(records_path, "a", encoding="utf-8") as f:
        for i in range(0, len(todo), batch):
            chunk = todo[i:i + batch]
            for q, res in zip(chunk, bridge.ask_many([q.text for q in chunk])):
                r = json.loads(json.dumps({**record(q, res), "model": model}, ensure_ascii=False))  # as resumed
                done[(q.layout, q.id)] = r
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            if progress:
                print(f"  {questions[0].layout if questions else ''}: {min(i + batch, len(todo))}/{len(todo)} "
                      f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    return [done[(q.layout, q.id)] for q in questions]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.natural_questions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="preset, save_pretrained dir or RLCP run dir")
    p.add_argument("--store", required=True, help="symbolic_ram store dir")
    p.add_argument("--out", required=True, help="results JSON (markdown next to it as .md, records as .records.jsonl)")
    p.add_argument("--layouts", default="chat,plain", help="comma-separated of chat, plain (default: both)")
    p.add_argument("--suite", default=str(DATA), help="the suite's YAML (default: benchmarks/natural_questions.yaml)")
    p.add_argument("--n-subjects", type=int, default=4, help="store subjects per wording (default: 4)")
    p.add_argument("--max-steps", type=int, default=4, help="generations per question before a forced answer")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens per generation (default: 64)")
    p.add_argument("--batch-size", type=int, default=8, help="questions generated together (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="subject sampling seed (default: 0)")
    p.add_argument("--report-only", action="store_true",
                   help="no model: summarise the records written so far (a partial run says how partial)")
    p.add_argument("--subjects", default=None,
                   help="ask only about these subjects: an RLCP run dir or facts.json (its forget facts) or a JSONL "
                        "of triples; single-hop relations with none of them are skipped (default: any store subject)")
    p.add_argument("--no-check", action="store_true",
                   help="do not ask the model to check an answer it gave without any lookup when the question names a "
                        "stored subject or relation (bridge.chat asks, so the suite does by default; chat layout only)")
    p.add_argument("--no-next-hop", action="store_true",
                   help="do not let the loop go on from the first hop of a two-hop question the model stopped at "
                        "(Bridge(next_hop=False); bridge.chat goes on, so the suite does by default)")
    p.add_argument("--search", action="store_true",
                   help="also offer the semantic search tool (off: the suite measures lookups and graph hops)")
    args = p.parse_args(argv)
    problems = [f"--layouts: {x!r} is not one of {LAYOUTS}" for x in args.layouts.split(",") if x not in LAYOUTS]
    if not (Path(args.store) / "facts.sqlite").is_file():
        problems.append(f"--store {args.store}: no knowledge store there")
    if not Path(args.suite).is_file():
        problems.append(f"--suite {args.suite}: no such file")
    if args.subjects is not None:
        sub = Path(args.subjects)
        if not (sub.is_file() or (sub / "facts.json").is_file()):
            problems.append(f"--subjects {args.subjects}: neither a facts file nor a run dir with facts.json")
    for name in ("n_subjects", "max_steps", "max_new_tokens", "batch_size"):
        if getattr(args, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1")
    if problems:
        p.error("invalid arguments:\n  " + "\n  ".join(problems))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from symbolic_ram import KnowledgeStore

    from bridge.chat import load_generator
    from bridge.loop import Bridge, tool_schemas
    from bridge.prompts import make_format
    from bridge.tools import make_bridge_tools
    from common.toolcall import template_supports_tools

    data = load_suite(args.suite)
    subjects = load_subjects(args.subjects) if args.subjects else None
    out = Path(args.out)
    records_path = out.with_suffix(".records.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        generate, tokenizer = None, None
    else:
        generate, tokenizer = load_generator(args.model, "float32", args.max_new_tokens)
    result = {"command": "python -m benchmarks.natural_questions " + " ".join(argv or sys.argv[1:]),
              "commit": commit(), "machine": machine(), "seed": args.seed, "model": args.model,
              "store": args.store, "search_tool": args.search, "n_subjects": args.n_subjects, "max_steps": args.max_steps,
              "check_answers": not args.no_check, "next_hop": not args.no_next_hop, "subjects": args.subjects, "layouts": {}}
    with KnowledgeStore(args.store, create=False) as store:
        tools = make_bridge_tools(store, search=args.search)
        for layout in args.layouts.split(","):
            if args.report_only:
                questions, notes = build_questions(data, store, layout, args.n_subjects, args.seed, subjects)
                done = load_records(records_path, args.model)
                records = [done[(layout, q.id)] for q in questions if (layout, q.id) in done]
                if records:
                    result["layouts"][layout] = {**summarise(records), "notes": notes,
                                                 "partial": f"{len(records)} of {len(questions)} questions"}
                continue
            if layout == "chat" and not getattr(tokenizer, "chat_template", None):
                result["layouts"][layout] = {"skipped": "the tokenizer has no chat template"}
                continue
            # a chat template without tools (SmolLM2) asks in the layout RLCP trains in chat: chat-text
            kind = "completion" if layout == "plain" else "chat" if template_supports_tools(tokenizer) else "chat-text"
            fmt = make_format(tokenizer, tool_schemas(tools), kind)
            bridge = Bridge(generate, fmt, tools, max_steps=args.max_steps, check_answers=not args.no_check,
                            next_hop=not args.no_next_hop)
            questions, notes = build_questions(data, store, layout, args.n_subjects, args.seed, subjects)
            questions = interleave(questions)  # a run cut short has measured every kind and relation
            t0 = time.perf_counter()
            records = run_layout(bridge, questions, records_path, args.model, args.batch_size)
            result["layouts"][layout] = {**summarise(records), "notes": notes, "format": fmt.name,
                                         "seconds": round(time.perf_counter() - t0, 1)}
            write_json_atomic(out, result)  # a layout at a time: a kill keeps what is done
    write_json_atomic(out, result)
    write_text_atomic(out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
