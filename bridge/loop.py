"""The tool-calling loop between a logic core and the symbolic_ram store, with three modes behind one call.

    bridge = Bridge(HFGenerator(model, tokenizer), make_format(tokenizer, schemas), make_tools(store))
    result = bridge.ask("The city of Tokyo is in the country of", mode="tool")
    result.answer, result.calls, result.observations, result.answered_without_lookup
    results = bridge.ask_many(questions, mode="tool")   # the same loop, each round's generations batched

Modes: "closed" (no store), "just-rag" (the top-k facts of a semantic search are put in the prompt up
front: the Just-RAG baseline) and "tool" (the model asks for facts). In "tool" mode each step is one
generation. Calls are parsed only from the text the model just generated (never from the prompt, so
fact text cannot trigger one), executed with the store's langchain tools, and their results are shown
to the model as escaped data (`bridge.prompts`). A malformed call becomes an error observation.

The loop always ends in an answer when the store gave it the fact:
- once a tool has returned the fact that answers the question (`bridge.grounding.Ledger`: the first
  call's relation, about a subject the question names, followed along its chain), a model that
  repeats a call or asks for something that does not go on from that fact gets that fact as its
  answer ("tool_result"), and so does the step budget;
- a two-hop question that the model stops after its first hop ("the capital of the country Weru is
  in": lookup(Weru, country), then a repeat, silence, or "Indonesia") gets the next hop from the loop,
  once: when the question names another store relation *before* the one just answered (English nests
  the goal first: "the capital of the country ..."), or right after it when the answered one is a
  possessive ("that country's capital"), the loop looks that relation up on the answer's
  object, shows it to the model as a step of its own, and lets the model answer (`next_hop`);
- a lookup of a relation the question does not name, in a question that names relations of the store,
  asks one of those instead, the last named first, the first the store holds for the subject (the model
  wrote `lookup(Cherkessk, continent)` for "the capital of the country that Cherkessk is part of");
- otherwise an identical call repeated is not run again, and when `max_steps` generations are spent,
  the model generates once more with the tools withheld, asked plainly for the answer from the
  results ("forced final answer"); if even that names nothing, the answer is the answering fact's
  object, else the last result's, and `answer_source` says so ("tool_result");
- a call whose subject the question does not name (nor any fact reached from it), and a lookup that
  comes back empty or only through a fuzzy/semantic guess at the subject, is redone with the longest
  span of the question that the store knows as a subject (the model wrote "Span" for "Shanghai",
  "Mumbai" for "Myanmar"); `matched_by` on the observation says which fallback answered.
- an answer is a store answer (status "store") only if it names a grounded fact; one that names only
  facts about a guessed subject (a similar name, or a subject the question never named, even when the
  model re-asked it by name) is "store_guess", flagged.
Every such step is written to `LoopResult.trace` (what `/trace` in the REPL shows).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Callable

from rapidfuzz.distance import OSA

from common.facts import find_answer, normalize_name
from common.relations import RelationFileError, registered_relations, relation_named, shipped_relations
from common.toolcall import CALL_OPEN, LOOKUP_TOOL, SEARCH_TOOL, ToolCall, escape_payload, parse_calls, render_lookup

from .grounding import GUESSED, Ledger, asked_relation, call_relations, call_subject, describe_fact, fold_words
from .prompts import CHECK_ASK, Turn, to_fact
from .relation_choice import closest_relation
from .tools import FOLLOW_TOOL, MAX_HOPS

MODES = ("closed", "just-rag", "tool")
STOP_REASONS = ("answer", "no_answer", "max_steps", "repeated_call", "wandered")
ANSWER_SOURCES = ("model", "forced", "tool_result")  # who wrote the final answer
# Words that never name a subject on their own (question words, fillers), so a question span made only of
# them is not tried as one.
_STOPWORDS = {"the", "what", "which", "is", "in", "of", "a", "an", "city", "country", "capital", "currency",
              "where", "who", "how", "tell", "me", "name", "used", "does", "do", "it", "its", "and", "to", "for",
              "on", "at", "by", "from", "with", "be", "are", "was", "were", "that", "this", "there", "their",
              "they", "people", "you", "your", "i", "my", "we", "can", "could", "would", "should", "please",
              "hey", "quick", "one", "again", "part", "called", "some", "same", "about", "into", "lies", "lie",
              "located", "find", "know", "want", "need", "use", "uses", "so", "or", "as", "if", "then", "just"}


@dataclass
class Observation:
    """The outcome of one call.

    Args:
        call: the parsed call.
        output: the tool's output verbatim (a JSON string of facts), or `{"error": ...}` JSON.
        shown: what the model was shown (`output` with markup escaped and fields trimmed).
        facts: the facts the tool returned (dicts), [] on error.
        error: why the call failed, or None.
        matched_by: how the facts were found ("exact", "any_relation", "fuzzy_subject",
            "semantic_subject", "question_span"; None when no fact came back or the tool does not say).
        subject_used: the subject that was looked up, when the loop replaced the model's (question span).
    """

    call: ToolCall
    output: str
    shown: str
    facts: list[dict] = field(default_factory=list)
    error: str | None = None
    matched_by: str | None = None
    subject_used: str | None = None


# LoopResult.loop_lookup when the check named a relation only: every span of the question was looked up
NO_STORED_SUBJECT = "lookup of every question span: no stored subject"


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
        forced: the last generation was forced with the tools withheld (after a repeated call or at
            the step budget); stop_reason keeps why.
        answer_source: "model" (it answered), "forced" (it answered when forced) or "tool_result" (the
            object of the last fact a tool returned; the model named nothing even when forced).
        next_hop: the lookup the loop made itself to go on from the first hop (`Bridge(next_hop=True)`),
            as "lookup(subject, relation)"; None: none made. Not in `calls`, which are the model's.
        loop_lookup: the lookup the loop made itself when the model, asked to check (`checked`), answered
            again without one: of the stored subject the question names, its relation the question names
            if the store holds it, else all its facts; `NO_STORED_SUBJECT` when the check was asked for a
            relation only (the store holds no span of the question as a subject). Not in `calls` either.
            None: none made.
        checked: when the model answered without any lookup and was asked once to check
            (`Bridge(check_answers=True)`): the subject the question names that the store holds, else
            "relation R" for the store relation it names; its first answer is in `generations`. None:
            not asked.
        trace: one line per notable step: each call, what answered it (which fallback), forcing.
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
    forced: bool = False
    answer_source: str | None = None
    checked: str | None = None
    next_hop: str | None = None
    loop_lookup: str | None = None
    trace: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        """A tool or retrieval returned at least one fact about what the question asks (a retrieved fact,
        or a tool's grounded one: `bridge.grounding`): if False, any answer is a weights-only guess."""
        return bool(self.retrieved) or any(f.get("grounded", True) for o in self.observations for f in o.facts)

    @property
    def status(self) -> str:
        """"store" (the answer names a fact the store returned about what the question asks: a grounded
        fact, `bridge.grounding`), "store_guess" (it names only facts about a *guessed* subject: a close
        spelling or an embedding neighbour of a name the question uses; flagged), "not_found" (the store
        returned nothing about what the question asks, only perhaps facts about a subject the model
        brought in itself: an answer is only the model's guess),
        "unsupported" (such facts came back, the answer names none of them) or "no_answer"."""
        if self.answer is None:
            return "not_found" if not self.found else "no_answer"
        if self.supported:
            backing = [f for f in self.facts_seen
                       if f.get("object") and find_answer(self.answer, [str(f["object"])]) is not None]
            # tool results carry "grounded"; facts retrieved up front (just-rag) are judged by how they were found
            trusted = [f.get("grounded", f.get("matched_by") not in GUESSED) for f in backing]
            if any(trusted):
                return "store"
            # only facts about a subject the model brought in itself ("Tokyo" for an invented city), none
            # of them a close match of a name the question uses: the store found nothing on what was asked
            if not self.found and not any(f.get("matched_by") in GUESSED for f in backing):
                return "not_found"
            return "store_guess"
        return "not_found" if not self.found else "unsupported"

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


def describe_call(call: ToolCall) -> str:
    """A call as one short line: lookup(subject='Tokyo', relation='country')."""
    if call.error:
        return f"malformed call ({call.error})"
    return f"{call.name}(" + ", ".join(f"{k}={v!r}" for k, v in call.arguments.items()) + ")"


def describe_observation(obs: "Observation") -> str:
    """What a call returned, in one line: the facts (first 3) and which fallback found them."""
    if obs.error:
        return f"error: {obs.error}"
    if not obs.facts:
        return "no facts"
    shown = "; ".join(describe_fact(f) for f in obs.facts[:3])
    more = f" (+{len(obs.facts) - 3})" if len(obs.facts) > 3 else ""
    notes = [f"matched_by {obs.matched_by}"]
    skipped = [r for f in obs.facts for r in f.get("skipped_hops", [])]
    if skipped:
        notes.append(f"skipped the hop {', '.join(map(repr, skipped))}: the subject has none")
    if any(f.get("grounded") is False for f in obs.facts[:3]):
        notes.append("not about a subject the question names: a guess")
    return f"{shown}{more} [{'; '.join(notes)}]"


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
            error = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"  # pydantic names the field on line 2
    if error is not None:
        output = json.dumps({"error": error}, ensure_ascii=False)
        return Observation(call, output, escape_payload(output), [], error)
    try:
        facts = json.loads(output)
    except json.JSONDecodeError:
        facts = []
    facts = [f for f in facts if isinstance(f, dict)] if isinstance(facts, list) else []
    matched = next((f.get("matched_by") for f in facts if f.get("matched_by")), "exact" if facts else None)
    return Observation(call, output, escape_payload(output, max_facts), facts, None, matched)


_POSSESSIVE = re.compile(r"['’]s$", re.IGNORECASE)


def question_spans(question: str, max_words: int = 8) -> list[str]:
    """Word n-grams of `question`, longest first, that could name a subject (not only stop words). A span
    ending in a possessive also comes without it, right after it: "South Africa's money" names "South
    Africa", "St. John's" stays a candidate as written."""
    # quotes, brackets and formula signs split words too: =CAPITAL("Norway") names Norway
    raw = [w for w in re.sub(r"[\"“”()\[\]{}=<>|*_`]", " ", question).split() if w.strip(".,;:!?'\"’")]
    words = [w.strip(".,;:!?'\"’") for w in raw]
    spans = []
    for n in range(min(max_words, len(words)), 0, -1):
        for i in range(len(words) - n + 1):
            chunk = words[i:i + n]
            if all(w.casefold() in _STOPWORDS for w in chunk) or len(" ".join(chunk)) < 3:
                continue
            # a name written with a comma inside it, as the store holds it: "Bonaire, Saint Eustatius and Saba"
            inner = " ".join(raw[i:i + n - 1] + [chunk[-1]]) if n > 1 else ""
            if inner.strip(".,;:!?'\"’") == inner and re.search(r",\s", inner) and not re.search(r"[.;:!?]\s", inner):
                spans.append(inner)
            spans.append(" ".join(chunk))
            bare = _POSSESSIVE.sub("", chunk[-1])
            if bare != chunk[-1] and bare and len(" ".join(chunk[:-1] + [bare])) >= 3:
                spans.append(" ".join(chunk[:-1] + [bare]))
            elif chunk[-1][:1].isupper() and chunk[-1].endswith("s") and len(chunk[-1]) > 4:
                spans.append(" ".join(chunk[:-1] + [chunk[-1][:-1]]))  # a possessive typed without its ': "Myanmars capatal"
    return list(dict.fromkeys(spans))


def known_facts(tools: dict, span: str, max_facts: int = 5) -> list[dict]:
    """The store's facts about `span` as an exact subject (through its aliases), no fallback's guesses."""
    probe = run_tool(tools, ToolCall(LOOKUP_TOOL, {"subject": span}), max_facts)
    return [f for f in probe.facts if f.get("matched_by") in (None, "exact")]


def holds_exactly(obs: Observation, relation: str) -> bool:
    """True when a lookup's result `obs` holds a fact of `relation` about the asked subject itself (no
    fallback's guess): the test before the loop asks or shows a relation on its own initiative."""
    return obs.error is None and any(f.get("relation") == relation and f.get("matched_by") in (None, "exact")
                                     for f in obs.facts)


def held_lookup(tools: dict, arguments: dict, relations, max_facts: int = 5) -> tuple[ToolCall, Observation] | None:
    """The first lookup of `arguments` with one of `relations`, in order, whose result holds that relation
    about the subject itself (`holds_exactly`), and its result; None when none does."""
    for rel in relations:
        call = ToolCall(LOOKUP_TOOL, {**arguments, "relation": rel})
        obs = run_tool(tools, call, max_facts)
        if holds_exactly(obs, rel):
            return call, obs
    return None


def named_subject(tools: dict, question: str) -> str | None:
    """The longest span of `question` that the store holds exactly as a subject (through its aliases), or None."""
    return next((span for span in question_spans(question) if known_facts(tools, span, 1)), None)


# Where a question says where the asker is, not what it asks about: in a clause whose subject is the
# asker, the place its journey or business starts from ("I stream from Ohio", "I fly there from Toronto",
# "I'm paying from my bank in Singapore", "a courier firm out of Leeds"), or where the asker says it is,
# lives or works ("I'm in Ottawa", "im in perth", "I live in Glasgow"). Not where it goes or will be
# ("we're playing a gig in Liberia", "I've been living in X for a year and want its currency").
_CLAUSE_BREAK = re.compile(r"[.;:!?,]|\b(?:and|but|so|while|because)\b", re.IGNORECASE)
_FIRST_PERSON = {"i", "im", "ive", "we"}  # folded: "I'm" is "i m", "we're" is "we re"
# "(posting a parcel) from my shop in Bristol", "at our office in Leeds", "on our allotment in Norwich": the asker's own premises, with or
# without a first-person clause ("he emigrated from my grandfather's village" has no "my X in")
_OWN_PLACE = lambda before: (len(before) >= 4 and before[-1] == "in" and before[-3] in ("my", "our")
                             and before[-4] in ("from", "at", "on", "into", "in", "to"))
_OTHERS = {"a", "an", "the", "his", "her", "their", "its"}
_BE_AT = {("i", "m"), ("im",), ("i", "am"), ("we", "re"), ("we", "are"), ("i", "live"), ("we", "live"),
          ("i", "work"), ("we", "work")}
# "I run a little flower shop in galway", "we own the bakery in Leeds", "I coach an under-12 team in Chicago":
# what the asker runs, and where
_RUN_PREMISES = {"run", "own", "manage", "coach", "teach"}
_QUESTION_WORDS = {"what", "which", "where", "who", "how", "whats", "is", "does", "do", "can", "could"}
_GREETINGS = {"greetings", "hello", "hi", "hey", "cheers", "regards"}
_TOWARDS = {"to", "into", "towards", "for"}


def _from_here(before: list[str]) -> bool:
    """Whether the words `before` a place end in "from" and a few words that keep the journey's start on
    it ("from", "from my bank in"), not someone else's place ("from a breeder in"), a destination
    ("from Graz to") nor a place the asker came back from ("brought back from")."""
    if "from" not in before[-4:]:
        return False
    at = len(before) - 1 - before[::-1].index("from")
    if before[at - 1:at] == ["back"]:  # "the coins I brought back from X": a trip's place, not the asker's
        return False
    since = before[at + 1:]
    return not (_OTHERS | _TOWARDS) & set(since)


def relation_named_by(word: str) -> bool:
    """Whether a folded word names a relation the project knows (a typo of one included: "countrey")."""
    word = spell_relation_words(word)
    return any(re.fullmatch(_plural_too(w), word) for rel in known_relation_names() for w in relation_words(rel))


def _introduces_asker(clause: list[str], i: int, n: int, first_clause: bool, sentence_end: str = "") -> bool:
    """Whether the folded `clause` names clause[i:i+n] as the asker's place in the ways people introduce
    themselves without "I": a sign-on ending in the place and "here" ("Pharmacist in Bristol here"); a clause
    opened by a participle or a greeting, whose journey starts there ("Writing from Cork", "Chasing a swell
    from Newquay", "flying in from Melbourne to ...", "Greetings from Leeds"); or the question's opening
    words, before any question, saying who asks ("Amateur astronomer from Tucson: ...")."""
    before, after = clause[:i], clause[i + n:]
    if after == ["here"] and before[-1:] in (["in"], ["from"]):
        return True
    # "Sydney mum, slightly panicking.": the opening clause is the place and a word or two about the asker
    # (not a relation word: "San Juan de los Morros - countrey?" asks about the place)
    if (first_clause and not before and 1 <= len(after) <= 2 and not (_QUESTION_WORDS | _FIRST_PERSON) & set(after)
            and not any(relation_named_by(w) for w in after)):
        return True
    # "Law student in Tokyo.", "Caterer in Canberra.", "Amateur astronomer from Tucson:": the opening
    # clause, one to three words about no one else, then "from" and the place, or "in" and the place ended
    # by a full stop ("Hotels in Paris, which country?" and "Street food in Lagos: ..." ask about the place)
    if (first_clause and not after and before[-1:] in (["in"], ["from"]) and 2 <= len(before) <= 4
            and (before[-1] == "from" or sentence_end == ".")
            and not (_QUESTION_WORDS | _FIRST_PERSON | _OTHERS | {"my", "our", "your"}) & set(clause)):
        return True
    if "from" not in before[-4:] or before.index("from") == 0:
        return False
    opener = before[0]
    opened = opener in _GREETINGS or (opener.endswith("ing") and len(opener) >= 5)
    # after a participle, "from a hostel in Hanoi" is still the asker's place ("Asking from a hostel in X")
    since = before[len(before) - before[::-1].index("from"):]
    return opened and not _TOWARDS & set(since)


def asker_location(question: str, span: str) -> bool:
    """Whether the question names `span` as where the asker is (see above) rather than what it asks about."""
    target = fold_words(span).split()
    if not target:
        return False
    clauses = [c for c in _CLAUSE_BREAK.split(question) if c and fold_words(c)]
    # "Horse passport office, Newmarket.": a short opening clause saying who asks, then the place alone
    if (len(clauses) > 2 and fold_words(clauses[1]).split() == target and len(fold_words(clauses[0]).split()) <= 4
            and not (_QUESTION_WORDS | _FIRST_PERSON | _OTHERS) & set(fold_words(clauses[0]).split())):
        return True
    for k, clause in enumerate(clauses):
        words = fold_words(clause).split()
        for i in range(len(words) - len(target) + 1):
            if words[i:i + len(target)] != target:
                continue
            before = words[:i]
            if _OWN_PLACE(before) or before[-3:] in (["at", "home", "in"], ["back", "home", "in"]):
                return True
            end = question[len(clause):len(clause) + 1] if k == 0 else ""
            if _introduces_asker(words, i, len(target), k == 0 and len(clauses) > 1, end):
                return True
            if not _FIRST_PERSON & set(before):
                continue
            # "from" a few words back, unless they name someone else's place ("ordering queens from a
            # breeder in X": the breeder's, not the asker's) or where the journey goes ("from Graz to X")
            origin = _from_here(before) or before[-2:] == ["out", "of"]
            said_here = before[-1:] == ["in"] and any(tuple(before[-1 - len(b):-1]) == b for b in _BE_AT)
            # "i run a little flower shop in galway": the premises the asker runs, a few words before "in"
            runs = (before[-1:] == ["in"] and any(w in _RUN_PREMISES for w in before[-8:-2])
                    and not {"his", "her", "their"} & set(before[-8:]))
            if origin or said_here or runs:
                return True
    return False


def asked_subjects(tools: dict, question: str) -> list[str]:
    """The spans of the question that the store holds exactly as subjects, the one the question most
    likely asks about first: longest first (`question_spans`), except that when the question names
    several places (each not part of a longer one), where the asker is (`asker_location`) comes last,
    and places nearer to a word naming a relation come first, written with a capital first where any is
    ("I'm in Ottawa and want to send my niece in Bhadrak a gift card in the money of the country she
    lives in": Bhadrak, then Ottawa)."""
    spans = [s for s in question_spans(question) if known_facts(tools, s, 1)]
    if written_in_case(question):  # then a name is capitalised: "two queens from a breeder" names no Queens
        spans = [s for s in spans if not s.islower()]
    text = " " + fold_words(question) + " "
    places: list[tuple[str, int, int]] = []  # (span, start, end) in the folded text, longest first
    for span in spans:
        at = text.find(f" {fold_words(span)} ")
        end = at + len(fold_words(span)) + 1
        if at >= 0 and not any(a <= at and end <= e for _, a, e in places):
            places.append((span, at, end))
    mentions = [p for p, _ in relation_mentions(tools, question)]
    if len(places) < 2:
        return spans
    distance = lambda pl: min((0 if pl[1] <= m <= pl[2] else min(abs(m - pl[1]), abs(m - pl[2])) for m in mentions),
                              default=0)
    # sorted is stable: equals keep the longest-first order; spans keep the question's case
    ranked = [pl[0] for pl in sorted(places, key=lambda pl: (asker_location(question, pl[0]), states_fact(tools, question, pl[0]),
                                                             not pl[0][:1].isupper(), distance(pl)))]
    return ranked + [s for s in spans if s not in ranked]


def states_fact(tools: dict, question: str, span: str) -> bool:
    """Whether the question states a fact the store holds about `span`: the span, then within three words
    joined by "is", "are", a colon or "=", one of its objects as the store writes it ("Gold is Au and silver
    is Ag, ... the element letters for Rhenium": Gold and Silver are given, not asked; "Is Lagos in
    Nigeria?" and "Which country is Lagos in: Nigeria or Ghana?" state nothing)."""
    for fact in known_facts(tools, span, 20):
        obj = str(fact.get("object") or "")
        if not obj:
            continue
        link = re.search(rf"\b{re.escape(span)}(?P<between>(?:'s)?[^?!.\w]+(?:\w+[^?!.\w]+){{0,3}}?){re.escape(obj)}(?!\w)(?!,?\s+or\b)",
                         question, re.IGNORECASE if span.islower() else 0)
        if link and re.search(r"\b(?:is|are)\b|[:=]", link.group("between")):
            return True
    return False


_NOT_NAMES = {"i", "i'm", "i've", "i'd", "i'll", "im", "ive"}


def written_in_case(question: str) -> bool:
    """Whether the question capitalises names: some word past the start of its sentence, other than "I",
    starts with a capital. Then an all-lowercase span is a common word, not a place; in a question typed
    all in lower case ("im in perth ...") it may be a name."""
    for sentence in re.split(r"[.!?:;\n]+\s*", question):
        words = [w.strip("\"'“”‘’()[],") for w in sentence.split()[1:]]
        if any(w[:1].isupper() and w.casefold() not in _NOT_NAMES for w in words):
            return True
    return False


_PLACE_WORDS = {"in", "from", "at", "to", "near", "outside"}
_NAME_JOINERS = {"de", "la", "le", "du", "del", "des", "di", "da", "do", "dos", "das", "el", "al", "sur", "upon",
                 "on", "and", "the", "of", "am", "an", "der", "y"}
_NOT_PLACES = {"january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
               "november", "december", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
               "christmas", "easter", "i", "mum", "mom", "dad"}
# the question asks about where the asker is: "which currency do they use here?", "what country is this city in"
_ASKS_HERE = re.compile(r"\bhere\W*$|\b(this country|this city|this town|where (i|we) (am|are|live|work))\b", re.IGNORECASE)


def unknown_places(tools: dict, question: str) -> list[str]:
    """Names the question writes with capitals right after "in", "from", "at", "to" ("whose family moved here
    from Ekwandolozi", "a guest spot at a studio in Ostrumbel") that the store holds no subject in (nor is part
    of one it holds): places the question names that the store lacks. Only in a question that capitalises
    names (`written_in_case`); months, weekdays and the like are no places."""
    if not written_in_case(question):
        return []
    tokens = [t.strip("\"“”‘’()[]") for t in question.split()]
    stored = [fold_words(x) for x in asked_subjects(tools, question)]
    found = []
    for i, tok in enumerate(tokens[:-1]):
        if tok.casefold() not in _PLACE_WORDS:
            continue
        name: list[str] = []
        for t in tokens[i + 1:]:
            core = _POSSESSIVE.sub("", t.rstrip(".,;:!?"))
            if not (core[:1].isupper() or (name and core.casefold() in _NAME_JOINERS)):
                break
            name.append(core)
            if core != t:  # punctuation (or a possessive) ends the name
                break
        while name and name[-1].casefold() in _NAME_JOINERS:
            name.pop()
        span = " ".join(name)
        if (not span or span.casefold() in _NOT_PLACES or known_facts(tools, span, 1)
                or any(f" {fold_words(span)} " in f" {x} " for x in stored)):
            continue
        found.append(span)
    return list(dict.fromkeys(found))


def asked_subject(tools: dict, question: str) -> str | None:
    """The first of `asked_subjects` that is not where the asker is ("Tattoo artist here, flying in from
    Melbourne to ... a studio in Ostrumbel": not Melbourne); the asker's place only when the question names
    no other place, stored or not; else None."""
    subjects = asked_subjects(tools, question)
    other = next((s for s in subjects if not asker_location(question, s)), None)
    if other is not None or not subjects or unknown_places(tools, question):
        return other
    return subjects[0]


def written_as_name(question: str, subject: str) -> bool:
    """Whether the question writes `subject` as a name: as it stands, case and all, with a capital on each of
    its words but joiners ("Thornacre Wyke", "Villarmuzo de la Greña"), not "Mare" for "a mare" nor "Horse
    passport office, Newmarket"."""
    words = [w.strip(".,;:!?'\"’") for w in subject.split()]
    if not (words and subject in question and words[0][:1].isupper()
            and all(w[:1].isupper() or w.casefold() in _NAME_JOINERS for w in words if w)):
        return False
    # one word written only where a sentence starts is no name by its capital ("Grandma wants the tooth fairy")
    starts = [m.start() for m in re.finditer(re.escape(subject), question)]
    return len(words) > 1 or any(question[:at].rstrip()[-1:] not in ("", ".", "!", "?", ":") for at in starts)


def call_from_question(tools: dict, call: ToolCall, question: str, max_facts: int = 5,
                       relation_held: bool = False) -> Observation | None:
    """The lookup or follow `call` redone with the question span the store knows *exactly* as a subject
    that the question most likely asks about (`asked_subjects`: the longest, or of several places the
    one nearest a relation word), or None. "Span" for "Shanghai": the question names Shanghai. A lookup keeps its relation
    when the store answers it for that subject (exactly or through a neighbour), else gets all its facts.
    With `relation_held`, only with a span that holds the call's relation itself (a follow's last one), and
    for a follow of a name only with a longer name around it ("follow(my grandson, ...)" is redone, "follow(Thornacre Wyke,
    ...)": a name the store lacks is not found, not another place): the model's subject was a real span of
    the question, so another span is taken only where it answers what was asked ("spell 'itinerary', and what country has Mandurah ...": Mandurah; "Is Castle Combe in
    Spain? ... what country is it in?": not Spain, which has no country)."""
    tried = normalize_name(str(call.arguments.get("subject", "")))
    # a follow of a name the store lacks ("Thornacre Wyke") is not redone on another place, only on a longer
    # name around it ("Bonaire" of "Bonaire, Saint Eustatius and Saba")
    around_only = relation_held and written_as_name(question, str(call.arguments.get("subject", "")))
    folded_tried = f" {fold_words(tried)} "
    named = {rel for _, rel in relations_named(tools, question)} if relation_held else set()
    for span in asked_subjects(tools, question):
        if normalize_name(span) == tried or asker_location(question, span) or states_fact(tools, question, span):
            # the model's own subject is not in the store: the asker's own place is not it either, nor a
            # subject the question gives with its fact ("Gold is Au ... the element letters for Sevrandine")
            continue
        if around_only and folded_tried not in f" {fold_words(span)} ":
            continue
        known = known_facts(tools, span, max_facts)
        if not known:
            continue
        obs = run_tool(tools, ToolCall(call.name, {**call.arguments, "subject": span}), max_facts)
        shown_call = call
        if relation_held and not holds_exactly(obs, asked_relation(call) or ""):
            # the span holds no relation the model asked, but one the question names (or, naming none, the
            # span's relation closest to the question: "the element letters for Rhenium"): that one's lookup
            wanted = sorted(named) or [r for r in [closest_relation(question, sorted(
                {f["relation"] for f in known if f.get("relation")}), span)] if r]
            held = held_lookup(tools, {"subject": span}, wanted, max_facts)
            if held is None:
                continue
            # shown as the model's call with the named relation (its subject kept, as for any redone call)
            shown_call = ToolCall(LOOKUP_TOOL, {"subject": call.arguments.get("subject"),
                                                "relation": held[0].arguments["relation"]})
            obs = held[1]
        facts = [f for f in obs.facts if f.get("matched_by") not in GUESSED and f.get("matched_by") != "any_relation"]
        if not facts and call.name == LOOKUP_TOOL:
            facts = known  # the question's subject lacks the relation: all its facts, as for any_relation
        if not facts:
            continue
        return span_observation(shown_call, facts, span, max_facts)
    return None


def span_observation(call: ToolCall, facts: list[dict], span: str, max_facts: int = 5) -> Observation:
    """The result of `call` redone on the question's `span`: its facts, those found exactly marked
    "question_span", and what the model is shown of them."""
    facts = [dict(f, matched_by="question_span") if f.get("matched_by") in (None, "exact") else f for f in facts]
    output = json.dumps(facts, ensure_ascii=False)
    return Observation(call, output, escape_payload(output, max_facts), facts, None, "question_span", span)


def store_relations(tools: dict) -> list[str]:
    """The relation names the lookup tool offers (its schema's enum), [] when it lists none."""
    tool = tools.get(LOOKUP_TOOL)
    field_ = getattr(getattr(tool, "args_schema", None), "model_fields", {}).get("relation")
    extra = getattr(field_, "json_schema_extra", None) or {}
    return list(extra.get("enum") or []) if isinstance(extra, dict) else []


def relations_named(tools: dict, question: str) -> list[tuple[int, str]]:
    """(position, relation) of each store relation the question names as whole words, by its name
    ("atomic_number" as "atomic number") or a word its relation file lists ("money" for currency), at its
    first mention; in order of first mention."""
    first: dict[str, int] = {}
    for at, rel in relation_mentions(tools, question):
        first.setdefault(rel, at)
    given = relations_given(tools, question)
    if set(first) - given:  # a relation the asker says it already has is not asked (unless it is all there is)
        first = {rel: at for rel, at in first.items() if rel not in given}
    return sorted((at, rel) for rel, at in first.items())


# Cues of a clause that says what the asker already has ("I've already changed my money", "I know the capital
# of Cyprus", "Forget the capital, I've got that one"), in folded words.
_GIVEN_CUES = (" already ", " i know ", " we know ", " forget ", " i ve got ", " got that ")
# as _CLAUSE_BREAK but "and" does not end a clause here: "I already know which continent X is on and what
# money they use" gives both relations
_GIVEN_CLAUSE_BREAK = re.compile(r"[.;:!?,]|\b(?:but|so|while|because)\b", re.IGNORECASE)


def relations_given(tools: dict, question: str) -> set[str]:
    """The store relations that the question names only in clauses saying the asker already has them."""
    given, asked = set(), set()
    for clause in _GIVEN_CLAUSE_BREAK.split(question):
        text = " " + spell_relation_words(fold_words(clause)) + " "
        named = {rel for _, rel in relation_mentions(tools, clause)}
        (given if any(cue in text for cue in _GIVEN_CUES) else asked).update(named)
    return given - asked


def relation_mentions(tools: dict, question: str) -> list[tuple[int, str]]:
    """(position, relation) of every mention of a store relation in the question's folded words
    (`relations_named` keeps the first of each), in order."""
    text = " " + spell_relation_words(fold_words(question)) + " "
    found = []
    for rel in store_relations(tools):
        for w in relation_words(rel):
            found += [(m.start(), rel) for m in re.finditer(f"(?= {_plural_too(w)} )", text)]
    return sorted(set(found))


def _plural_too(word: str) -> str:
    """A regex for `word` (folded) or its plural ("my dropdown only takes countries", "capitals")."""
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return f"(?:{re.escape(word)}|{re.escape(word[:-1])}ies)"
    return f"{re.escape(word)}(?:s|es)?"


def asked_directly(question: str, relation: str) -> bool:
    """Whether the question asks for `relation` itself with "which"/"what" ("Which country is X in",
    not "Which country's capital")."""
    text = " " + spell_relation_words(fold_words(question)) + " "
    return any(re.search(rf" (which|what) {re.escape(w)} (?!s )", text) for w in relation_words(relation))


# A typed relation word ("capitl", "continant", "captial", "currancy") is one edit (insert, delete, replace,
# or swap two neighbours: OSA distance) from the word a relation file gives. Only words of 7+ letters are
# mended: shorter ones ("money", "nation", "symbol") sit one edit from common words. "county" is a word.
_MENDED_MIN, _NOT_TYPOS = 7, frozenset({"county", "counties"})


def known_relation_names() -> list[str]:
    """Every relation the project knows by name: the shipped files and those registered at run time."""
    return list(dict.fromkeys([*shipped_relations(), *registered_relations()]))


def relation_vocabulary() -> list[str]:
    """The one-word relation words of 7+ letters of every relation the project knows by name (shipped
    files and ones registered at run time): the words a typo is mended to."""
    words = {w for rel in known_relation_names() for w in relation_words(rel)}
    return sorted(w for w in words if " " not in w and len(w) >= _MENDED_MIN)


def spell_relation_words(text: str) -> str:
    """`text` (folded, words split by spaces) with each word one typo from exactly one relation word
    (`relation_vocabulary`) written as that word; other words and the spacing stay as they are."""
    return _mended(text, tuple(relation_vocabulary()))


@functools.lru_cache(maxsize=4096)
def _mended(text: str, vocab: tuple[str, ...]) -> str:
    """`spell_relation_words` for one vocabulary; cached, as the loop reads one question many times."""
    def mend(m: re.Match) -> str:
        word = m.group(0)
        if len(word) < _MENDED_MIN - 1 or word in vocab or word in _NOT_TYPOS:
            return word
        near = [w for w in vocab if OSA.distance(word, w, score_cutoff=1) <= 1]
        return near[0] if len(near) == 1 else word

    return re.sub(r"[^\W\d_]+", mend, text) if vocab else text


def relation_words(relation: str) -> list[str]:
    """The folded words a question names `relation` by (`Relation.question_words`; the name alone for a
    relation with no file)."""
    try:
        words = relation_named(relation).question_words()
    except (KeyError, RelationFileError):
        words = (relation.replace("_", " "),)
    return [w for w in (fold_words(w) for w in words) if w]


def path_next(tools: dict, question: str, relation: str) -> list[str]:
    """[the relation the question writes right after `relation` with an arrow ("country -> continent",
    "country → continent")], or [] when it writes none."""
    arrow = r"\s*(?:->|→|⟶|=>|>)\s*"
    # folded, arrows kept (fold_words drops them)
    text = spell_relation_words(normalize_name(str(question)).replace("_", " "))
    for rel in store_relations(tools):
        if rel == relation:
            continue
        for w in relation_words(relation):
            for v in relation_words(rel):
                if re.search(rf"\b{re.escape(w)}{arrow}{re.escape(v)}\b", text):
                    return [rel]
    return []


def possessive_at(question: str, relation: str, at: int) -> bool:
    """Whether `relation`, named at position `at` of the question's folded words (`relations_named`), is a
    possessive there ("that country's capital": what follows belongs to the answered relation's object)."""
    rest = (" " + spell_relation_words(fold_words(question)) + " ")[at:]
    return any(rest.startswith(f" {w} s ") for w in relation_words(relation))


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

    out = []
    for t in tools:
        schema = convert_to_openai_tool(t)
        # langchain drops `enum` from properties; the lookup's relation list must reach the model.
        source = getattr(t, "args_schema", None)
        props = source.model_json_schema().get("properties", {}) if hasattr(source, "model_json_schema") else {}
        for name, spec in schema["function"].get("parameters", {}).get("properties", {}).items():
            if "enum" in props.get(name, {}) and "enum" not in spec:
                spec["enum"] = props[name]["enum"]
        out.append(schema)
    return out


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
        force_final: after a repeated call or at the step budget, end with the fact that answers the
            question when a tool returned it (also when the model wanders off after it), else generate
            once more with the tools withheld (and fall back to a tool result), instead of ending
            without an answer.
        question_fallback: redo a call with a subject the question names when the model's subject is
            not in the question (nor reached from it), or when a lookup came back empty or guessed.
        check_answers: when the model answers without any lookup and the question names a subject or a
            relation the store holds, ask it once to check with the tools (`prompts.CHECK_ASK`, a user turn; layouts
            with user turns only) instead of ending on a weights-only answer; when it answers again without a
            lookup and the question names a stored subject, the loop looks that subject up itself, once
            (`LoopResult.loop_lookup`), and lets the model answer from the result. Off by default: the
            project's lookup rates measure what the model does unasked; `bridge.chat` turns it on.
        next_hop: when the model stops after the first hop of a two-hop question (see the module
            docstring), look up the next relation the question names on the answer's object, once, and
            let the model answer with both results in view.
    """

    def __init__(self, generate, fmt, tools=None, *, mode: str = "tool", max_steps: int = 4, k: int = 3,
                 max_facts: int = 5, force_final: bool = True, question_fallback: bool = True,
                 check_answers: bool = False, next_hop: bool = True):
        self.generate, self.fmt = generate, fmt
        self.tools = {t.name: t for t in (tools or [])}
        self.max_steps, self.k, self.max_facts = max_steps, k, max_facts
        self.force_final, self.question_fallback = force_final, question_fallback
        self.check_answers, self.next_hop = check_answers, next_hop
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
        self.checked_subject: str | None = None  # the stored subject the check named (see _should_check)
        self.done = False
        # names of the earlier exchanges count as named: "And its capital?" after "Which country is Lagos in?"
        self.ledger = Ledger(result.question, [text for pair in history for text in pair],
                             [rel for _, rel in relations_named(bridge.tools, result.question)],
                             relation_mentions(bridge.tools, result.question))

    def prompt(self) -> str:
        res = self.result
        return self.bridge.fmt.prompt(res.question, self.turns, self.context, self.history,
                                      tools=res.mode == "tool" and not res.forced, final=res.forced)

    def advance(self, generated: str, emit: Callable[[str, object], None] = lambda kind, value: None) -> None:
        """Act on one generation: an answer (or none) ends the loop; calls are run and become a turn."""
        b, res = self.bridge, self.result
        text, _ = b.fmt.cut(generated)  # calls come only from this, the model's own new text
        res.steps += 1
        res.generations.append(text)
        if res.forced:
            return self._final(b.fmt.answer(text), "forced")
        if res.mode != "tool" or CALL_OPEN not in text:
            answer = b.fmt.answer(text)
            if not answer and res.mode == "tool" and b.force_final and res.facts_seen:
                if self.ledger.answer is not None:
                    if self._offer_next_hop("said nothing after the results"):
                        return
                    return self._settle("said nothing after the results")
                res.forced = True  # it said nothing (or only echoed a result) although it holds facts
                res.trace.append(f"step {res.steps}: no answer after the results: forced final answer, tools withheld")
                return
            if answer and (self._should_check() or self._look_up_checked()):
                return
            if not answer and self._look_up_after_malformed():
                return
            if (answer and self.ledger.answer is not None
                    and find_answer(answer, [str(self.ledger.answer.get("object"))]) is not None
                    and self._offer_next_hop("answered with it")):
                return
            res.answer = answer or None
            res.stop_reason = "answer" if answer else "no_answer"
            res.answer_source = "model" if answer else None
            return self._finish()
        answered_before, moved = self.ledger.answer is not None, False
        executed = []
        for call in parse_calls(text):
            res.calls.append(call)
            emit("call", call)
            key = call_key(call)
            if key in self.seen:
                res.stop_reason = "repeated_call"
                res.trace.append(f"step {res.steps}: {describe_call(call)} repeats an answered call")
                break
            self.seen.add(key)
            obs = self._run(call)
            moved |= self.ledger.record(obs, res.steps)
            res.trace.append(f"step {res.steps}: {describe_call(call)} -> {describe_observation(obs)}")
            executed.append(obs)
            emit("observation", obs)
        res.observations += executed
        if executed:
            self.turns.append(make_turn(text, executed, b.max_facts))
        if b.force_final and answered_before and not moved:
            if res.stop_reason != "repeated_call":
                res.stop_reason = "wandered"
            if self._offer_next_hop(
                    "repeated a call" if res.stop_reason == "repeated_call" else "asked for something else"):
                res.stop_reason = "no_answer"  # the loop goes on
                return
            return self._settle("repeated a call" if res.stop_reason == "repeated_call"
                                else "asked for something that does not go on from it")
        if res.stop_reason == "repeated_call" or res.steps >= b.max_steps:
            if not b.force_final:
                return self._finish()  # stop_reason stays "max_steps" unless a repeat cut it off
            if self.ledger.answer is not None:
                return self._settle(f"used the step budget ({b.max_steps})")
            res.forced = True  # the next prompt withholds the tools
            why = "a repeated call" if res.stop_reason == "repeated_call" else f"the step budget ({b.max_steps})"
            res.trace.append(f"forced final answer after {why}: one more generation with the tools withheld")

    def _offer_next_hop(self, why: str) -> bool:
        """The model stopped at the fact that answers the first hop (`why`) while the question names
        another store relation before the answered one (after it, when the answered one is a possessive or
        when the question does not ask it with "which"/"what"; or names only one relation, not the answered
        one): look that relation up on the fact's object and
        show the result as a step, once. True when done (the loop goes on for one more generation)."""
        b, res, fact = self.bridge, self.result, self.ledger.answer
        if not b.next_hop or res.mode != "tool" or res.next_hop or fact is None or res.steps >= b.max_steps:
            return False
        if not self.ledger.mentioned(str(fact.get("subject"))):
            return False  # the answer is already past the first hop (a follow, or a chain the model walked)
        named, rel_done = relations_named(b.tools, res.question), str(fact.get("relation"))
        mentions = self.ledger.relation_mentions
        answered = next((at for at, rel in named if rel == rel_done), None)
        possessive = [] if asked_directly(res.question, rel_done) else \
            [at for at, rel in mentions if rel == rel_done and possessive_at(res.question, rel, at)]
        # the goal: the relation named right after a possessive mention of the answered one ("... one
        # country's passport. Which city is that country's capital?"), unless the question asks the answered
        # one itself ("Which country is X in, and what is the country's capital like?"); else the relation
        # named before the answered one ("the capital of the country X is in"), or, when the question never
        # names the answered relation, the one relation it names ("take X, find the nation it belongs to, and
        # tell me that nation's capital")
        if possessive:
            goal = [rel for at, rel in mentions if at > possessive[0] and rel != rel_done][:1]
        else:
            # a relation named in passing before one the question asks with "which"/"what" is not a goal
            # ("I've already changed my money ... I never checked which country X is in. Which is it?")
            direct = asked_directly(res.question, rel_done)
            goal = [rel for at, rel in named if (answered is None or at < answered)
                    and (not direct or asked_directly(res.question, rel))]
        if not goal:  # a path written out: "Bengbu -> country -> continent?"
            goal = path_next(b.tools, res.question, rel_done)
        if not goal and not asked_directly(res.question, rel_done):
            # the answered relation named as a description, the other one after it: "the country it belongs
            # to. What's the capital of that country?"
            goal = sorted({rel for _, rel in named if rel != rel_done})
        if len(goal) != 1:
            return False
        call = ToolCall(LOOKUP_TOOL, {"subject": str(fact.get("object")), "relation": goal[0]})
        if call_key(call) in self.seen:
            return False
        obs = run_tool(b.tools, call, b.max_facts)
        if not holds_exactly(obs, goal[0]):
            return False
        if any(normalize_name(str(f.get("object"))) == normalize_name(str(fact.get("subject"))) for f in obs.facts):
            return False  # the hop leads back to the question's subject ("Which country's capital is Abuja?")
        self.seen.add(call_key(call))
        self.ledger.record(obs, res.steps)
        res.observations.append(obs)
        res.next_hop = describe_call(call)
        self.turns.append(make_turn(" " + render_lookup(call.arguments["subject"], goal[0]), [obs], b.max_facts))
        res.trace.append(f"step {res.steps}: the model {why} after the first hop ({describe_fact(fact)}), and the "
                         f"question asks for {goal[0]!r} first: the loop looked up {describe_call(call)} -> "
                         f"{describe_observation(obs)}")
        return True

    def _should_check(self) -> bool:
        """Ask the model to check an answer it gave without any lookup, once, when the question names a
        subject the store holds (`asked_subject`) or, failing that, a relation the store holds
        (a subject the store lacks: the lookup is how the system learns that it has no such fact, rather
        than passing on the weights' guess). True when asked (the loop goes on)."""
        b, res = self.bridge, self.result
        if (not b.check_answers or res.mode != "tool" or res.checked or res.calls or res.steps >= b.max_steps
                or not getattr(b.fmt, "can_check", False)):
            return False
        subject = asked_subject(b.tools, res.question)
        named = [] if subject is not None else [rel for _, rel in relations_named(b.tools, res.question)]
        if subject is None and not named:
            return False
        res.checked = subject if subject is not None else f"relation {named[-1]}"
        self.checked_subject = subject  # what _look_up_checked looks up if the model ignores the check
        self.turns.append(Turn(res.generations[-1], check=CHECK_ASK))
        why = (f"names {subject!r}, which the store holds" if subject is not None
               else f"asks for {named[-1]!r}, a relation the store holds")
        res.trace.append(f"step {res.steps}: answered without a lookup although the question {why}: "
                         "asked to check with the tools")
        return True

    def _look_up_checked(self) -> bool:
        """The model, asked to check an answer about a subject the store holds, answered again without a
        lookup ("Answer with a single word: the money you'd spend in Finland is called what?"): the loop
        looks that subject up itself, once (the relation the question names, the last named first, where
        the store holds it for the subject; else all its facts), shows the result as a step, and lets the
        model answer from it. True when done (the loop goes on for one more generation)."""
        b, res = self.bridge, self.result
        if (not b.check_answers or res.mode != "tool" or res.checked is None or res.calls or res.loop_lookup
                or res.steps >= b.max_steps):
            return False
        subject = self.checked_subject
        if subject is None:
            # asked because of a relation only: the check already looked every span of the question up in
            # the store (exactly, through aliases) and found no subject; the system says so, and the model's
            # answer stays what it is, flagged as its own guess
            res.loop_lookup = NO_STORED_SUBJECT
            res.trace.append(f"step {res.steps}: asked to check, the model answered again without a lookup; no span "
                             "of the question is a subject the store holds (each looked up exactly): not found")
            return False
        return self._loop_lookup(subject, "asked to check, the model answered again without a lookup")

    def _look_up_after_malformed(self) -> bool:
        """The model's only calls were malformed (an unclosed `<tool_call>`) and then it said nothing: the loop
        looks up the subject the question names, as after an ignored check, once, unless that subject is
        where the asker is. True when done (the loop goes on for one more generation)."""
        b, res = self.bridge, self.result
        if (not b.check_answers or res.mode != "tool" or res.loop_lookup or not res.calls
                or any(c.error is None for c in res.calls) or res.steps >= b.max_steps):
            return False
        subject = asked_subject(b.tools, res.question)
        if subject is None:
            return False
        return self._loop_lookup(subject, "the model's calls were malformed and it said nothing")

    def _loop_lookup(self, subject: str, why: str) -> bool:
        """Look `subject` up for the model (the relation the question names where held, else all its facts)
        and show the result as a step; False when the store returns nothing."""
        b, res = self.bridge, self.result
        held = self._named_relation_held({"subject": subject})
        if held is not None:
            call, obs = held
        else:
            call = ToolCall(LOOKUP_TOOL, {"subject": subject})
            obs = run_tool(b.tools, call, b.max_facts)
        if obs.error is not None or not obs.facts:
            return False
        self.seen.add(call_key(call))
        self.ledger.record(obs, res.steps)
        res.observations.append(obs)
        res.loop_lookup = describe_call(call)
        self.turns.append(make_turn(" " + render_lookup(subject, call.arguments.get("relation")), [obs], b.max_facts))
        res.trace.append(f"step {res.steps}: {why}: the loop looked up {describe_call(call)} -> "
                         f"{describe_observation(obs)}")
        if held is None:
            self._hop_to_named_relation(obs)
        return True

    def _hop_to_named_relation(self, obs: Observation) -> None:
        """After the loop's own lookup of a subject that holds none of the relations the question names, one
        hop through the graph: the first of its objects that holds one ("the money of the nation the flat in
        Kasese is in": Kasese -country-> Uganda, then Uganda's currency), shown as a step too."""
        b, res = self.bridge, self.result
        for fact in obs.facts:
            if fact.get("matched_by") not in (None, "exact", "question_span"):
                continue
            held = self._named_relation_held({"subject": str(fact.get("object"))})
            if held is None or call_key(held[0]) in self.seen:
                continue
            call, hop = held
            if any(normalize_name(str(f.get("object"))) == normalize_name(str(fact.get("subject"))) for f in hop.facts):
                continue  # back to where it started
            self.seen.add(call_key(call))
            self.ledger.record(hop, res.steps)
            res.observations.append(hop)
            self.turns.append(make_turn(" " + render_lookup(call.arguments["subject"], call.arguments["relation"]),
                                        [hop], b.max_facts))
            res.trace.append(f"step {res.steps}: {fact.get('subject')!r} holds none of the relations the question "
                             f"names; one hop on: the loop looked up {describe_call(call)} -> {describe_observation(hop)}")
            return

    def _run(self, call: ToolCall) -> Observation:
        """Execute `call`; redo it with the question's own subject when the model's is not in the question
        (nor reached from it), or when a lookup found nothing or only a guessed subject."""
        b, res = self.bridge, self.result
        call = self._named_relation(self._without_possessive(call))
        subject = call_subject(call)
        retry = b.question_fallback and subject is not None
        if retry and asker_location(res.question, subject):
            moved = self._off_the_askers_place(subject)
            if moved is not None:
                return moved
            unknown = [] if _ASKS_HERE.search(res.question) else unknown_places(b.tools, res.question)
            if unknown:
                # "I coach a team in Chicago ... a new boy whose family moved here from Ekwandolozi": the
                # question asks about the place the store lacks, not the asker's
                res.trace.append(f"step {res.steps}: {subject!r} is where the asker is; the question asks about "
                                 f"{unknown[0]!r}: asked about that instead")
                call = ToolCall(call.name, {**call.arguments, "subject": unknown[0]}, call.raw)
                return run_tool(b.tools, call, b.max_facts)
        if retry and not self.ledger.grounded(subject):
            fixed = call_from_question(b.tools, call, res.question, b.max_facts)
            if fixed is not None:
                res.trace.append(f"step {res.steps}: {describe_call(call)} -> {subject!r} is not in the question; "
                                 f"the question names {fixed.subject_used!r}: looked that up instead")
                return self._span_named_relation(fixed)
        obs = run_tool(b.tools, call, b.max_facts)
        # An empty lookup of a subject the question names itself: another span of the question is a
        # different entity, taken only where it holds the asked relation ("Is Castle Combe in Spain? ...
        # what country is it in?" went on to Spain's facts). A guessed match still gives way to the
        # subject the question names.
        named_itself = retry and not obs.facts and self.ledger.mentioned(subject)
        if retry and obs.error is None and not obs.facts:
            fixed = self._narrowed(call, subject)
            if fixed is not None:
                res.trace.append(f"step {res.steps}: {describe_call(call)} -> no facts; {fixed.subject_used!r} "
                                 f"holds {describe_call(fixed.call)}: looked that up instead")
                return fixed
        if retry and obs.error is None and (not obs.facts or obs.matched_by in GUESSED):
            fixed = call_from_question(b.tools, call, res.question, b.max_facts, relation_held=named_itself)
            if fixed is not None:
                res.trace.append(f"step {res.steps}: {describe_call(call)} -> "
                                 f"{'no facts' if not obs.facts else obs.matched_by}; "
                                 f"the question names {fixed.subject_used!r}: looked that up instead")
                return self._span_named_relation(fixed)
        return obs

    def _span_named_relation(self, fixed: Observation) -> Observation:
        """A lookup redone on the question's subject (`call_from_question`) that does not hold the model's
        relation there asks the relation the question names, where the store holds it for that subject:
        lookup(Mumbai, country) for "land at the airport of South Sudan's capital" becomes
        lookup(South Sudan, capital), so the answer is the named relation's fact, not one of all the facts."""
        if fixed.call.name != LOOKUP_TOOL or fixed.subject_used is None:
            return fixed
        rel = fixed.call.arguments.get("relation")
        named = [r for _, r in relations_named(self.bridge.tools, self.result.question)]
        if any(f.get("relation") == rel for f in fixed.facts) and (not named or rel in named):
            return fixed
        held = self._named_relation_held({"subject": fixed.subject_used})
        if held is None:
            return fixed
        call, obs = held
        self.result.trace.append(f"step {self.result.steps}: {fixed.subject_used!r} has no {rel!r}; the question names "
                                 f"{call.arguments['relation']!r}, which the store holds for it: asked {describe_call(call)}")
        return span_observation(call, obs.facts, fixed.subject_used, self.bridge.max_facts)

    def _narrowed(self, call: ToolCall, subject: str) -> Observation | None:
        """An empty call redone on the longest span of the model's own subject that the store holds
        ("Street food in Uruguay" -> Uruguay), when that gives facts about it (no fallback's guess)."""
        b = self.bridge
        inner = named_subject(b.tools, subject)
        if inner is None or fold_words(inner) == fold_words(subject) or asker_location(self.result.question, inner):
            return None  # "Caterer in Canberra": the model's subject was the asker's sign-on
        obs = run_tool(b.tools, ToolCall(call.name, {**call.arguments, "subject": inner}), b.max_facts)
        if obs.error is None and any(f.get("matched_by") in (None, "exact") for f in obs.facts):
            return dataclasses.replace(obs, subject_used=inner)
        return None

    def _without_possessive(self, call: ToolCall) -> ToolCall:
        """A subject written with a possessive ("Hailin's", from "the land Hailin's in") that the store lacks,
        while it holds the name without it, is asked by that name; else the call as it was."""
        subject = call_subject(call)
        if not self.bridge.question_fallback or subject is None or not _POSSESSIVE.search(subject.strip()):
            return call
        bare = _POSSESSIVE.sub("", subject.strip())
        if known_facts(self.bridge.tools, subject, 1) or not known_facts(self.bridge.tools, bare, 1):
            return call
        self.result.trace.append(f"step {self.result.steps}: {describe_call(call)} names {subject!r}, a possessive; "
                                 f"the store holds {bare!r}: asked that")
        return ToolCall(call.name, {**call.arguments, "subject": bare}, call.raw)

    def _named_relation(self, call: ToolCall) -> ToolCall:
        """A lookup whose relation the question does not name, in a question that names relations of the
        store, asks one of those instead: the last named that the store holds exactly for the subject
        (the innermost of a nested question first: "the capital of the country X is in" -> country for
        X, capital for X's country); else the call as it was. The model wrote lookup(Cherkessk, continent)
        for "What is the capital of the country that Cherkessk is part of?". A lookup that names no relation
        (or null) is treated the same way."""
        b, res = self.bridge, self.result
        if b.question_fallback and call.name == FOLLOW_TOOL and call_subject(call) is not None:
            call = self._follow_the_schema_takes(call)
            # follow(India, ["notes", "coins"]) for "what money do they use over in India uh like the notes
            # and coins": a chain of relations the store does not have asks what the question names
            stored, rels = store_relations(b.tools), call_relations(call)
            held = (self._named_relation_held({"subject": call_subject(call)})
                    if stored and rels and any(r not in stored for r in rels) else None)
            if held is not None:
                res.trace.append(f"step {res.steps}: {describe_call(call)} follows relations the store does not "
                                 f"have; the question names {held[0].arguments['relation']!r}, which the store holds "
                                 "for the subject: asked that instead")
                return held[0]
            if not relations_named(b.tools, res.question):
                return self._subjects_own_relation(call)
            return self._directly_asked(call, rels)
        if not b.question_fallback or call.name != LOOKUP_TOOL or call_subject(call) is None:
            return call
        asked = call.arguments.get("relation")
        if "relation" in call.arguments and asked is None:
            # "relation": null is refused by the tool; without the key the lookup lists every fact
            call = ToolCall(call.name, {k: v for k, v in call.arguments.items() if k != "relation"}, call.raw)
        named = [rel for _, rel in relations_named(b.tools, res.question)]
        if named and asked in named:
            return self._directly_asked(call, [asked])
        if not named:
            return self._subjects_own_relation(call)
        held = self._named_relation_held(call.arguments)
        if held is None:
            return call
        fixed = held[0]
        what = f"asks {asked!r}, which the question does not name" if asked else "names no relation"
        res.trace.append(f"step {res.steps}: {describe_call(call)} {what}; of those {'it' if asked else 'the question'} names, "
                         f"{fixed.arguments['relation']!r} (named last first) is held for the subject: asked that instead")
        return fixed

    def _subjects_own_relation(self, call: ToolCall) -> ToolCall:
        """A call in a question that names no relation by its words, for a relation the subject does not
        have (lookup(Astatine, country) for "the element letters for Astatine"; a follow whose first hop it
        lacks), or a lookup of one of the subject's relations while another is closer to the question
        (lookup(Hafnium, atomic_number) for "Hafnium, to a chemist (abbr.)"), asks, of the relations the
        store holds for the subject, the one closest to the question (`closest_relation`); else the call as
        it was. A lookup of no relation lists all of the subject's facts, as the model asked ("Tell me about
        Panama.")."""
        b, res = self.bridge, self.result
        subject, rels = call_subject(call), call_relations(call)
        held = sorted({f["relation"] for f in known_facts(b.tools, subject or "", 20) if f.get("relation")})
        if not subject or not rels or len(held) < 2 or (rels[0] in held and call.name != LOOKUP_TOOL):
            return call
        # a relation no file of the store has ("population") may be just what was asked, and the store lacks it:
        # then only shared words choose; one the store has for other subjects was a wrong pick from its list
        rel = closest_relation(res.question, held, subject, overrule=rels[0] in held,
                               by_meaning=rels[0] in store_relations(b.tools))
        if rel is None or rels[:1] == [rel]:
            return call
        why = ("asks what {!r} does not have".format(subject) if not rels or rels[0] not in held
               else f"asks {rels[0]!r} of {subject!r}")
        res.trace.append(f"step {res.steps}: {describe_call(call)} {why}, and the question names no relation; of "
                         f"its relations, {rel!r} is closest to the question: asked that")
        return ToolCall(LOOKUP_TOOL, {"subject": subject, "relation": rel})

    def _directly_asked(self, call: ToolCall, rels: list[str]) -> ToolCall:
        """A call for relations (`rels`) the question names only in passing, while it asks another with
        "which"/"what" ("she's off to Nigeria, to the capital ... what money should she order": currency, not
        capital; "Currency sorted, capital on the route. Which continent ...?"), asks that one instead, where
        the store holds it for the subject itself; else the call as it was."""
        b, res = self.bridge, self.result
        direct = [rel for _, rel in relations_named(b.tools, res.question) if asked_directly(res.question, rel)]
        if not direct or set(direct) & set(rels):
            return call
        held = held_lookup(b.tools, {"subject": call_subject(call)}, reversed(direct), b.max_facts)
        if held is None:
            return call
        fixed = held[0]
        res.trace.append(f"step {res.steps}: {describe_call(call)} asks {rels}, which the question names in passing; it "
                         f"asks {fixed.arguments['relation']!r} with which/what, and the store holds it for the subject: "
                         "asked that instead")
        return fixed

    def _follow_the_schema_takes(self, call: ToolCall) -> ToolCall:
        """A follow whose chain the tool's schema refuses (a relation twice, more than MAX_HOPS) keeps each
        relation once; of a chain still too long, the relations the question names (in the model's order),
        else its first MAX_HOPS. follow(Galway, [country, continent, country, currency]) for a question that
        asks only the country was refused outright, and the question went unanswered."""
        rels = call_relations(call)
        kept = list(dict.fromkeys(rels))
        if len(kept) > MAX_HOPS:
            named = {rel for _, rel in relations_named(self.bridge.tools, self.result.question)}
            kept = [r for r in kept if r in named][:MAX_HOPS] or kept[:MAX_HOPS]
        if kept == rels:
            return call
        self.result.trace.append(f"step {self.result.steps}: {describe_call(call)} is a chain the follow tool refuses; "
                                 f"asked relations {kept} instead")
        return ToolCall(call.name, {**call.arguments, "relations": kept}, call.raw)

    def _off_the_askers_place(self, subject: str) -> Observation | None:
        """A call about the place the asker is at ("I'm an exchange student from Busan. Next semester I go
        to Suriname ... the capital") asks, instead, the relation the question names of the other place it
        names, where the store holds it for that place (`_named_relation_held`); None when there is none."""
        b, res = self.bridge, self.result
        for span in asked_subjects(b.tools, res.question):
            if fold_words(span) == fold_words(subject) or asker_location(res.question, span):
                continue
            held = self._named_relation_held({"subject": span})
            if held is not None:
                call, obs = held
                res.trace.append(f"step {res.steps}: {subject!r} is where the asker is; the question asks about "
                                 f"{span!r}: asked {describe_call(call)} instead")
                return span_observation(call, obs.facts, span, b.max_facts)
        return None

    def _named_relation_held(self, arguments: dict) -> tuple[ToolCall, Observation] | None:
        """The lookup of `arguments` with the relation the question names last, of those the store holds
        exactly for the subject (the innermost of a nested question first), and its result; None when the
        store holds none of them."""
        b = self.bridge
        named = [rel for _, rel in relations_named(b.tools, self.result.question)]
        return held_lookup(b.tools, arguments, reversed(named), b.max_facts)

    def _settle(self, why: str) -> None:
        """End with the fact that answers the question (the store already answered; the model then `why`)."""
        res, fact = self.result, self.ledger.answer
        res.answer, res.answer_source = str(fact.get("object")), "tool_result"
        res.trace.append(f"step {res.steps}: the store answered the question at step {self.ledger.answer_step} "
                         f"({describe_fact(fact)}) and the model {why}: that fact is the answer")
        self._finish()

    def _final(self, answer: str, source: str) -> None:
        """End a forced generation: the model's answer, else the answering fact's (or last result's) object."""
        res = self.result
        if answer:
            res.answer, res.answer_source = answer, source
        else:
            fact = self.ledger.fallback_fact(res.observations)
            if fact is not None:
                res.answer, res.answer_source = str(fact.get("object")), "tool_result"
                which = "the fact that answers the question" if fact is self.ledger.answer else "the last tool result"
                res.trace.append(f"the forced generation named nothing: answer taken from {which}, {describe_fact(fact)}")
            else:
                res.trace.append("the forced generation named nothing and no tool returned a fact: no answer")
        self._finish()

    def _finish(self) -> None:
        res = self.result
        seen_facts = res.facts_seen
        res.answered_without_lookup = res.answer is not None and not seen_facts
        objects = [str(f["object"]) for f in seen_facts if f.get("object")]
        res.supported = res.answer is not None and find_answer(res.answer, objects) is not None
        if res.answered_without_lookup and res.mode == "tool":
            res.trace.append("no tool returned a fact: the answer is the model's own guess, not a store answer")
        self.done = True
