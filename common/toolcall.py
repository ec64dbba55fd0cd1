"""The one tool-call format: RLCP's retrieval-signal stream trains it, `bridge` parses it.

A call is Qwen2.5's tool-call markup, `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.
Models whose chat template has no tool support (SmolLM2) get the same markup as plain text, and
tool results come back wrapped in `<tool_response>` tags; `bridge` decides how to render them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from common.facts import normalize_name

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESULT_OPEN, RESULT_CLOSE = "<tool_response>", "</tool_response>"
LOOKUP_TOOL = "lookup"  # exact fact lookup: arguments {"subject": str, "relation": str | None}
SEARCH_TOOL = "search"  # semantic search: arguments {"query": str}

_CALL_RE = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    """A parsed call. `error` is set (and name/arguments may be empty) when the markup was malformed."""

    name: str
    arguments: dict = field(default_factory=dict)
    raw: str = ""
    error: str | None = None


def render_call(name: str, arguments: dict) -> str:
    """The exact text a model emits to call `name` with `arguments`."""
    return f"{CALL_OPEN}{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}{CALL_CLOSE}"


def render_lookup(subject: str, relation: str | None = None) -> str:
    """The lookup request RLCP's retrieval-signal stream teaches for a forgotten fact."""
    args = {"subject": subject} if relation is None else {"subject": subject, "relation": relation}
    return render_call(LOOKUP_TOOL, args)


def render_result(payload: str) -> str:
    """Wrap a tool result so the model (and the loop) can tell data from instructions."""
    return f"{RESULT_OPEN}{payload}{RESULT_CLOSE}"


SHOWN_FIELDS = ("subject", "relation", "object")  # what the model sees of a fact; the rest stays in the record


def escape_payload(tool_output: str, max_facts: int = 5) -> str:
    """The tool output as the model sees it: JSON with markup characters escaped.

    A JSON array of facts is cut to `SHOWN_FIELDS` and `max_facts` items; anything else is re-dumped.
    `<`, `>`, `&` can only occur inside JSON strings, so replacing them with `\\u` escapes keeps the
    JSON valid and lossless while no tag or special token can appear in the prompt.
    """
    try:
        data = json.loads(tool_output)
    except (json.JSONDecodeError, TypeError):
        data = {"text": str(tool_output)}
    if isinstance(data, list):
        data = [{k: f[k] for k in SHOWN_FIELDS if k in f} if isinstance(f, dict) else f for f in data[:max_facts]]
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render_followup(call_text: str, payloads: list[str], context: str, question: str) -> str:
    """What the completion layout appends after a question once the model made a call: the call as the
    model wrote it, each result as data, then (new line) the facts as sentences and the question again.

    `bridge`'s CompletionFormat builds its prompts with this; RLCP's RAG stream trains on it, so the
    model answers after a lookup in the layout it will see.
    """
    return call_text + "".join(" " + render_result(p) for p in payloads) + "\n" + (context + " " if context else "") + question


def has_call_start(text: str) -> bool:
    """True if `text` contains the opening of a tool call (complete or not)."""
    return CALL_OPEN in text


def parse_calls(text: str) -> list[ToolCall]:
    """Every tool call in `text`, in order. Malformed ones come back with `error` set, never raise.

    An unclosed `<tool_call>` at the end is reported as malformed.
    """
    calls = []
    for m in _CALL_RE.finditer(text):
        raw = m.group(1).strip()
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            calls.append(ToolCall("", {}, raw, f"tool call is not valid JSON: {e.msg}"))
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            calls.append(ToolCall("", {}, raw, 'tool call must be an object with a string "name"'))
            continue
        args = obj.get("arguments", {})
        if isinstance(args, str):  # some models emit arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass
        if not isinstance(args, dict):
            calls.append(ToolCall(obj["name"], {}, raw, '"arguments" must be an object'))
            continue
        calls.append(ToolCall(obj["name"], args, raw))
    tail = text[text.rfind(CALL_CLOSE) + len(CALL_CLOSE) :] if CALL_CLOSE in text else text
    if CALL_OPEN in tail:
        calls.append(ToolCall("", {}, tail[tail.index(CALL_OPEN) :], "unclosed <tool_call>"))
    return calls


def is_lookup(call: ToolCall, subject: str | None = None) -> bool:
    """`call` is a well-formed lookup (one the bridge can execute), for `subject` when given (compared
    case- and diacritic-insensitively)."""
    if call.error is not None or call.name != LOOKUP_TOOL:
        return False
    return subject is None or normalize_name(str(call.arguments.get("subject", ""))) == normalize_name(subject)


def template_supports_tools(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders a `tools=` argument (Qwen2.5's does)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return "tools" in template and CALL_OPEN in template
