"""The public communication graph of SecAgg+ (Bell et al. 2020, section 3: a random k-regular graph).

Nodes are placed on a ring in an order drawn from a public seed; each node is joined to its
floor(k/2) nearest ring neighbours on each side (a Harary graph), plus the node opposite it when
k is odd. With k >= n - 1 the graph is complete and the protocol is classic SecAgg
(Bonawitz et al. 2017). When n and k are both odd a k-regular graph does not exist and some
nodes get k + 1 neighbours.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def ring_order(node_ids: Sequence[str], seed: bytes) -> list[str]:
    """A seed-determined permutation; SHA-256 ranks make it unpredictable without the seed."""
    return sorted(node_ids, key=lambda n: hashlib.sha256(seed + b"|" + n.encode()).digest())


def neighbour_graph(node_ids: Sequence[str], k: int, seed: bytes) -> dict[str, frozenset[str]]:
    """Symmetric neighbour sets (excluding the node itself) for degree ``k``."""
    n = len(node_ids)
    if k >= n - 1:
        everyone = frozenset(node_ids)
        return {u: everyone - {u} for u in node_ids}
    order = ring_order(node_ids, seed)
    edges: dict[str, set[str]] = {u: set() for u in node_ids}
    for i, u in enumerate(order):
        for step in range(1, k // 2 + 1):
            v = order[(i + step) % n]
            edges[u].add(v)
            edges[v].add(u)
        if k % 2:
            v = order[(i + n // 2) % n]
            edges[u].add(v)
            edges[v].add(u)
    return {u: frozenset(vs) for u, vs in edges.items()}
