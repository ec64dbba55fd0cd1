"""The bridge's tools over a store: a lookup that forgives (fallbacks, flagged), a graph `follow` for
multi-hop questions, and semantic search, as langchain tools whose schemas the model is shown.

    tools = make_bridge_tools(store)      # [lookup, follow, search]
    tools[0].invoke({"subject": "Shangai", "relation": "country"})   # fuzzy subject -> Shanghai, flagged
    tools[1].invoke({"subject": "Mumbai", "relations": ["country", "capital"]})  # Mumbai -> India -> New Delhi

Why a bridge-side lookup: a person's question and a small model's call rarely name the stored subject
and relation exactly. Every fact a tool returns carries `matched_by`, which says how it was found:
"exact", "via_neighbour" (the subject lacks the relation, a neighbour has it: the chain of two facts,
"Jessore -country-> Bangladesh, Bangladesh -capital-> Dhaka" for lookup(Jessore, capital)),
"any_relation" (the subject's facts of every relation: the model named a relation the store does not
hold for it), "fuzzy_subject" (a close spelling of a stored subject) or "semantic_subject" (the store's
own embedding match). When the store offers these fallbacks itself
(`KnowledgeStore.lookup(..., fallback=True)`), they are used; else `StoreTools` does the same steps
but the semantic one. `follow` skips a leading hop the subject lacks (Panama has no country: it is one).
The lookup schema lists the store's relations (`store.relations()` when present), so the model can
name one that exists.
"""

from __future__ import annotations

import inspect
import json
from typing import Optional

from pydantic import BaseModel, Field, create_model, field_validator

from common.facts import normalize_name
from common.toolcall import LOOKUP_TOOL, SEARCH_TOOL
from symbolic_ram.fallback import closest_subject

FOLLOW_TOOL = "follow"  # graph hops: arguments {"subject": str, "relations": [str, ...]}
MATCHED_BY = ("exact", "via_neighbour", "any_relation", "fuzzy_subject", "semantic_subject", "question_span")
PAYLOAD_FIELDS = ("id", "subject", "relation", "object", "score", "source", "provenance")
FUZZY_CUTOFF = 80.0  # least ratio (0-100) of a fuzzy subject, which must also be within max_edits edits:
# "Shangai" -> Shanghai (93, 1 edit), "Span" -> Spain (89, 1); not "Colmar" -> Colima (83, 2) or "Latveria" -> Latvia (86, 2)
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
        fuzzy_cutoff: least ratio (0-100) of a fuzzy subject match (own fallback only; see
            `symbolic_ram.fallback.similar_name`).
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

        Order: exact; the relation one hop away (via_neighbour: the chain of two facts); the subject
        with any relation; a fuzzy (close spelling) subject, with the relation if it has it. The
        store's own fallbacks replace this order when it has them.
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
            own = self.exact(subject)
            chain = self._via_neighbour(own, relation)
            if chain:
                return [dict(f, matched_by="via_neighbour") for f in chain]
            if own:
                return [dict(f, matched_by="any_relation") for f in own]
        name = closest_subject(list(self.subjects().items()), subject, self.fuzzy_cutoff)
        if name is not None:
            own = self.exact(name)
            found = [f for f in own if f["relation"] == relation] or self._via_neighbour(own, relation or "") or own
            return [dict(f, matched_by="fuzzy_subject") for f in found]
        return []

    def _via_neighbour(self, own: list[dict], relation: str) -> list[dict]:
        """[subject -r1-> O, O -relation-> X] for the first fact in `own` whose object has `relation`."""
        names = {normalize_name(str(f["subject"])) for f in own}
        for first in own:
            if normalize_name(str(first["object"])) in names:
                continue
            for second in self.exact(str(first["object"]), relation):
                if normalize_name(str(second["object"])) not in names:
                    return [first, second]
        return []

    def follow(self, subject: str, relations: list[str]) -> list[dict]:
        """The chain subject -r1-> x -r2-> y ... through the graph: one fact per hop, [] past a missing hop.

        Each hop takes the first stored object (the store's order: biggest city first); a hop that
        finds nothing ends the chain, so a partial chain shows how far the graph goes. A leading hop
        the subject lacks while it has the next one itself is skipped (Panama has no 'country': it is
        one; it has a currency), and the first fact names it in "skipped_hops". Otherwise the first
        hop goes through the lookup's fallbacks (a via_neighbour chain counts as its two facts).
        """
        chain, entity, skipped = [], subject, []
        relations = list(relations[:MAX_HOPS])
        for i, rel in enumerate(relations):
            if chain:
                hop = [f for f in self._out_edges(entity, rel) if f.get("relation") == rel][:1]
            else:
                nxt = relations[i + 1] if i + 1 < len(relations) else None
                if nxt is not None and not self.exact(entity, rel) and self.exact(entity, nxt):
                    skipped.append(rel)  # the subject is what the hop would lead to: go on from it
                    continue
                found = self.lookup(entity, rel)
                hop = _chained(found, rel) or [f for f in found if f.get("relation") == rel][:1]  # never another relation's fact
            if not hop:
                break
            chain += hop
            entity = str(hop[-1]["object"])
        if chain and skipped:
            chain[0] = dict(chain[0], skipped_hops=skipped)
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


def _chained(found: list[dict], relation: str) -> list[dict]:
    """The two facts of a chain result (subject -r1-> O, O -relation-> X), or [] if `found` is not one."""
    if len(found) >= 2 and found[0].get("relation") != relation and found[1].get("relation") == relation \
            and normalize_name(str(found[1].get("subject"))) == normalize_name(str(found[0].get("object"))):
        return found[:2]
    return []


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
