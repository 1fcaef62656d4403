"""Accuracy before spending: what a query's noise would be, from public metadata alone.

The SDK reads each node's ``DatasetInfo`` (declared bounds, rows per unit, group domains, policy
defaults and caps) and runs the same planning function the node runs (privacy/explain.py). Nothing
is sent to a node, no data is read and no budget is spent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import pandas as pd

from privacy.agreements import AGGREGATE_KIND
from privacy.auto_bounds import bound_share
from privacy.bounds import rows_per_unit, tightened
from privacy.explain import (
    AggregateExplanation,
    Explanation,
    NodeExplanation,
    NodeQuery,
    UnionParty,
    epsilon_for_accuracy,
    explain,
    explain_union,
)
from protocols import federation_pb2 as pb
from protocols.errors import FederationError

_NUMERIC = (pb.SUM, pb.AVG, pb.VARIANCE, pb.STDDEV, pb.PERCENTILE)


def _derived_keys(key: pb.DerivedKey, info: pb.DatasetInfo) -> int:
    """How many keys a histogram or date-part key has at this node (nodes/derived.py lists them)."""
    column = next((c for c in info.columns if c.name == key.column), None)
    if column is None:
        raise FederationError("unknown_column", f"column '{key.column}' is not declared", info.node)
    if key.transform == "width_bucket":
        return int(key.buckets) + 2
    if key.transform == "floor" and key.width > 0 and math.isfinite(key.width):
        return math.floor(column.upper / key.width) - math.floor(column.lower / key.width) + 1
    if key.transform == "extract" and key.part in ("quarter", "month"):
        return 4 if key.part == "quarter" else 12
    if column.first_day and column.last_day:
        first, last = (int(d[:4]) * 12 + int(d[5:7]) - 1 for d in (column.first_day, column.last_day))
        step = {"year": 12, "quarter": 3}.get(key.part, 1)
        return last // step - first // step + 1
    raise FederationError("not_groupable", f"'{key.alias}' has no public domain at this node", info.node)


def _budget(spec: pb.QuerySpec, info: pb.DatasetInfo) -> tuple[float | None, float | None]:
    """The budget the node's policy would run ``spec`` with (privacy request, default, cap)."""
    eps, rho = spec.privacy.epsilon, spec.privacy.rho
    if eps > 0:
        if eps > info.max_epsilon:
            raise FederationError(
                "epsilon_cap", f"epsilon {eps:g} is above the per-query cap {info.max_epsilon:g}", info.node
            )
        return eps, None
    if rho > 0:
        cap = info.max_epsilon**2 / 2
        if rho > cap:
            raise FederationError("epsilon_cap", f"rho {rho:g} is above the per-query cap {cap:g}", info.node)
        return None, rho
    if info.dp_required:
        return info.default_epsilon, None
    return None, None


def _clamping(agg: pb.Aggregate, info: pb.DatasetInfo) -> tuple[float, float]:
    column = next((c for c in info.columns if c.name == agg.column), None)
    if column is None or column.kind != pb.NUMERIC:
        raise FederationError(
            "not_numeric", f"{agg.alias}: '{agg.column}' is not a numeric column", info.node
        )
    lower = agg.bounds.lower if agg.bounds.HasField("lower") else None
    upper = agg.bounds.upper if agg.bounds.HasField("upper") else None
    return tightened((column.lower, column.upper), lower, upper)


