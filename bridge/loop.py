"""The tool-calling loop between a logic core and the symbolic_ram store, with three modes behind one call.

    bridge = Bridge(HFGenerator(model, tokenizer), make_format(tokenizer, schemas), make_tools(store))
    result = bridge.ask("The city of Tokyo is in the country of", mode="tool")
    result.answer, result.calls, result.observations, result.answered_without_lookup
    results = bridge.ask_many(questions, mode="tool")   # the same loop, each round's generations batched

Modes: "closed" (no store), "just-rag" (the top-k facts of a semantic search are put in the prompt up
front: the Just-RAG baseline) and "tool" (the model asks for facts). In "tool" mode each step is one
generation. Calls are parsed only from the text the model just generated (never from the prompt, so
fact text cannot trigger one), executed with the store's langchain tools, and their results are shown
to the model as escaped data (`bridge.prompts`). A malformed call becomes an error observation; an
identical call repeated is cut off; after `max_steps` generations the loop stops without an answer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable

from common.facts import normalize_name
from common.toolcall import CALL_OPEN, LOOKUP_TOOL, SEARCH_TOOL, ToolCall, escape_payload, parse_calls

from .prompts import Turn, to_fact

MODES = ("closed", "just-rag", "tool")
STOP_REASONS = ("answer", "no_answer", "max_steps", "repeated_call")


@dataclass
class Observation:
    """The outcome of one call.

    Args:
        call: the parsed call.
        output: the tool's output verbatim (a JSON string of facts), or `{"error": ...}` JSON.
        shown: what the model was shown (`output` with markup escaped and fields trimmed).
        facts: the facts the tool returned (dicts), [] on error.
        error: why the call failed, or None.
    """

    call: ToolCall
    output: str
    shown: str
    facts: list[dict] = field(default_factory=list)
    error: str | None = None


@dataclass
class LoopResult:
    """What `Bridge.ask` did for one question.

    Args:
        answer: the final answer text, or None (no answer, cut off, or out of steps).
        stop_reason: one of STOP_REASONS.
        steps: model generations made.
        calls: every call the model emitted (executed or not), in order.
        observations: one per executed (or rejected) call.
        retrieved: facts put in the prompt up front (just-rag).
        answered_without_lookup: an answer was given although no lookup or retrieval returned a fact
            (closed-book knowledge, or a fact the store does not hold): such answers are flagged.
        supported: the answer contains the object of a fact that was looked up or retrieved.
        generations: the text of each generation, as cut by the loop.
    """

    question: str
    mode: str
    answer: str | None = None
    stop_reason: str = "no_answer"
    steps: int = 0
    calls: list[ToolCall] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    retrieved: list[dict] = field(default_factory=list)
    answered_without_lookup: bool = False
    supported: bool = False
    generations: list[str] = field(default_factory=list)

    @property
    def facts_seen(self) -> list[dict]:
        """Facts the model was given: retrieved up front plus those returned by calls."""
        return self.retrieved + [f for o in self.observations for f in o.facts]

    def to_dict(self) -> dict:
        """JSON-serialisable form (the `--json` output of `python -m bridge.chat`)."""
        out = asdict(self)
        out["calls"] = [asdict(c) for c in self.calls]
        out["observations"] = [{**asdict(o), "call": asdict(o.call)} for o in self.observations]
        return out


def call_key(call: ToolCall) -> str:
    """Identity of a call for repeat detection: name + arguments (sorted, case-folded), or the raw text."""
    if call.error:
        return "raw:" + " ".join(call.raw.split()).casefold()
    return call.name + ":" + json.dumps(call.arguments, sort_keys=True, ensure_ascii=False).casefold()


def run_tool(tools: dict, call: ToolCall, max_facts: int = 5) -> Observation:
    """Execute `call` with the langchain tools in `tools` ({name: tool}); never raises.

    A malformed call, an unknown tool or arguments the tool rejects give an error observation.
    """
    error = call.error
    if error is None and call.name not in tools:
        error = f"unknown tool {call.name!r}; available: {sorted(tools)}"
    output = ""
    if error is None:
        try:
            output = tools[call.name].invoke(call.arguments)
        except Exception as e:  # pydantic validation, store errors: the model sees the reason, the loop goes on
            error = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    if error is not None:
        output = json.dumps({"error": error}, ensure_ascii=False)
        return Observation(call, output, escape_payload(output), [], error)
    try:
        facts = json.loads(output)
    except json.JSONDecodeError:
        facts = []
    facts = [f for f in facts if isinstance(f, dict)] if isinstance(facts, list) else []
    return Observation(call, output, escape_payload(output, max_facts), facts, None)


def make_turn(text: str, observations: list[Observation], max_facts: int = 5) -> Turn:
    """The transcript entry for one step: the model's text and what its calls returned (first `max_facts` each).

    Facts keep the store's order (its best first) in the JSON and in the context sentences; on name
    clashes (Santiago, Moscow) best-first sentences measured better than best-next-to-the-question.
    """
    facts = [to_fact(f) for o in observations for f in o.facts[:max_facts]]
    return Turn(text, [o.call for o in observations], [o.shown for o in observations], facts)


def tool_schemas(tools) -> list[dict]:
    """OpenAI-style function schemas of langchain tools, as chat templates' `tools=` expects."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    return [convert_to_openai_tool(t) for t in tools]


