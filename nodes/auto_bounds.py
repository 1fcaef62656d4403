"""Upper clamps chosen per query by a DP quantile of the column, at a share of the query's epsilon.

Runs in the release path between validate and compute (nodes/release.py): for each SUM/AVG that
asks for it (``bound_quantile``), the node reads the values the query would aggregate (same
filter, vocabulary and truncation, clamped to the declared bounds), chooses an upper clamp with
OpenDP's quantile mechanism (privacy/auto_bounds.py) and runs the query at those bounds with the
rest of epsilon. The choice is charged with the answer, in the same ledger entry, and released
with it (``QueryResult.chosen_bounds``). Nothing leaves the node here.
"""

from __future__ import annotations

from dataclasses import replace

from nodes.protect import Budget
from nodes.sources import DataSources
from nodes.sqlgen import SqlBuilder, bounded_rows
from nodes.validate import Plan, Refused
from privacy.accounting import Cost
from privacy.auto_bounds import bound_share, bounds_cost, choose_upper
from protocols import federation_pb2 as pb
from protocols.errors import FederationError


def wants_bounds(plan: Plan) -> bool:
    return any(a.bound_quantile for a in plan.aggregates)


def choose_bounds(
    plan: Plan, budget: Budget, requested_share: float, sources: DataSources, node: str
) -> tuple[Plan, Budget, Cost | None, list[pb.ChosenBound]]:
    """The plan with its chosen upper clamps, the budget left for the answer, what choosing cost,
    and the chosen bounds to release. Refused (``bound_quantile``, ``bound_share``) before any
    data is read when the request cannot be served."""
    if not wants_bounds(plan):
        return plan, budget, None, []
    if budget.epsilon is None:
        raise Refused(
            "bound_quantile",
            "bounds chosen by a DP quantile need an epsilon (pure DP); ask with epsilon, or give bounds",
            node=node,
        )
    try:
        share = bound_share(requested_share)
    except FederationError as exc:
        raise Refused(exc.rule, exc.message, node=node) from None
    # One choice per (column, quantile), shared by the aggregates that ask for the same.
    wanted = sorted(
        {(a.column.name, a.bound_quantile) for a in plan.aggregates if a.bound_quantile and a.column}
    )
    each = budget.epsilon * share / len(wanted)
    uppers: dict[tuple[str, float], float] = {}
    for name, quantile in wanted:
        agg = next(
            a for a in plan.aggregates if a.column and (a.column.name, a.bound_quantile) == (name, quantile)
        )
        assert agg.column is not None and agg.bounds is not None
        values = _values(plan, agg.column.name, sources)
        uppers[(name, quantile)] = choose_upper(values, agg.bounds, quantile, each, plan.rows_per_unit)
    aggregates = []
    chosen = []
    for agg in plan.aggregates:
        if agg.bound_quantile and agg.column is not None and agg.bounds is not None:
            lower, upper = agg.bounds[0], uppers[(agg.column.name, agg.bound_quantile)]
            agg = replace(agg, bounds=(lower, upper))
            chosen.append(pb.ChosenBound(aggregate=agg.alias, lower=lower, upper=upper, epsilon=each))
        aggregates.append(agg)
    return (
        replace(plan, aggregates=tuple(aggregates)),
        Budget(epsilon=budget.epsilon * (1.0 - share)),
        bounds_cost([each] * len(wanted)),
        chosen,
    )


def _values(plan: Plan, column: str, sources: DataSources) -> list[float]:
    """The column's values the plan would aggregate, clamped to the declared bounds; in the node."""
    # Only this column, at its declared bounds, so the SQL carries one clamped value per row.
    probe = next(a for a in plan.aggregates if a.column is not None and a.column.name == column)
    only = replace(plan, aggregates=(replace(probe, bounds=probe.column.bounds if probe.column else None),))
    b = SqlBuilder(sources.dialect(plan.dataset))
    rows = bounded_rows(only, b, truncate=sources.needs_truncation(only))
    (alias,) = rows.numeric.values()
    keep = [*rows.keep, f"{alias} IS NOT NULL"]
    sql = f"SELECT {alias} FROM {rows.source} WHERE {' AND '.join(keep)}"
    return [float(v) for (v,) in sources.fetch(plan.dataset, sql, b.params)]