def node_query(spec: pb.QuerySpec, info: pb.DatasetInfo) -> NodeQuery:
    """How the node behind ``info`` would run ``spec``, as far as its public metadata says."""
    aggregates: list[tuple[str, tuple[float, float] | None]] = [
        (AGGREGATE_KIND[a.function], _clamping(a, info) if a.function in _NUMERIC else None)
        for a in spec.aggregates
    ]
    domains = {c.name: len(c.domain) for c in info.columns}
    domains.update({d.alias: _derived_keys(d, info) for d in spec.derived})
    missing = [g for g in spec.group_by if g not in domains]
    if missing:
        raise FederationError("unknown_column", f"column '{missing[0]}' is not declared", info.node)
    n_groups = math.prod(domains[g] for g in spec.group_by) if spec.group_by else 1
    epsilon, rho = _budget(spec, info)
    share = _bound_share(spec)
    if share:
        if epsilon is None:
            raise FederationError(
                "bound_quantile",
                "bounds chosen by a DP quantile need an epsilon (pure DP); ask with epsilon, or give bounds",
                info.node,
            )
        epsilon *= 1.0 - share  # the answer runs with what choosing the bounds leaves
    return NodeQuery(
        node=info.node,
        aggregates=tuple(aggregates),
        max_rows_per_unit=rows_per_unit(info.max_rows_per_unit, int(spec.max_rows_per_unit)),
        n_groups=max(1, n_groups),
        min_group_size=info.min_group_size,
        epsilon=epsilon,
        rho=rho,
        diagnostics=not spec.no_diagnostics,
    )


def _bound_share(spec: pb.QuerySpec) -> float:
    """The share of epsilon the nodes spend on choosing bounds (privacy/auto_bounds.py), or 0."""
    if not any(a.bound_quantile for a in spec.aggregates):
        return 0.0
    return bound_share(spec.privacy.bound_share)


def _with_bound_choice(
    spec: pb.QuerySpec, infos: Sequence[pb.DatasetInfo], result: Explanation
) -> Explanation:
    """Each answering node also charges its share for choosing bounds, on top of the answer's."""
    share = _bound_share(spec)
    if not share:
        return result
    nodes = []
    for info, node in zip(infos, result.nodes, strict=True):
        if node.refusal is None:
            epsilon, _ = _budget(spec, info)
            node = replace(node, epsilon=node.epsilon + (epsilon or 0.0) * share)
        nodes.append(node)
    return replace(result, nodes=tuple(nodes))


def node_queries(spec: pb.QuerySpec, infos: Sequence[pb.DatasetInfo]) -> list[NodeQuery]:
    """One ``NodeQuery`` per node; a node whose policy would refuse carries its (rule, reason)."""
    out = []
    for info in infos:
        try:
            out.append(node_query(spec, info))
        except FederationError as exc:
            kinds = tuple((AGGREGATE_KIND[a.function], None) for a in spec.aggregates)
            out.append(NodeQuery(info.node, kinds, 1, 1, 1, refusal=(exc.rule, exc.message)))
    return out


def union_indexes(spec: pb.QuerySpec, n_nodes: int) -> list[int]:
    """Aggregates answered as a union across nodes: plain COUNT(DISTINCT) over 2+ nodes
    (coordinator/distinct.py ``union_aggregates``)."""
    if n_nodes < 2:
        return []
    return [i for i, a in enumerate(spec.aggregates) if a.function == pb.COUNT_DISTINCT and not a.per_node]


def _union_party(spec: pb.QuerySpec, info: pb.DatasetInfo) -> UnionParty:
    try:
        query = node_query(spec, info)
        if query.rho is not None:
            raise FederationError(
                "privacy_request",
                "COUNT(DISTINCT) across nodes is released with pure DP: ask for epsilon",
                info.node,
            )
    except FederationError as exc:
        return UnionParty(info.node, None, 1, 1, 1, refusal=(exc.rule, exc.message))
    return UnionParty(info.node, query.epsilon, query.max_rows_per_unit, query.n_groups, query.min_group_size)


def explanation(spec: pb.QuerySpec, infos: Sequence[pb.DatasetInfo]) -> Explanation:
    """Per aggregate, the noise of the combined figure; a union COUNT(DISTINCT) is its own release,
    noised once at the coordinator, charged at every node on top of the other aggregates. With
    bounds chosen by a DP quantile the noise is given at the declared bounds, the most it can be,
    at the epsilon left after the choice; each node's epsilon includes the choice."""
    return _with_bound_choice(spec, infos, _explanation(spec, infos))


