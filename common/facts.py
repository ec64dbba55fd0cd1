"""The fact triple, name normalisation and answer matching that every package shares.

A `Fact` is (subject, relation, object) plus the object's accepted surface forms. The store keeps
its own record of a fact (`symbolic_ram.StoredFact`: id, score, provenance); both compare names
with `normalize_name` and score answers with `matches_answer`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Fact:
    """One (subject, relation, object) triple plus the object's accepted surface forms."""

    subject: str
    relation: str
    object: str
    aliases: tuple[str, ...] = field(default=())

    def answers(self) -> list[str]:
        """The object and its aliases: every form that counts as the right answer."""
        return [self.object, *self.aliases]


def normalize_name(name: str) -> str:
    """Case-, diacritic- and whitespace-insensitive form of a name or answer.

    "São  Paulo" and "sao paulo" both become "sao paulo".
    """
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SPACE.sub(" ", stripped.casefold()).strip()


def render_fact(subject: str, relation: str, obj: str) -> str:
    """A fact as one short line, the form the store embeds: "Lagos country: Nigeria".

    Underscores in relation names read as spaces ("atomic_number" -> "atomic number").
    """
    return f"{subject} {relation.replace('_', ' ')}: {obj}"


ANSWER_WINDOW = 40  # characters of a completion that answer matching reads

# A capitalised word right before a match means the match is the tail of a longer name:
# "America" in "South America", "Korea" in "North Korea".
_NAME_BEFORE = re.compile(r"(?:^|[\s(])([A-Z][\w'.-]*)\s+$")
_NOT_NAMES = {"In", "The", "A", "An", "Of", "At", "To", "Is", "It", "Its", "Yes", "No", "From", "On", "And", "Or",
              "That", "This", "Answer", "Country", "City", "Capital", "I", "Probably", "Likely", "Located"}


def _folded_with_map(text: str) -> tuple[str, list[int]]:
    """`normalize_name`-style folding of `text` (without the whitespace collapse), with, for every
    folded character, the index of the character of `text` it came from."""
    out, where = [], []
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFKD", ch):
            if unicodedata.combining(c):
                continue
            for d in c.casefold():
                out.append(d)
                where.append(i)
    return "".join(out), where


def find_answer(text: str, answers: list[str]) -> str | None:
    """The first accepted answer that `text` names as a whole name, or None.

    Matching is case- and diacritic-insensitive and on word boundaries ("Niger" is not in "Nigeria").
    A match directly after a capitalised word is the tail of another name and does not count ("Korea"
    in "North Korea", "America" in "South America"), unless that word is part of the answer itself.
    """
    folded, where = _folded_with_map(text)
    hits = []
    for answer in answers:
        a = _SPACE.sub(" ", normalize_name(answer))
        if not a:
            continue
        pattern = re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, a.split(" "))) + r"(?!\w)")
        for m in pattern.finditer(folded):
            start = where[m.start()]
            before = _NAME_BEFORE.search(text[:start])
            if before and before.group(1) not in _NOT_NAMES:
                continue
            hits.append((m.start(), -len(a), answer))
            break
    return min(hits)[2] if hits else None


def matches_answer(text: str, fact: Fact, window: int = ANSWER_WINDOW) -> bool:
    """Exact-match scoring: an accepted answer of `fact` is named in the first `window` characters."""
    return find_answer(text[:window], fact.answers()) is not None
