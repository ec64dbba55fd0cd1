"""The graph part of the store: a networkx MultiDiGraph of subject -relation-> object.

Each edge's key is the fact id, so a graph answer maps straight back to SQLite rows. The graph is
never persisted: it is rebuilt from SQLite when first needed (no pickle, nothing to drift on disk).
"""

from __future__ import annotations

from typing import Iterable

try:
    import networkx as nx
except ImportError:  # guarded so the rest of the store works without graph queries
    nx = None


class NetworkXGraph:
    """Entities as nodes, facts as keyed edges. Built lazily by the store from `iter_edges()`."""

    kind = "networkx"

    def __init__(self):
        if nx is None:
            raise ImportError("the 'networkx' graph backend needs networkx: `pip install networkx`")
        self.g = nx.MultiDiGraph()
        self._edge_nodes: dict[int, tuple[str, str]] = {}  # fact id -> (subject, object)

    def __len__(self) -> int:
        return len(self._edge_nodes)

    def add(self, edges: Iterable[tuple[int, str, str, str]]) -> None:
        """Add (id, subject, relation, object) edges."""
        for fid, s, r, o in edges:
            self.g.add_edge(s, o, key=int(fid), relation=r)
            self._edge_nodes[int(fid)] = (s, o)

    def remove(self, ids: Iterable[int]) -> int:
        """Remove edges by fact id, and nodes left with no edges; return how many were removed."""
        removed = 0
        for fid in ids:
            ends = self._edge_nodes.pop(int(fid), None)
            if ends is None:
                continue
            s, o = ends
            self.g.remove_edge(s, o, key=int(fid))
            removed += 1
            for node in {s, o}:
                if self.g.has_node(node) and self.g.degree(node) == 0:
                    self.g.remove_node(node)
        return removed

    def ids(self) -> set[int]:
        """Every fact id held as an edge."""
        return {k for _, _, k in self.g.edges(keys=True)}

    def edge(self, fid: int) -> tuple[str, str] | None:
        """(subject, object) of a fact id, or None."""
        return self._edge_nodes.get(int(fid))

    def neighbors(self, entities: Iterable[str], relation: str | None = None) -> list[int]:
        """Ids of facts touching any of `entities` (outgoing then incoming), optionally one relation."""
        out: list[int] = []
        for e in entities:
            if not self.g.has_node(e):
                continue
            for _, _, k, r in self.g.out_edges(e, keys=True, data="relation"):
                if relation is None or r == relation:
                    out.append(k)
            for _, _, k, r in self.g.in_edges(e, keys=True, data="relation"):
                if relation is None or r == relation:
                    out.append(k)
        return list(dict.fromkeys(out))

    def path(self, sources: list[str], targets: list[str], max_hops: int = 3, directed: bool = False) -> list[int]:
        """Fact ids along a shortest path from any source to any target, or [] if none within max_hops.

        With directed=False an edge can be walked against its direction (Nigeria <-country- Lagos),
        which is how people read relations; the returned facts keep their own direction.
        """
        view = self.g if directed else self.g.to_undirected(as_view=True)
        best: list[str] | None = None
        for a in sources:
            for b in targets:
                if not (view.has_node(a) and view.has_node(b)):
                    continue
                try:
                    nodes = nx.bidirectional_shortest_path(view, a, b)
                except nx.NetworkXNoPath:
                    continue
                if len(nodes) - 1 <= max_hops and (best is None or len(nodes) < len(best)):
                    best = nodes
        if best is None:
            return []
        fids = []
        for u, v in zip(best, best[1:]):
            keys = list(self.g.get_edge_data(u, v, default={}))  # forward edges u -> v
            if not keys:
                keys = list(self.g.get_edge_data(v, u, default={}))  # walked backwards
            fids.append(min(keys))
        return fids


GRAPHS = {"networkx": NetworkXGraph}