class Bridge:
    """The loop. One `ask` interface for every mode.

    Args:
        generate: a Generator (`bridge.backend.HFGenerator` or a scripted fake).
        fmt: the prompt layout (`bridge.prompts.make_format`).
        tools: langchain tools named "lookup" and "search" (`symbolic_ram.make_tools(store)`); None = closed only.
        mode: default mode, one of MODES.
        max_steps: most generations per question in tool mode.
        k: facts retrieved up front in just-rag mode.
        max_facts: most facts of one tool result shown to the model.
    """

    def __init__(self, generate, fmt, tools=None, *, mode: str = "tool", max_steps: int = 4, k: int = 3,
                 max_facts: int = 5):
        self.generate, self.fmt = generate, fmt
        self.tools = {t.name: t for t in (tools or [])}
        self.max_steps, self.k, self.max_facts = max_steps, k, max_facts
        problems = []
        if max_steps < 1:
            problems.append(f"max_steps must be >= 1, got {max_steps}")
        if k < 1:
            problems.append(f"k must be >= 1, got {k}")
        if problems:
            raise ValueError("; ".join(problems))
        self.mode = self.check_mode(mode)

    def check_mode(self, mode: str) -> str:
        """`mode` if it is known and the tools it needs are there; else ValueError saying why."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; modes are {', '.join(MODES)}")
        need = {"just-rag": SEARCH_TOOL, "tool": LOOKUP_TOOL}.get(mode)
        if need and need not in self.tools:
            raise ValueError(f"mode {mode!r} needs a store (its {need!r} tool); only 'closed' works without one")
        return mode

    def lookup(self, subject: str, relation: str | None = None) -> list[dict]:
        """The store's facts about `subject` through the lookup tool (what `/facts` shows)."""
        args = {"subject": subject} if relation is None else {"subject": subject, "relation": relation}
        return run_tool(self.tools, ToolCall(LOOKUP_TOOL, args)).facts

    def start(self, question: str, mode: str | None = None, history=()) -> "Conversation":
        """A Conversation for `question` in `mode` (just-rag retrieves its facts here); drive it with
        `prompt()` / `advance(generated)` until `done`, or let `ask` / `ask_many` do it."""
        mode = self.check_mode(mode or self.mode)
        res = LoopResult(question, mode, stop_reason="max_steps")
        context = []
        if mode == "just-rag":
            res.retrieved = run_tool(self.tools, ToolCall(SEARCH_TOOL, {"query": question, "k": self.k})).facts
            context = [to_fact(f) for f in res.retrieved]  # best first, as for tool results
        return Conversation(self, res, context, list(history))

    def ask(self, question: str, mode: str | None = None, on_event: Callable[[str, object], None] | None = None,
            history=()) -> LoopResult:
        """Answer `question` in `mode` (default: the bridge's mode).

        Args:
            question: for completion layouts a sentence to complete ("The city of Tokyo is in the country of").
            on_event: called as on_event(kind, value) with kind "step" (index), "text" (a streamed chunk),
                "call" (ToolCall), "observation" (Observation) and "done" (LoopResult).
            history: earlier (question, answer) pairs; used by chat layouts.
        """
        emit = on_event or (lambda kind, value: None)
        conv = self.start(question, mode, history)
        while not conv.done:
            emit("step", conv.result.steps)
            conv.advance(self.generate(conv.prompt(), stop=self.stop, on_text=lambda c: emit("text", c),
                                       add_special_tokens=self.fmt.add_special_tokens), emit)
        emit("done", conv.result)
        return conv.result

    def ask_many(self, questions: list[str], mode: str | None = None) -> list[LoopResult]:
        """`ask` for many questions at once: each round, every unfinished question gets one generation,
        batched when the generator has `many` (HFGenerator: left-padded batches); results in input order.

        The control flow per question is `ask`'s; only the generations are batched, so a generator whose
        batched and single outputs agree gives the same results.
        """
        convs = [self.start(q, mode) for q in questions]
        many = getattr(self.generate, "many", None)
        while active := [c for c in convs if not c.done]:
            prompts = [c.prompt() for c in active]
            kw = dict(stop=self.stop, add_special_tokens=self.fmt.add_special_tokens)
            texts = many(prompts, **kw) if many else [self.generate(p, **kw) for p in prompts]
            for conv, text in zip(active, texts):
                conv.advance(text)
        return [c.result for c in convs]

    def stop(self, generated: str) -> bool:
        """Whether generation can stop: the layout has a whole call or a finished answer."""
        return self.fmt.cut(generated)[1]


