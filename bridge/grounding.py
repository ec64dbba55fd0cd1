"""What an answer may rest on: which facts are about what the question asks ("grounded"), and which
fact answers the question (the first call's relation, followed along its chain).

Why: a lookup's fallbacks return facts about other subjects (a similar name, an embedding
neighbour), and a model that re-asks such a subject by name then gets it "exactly" (Latveria ->
Latvia, then lookup(Latvia) is exact). A store answer must be about a subject the question names,
or one reached from it through facts the store returned for it. And once the store has answered the
question, a model that repeats a call or wanders into other relations must not have its answer
replaced by whatever it looked at last.

    ledger = Ledger("What money do people use in Poland?")
    ledger.record(obs)            # marks each fact "grounded"; True when the answer changed
    ledger.answer                 # {"subject": "Poland", "relation": "currency", "object": "Zloty", ...}

Grounded: the fact's subject appears in the question (case and accents folded, whole words), or it
was reached: it is the object of a grounded fact (a chain: Jessore -country-> Bangladesh, then
Bangladesh's facts), or the fact came back for a grounded call subject without a guess (an alias the
question uses: "USA" -> United States). A fact found only by a fuzzy or semantic name is not.

The answer: the question's relation is the relation the first call asked (a `follow` call: its last
relation, or the last of its relations the question names when the question names some of them and
not the last: follow(Verona, [country, capital]) for "the country Verona is in" asks the country).
The first grounded, non-guessed fact of that relation answers it; a later call that goes on from the
answer (it asks about the answer's object: the second lookup of a two-hop question; or a follow whose
chain holds the answer) moves the answer to the end of that chain, unless the new fact leads back to
an entity the chain already passed (Beijing -country-> China after China -capital-> Beijing). Anything
else the model asks afterwards (another relation of the same subject, a repeat) leaves it where it is,
with one exception: the same relation asked of another subject the question names, one named nearer
to a word for that relation than the answer's subject ("I wait tables in London and a tourist from
the Maldives tipped me. What currency ..."), moves the answer to that subject's fact, or withdraws
it when the store has none. A call about a subject the question never names (an example copied from
the prompt) does not set the question's relation.
"""

from __future__ import annotations

import re

from common.facts import normalize_name
from common.toolcall import LOOKUP_TOOL, ToolCall

from .tools import FOLLOW_TOOL

GUESSED = ("fuzzy_subject", "semantic_subject")  # fallbacks that guess the subject
_WORD = re.compile(r"\w+")


def fold_words(text: str) -> str:
    """`text` case- and accent-folded, as its words joined by single spaces: "U.S. Virgin Islands" ->
    "u s virgin islands". The dotless ı folds to i as well (casefold keeps it, and "I" folds to "i")."""
    return " ".join(_WORD.findall(normalize_name(str(text)).replace("ı", "i")))


def call_subject(call: ToolCall) -> str | None:
    """The subject a lookup or follow call asks about, or None (other tools, malformed calls)."""
    if call.error or call.name not in (LOOKUP_TOOL, FOLLOW_TOOL) or not isinstance(call.arguments, dict):
        return None
    subject = call.arguments.get("subject")
    return subject if isinstance(subject, str) and subject.strip() else None


def call_relations(call: ToolCall) -> list[str]:
    """The relations a call asks for, in order: a lookup's `relation`, a follow's chain; else []."""
    if call_subject(call) is None:
        return []
    if call.name == LOOKUP_TOOL:
        rel = call.arguments.get("relation")
        return [rel] if isinstance(rel, str) and rel else []
    rels = call.arguments.get("relations")
    if isinstance(rels, str):  # the follow tool accepts "country, capital" (FollowArgs)
        rels = [r.strip() for r in rels.replace(">", ",").split(",") if r.strip()]
    return [str(r) for r in rels] if isinstance(rels, list) else []


def asked_relation(call: ToolCall) -> str | None:
    """The relation a call asks for: a lookup's `relation`, a follow's last relation; else None."""
    rels = call_relations(call)
    return rels[-1] if rels else None


def fact_key(fact: dict) -> tuple[str, str, str]:
    """(subject, relation, object), folded: one fact however often it came back."""
    return (fold_words(fact.get("subject", "")), str(fact.get("relation", "")), fold_words(fact.get("object", "")))


def describe_fact(fact: dict) -> str:
    """A fact as "Poland -currency-> Zloty"."""
    return f"{fact.get('subject')} -{fact.get('relation')}-> {fact.get('object')}"