def _explanation(spec: pb.QuerySpec, infos: Sequence[pb.DatasetInfo]) -> Explanation:
    if not infos:
        raise FederationError("unknown_dataset", f"no connected node serves dataset '{spec.dataset}'")
    union = union_indexes(spec, len(infos))
    if not union:
        return explain(node_queries(spec, infos))
    n = len(spec.aggregates)
    rest = pb.QuerySpec()
    rest.CopyFrom(spec)
    del rest.aggregates[:]
    rest.aggregates.extend(a for i, a in enumerate(spec.aggregates) if i not in union)
    part = explain(node_queries(rest, infos)) if rest.aggregates else None
    distinct = pb.QuerySpec()
    distinct.CopyFrom(spec)
    del distinct.aggregates[:]
    distinct.aggregates.append(spec.aggregates[union[0]])
    parties = [_union_party(distinct, info) for info in infos]
    u = explain_union(parties)
    others = [i for i in range(n) if i not in union]
    aggregates = []
    for i in range(n):
        if i in union:
            aggregates.append(AggregateExplanation(i, "count_distinct", u.sd, 0.0, u.half_width))
        else:
            assert part is not None
            aggregates.append(replace(part.aggregates[others.index(i)], index=i))
    nodes = []
    for k, info in enumerate(infos):
        own = part.nodes[k] if part is not None else None

        def spread(values: tuple[float, ...] | None, fill: float) -> tuple[float, ...]:
            return tuple(
                fill if i in union else (values[others.index(i)] if values else fill) for i in range(n)
            )

        refusal = own.refusal if own is not None and own.refusal is not None else parties[k].refusal
        nodes.append(
            NodeExplanation(
                node=info.node,
                epsilon=(own.epsilon if own else 0.0) + u.costs.get(info.node, 0.0),
                rho=own.rho if own else 0.0,
                sd=spread(own.sd if own else None, 0.0),
                count_sd=spread(own.count_sd if own else None, 0.0),
                half_width=spread(own.half_width if own else None, math.nan),
                threshold=own.threshold if own else None,
                threshold_kind=own.threshold_kind if own else "",
                refusal=refusal,
                threshold_noise=own.threshold_noise if own else None,
            )
        )
    return Explanation(
        tuple(aggregates),
        tuple(nodes),
        union=tuple(union),
        union_threshold=u.threshold,
        threshold=part.threshold if part is not None else None,
        threshold_kind=part.threshold_kind if part is not None else "",
    )


def explain_frame(spec: pb.QuerySpec, infos: Sequence[pb.DatasetInfo]) -> pd.DataFrame:
    """One row per aggregate for the combined figure ("all"), then one per (node, aggregate).

    The "all" rows' epsilon is the total over the nodes, each charging its own ledger; an AVG's sd
    and interval depend on its noisy count, so its row notes the noise of its sum and count.
    """
    result = explanation(spec, infos)
    rows = []
    avg = [a.function == pb.AVG for a in spec.aggregates]
    for i, (agg, combined) in enumerate(zip(spec.aggregates, result.aggregates, strict=True)):
        threshold = (
            f"{result.union_threshold} units (union)"
            if i in result.union
            else f"{result.threshold} {result.threshold_kind}s (summed)"
            if result.threshold is not None
            else ""
        )
        rows.append(
            {
                "node": "all",
                "aggregate": agg.alias,
                # An AVG's noise depends on its noisy count: its parts' noise is in the note.
                "noise_sd": math.nan if agg.function == pb.AVG else combined.sd,
                "ci95_half_width": combined.half_width,
                "suppression_threshold": threshold,
                "epsilon": sum(n.epsilon for n in result.nodes if n.refusal is None),
                "rho": sum(n.rho for n in result.nodes if n.refusal is None),
                "refused": "",
                "note": _auto_note(agg, spec)
                + (
                    _avg_note(combined.sd, combined.count_sd)
                    if agg.function == pb.AVG
                    else "union across nodes: noised once at the coordinator"
                    if i in result.union
                    else ""
                ),
            }
        )
    for node in result.nodes:
        for i, agg in enumerate(spec.aggregates):
            rows.append(
                {
                    "node": node.node,
                    "aggregate": agg.alias,
                    "noise_sd": math.nan if avg[i] or i in result.union else node.sd[i],
                    "ci95_half_width": math.nan if avg[i] or i in result.union else node.half_width[i],
                    "suppression_threshold": f"{node.threshold} {node.threshold_kind}s (node-level)"
                    if node.threshold is not None
                    else "",
                    "epsilon": node.epsilon,
                    "rho": node.rho,
                    "refused": f"{node.refusal[1]} [rule: {node.refusal[0]}]" if node.refusal else "",
                    "note": _avg_note(node.sd[i], node.count_sd[i]) if avg[i] and not node.refusal else "",
                }
            )
    df = pd.DataFrame(rows)
    df.attrs = {"dataset": spec.dataset, "charged": False}
    hint = secure_hint(spec, infos)
    if hint:
        df.attrs["hint"] = hint
    return df


