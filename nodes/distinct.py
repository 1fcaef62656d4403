"""A node's part of a union COUNT(DISTINCT unit) across nodes (docs/distinct.md).

The coordinator runs the union as an overlap job whose spec carries the analyst's query
(``OverlapSpec.distinct``). Here the node checks that query exactly as it would its own
COUNT(DISTINCT unit) (nodes/validate.py), lists the distinct (group key, unit) pairs its own
answer would count (same filter, vocabulary and truncation: ``nodes.differencing.unit_rows``),
normalises each unit, and turns the pairs into the items of :mod:`protocols.psi_union`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodes.config import Dataset, NodeConfig
from nodes.protect import resolve_budget
from nodes.sources import DataSources
from nodes.sqlgen import SqlBuilder, bounded_rows
from nodes.validate import Plan, Refused, validate
from privacy.accounting import Cost
from privacy.distinct import groups_per_unit, union_cost
from protocols import federation_pb2 as pb
from protocols.identifiers import normalise
from protocols.psi_union import group_item, group_label


def unit_rows(plan: Plan, sources: DataSources) -> list[tuple[Any, ...]]:
    """Distinct (g0..gN, unit) rows the node's own COUNT(DISTINCT unit) counts for ``plan``: the same
    filter, vocabulary mapping and truncation as ``nodes.sqlgen.build_sql``. Nothing here leaves."""
    b = SqlBuilder(sources.dialect(plan.dataset))
    rows = bounded_rows(plan, b, truncate=True)
    sql = (
        f"SELECT DISTINCT {', '.join([*rows.groups, 'u'])} FROM {rows.source} WHERE {' AND '.join(rows.keep)}"
    )
    return sources.fetch(plan.dataset, sql, b.params)


@dataclass(frozen=True)
class UnionSet:
    """What one dataset brings to a union: (hashed item, group label) pairs, and its cost."""

    items: list[tuple[str, bytes]]
    malformed: int
    n_groups: int
    sensitivity: int  # groups one unit can move
    cost: Cost
    plan: Plan | None = None  # the node's own check of the query
    units: tuple[int, ...] = ()  # distinct units per key of ``plan.keys``


def union_set(config: NodeConfig, sources: DataSources, dataset: Dataset, spec: pb.OverlapSpec) -> UnionSet:
    node = config.node_id
    query = pb.QuerySpec()
    query.CopyFrom(spec.distinct)
    query.dataset = dataset.name
    query.node = ""
    aggregates = list(query.aggregates)
    if len(aggregates) != 1 or aggregates[0].function != pb.COUNT_DISTINCT or aggregates[0].per_node:
        raise Refused("malformed_request", "a union carries exactly one COUNT(DISTINCT unit)", node=node)
    if aggregates[0].column != spec.on:
        raise Refused("malformed_request", "a union is on the column its COUNT(DISTINCT) names", node=node)
    plan = validate(query, config)  # every rule of the node's own COUNT(DISTINCT unit)
    unit = dataset.columns[dataset.privacy_unit]
    if unit.kind != "identifier" or not unit.id_type:
        raise Refused(
            "not_identifier",
            f"a union across nodes matches the privacy unit as an identifier; '{unit.name}' declares no "
            f"id_type (dataset {dataset.name})",
            node=node,
        )
    if unit.name not in dataset.policy.overlap_columns:
        raise Refused(
            "identifier_not_allowed",
            f"identifier '{unit.name}' may not take part in private set intersection for dataset "
            f"{dataset.name} (overlap_columns)",
            node=node,
        )
    budget = resolve_budget(query.privacy, dataset, node)
    if budget.rho is not None:
        raise Refused(
            "privacy_request",
            "COUNT(DISTINCT) across nodes is released with pure DP: ask for epsilon, not rho",
            node=node,
        )
    n_groups = len(plan.keys)
    sensitivity = groups_per_unit(plan.rows_per_unit, n_groups)
    cost = Cost(0.0, 0.0)
    if budget.epsilon is not None:
        cost = union_cost(budget.epsilon, plan.rows_per_unit, n_groups)
    labels = {key: group_label(key) for key in plan.keys}
    items: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    bad: set[object] = set()
    width = len(plan.group_columns)
    for row in unit_rows(plan, sources):
        key, raw = tuple(row[:width]), row[width]
        label = labels.get(key)
        if label is None:
            continue  # outside the public domain: never counted, as in the node's own answer
        entity = normalise(unit.id_type, raw)
        if entity is None:
            bad.add(raw)
            continue
        item = group_item(label, entity)
        if item not in seen:  # two raw spellings of one entity are one item
            seen.add(item)
            items.append((item, label))
    per_label: dict[bytes, int] = {}
    for _, label in items:
        per_label[label] = per_label.get(label, 0) + 1
    units = tuple(per_label.get(labels[key], 0) for key in plan.keys)
    return UnionSet(
        items=items,
        malformed=len(bad),
        n_groups=n_groups,
        sensitivity=sensitivity,
        cost=cost,
        plan=plan,
        units=units,
    )