class Ledger:
    """Grounding and the answering fact for one question (see the module docstring).

    Args:
        question: the question as asked.
        context: earlier text the question may refer to (a chat's previous questions and answers),
            whose names count as named by the question.
        named_relations: the store relations the question names (`bridge.loop.relations_named`).
    """

    def __init__(self, question: str, context=(), named_relations=(), relation_mentions=()):
        self.text = " " + fold_words(" ".join([question, *map(str, context)])) + " "
        self.named_relations = set(named_relations)
        # (position in the folded question, relation) of each word naming a relation (`relation_mentions`)
        self.relation_mentions = list(relation_mentions)
        self.asked_about: set[str] = set()  # folded subjects of the calls the answer came from
        self.reached: set[str] = set()  # folded objects of grounded facts
        self.relation: str | None = None  # the question's relation (the first call's)
        self.answer: dict | None = None  # the fact that answers the question so far
        self.answer_step: int | None = None
        self.chain: set[str] = set()  # folded subjects of the answer's facts so far

    def mentioned(self, name: str) -> bool:
        """`name` appears in the question (or its context) as whole words, folded, or with an "s" for a
        possessive typed without its apostrophe ("whats Myanmars capatal")."""
        words = fold_words(name)
        return bool(words) and (f" {words} " in self.text or f" {words}s " in self.text)

    def grounded(self, name: str) -> bool:
        """`name` is named by the question or was reached from it through grounded facts."""
        return self.mentioned(name) or fold_words(name) in self.reached

    def record(self, obs, step: int | None = None) -> bool:
        """Mark each fact of `obs` (an Observation) with "grounded", and update the answer.

        Returns True when the answer changed (first found, or moved along a chain).
        """
        subject = obs.subject_used or call_subject(obs.call)
        if obs.error or subject is None:
            return False
        about_call = self.grounded(subject) and obs.matched_by not in GUESSED
        first = fold_words(obs.facts[0].get("subject", "")) if obs.facts else None
        for f in obs.facts:
            own = about_call and f.get("matched_by") not in GUESSED and fold_words(f.get("subject", "")) == first
            f["grounded"] = bool(self.grounded(str(f.get("subject", ""))) or own)
            if f["grounded"]:
                self.reached.add(fold_words(f.get("object", "")))
        rel = self._asked(obs.call)
        if self.relation is None and self.grounded(subject):  # not a call copied from an example
            self.relation = rel
        good = [f for f in obs.facts if f["grounded"] and f.get("matched_by") not in GUESSED]
        candidate = next((f for f in good if rel is not None and f.get("relation") == rel), None)
        if self.answer is not None and self._switches(subject, rel):
            # the question's relation asked about the subject the question attaches it to: the answer is
            # that subject's fact, or none when the store has none
            self.answer, self.answer_step = candidate, step if candidate is not None else None
            self.chain = {fold_words(candidate.get("subject", ""))} if candidate is not None else set()
            self.asked_about = {fold_words(subject)}
            return True
        if candidate is None:
            return False
        if self.answer is None:
            if rel != self.relation:
                return False
        elif fact_key(candidate) == fact_key(self.answer) or not self._goes_on(obs, subject):
            return False  # the same fact again, or a call that does not go on from the answer
        elif fold_words(candidate.get("object", "")) in self.chain:
            return False  # back to where the chain has been: not a further hop
        self.answer, self.relation, self.answer_step = candidate, rel, step
        self.chain.add(fold_words(candidate.get("subject", "")))
        self.asked_about.add(fold_words(subject))
        return True

    def _switches(self, subject: str, rel: str | None) -> bool:
        """The call asks the answer's relation about another subject the question names, one named nearer
        to a mention of that relation than the subjects the answer came from ("I wait tables in London and
        a tourist from the Maldives tipped me. What currency ...": the Maldives, not London)."""
        name = fold_words(subject)
        if (rel is None or rel != self.relation or not self.mentioned(subject) or not self.asked_about
                or name in self.asked_about or name in self.chain or name == fold_words(self.answer.get("object", ""))):
            return False
        return self._distance(name, rel) < min(self._distance(a, rel) for a in self.asked_about)

    def _distance(self, name: str, rel: str) -> float:
        """Characters between the first mention of `name` (folded) in the question and the nearest word
        naming `rel`; infinite when either is missing."""
        at = self.text.find(f" {name} ")
        spots = [p for p, r in self.relation_mentions if r == rel]
        if at < 0 or not spots:
            return float("inf")
        end = at + len(name) + 1
        return min(0 if at <= p <= end else min(abs(p - at), abs(p - end)) for p in spots)

    def _asked(self, call: ToolCall) -> str | None:
        """The relation `call` asks for (`asked_relation`); for a follow whose last relation the question
        does not name, the last of its relations that the question does name, if any."""
        rels = call_relations(call)
        named = [r for r in rels if r in self.named_relations]
        if call.name == FOLLOW_TOOL and rels and rels[-1] not in self.named_relations and named:
            return named[-1]
        return rels[-1] if rels else None

    def _goes_on(self, obs, subject: str) -> bool:
        """The call continues from the answer: it asks about the answer's object (the second lookup of
        a two-hop question), or it is a follow whose chain holds the answer's fact (the same path, longer).
        Another relation of the same subject is not, even when the store chains it through the answer
        (lookup(Tahoua, continent) after Tahoua -country-> Niger: the question asked the country)."""
        if fold_words(subject) == fold_words(self.answer.get("object", "")):
            return True
        return obs.call.name == FOLLOW_TOOL and any(fact_key(f) == fact_key(self.answer) for f in obs.facts)

    def fallback_fact(self, observations) -> dict | None:
        """The fact a final answer rests on when the model names none: the answer, else the last
        result's (grounded facts first; a chain's end, a lookup's first fact)."""
        if self.answer is not None:
            return self.answer
        last = next((o for o in reversed(observations) if o.facts), None)
        if last is None:
            return None
        facts = [f for f in last.facts if f.get("grounded")] or last.facts
        rel = asked_relation(last.call)
        same = [f for f in facts if rel is not None and f.get("relation") == rel]  # a chain's end
        return same[0] if same else facts[-1] if last.call.name != LOOKUP_TOOL else facts[0]