_NOT_SECURE = (pb.VARIANCE, pb.STDDEV, pb.PERCENTILE)  # not released under secure aggregation


def secure_hint(spec: pb.QuerySpec, infos: Sequence[pb.DatasetInfo]) -> str:
    """One line for a plain DP query that secure aggregation could serve: each node adds its own
    full noise, so the combined figure carries n noises (sqrt(n) times one noise's sd), where
    ``secure=True`` adds one curator's noise in shares (privacy/distributed.py). Empty when it does
    not apply: exact release, one node, or an aggregate or group key the secure path lacks."""
    n = len(infos)
    dp = spec.privacy.epsilon > 0 or spec.privacy.rho > 0 or any(i.dp_required for i in infos)
    if spec.secure or not dp or n < 2 or spec.derived:
        return ""
    union = set(union_indexes(spec, n))
    rest = [a for i, a in enumerate(spec.aggregates) if i not in union]
    if not rest or any(a.function in _NOT_SECURE for a in rest):
        return ""
    return (
        f"hint: these {n} nodes allow secure=True, which adds one noise for all of them instead of one "
        f"per node: a smaller interval (about 1/sqrt({n}) of this sd; served under zCDP, docs/privacy.md)"
    )


def _auto_note(agg: pb.Aggregate, spec: pb.QuerySpec) -> str:
    if not agg.bound_quantile:
        return ""
    share = bound_share(spec.privacy.bound_share)
    return (
        f"upper clamp chosen per node at run time, near the {agg.bound_quantile:g} quantile, by a DP "
        f"quantile spending {share:.0%} of epsilon; noise shown at the declared bound (the most it can be). "
    )


def _avg_note(sum_sd: float, count_sd: float) -> str:
    return f"sum sd {sum_sd:.4g} over count sd {count_sd:.4g}; the interval depends on the count"


def accuracy_epsilon(
    spec: pb.QuerySpec, infos: Sequence[pb.DatasetInfo], accuracy: float | dict[str, float]
) -> float:
    """The smallest epsilon whose combined 95% half-width meets ``accuracy``: a number for the
    first aggregate, or {alias: half-width} for named ones (the largest epsilon any needs)."""
    aliases = [a.alias for a in spec.aggregates]
    wanted = {aliases[0]: accuracy} if not isinstance(accuracy, dict) else dict(accuracy)
    unknown = [a for a in wanted if a not in aliases]
    if unknown:
        raise FederationError(
            "accuracy", f"accuracy names '{unknown[0]}', which is not an output of the query"
        )
    if not infos:
        raise FederationError("unknown_dataset", f"no connected node serves dataset '{spec.dataset}'")
    cap = min(info.max_epsilon for info in infos)

    best = 0.0
    for alias, target in wanted.items():
        index = aliases.index(alias)

        def width_at(epsilon: float, index: int = index) -> float | None:
            return explanation(_with_epsilon(spec, epsilon), infos).aggregates[index].half_width

        best = max(best, epsilon_for_accuracy(width_at, float(target), cap))
    return best


def _with_epsilon(spec: pb.QuerySpec, epsilon: float) -> pb.QuerySpec:
    copy = pb.QuerySpec()
    copy.CopyFrom(spec)
    copy.privacy.epsilon = epsilon
    copy.privacy.rho = 0.0
    return copy
