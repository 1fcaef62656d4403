"""Decisions the coordinator and every node must take identically, made in one place.

Each side computes these from what both see (the job's spec and public metadata), never from
one side's data, so a mismatch can only come from two copies of the logic drifting apart. Here
there is one copy:

* ``AGGREGATE_KIND``: which noise plan an aggregate function gets, read alike by a node's
  ``protect`` and the analyst's ``explain``; ``MEASURE_KIND``: the same for the aggregates a
  secure vector carries (the others are refused under secure aggregation).
* The layout of a secure query's vector (SecAgg, Bonawitz et al. 2017): which blocks, in which
  order, per group (``secure_layout``); the nodes fill it, the coordinator sizes and decodes it.
* The noise of an overlap release and what it costs (``overlap_plan``): the nodes charge its cost
  to their ledgers, the coordinator adds its noise to the counts (and sums) it releases.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from privacy.dp import NoisePlan, plan_noise
from protocols import federation_pb2 as pb

AGGREGATE_KIND: dict[int, str] = {
    pb.COUNT: "count",
    pb.COUNT_DISTINCT: "count_distinct",
    pb.SUM: "sum",
    pb.AVG: "avg",
    pb.VARIANCE: "variance",
    pb.STDDEV: "variance",
    pb.PERCENTILE: "percentile",
}

MEASURE_KIND: dict[int, str] = {
    pb.COUNT: "count",
    pb.COUNT_DISTINCT: "count_distinct",
    pb.SUM: "sum",
    pb.AVG: "avg",
}


@dataclass(frozen=True)
class Block:
    """One per-group block of a secure query's vector."""

    role: str  # value | avg_count | threshold
    aggregate: int  # index into the spec's aggregates; -1: the threshold-only distinct-unit count
    kind: str  # count | count_distinct | sum


def count_stands_in(functions: Collection[int], request: pb.PrivacyRequest) -> bool:
    """Whether the noisy COUNT(*) doubles as the threshold count, so no distinct-unit block is sent.

    Decided from the query alone: the analyst names a DP budget (a budget a node's policy supplies
    by default is invisible to the coordinator) and asks for COUNT(*) but not COUNT(DISTINCT unit).
    """
    explicit = request.epsilon > 0 or request.rho > 0
    return explicit and pb.COUNT in functions and pb.COUNT_DISTINCT not in functions


def reuses_count(spec: pb.QuerySpec) -> bool:
    """``count_stands_in`` for a query spec."""
    return count_stands_in({a.function for a in spec.aggregates}, spec.privacy)


def layout(functions: Sequence[int], reuse_count: bool) -> list[Block]:
    """The blocks of a secure query's vector, in the order ``privacy.dp.plan_noise`` measures them:
    one per aggregate (AVG: its sum, then its row count), then the distinct-unit count for
    suppression unless a count the query asks for stands in for it (``reuse_count``: COUNT(*) may)."""
    blocks: list[Block] = []
    for i, function in enumerate(functions):
        kind = MEASURE_KIND.get(function, "")
        if kind == "avg":
            blocks += [Block("value", i, "sum"), Block("avg_count", i, "count")]
        else:
            blocks.append(Block("value", i, kind))
    stand_ins = ("count_distinct", "count") if reuse_count else ("count_distinct",)
    if not any(b.role == "value" and b.kind in stand_ins for b in blocks):
        blocks.append(Block("threshold", -1, "count_distinct"))
    return blocks


def secure_layout(spec: pb.QuerySpec) -> list[Block]:
    """``layout`` for a query spec, as the coordinator sizes and decodes the vector."""
    return layout([a.function for a in spec.aggregates], reuses_count(spec))


def overlap_plan(
    epsilon: float, sensitivity: int, parties: int, aggregate: bool, max_value: float = 1.0
) -> NoisePlan:
    """The noise of an overlap release and its cost, as OpenDP's privacy maps plan them.

    Pattern counts: adding or removing one privacy unit moves each of its ``sensitivity``
    identifiers from one membership pattern to another, so the histogram over all ``2^parties - 1``
    patterns has L1 sensitivity ``2 * sensitivity``: ``count_distinct`` with that many rows per unit.
    Intersection-sum: a unit moves each identifier in or out of the intersection, changing one
    group's count by 1 and its sum by at most the base's value bound ``max_value``. The bound sets
    the sum's noise scale only: the cost does not depend on it, so every party charges the same.
    """
    if aggregate:
        return plan_noise(
            [("count_distinct", None), ("sum", (0.0, float(max_value)))],
            max_rows_per_unit=sensitivity,
            epsilon=epsilon,
            n_groups=sensitivity,
        )
    moves = 2 * sensitivity
    return plan_noise(
        [("count_distinct", None)],
        max_rows_per_unit=moves,
        epsilon=epsilon,
        n_groups=max(moves, 2**parties - 1),
    )
