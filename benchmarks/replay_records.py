"""Replay a natural-question run's records through the current bridge and store, without a model.

    python -m benchmarks.replay_records --records results/nq.records.jsonl --store stores/nq \\
        [--out replay.json] [--max-steps 4] [--no-check]

Why: a change to the loop or to the store's fallbacks should be checked against what a real model
did, without running the model again. Each record's calls are fed back one per generation by a
scripted model (then the recorded answer, when the model wrote one; else nothing), through the chat
layout with the same tools (lookup + follow). The store is opened read-only.

What it shows, per question: the first call, what the store returned for it in the run (the trace's
first line) and what the current code returns (after any correction of the subject), and the
recorded vs replayed answer, status and correctness. The replay is counterfactual past the first
difference: the real model would have seen other results and may have called otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.report import write_json_atomic  # noqa: E402
from common.facts import find_answer  # noqa: E402
from common.toolcall import CALL_CLOSE, CALL_OPEN, render_call  # noqa: E402


class _Template:
    """A tokenizer stand-in whose chat template is the messages as JSON (only the loop's control flow matters)."""

    chat_template = "json"

    def apply_chat_template(self, messages, tools=None, **kw):
        return json.dumps(messages)


class _Replay:
    """Returns the given generations in order, "" when they run out (a model that names nothing)."""

    def __init__(self, outputs: list[str]):
        self.outputs = list(outputs)

    def __call__(self, prompt, *, stop=None, on_text=None, add_special_tokens=True):
        return self.outputs.pop(0) if self.outputs else ""


# What stands in for an answer the model wrote without a lookup: the record keeps no such text, only the
# loop's note of it in the trace, and the loop's next move depends on there having been one.
UNRECORDED_ANSWER = "(an answer from the weights, not recorded)"
_STEP = re.compile(r"^step (\d+): ")


def generations(rec: dict) -> list[str]:
    """The record's model outputs in step order: one call per generation, `UNRECORDED_ANSWER` for a step
    whose trace says the model answered without a lookup, then its answer if the model wrote one."""
    calls = [render_call(c["name"], c["arguments"]) if not c.get("error") else f"{CALL_OPEN}{{bad{CALL_CLOSE}"
             for c in rec["calls"]]
    steps: dict[int, list[str]] = {}
    for line in rec.get("trace", []):
        m = _STEP.match(line)
        if m:
            steps.setdefault(int(m.group(1)), []).append(line)
    out = []
    for _, lines in sorted(steps.items()):
        said = [line.split(": ", 1)[1] for line in lines]
        called = any(text.startswith(("lookup(", "follow(")) for text in said)
        if not called and any("without a lookup" in text.split(" -> ")[0] for text in said):
            out.append(UNRECORDED_ANSWER)
        elif calls:
            out.append(calls.pop(0))
        else:
            break
    out += calls  # calls the trace did not place (older records): in their order
    if rec.get("answer") is not None and rec.get("answer_source") in ("model", "forced"):
        out.append(rec["answer"])
    return out


def first_result(trace: list[str]) -> str:
    """What the first call returned in the run: the last trace line of step 1 that shows a result."""
    lines = [t.split(" -> ", 1)[1] for t in trace if t.startswith("step 1: ") and " -> " in t]
    return lines[-1] if lines else "(no call)"


def replay(records: list[dict], store_dir: str, max_steps: int = 4, check_answers: bool = True) -> list[dict]:
    """Each record replayed (see the module docstring): a row per record."""
    from symbolic_ram import KnowledgeStore

    from bridge.loop import Bridge, describe_call, describe_observation, tool_schemas
    from bridge.prompts import ChatFormat
    from bridge.tools import make_bridge_tools

    rows = []
    with KnowledgeStore(store_dir, read_only=True) as store:
        tools = make_bridge_tools(store, search=False)
        fmt = ChatFormat(_Template(), tool_schemas(tools))
        for rec in records:
            res = Bridge(_Replay(generations(rec)), fmt, tools, max_steps=max_steps,
                         check_answers=check_answers).ask(rec["text"])
            correct = rec["expected"] is not None and res.answer is not None and \
                find_answer(res.answer, [rec["expected"], *rec.get("aliases", [])]) is not None
            first = res.observations[0] if res.observations else None
            rows.append({
                "id": rec["id"], "kind": rec["kind"], "question": rec["text"], "expected": rec["expected"],
                "first_call": describe_call(first.call) if first else "(no call)",
                "old_first": first_result(rec["trace"]),
                "new_first": (f"[{first.subject_used}] " if first and first.subject_used else "")
                + (describe_observation(first) if first else "(no call)"),
                "old": {"answer": rec["answer"], "status": rec["status"], "correct": rec["correct"]},
                "new": {"answer": res.answer, "status": res.status, "correct": correct,
                        "stop_reason": res.stop_reason, "answer_source": res.answer_source},
                "trace": res.trace})
    return rows


def summary(rows: list[dict]) -> dict:
    """Per kind: N, right answers (single/two-hop) or said-not-found (not-found), old vs replayed."""
    out = {}
    for kind in sorted({r["kind"] for r in rows}):
        rs = [r for r in rows if r["kind"] == kind]
        s = {"n": len(rs)}
        for side in ("old", "new"):
            if kind == "not_found":
                s[side] = {"said_not_found": sum(r[side]["status"] == "not_found" for r in rs),
                           "presented_as_store": sum(r[side]["status"] == "store" for r in rs),
                           "status": dict(Counter(r[side]["status"] for r in rs))}
            else:
                s[side] = {"correct": sum(r[side]["correct"] for r in rs),
                           "store_correct": sum(r[side]["correct"] and r[side]["status"] == "store" for r in rs)}
        out[kind] = s
    return out


def markdown(rows: list[dict]) -> str:
    """The per-question table."""
    cut = lambda text, n=90: text if len(text) <= n else text[: n - 1] + "…"  # noqa: E731
    lines = ["| kind | question | first call | store then | store now | answer then | answer now |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        then = f"{r['old']['answer']!r} ({r['old']['status']}{', right' if r['old']['correct'] else ''})"
        now = f"{r['new']['answer']!r} ({r['new']['status']}{', right' if r['new']['correct'] else ''})"
        lines.append(f"| {r['kind']} | {cut(r['question'], 60)} | {cut(r['first_call'], 60)} | {cut(r['old_first'])} "
                     f"| {cut(r['new_first'])} | {cut(then, 50)} | {cut(now, 50)} |".replace("\n", " "))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", required=True, help="a natural-question .records.jsonl")
    ap.add_argument("--store", required=True, help="the store the run used (opened read-only)")
    ap.add_argument("--out", default=None, help="write the rows and summary as JSON here")
    ap.add_argument("--max-steps", type=int, default=4, help="generations per question, as in the run")
    ap.add_argument("--no-check", action="store_true",
                    help="as a run with --no-check: an answer given without a lookup is not sent back to be checked")
    args = ap.parse_args(argv)
    path = Path(args.records)
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{n}: not a JSON record ({e.msg})")
    rows = replay(records, args.store, args.max_steps, check_answers=not args.no_check)
    print(markdown(rows))
    print(json.dumps(summary(rows), indent=1))
    if args.out:
        from benchmarks.provenance import git_state, machine

        # the loop's code is what a replay reads: its commit (and whether the checkout had changes)
        write_json_atomic(Path(args.out), {"command": "python -m benchmarks.replay_records " + " ".join(argv or sys.argv[1:]),
                                           **git_state(), "machine": machine(), "seed": None,
                                           "records": str(path), "summary": summary(rows), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
