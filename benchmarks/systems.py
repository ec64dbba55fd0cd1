"""The system matrix of the benchmark: which model each system uses, in which answering mode, whether
it is available, and the answer function that runs it.

A system = a model (the original, or the output dir of an RLCP / baseline / tool-SFT run) plus a mode:
  closed    the model alone (batched greedy generation)
  just-rag  bridge puts facts retrieved from the store in the prompt
  tool      bridge runs the tool-call loop: the model may call `lookup`/`search` on the store
A system is available when its model dir exists and, for just-rag/tool, when the bridge package
provides what `bridge_parts` imports. Unavailable systems are skipped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks import gsm8k


@dataclass(frozen=True)
class SystemSpec:
    """One row of the matrix: `model` is a key of the model sources, `mode` an answering mode."""

    name: str
    model: str
    mode: str
    description: str


SYSTEMS: list[SystemSpec] = [
    SystemSpec("original", "original", "closed", "the unmodified model"),
    SystemSpec("original+just-rag", "original", "just-rag", "original, store facts put in the prompt"),
    SystemSpec("original+tool", "toolsft", "tool", "original after tool-use SFT, tool-call loop"),
    SystemSpec("rlcp", "rlcp", "closed", "RLCP-metabolized model alone"),
    SystemSpec("rlcp+just-rag", "rlcp", "just-rag", "RLCP model, store facts put in the prompt"),
    SystemSpec("rlcp+tool", "rlcp", "tool", "RLCP model in the tool-call loop (the Neural CPU + Symbolic RAM system)"),
    SystemSpec("unlikelihood", "unlikelihood", "closed", "unlikelihood baseline"),
    SystemSpec("unlikelihood+tool", "unlikelihood", "tool", "unlikelihood baseline in the tool-call loop"),
    SystemSpec("graddiff", "graddiff", "closed", "gradient-difference baseline"),
    SystemSpec("npo", "npo", "closed", "NPO baseline"),
]
SYSTEM_NAMES = [s.name for s in SYSTEMS]
# Model source -> the run.py flag that supplies its directory (the original comes from --model).
MODEL_FLAGS = {"original": "--model", "toolsft": "--toolsft-dir", "rlcp": "--rlcp-dir",
               "unlikelihood": "--unlikelihood-dir", "graddiff": "--graddiff-dir", "npo": "--npo-dir"}
UNLEARNED = ("rlcp", "unlikelihood", "graddiff", "npo")
BRIDGE_MIN_NEW_TOKENS = 48  # a lookup call is ~30 tokens; answers still end where the layout ends them


class BridgeUnavailable(RuntimeError):
    """bridge (its Bridge loop, HFGenerator and prompt layouts) is missing or incomplete."""


def bridge_parts():
    """(Bridge, HFGenerator, make_format, tool_schemas) from the bridge package; BridgeUnavailable if absent.

    HOOK (bridge): the just-rag and tool systems run `Bridge(HFGenerator(model, tokenizer, max_new_tokens),
    make_format(tokenizer, tool_schemas(tools), kind, answer_end), symbolic_ram.make_tools(store)).ask(question, mode)`
    and score `LoopResult.answer`. If bridge's API changes, change only this function and `bridge_answerer`.
    """
    try:
        from bridge.backend import HFGenerator
        from bridge.loop import Bridge, tool_schemas
        from bridge.prompts import make_format
    except ImportError as e:
        raise BridgeUnavailable(f"bridge is not usable yet ({type(e).__name__}: {e})") from None
    return Bridge, HFGenerator, make_format, tool_schemas


def resolve(requested: list[str], model_dirs: dict[str, str | None], store: str | None
            ) -> tuple[list[tuple[SystemSpec, str]], dict[str, str]]:
    """Split the requested systems into available (spec, model path) pairs and skipped {name: reason}.

    Args:
        requested: system names (see SYSTEM_NAMES), in the order to run them.
        model_dirs: model source -> path (or preset/hub id for "original"); None = not given.
        store: knowledge-store dir for just-rag/tool systems (None: built from the fact sets).
    """
    by_name = {s.name: s for s in SYSTEMS}
    available, skipped = [], {}
    bridge_problem = None
    if any(by_name[n].mode != "closed" for n in requested):
        try:
            bridge_parts()
        except BridgeUnavailable as e:
            bridge_problem = str(e)
    for name in requested:
        spec = by_name[name]
        path = model_dirs.get(spec.model)
        if path is None:
            skipped[name] = f"no model: pass {MODEL_FLAGS[spec.model]} DIR"
        elif spec.model != "original" and not (Path(path) / "config.json").is_file():
            skipped[name] = f"{MODEL_FLAGS[spec.model]} {path}: no save_pretrained model there (run not finished?)"
        elif spec.mode != "closed" and bridge_problem:
            skipped[name] = bridge_problem
        elif spec.mode != "closed" and store is not None and not Path(store).exists():
            skipped[name] = f"--store {store} does not exist"
        else:
            available.append((spec, path))
    return available, skipped


def closed_answerer(model, tokenizer, batch_size: int = 64, progress: bool = False):
    """answer_fn(prompts, max_new_tokens, questions=None, layout=None) -> [{"text", "tokens"}]: the model
    alone, batched greedy on the formatted `prompts` (`questions` and `layout` are for bridge systems)."""
    def answer(prompts: list[str], max_new_tokens: int, questions=None, layout=None) -> list[dict]:
        return gsm8k.generate(model, tokenizer, prompts, max_new_tokens, batch_size=batch_size, progress=progress)

    return answer


def bridge_answerer(model, tokenizer, mode: str, store, batch_size: int = 64):
    """answer_fn for the just-rag and tool modes: the bridge loop over all questions at once (`Bridge.ask_many`:
    each round's generations are batched).

    A chat layout gets the raw `questions` (falling back to the prompts) and lays them out itself; the
    completion layout gets the formatted `prompts`, exactly what the closed system sees. `layout` is
    (kind, answer_end) for bridge.prompts.make_format: ("completion", "sentence") for fact prompts (the
    form RLCP's retrieval stream is trained on), ("auto", "eos") for GSM8K (chat when the template
    supports tools; multi-line answers). "tokens" = tokens of all the loop's generations.
    """
    from symbolic_ram import make_tools

    Bridge, HFGenerator, make_format, tool_schemas = bridge_parts()
    tools = make_tools(store)
    schemas = tool_schemas(tools)

    def answer(prompts: list[str], max_new_tokens: int, questions=None, layout=("completion", "sentence")) -> list[dict]:
        budget = max(max_new_tokens, BRIDGE_MIN_NEW_TOKENS)  # a whole lookup call must fit in one generation
        kind, answer_end = layout
        fmt = make_format(tokenizer, schemas, kind, answer_end)
        loop = Bridge(HFGenerator(model, tokenizer, budget, batch_size), fmt, tools, mode=mode)
        # The completion layout continues its text as is, so it gets the closed system's own prompt (chat
        # template or few-shot already applied); a raw question there made instruct models stop at once.
        outs = []
        for res in loop.ask_many(prompts if fmt.name == "completion" else (questions or prompts), mode=mode):
            tokens = sum(len(tokenizer(g, add_special_tokens=False).input_ids) for g in res.generations)
            outs.append({"text": res.answer or "", "tokens": tokens, "calls": len(res.calls),
                         "stop_reason": res.stop_reason})
        return outs

    return answer


def open_store(store_dir: str | None, facts, workdir: Path):
    """The KnowledgeStore for bridge systems: `store_dir`, else one built in `workdir` from the forget set
    (packaged MiniLM embedder; the real pipeline passes the store RLCP moved the facts into)."""
    from symbolic_ram import KnowledgeStore, ingest_facts

    if store_dir is not None:
        return KnowledgeStore(store_dir, create=False)
    if facts is None:
        raise ValueError("just-rag/tool systems need --store or a facts.json to build a store from")
    store = KnowledgeStore(workdir / "store")
    if not store.stats().get("facts"):
        ingest_facts(store, [{"subject": f.subject, "relation": f.relation, "object": f.object} for f in facts.forget],
                     source="benchmark")
    return store
