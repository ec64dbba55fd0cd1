"""langchain-core integration: the store as a BaseRetriever, and `lookup` / `search` as Tools.

The tool names and argument names are the ones the model is trained to emit
(`lookup {"subject", "relation"}`, `search {"query", "k"}`). Tool output is a plain JSON string
of facts; fact text is data and comes back verbatim, never interpreted. The lookup tool forgives
(`KnowledgeStore.lookup(..., fallback=True)`): each fact it returns carries `matched_by`
("exact", "any_relation", "fuzzy_subject" or "semantic_subject"), and its schema lists the
store's relations.

    tools = make_tools(store)          # [lookup, search]
    tools[0].invoke({"subject": "Tokyo", "relation": "country"})
"""

from __future__ import annotations

import json
from typing import Any, Optional

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.tools import StructuredTool
    from pydantic import BaseModel, ConfigDict, Field, create_model
except ImportError as e:  # pragma: no cover - exercised only without langchain-core
    raise ImportError("symbolic_ram.langchain_tools needs langchain-core: `pip install langchain-core`") from e

from common.toolcall import LOOKUP_TOOL, SEARCH_TOOL

PAYLOAD_FIELDS = ("id", "subject", "relation", "object", "score", "source", "provenance")


MAX_LISTED_RELATIONS = 40  # keep the tool schema short on stores with many relations


def facts_to_json(facts) -> str:
    """Facts as a JSON array of {id, subject, relation, object, score, source, provenance}.

    A lookup's facts (a LookupResult) also carry "matched_by" in each element.
    """
    matched_by = getattr(facts, "matched_by", None)
    rows = [{k: getattr(f, k) for k in PAYLOAD_FIELDS} for f in facts]
    if matched_by is not None:
        for row in rows:
            row["matched_by"] = matched_by
    return json.dumps(rows, ensure_ascii=False)


class LookupArgs(BaseModel):
    """Arguments of the `lookup` tool."""

    subject: str = Field(description="The entity the fact is about, e.g. 'Tokyo' (case and accents do not matter).")
    relation: Optional[str] = Field(default=None, description="Only this relation, e.g. 'country' or 'capital'; omit for all.")


class SearchArgs(BaseModel):
    """Arguments of the `search` tool."""

    query: str = Field(description="A question or phrase, e.g. 'Which country is Lagos in?'.")
    k: int = Field(default=5, ge=1, le=50, description="How many facts to return (1-50).")


class KnowledgeStoreRetriever(BaseRetriever):
    """A LangChain retriever over a KnowledgeStore's semantic search.

    Each Document's page_content is the fact's text rendering; its metadata holds the fact's
    id, subject, relation, object, score, source and provenance.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    store: Any
    k: int = 4

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [
            Document(page_content=f.text(), metadata={k: getattr(f, k) for k in PAYLOAD_FIELDS})
            for f in self.store.search(query, self.k)
        ]


def make_retriever(store, k: int = 4) -> KnowledgeStoreRetriever:
    """A KnowledgeStoreRetriever returning the top `k` facts."""
    return KnowledgeStoreRetriever(store=store, k=k)


def lookup_args_for(relations: list[str]) -> type[BaseModel]:
    """LookupArgs whose relation description lists the store's relations (the first MAX_LISTED_RELATIONS)."""
    if not relations:
        return LookupArgs
    shown = ", ".join(repr(r) for r in relations[:MAX_LISTED_RELATIONS])
    more = f" (and {len(relations) - MAX_LISTED_RELATIONS} more)" if len(relations) > MAX_LISTED_RELATIONS else ""
    return create_model(
        "LookupArgs", __doc__=LookupArgs.__doc__,
        subject=(str, LookupArgs.model_fields["subject"]),
        relation=(Optional[str], Field(default=None, description=f"Only this relation, one of {shown}{more}; omit for all.")),
    )


def make_tools(store) -> list[StructuredTool]:
    """The `lookup` and `search` tools over `store`, each returning a JSON string of facts."""

    def lookup(subject: str, relation: Optional[str] = None) -> str:
        return facts_to_json(store.lookup(subject, relation or None, fallback=True))

    def search(query: str, k: int = 5) -> str:
        return facts_to_json(store.search(query, k))

    return [
        StructuredTool.from_function(
            lookup, name=LOOKUP_TOOL, args_schema=lookup_args_for(store.relations()),
            description="Facts about a subject from the knowledge store, optionally only one relation. If none "
                        "match exactly, the subject's other relations, then the nearest subject by spelling or "
                        "meaning. Returns a JSON array of facts (id, subject, relation, object, score, source, "
                        "provenance, matched_by).",
        ),
        StructuredTool.from_function(
            search, name=SEARCH_TOOL, args_schema=SearchArgs,
            description="Semantic search over the knowledge store's facts. Returns a JSON array of the k "
                        "most similar facts (id, subject, relation, object, score, source, provenance).",
        ),
    ]
