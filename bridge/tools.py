"""The bridge's tools over a store: a lookup that forgives (fallbacks, flagged), a graph `follow` for
multi-hop questions, and semantic search, as langchain tools whose schemas the model is shown.

    tools = make_bridge_tools(store)      # [lookup, follow, search]
    tools[0].invoke({"subject": "Shangai", "relation": "country"})   # fuzzy subject -> Shanghai, flagged
    tools[1].invoke({"subject": "Mumbai", "relations": ["country", "capital"]})  # Mumbai -> India -> New Delhi

Why a bridge-side lookup: a person's question and a small model's call rarely name the stored subject
and relation exactly. Every fact a tool returns carries `matched_by`, which says how it was found:
"exact", "any_relation" (the subject's facts of every relation: the model named a relation the store
does not hold for it), "fuzzy_subject" (a close spelling of a stored subject) or "semantic_subject"
(the store's own embedding match). When the store offers these fallbacks itself
(`KnowledgeStore.lookup(..., fallback=True)`), they are used; else `StoreTools` does a minimal version.
The lookup schema lists the store's relations (`store.relations()` when present), so the model can
name one that exists.
"""

from __future__ import annotations

import difflib
import inspect
import json
from typing import Optional

from pydantic import BaseModel, Field, create_model, field_validator

from common.facts import normalize_name
from common.toolcall import LOOKUP_TOOL, SEARCH_TOOL

FOLLOW_TOOL = "follow"  # graph hops: arguments {"subject": str, "relations": [str, ...]}
MATCHED_BY = ("exact", "any_relation", "fuzzy_subject", "semantic_subject", "question_span")
PAYLOAD_FIELDS = ("id", "subject", "relation", "object", "score", "source", "provenance")
FUZZY_CUTOFF = 0.85  # difflib ratio: "Shangai" -> "Shanghai" (0.93), "Span" -> "Spain" (0.89); "Colmar" !-> "Colima" (0.83)
MAX_HOPS = 3


def fact_dict(fact, matched_by: str) -> dict:
    """A store fact (StoredFact or dict) as the JSON dict a tool returns, with how it was found."""
    row = dict(fact) if isinstance(fact, dict) else {k: getattr(fact, k, None) for k in PAYLOAD_FIELDS}
    row["matched_by"] = row.get("matched_by") or getattr(fact, "matched_by", None) or matched_by  # the store's own word wins
    return row


class StoreTools:
    """Lookup, follow and subject matching over a `symbolic_ram.KnowledgeStore` (or anything with its
    `lookup`; `neighbors`, `relations`, `search` are used when present).

    Args:
        store: the knowledge store.
        fuzzy_cutoff: least difflib similarity for a fuzzy subject match (own fallback only).
    """

    def __init__(self, store, fuzzy_cutoff: float = FUZZY_CUTOFF):
        self.store, self.fuzzy_cutoff = store, fuzzy_cutoff
        self._subjects: dict[str, str] | None = None
        self._store_falls_back = "fallback" in inspect.signature(store.lookup).parameters

    # -- what the store holds -------------------------------------------------------------------
    def relations(self) -> list[str]:
        """The store's relation names (its `relations()` when present, else from its stats)."""
        if hasattr(self.store, "relations"):
            return sorted(self.store.relations())
        return sorted(self.store.stats().get("relations", {}))

    def subjects(self) -> dict[str, str]:
        """{normalised subject: stored subject} of every fact (read once; the store is not written meanwhile)."""
        if self._subjects is None:
            self._subjects = {}
            for _, s, _, _ in self.store.db.iter_edges():
                self._subjects.setdefault(normalize_name(s), s)
        return self._subjects

    def exact(self, subject: str, relation: str | None = None) -> list[dict]:
        """Exact facts only (through the store's aliases), each with matched_by "exact"."""
        return [fact_dict(f, "exact") for f in self.store.lookup(subject, relation or None)]

    # -- the forgiving lookup -------------------------------------------------------------------
    def lookup(self, subject: str, relation: str | None = None) -> list[dict]:
        """Facts about `subject` (of `relation`), through fallbacks when the exact lookup is empty.

        Order: exact; the subject with any relation; a fuzzy (close spelling) subject, with the
        relation if it has it. The store's own fallbacks replace this order when it has them.
        """
        relation = relation or None
        if self._store_falls_back:
            found = self.store.lookup(subject, relation, fallback=True)
            how = getattr(found, "matched_by", None)  # symbolic_ram's LookupResult says it for the whole list
            return [fact_dict(f, how if how and how != "none" else "exact") for f in found]
        found = self.exact(subject, relation)
        if found:
            return found
        if relation is not None:
            found = [dict(f, matched_by="any_relation") for f in self.exact(subject)]
            if found:
                return found
        close = difflib.get_close_matches(normalize_name(subject), list(self.subjects()), n=1, cutoff=self.fuzzy_cutoff)
        if close:
            name = self.subjects()[close[0]]
            found = self.exact(name, relation) or self.exact(name)
            return [dict(f, matched_by="fuzzy_subject") for f in found]
        return []

    def follow(self, subject: str, relations: list[str]) -> list[dict]:
        """The chain subject -r1-> x -r2-> y ... through the graph: one fact per hop, [] past a missing hop.

        Each hop takes the first stored object (the store's order: biggest city first); a hop that
        finds nothing ends the chain, so a partial chain shows how far the graph goes.
        """
        chain, entity = [], subject
        for i, rel in enumerate(relations[:MAX_HOPS]):
            if i == 0:
                hop = self.lookup(entity, rel)
            else:
                hop = self._out_edges(entity, rel)
            hop = [f for f in hop if f.get("relation") == rel]  # never another relation's fact as a hop
            if not hop:
                break
            chain.append(hop[0])
            entity = str(hop[0]["object"])
        return chain

    def _out_edges(self, entity: str, relation: str) -> list[dict]:
        """Facts with `entity` as subject of `relation`: the graph's neighbours when the store has a graph."""
        if hasattr(self.store, "neighbors"):
            rows = [f for f in self.store.neighbors(entity, relation)
                    if normalize_name(f.subject) == normalize_name(entity)
                    or normalize_name(f.subject) in map(normalize_name, self._aliases(entity))]
            if rows:
                return [fact_dict(f, "exact") for f in rows]
        return self.exact(entity, relation)

    def _aliases(self, entity: str) -> list[str]:
        db = getattr(self.store, "db", None)
        return db.resolve(entity) if db is not None and hasattr(db, "resolve") else []