class Conversation:
    """One question's state in the loop: the turns so far, the calls seen, the result being built.

    `Bridge.start` makes one; `prompt()` is the next generation's prompt; `advance(generated)` acts on
    a generation (answer, or execute its calls); `done` tells when the loop is over for this question.
    """

    def __init__(self, bridge: Bridge, result: LoopResult, context: list, history: list):
        self.bridge, self.result, self.context, self.history = bridge, result, context, history
        self.turns: list[Turn] = []
        self.seen: set[str] = set()
        self.done = False

    def prompt(self) -> str:
        return self.bridge.fmt.prompt(self.result.question, self.turns, self.context, self.history,
                                      tools=self.result.mode == "tool")

    def advance(self, generated: str, emit: Callable[[str, object], None] = lambda kind, value: None) -> None:
        """Act on one generation: an answer (or none) ends the loop; calls are run and become a turn."""
        b, res = self.bridge, self.result
        text, _ = b.fmt.cut(generated)  # calls come only from this, the model's own new text
        res.steps += 1
        res.generations.append(text)
        if res.mode != "tool" or CALL_OPEN not in text:
            answer = b.fmt.answer(text)
            res.answer = answer or None
            res.stop_reason = "answer" if answer else "no_answer"
            return self._finish()
        executed = []
        for call in parse_calls(text):
            res.calls.append(call)
            emit("call", call)
            key = call_key(call)
            if key in self.seen:
                res.stop_reason = "repeated_call"
                break
            self.seen.add(key)
            executed.append(run_tool(b.tools, call, b.max_facts))
            emit("observation", executed[-1])
        res.observations += executed
        if res.stop_reason == "repeated_call" or res.steps >= b.max_steps:
            return self._finish()  # stop_reason stays "max_steps" unless a repeat cut it off
        self.turns.append(make_turn(text, executed, b.max_facts))

    def _finish(self) -> None:
        res = self.result
        seen_facts = res.facts_seen
        res.answered_without_lookup = res.answer is not None and not seen_facts
        res.supported = res.answer is not None and any(
            normalize_name(str(f.get("object", ""))) in normalize_name(res.answer) for f in seen_facts if f.get("object"))
        self.done = True
