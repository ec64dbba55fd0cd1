"""A lookup that forgives: when (subject, relation) finds nothing, say so and try looser matches.

Order, first non-empty wins, and the result names which one answered (`matched_by`):
1. "exact": the subject (through aliases) with the asked relation.
2. "any_relation": the same subject with any relation (the model named a relation the store
   calls something else, e.g. "nation" for "country").
3. "fuzzy_subject": the closest stored subject name by edit distance (rapidfuzz `ratio` on
   normalised names, at least `fuzzy_cutoff`), with the asked relation if it has it, else all.
4. "semantic_subject": the subject of the fact nearest to "<subject> <relation>" in the vector
   index (cosine at least `semantic_min`), again with the asked relation if it has it.
Nothing found by any: an empty result with matched_by "none".
"""

from __future__ import annotations

import difflib

from .facts import StoredFact, normalize_name

try:
    from rapidfuzz import fuzz, process
except ImportError:  # difflib does the same job, slower on big alias tables
    fuzz = process = None

MATCHED_BY = ("exact", "any_relation", "fuzzy_subject", "semantic_subject", "none")


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


def _with_relation(facts: list[StoredFact], relation: str | None) -> list[StoredFact]:
    same = [f for f in facts if relation is not None and f.relation == relation]
    return same or facts


def closest_subject(aliases: list[tuple[str, str]], name: str, cutoff: float) -> str | None:
    """The stored subject whose normalised alias is nearest to `name` (score 0-100), or None."""
    if not aliases:
        return None
    query = normalize_name(name)
    keys = [a for a, _ in aliases]
    if process is not None:
        hit = process.extractOne(query, keys, scorer=fuzz.ratio, score_cutoff=cutoff)
        return aliases[hit[2]][1] if hit else None
    close = difflib.get_close_matches(query, keys, n=1, cutoff=cutoff / 100)
    return dict(aliases)[close[0]] if close else None


def lookup_with_fallback(store, subject: str, relation: str | None, fuzzy_cutoff: float = 80.0,
                         semantic_min: float = 0.5) -> LookupResult:
    """Run the four steps of the module docstring on `store` (a KnowledgeStore)."""
    found = store.db.lookup(subject, relation)
    if found:
        return LookupResult(found, "exact")
    if relation is not None:
        found = store.db.lookup(subject, None)
        if found:
            return LookupResult(found, "any_relation")
    match = closest_subject(store.alias_table(), subject, fuzzy_cutoff)
    if match is not None:
        return LookupResult(_with_relation(store.db.lookup(match, None), relation), "fuzzy_subject", match)
    query = f"{subject} {relation.replace('_', ' ')}" if relation else subject
    hits = [f for f in store.search(query, k=1) if f.score >= semantic_min] if len(store.index) else []
    if hits:
        match = hits[0].subject
        return LookupResult(_with_relation(store.db.lookup(match, None), relation), "semantic_subject", match)
    return LookupResult([], "none")