# ----------------------------------------------------------------------------- langchain tools ---------

def _lookup_args(relations: list[str]) -> type[BaseModel]:
    extra = {"enum": relations} if relations else None
    return create_model(
        "LookupArgs",
        subject=(str, Field(description="The entity the fact is about, e.g. 'Tokyo' (case and accents do not matter).")),
        # typed `str` (default None, not validated) so that langchain keeps the enum in the schema it
        # renders: it drops `enum` from an Optional's anyOf.
        relation=(str, Field(default=None, json_schema_extra=extra,
                                       description="Which fact about it: one of " + ", ".join(relations)
                                       if relations else "Only this relation; omit for all.")),
    )


class FollowArgs(BaseModel):
    """Arguments of the `follow` tool."""

    subject: str = Field(description="Where the chain starts, e.g. 'Mumbai'.")
    relations: list[str] = Field(min_length=1, max_length=MAX_HOPS,
                                 description="Relations to follow in order, e.g. ['country', 'capital'] for "
                                             "the capital of the country Mumbai is in.")

    @field_validator("relations", mode="before")
    @classmethod
    def _split_text(cls, value):
        """Small models write "country, capital" for ["country", "capital"]: accept it."""
        if isinstance(value, str):
            return [r.strip() for r in value.replace(">", ",").split(",") if r.strip()]
        return value


class SearchArgs(BaseModel):
    """Arguments of the `search` tool."""

    query: str = Field(description="A question or phrase, e.g. 'Which country is Lagos in?'.")
    k: int = Field(default=5, ge=1, le=50, description="How many facts to return (1-50).")


def make_bridge_tools(store, search: bool = True) -> list:
    """[lookup, follow, (search)] over `store` as langchain StructuredTools returning JSON strings."""
    from langchain_core.tools import StructuredTool

    st = StoreTools(store)
    relations = st.relations()

    def lookup(subject: str, relation: Optional[str] = None) -> str:
        return json.dumps(st.lookup(subject, relation), ensure_ascii=False)

    def follow(subject: str, relations: list[str]) -> str:
        return json.dumps(st.follow(subject, relations), ensure_ascii=False)

    def search_fn(query: str, k: int = 5) -> str:
        return json.dumps([fact_dict(f, "semantic") for f in store.search(query, k)], ensure_ascii=False)

    tools = [
        StructuredTool.from_function(
            lookup, name=LOOKUP_TOOL, args_schema=_lookup_args(relations),
            description="Facts about a subject from the knowledge store, optionally one relation. Returns a JSON "
                        "array of facts; 'matched_by' says whether the subject matched exactly or by a fallback."),
        StructuredTool.from_function(
            follow, name=FOLLOW_TOOL, args_schema=FollowArgs,
            description="Follow relations through the knowledge graph, one hop each: subject 'Lagos', relations "
                        "['country', 'currency'] gives Lagos's country, then that country's currency. Returns the "
                        "chain of facts; the last fact's object answers the question."),
    ]
    if search:
        tools.append(StructuredTool.from_function(
            search_fn, name=SEARCH_TOOL, args_schema=SearchArgs,
            description="Semantic search over the knowledge store's facts. Returns a JSON array of the k most "
                        "similar facts."))
    return tools
