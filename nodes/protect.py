"""The ``protect`` step: disclosure control and differential privacy on exact aggregates.

* Every key of the public group domain is reported, so the set of present keys does not leak.
* Without DP: a group with fewer distinct privacy units than the minimum group size is suppressed
  as a whole row, so a suppressed value cannot be recovered from the other columns of the row.
* With DP (OpenDP, see privacy/dp.py): every cell of every group gets noise calibrated to the
  declared bounds and ``max_rows_per_unit``. Suppression is decided on a *noisy* count: the
  noisy distinct-unit count, or, when the query asks for COUNT(*) but not COUNT(DISTINCT unit),
  its noisy row count. By default (policy ``suppression = "combined"``) the node releases every
  group with that count and its noise, and the coordinator decides once on the sum over the
  nodes (privacy/suppression.py). With ``suppression = "node"`` the node suppresses a group
  whose own count is below a threshold that a group below the minimum size clears with
  probability <= 1e-3 (privacy/dp.py ``threshold_for``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodes.config import Dataset
from nodes.validate import NUMERIC_FUNCTIONS, AggregatePlan, Plan, Refused
from privacy.accounting import Cost, PrivacyError
from privacy.agreements import AGGREGATE_KIND
from privacy.bounds import clip
from privacy.dp import (
    NoisePlan,
    avg_interval,
    interval,
    release_counts,
    release_sums,
    threshold_for,
    variance_parts,
)
from privacy.explain import QueryNoise, plan_query
from privacy.statistics import PERCENTILE_BINS, Estimate, Moments, percentile, stddev, variance
from protocols import federation_pb2 as pb
from protocols.privacy_request import check_wire
from protocols.values import to_value


@dataclass
class Exact:
    """Exact per-group aggregates as computed inside the engine (never released as such).

    ``rows`` maps a group key to (n_rows, n_units, ...) followed, per numeric aggregate in request
    order, by its figures (``slot_width``): SUM/AVG (sum, count), VARIANCE/STDDEV (sum, count,
    centred sum of squares), PERCENTILE the bin counts. Without ``units`` the distinct-unit
    counts were not computed (``n_units`` is ``None``): only a release that never reads them may
    use such aggregates (see ``needs_units``).
    """

    rows: dict[tuple[Any, ...], tuple[Any, ...]]
    units: bool = True
    # Exact bounding figures (``DataSources.diagnostics``): units cut by truncation, then values
    # moved by clamping per SUM/AVG. ``None``: not computed (exact releases, or not asked for).
    bounding: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Budget:
    """The privacy parameters a job runs with, after the node's policy has had its say."""

    epsilon: float | None = None
    rho: float | None = None

    @property
    def dp(self) -> bool:
        return self.epsilon is not None or self.rho is not None


def capped_epsilon(epsilon: float, dataset: Dataset, node: str) -> float:
    """``epsilon`` if the dataset's per-query cap allows it; refused with ``epsilon_cap`` otherwise."""
    if epsilon > dataset.policy.max_epsilon:
        raise Refused(
            "epsilon_cap",
            f"epsilon {epsilon:g} is above the per-query cap {dataset.policy.max_epsilon:g} for dataset {dataset.name}",
            node=node,
        )
    return float(epsilon)


def resolve_budget(request: pb.PrivacyRequest, dataset: Dataset, node: str) -> Budget:
    """Apply the dataset's policy to the analyst's request: default, cap, and whether DP is required."""
    policy = dataset.policy
    ask = check_wire(request.epsilon, request.rho, node=node)
    if ask.epsilon is not None:
        return Budget(epsilon=capped_epsilon(ask.epsilon, dataset, node))
    if ask.rho is not None:
        cap = policy.max_epsilon**2 / 2  # pure epsilon implies epsilon^2/2-zCDP: the same cap in rho
        if ask.rho > cap:
            raise Refused(
                "epsilon_cap",
                f"rho {ask.rho:g} is above the per-query cap {cap:g} for dataset {dataset.name}",
                node=node,
            )
        return Budget(rho=ask.rho)
    if policy.dp_required:
        return Budget(epsilon=policy.default_epsilon)
    return Budget()


def _aggregate_kinds(plan: Plan) -> list[tuple[str, tuple[float, float] | None]]:
    return [(AGGREGATE_KIND[a.function], a.bounds) for a in plan.aggregates]


def bounding_summary(plan: Plan) -> dict[str, Any]:
    """What the audit log records about the bounds a release used (declared or tightened)."""
    return {
        "max_rows_per_unit": plan.rows_per_unit,
        "bounds": {a.alias: list(a.bounds) for a in plan.aggregates if a.bounds is not None},
    }


def query_noise(plan: Plan, budget: Budget) -> QueryNoise:
    """The query's whole noise (privacy/explain.py), as the SDK's ``explain`` predicts it."""
    return plan_query(
        _aggregate_kinds(plan),
        plan.rows_per_unit,
        epsilon=budget.epsilon,
        rho=budget.rho,
        n_groups=len(plan.keys),
        diagnostics=plan.diagnostics,
    )


def _noise_plan(plan: Plan, budget: Budget) -> NoisePlan:
    return query_noise(plan, budget).figures


def needs_units(plan: Plan, budget: Budget) -> bool:
    """Whether protecting this plan reads the exact distinct-unit counts.

    Exact releases suppress on them (``compute`` may still bound them from the row counts). Under
    DP they are read when the query asks for COUNT(DISTINCT unit), or when no COUNT(*) can stand
    in as the threshold measurement; a reused COUNT(*) makes the costly distinct scan unnecessary.
    """
    if not budget.dp:
        return True
    if any(a.function == pb.COUNT_DISTINCT for a in plan.aggregates):
        return True
    noise = _noise_plan(plan, budget)
    return noise.threshold.kind != "count"


def slot_width(agg: AggregatePlan) -> int:
    """How many figures an aggregate has in ``Exact.rows`` (and in ``build_sql``'s output)."""
    if agg.function not in NUMERIC_FUNCTIONS:
        return 0
    if agg.function == pb.PERCENTILE:
        return PERCENTILE_BINS
    return 3 if agg.function in (pb.VARIANCE, pb.STDDEV) else 2


def _numeric_slots(plan: Plan) -> dict[int, int]:
    """Map aggregate position -> offset of its first figure after (n_rows, n_units) in ``Exact.rows``."""
    slots: dict[int, int] = {}
    offset = 0
    for i, agg in enumerate(plan.aggregates):
        if slot_width(agg):
            slots[i] = offset
            offset += slot_width(agg)
    return slots


def exact_columns(plan: Plan, exact: Exact) -> tuple[list[int], list[int], dict[int, list[list[float]]]]:
    """Per group key in domain order: row counts, unit counts, and per numeric aggregate its figures
    as columns: SUM/AVG [sums, counts], VARIANCE/STDDEV [sums, counts, centred squares],
    PERCENTILE one column per bin. Counts are whole numbers."""
    slots = _numeric_slots(plan)
    rows, units = [], []
    numeric: dict[int, list[list[float]]] = {
        i: [[] for _ in range(slot_width(plan.aggregates[i]))] for i in slots
    }
    for key in plan.keys:
        found = exact.rows.get(tuple(key))
        rows.append(int(found[0]) if found else 0)
        units.append(int(found[1]) if found and found[1] is not None else 0)
        for i, offset in slots.items():
            agg = plan.aggregates[i]
            for j, column in enumerate(numeric[i]):
                figure = found[2 + offset + j] if found else None
                whole = agg.function == pb.PERCENTILE or j == 1
                column.append(int(figure or 0) if whole else float(figure or 0.0))
    return rows, units, numeric


def protect(plan: Plan, exact: Exact, budget: Budget) -> tuple[pb.QueryResult, Cost]:
    """Return the protected result and the privacy cost it must be charged before release."""
    if budget.dp:
        return _protect_dp(plan, exact, budget)
    if any(a.function == pb.PERCENTILE for a in plan.aggregates):
        # Exact bin counts of 1/64 of the range would come close to releasing single values.
        raise Refused(
            "percentile_needs_dp",
            f"MEDIAN and PERCENTILE_CONT are released only with DP; ask with an epsilon (dataset {plan.dataset.name})",
        )
    return _protect_exact(plan, exact), Cost(epsilon=0.0, rho=0.0)


def _new_group(result: pb.QueryResult, key: tuple[Any, ...]) -> pb.GroupResult:
    group = result.groups.add()
    group.key.extend(to_value(k) for k in key)
    return group


def _suppress(group: pb.GroupResult, n_aggregates: int, rule: str) -> None:
    group.suppressed = True
    group.suppression_rule = rule
    del group.cells[:]
    for _ in range(n_aggregates):
        group.cells.add()


def _protect_exact(plan: Plan, exact: Exact) -> pb.QueryResult:
    min_size = plan.dataset.policy.min_group_size
    rows, units, numeric = exact_columns(plan, exact)
    result = pb.QueryResult()
    for i, agg in enumerate(plan.aggregates):
        if agg.function in (pb.VARIANCE, pb.STDDEV):
            numeric[i] = _centred(numeric[i], agg.bounds)
    for g, key in enumerate(plan.keys):
        group = _new_group(result, key)
        if units[g] < min_size:
            _suppress(group, len(plan.aggregates), f"min_group_size: fewer than {min_size} units")
            continue
        for i, agg in enumerate(plan.aggregates):
            cell = group.cells.add()
            if agg.function == pb.COUNT:
                cell.sum = cell.count = float(rows[g])
            elif agg.function == pb.COUNT_DISTINCT:
                cell.sum = cell.count = float(units[g])
            elif agg.function in (pb.VARIANCE, pb.STDDEV, pb.PERCENTILE):
                _statistic_cell(cell, agg, [column[g] for column in numeric[i]])
            else:
                cell.sum, cell.count = numeric[i][0][g], float(numeric[i][1][g])
    return result


def _statistic_cell(
    cell: pb.Cell,
    agg: AggregatePlan,
    figures: list[float],
    sd: float = 0.0,
    count_sd: float = 0.0,
    squares_sd: float = 0.0,
) -> None:
    """Fill a VARIANCE / STDDEV / PERCENTILE cell from its figures (exact, or already noisy) and
    this node's own estimate with its interval. VARIANCE figures are (centred sum, count, centred
    sum of squares); PERCENTILE figures are the bin counts."""
    assert agg.bounds is not None  # validate sets the clamping bounds of every numeric aggregate
    lo, hi = agg.bounds
    cell.low, cell.high = lo, hi
    estimate: Estimate
    if agg.function == pb.PERCENTILE:
        cell.bins.extend(float(f) for f in figures)
        cell.bins_noise_sd = sd
        estimate = percentile(figures, lo, hi, agg.quantile, sd)
        cell.count = float(sum(figures))
    else:
        s1, n, s2 = (float(f) for f in figures)
        cell.sum, cell.count, cell.sum_squares = s1, n, s2
        cell.noise_sd, cell.count_noise_sd, cell.sum_squares_noise_sd = sd, count_sd, squares_sd
        cell.shift = variance_parts((lo, hi))[0]
        moments = Moments(n, s1, s2, cell.shift, lo, hi, count_sd**2, sd**2, squares_sd**2)
        estimate = (variance if agg.function == pb.VARIANCE else stddev)(moments)
    if sd > 0:
        cell.ci_low, cell.ci_high = estimate.ci_low, estimate.ci_high


def _centred(numeric: list[list[float]], bounds: tuple[float, float] | None) -> list[list[float]]:
    """VARIANCE figures with the sum taken about the middle of the bounds: sum(x - c) = sum(x) - c n."""
    c = variance_parts(bounds)[0]
    sums, counts, squares = numeric
    return [[s - c * n for s, n in zip(sums, counts, strict=True)], counts, squares]


def _threshold_basis(noise: NoisePlan, dataset: Dataset) -> pb.Threshold:
    """What the coordinator needs to decide suppression on the sum of the nodes' threshold counts
    (privacy/suppression.py): the noise on this node's count and what one unit can add to it."""
    spec = noise.threshold
    return pb.Threshold(
        kind=spec.kind,
        mechanism=spec.mechanism,
        scale=spec.scale,
        per_unit=spec.max_rows_per_unit if spec.kind == "count" else 1,
        min_group_size=dataset.policy.min_group_size,
        suppression=dataset.policy.suppression,
    )


def _release_diagnostics(plan: Plan, noise: QueryNoise, exact: Exact, result: pb.QueryResult) -> None:
    """Noisy bounding figures, moved into their feasible range [0, inf) with their intervals."""
    if not noise.diagnostics:
        return
    if exact.bounding is None or len(exact.bounding) != len(noise.diagnostics):
        raise PrivacyError("diagnostics_missing", "the bounding figures were not computed")
    for diagnostic, value in zip(noise.diagnostics, exact.bounding, strict=True):
        noisy = float(release_counts([int(value)], diagnostic.spec)[0])
        lo, hi = interval(noisy, diagnostic.spec)
        noisy, lo, hi, _ = clip(noisy, lo, hi, (0.0, float("inf")))
        result.diagnostics.add(
            name=diagnostic.name,
            aggregate="" if diagnostic.aggregate is None else plan.aggregates[diagnostic.aggregate].alias,
            value=noisy,
            noise_sd=diagnostic.spec.sd,
            ci_low=lo,
            ci_high=hi,
        )


def _protect_dp(plan: Plan, exact: Exact, budget: Budget) -> tuple[pb.QueryResult, Cost]:
    ds = plan.dataset
    whole = query_noise(plan, budget)
    noise = whole.figures
    if not exact.units and needs_units(plan, budget):
        raise PrivacyError("units_missing", "this release needs distinct-unit counts that were not computed")
    rows, units, numeric = exact_columns(plan, exact)

    for n, statistic in enumerate(plan.aggregates):
        if statistic.function in (pb.VARIANCE, pb.STDDEV):
            numeric[n] = _centred(numeric[n], statistic.bounds)
    values: dict[int, list[float]] = {}
    counts: dict[int, list[float]] = {}
    squares: dict[int, list[float]] = {}
    bins: dict[int, list[list[float]]] = {}
    for component in noise.components:
        spec, i = component.spec, component.aggregate
        if component.role == "value" and i is not None:
            agg = plan.aggregates[i]
            if agg.function == pb.COUNT:
                values[i] = [float(v) for v in release_counts(rows, spec)]
            elif agg.function == pb.COUNT_DISTINCT:
                values[i] = [float(v) for v in release_counts(units, spec)]
            elif agg.function == pb.PERCENTILE:
                # One vector over every (group, bin) cell: a unit's rows fall in at most k of them.
                flat = [int(column[g]) for g in range(len(plan.keys)) for column in numeric[i]]
                noisy = [float(v) for v in release_counts(flat, spec)]
                width = len(numeric[i])
                bins[i] = [noisy[g * width : (g + 1) * width] for g in range(len(plan.keys))]
                values[i] = [0.0] * len(plan.keys)
            else:
                values[i] = release_sums(numeric[i][0], spec)
        elif component.role == "avg_count" and i is not None:
            counts[i] = [float(v) for v in release_counts([int(n) for n in numeric[i][1]], spec)]
        elif component.role == "sum_squares" and i is not None:
            squares[i] = release_sums(numeric[i][2], spec)
    threshold_component = next(c for c in noise.components if c.role == "threshold")
    if threshold_component.aggregate is not None:
        # Reuse the released COUNT(DISTINCT unit), or COUNT(*) against a threshold in rows.
        noisy_counts = values[threshold_component.aggregate]
    else:
        noisy_counts = [float(v) for v in release_counts(units, threshold_component.spec)]
    threshold = threshold_for(ds.policy.min_group_size, noise.threshold)
    measured = "row" if noise.threshold.kind == "count" else "unit"
    at_node = ds.policy.suppression == "node"

    result = pb.QueryResult()
    result.threshold.CopyFrom(_threshold_basis(noise, ds))
    columns = noise.columns
    for g, key in enumerate(plan.keys):
        group = _new_group(result, key)
        group.threshold_count = noisy_counts[g]
        if at_node and noisy_counts[g] < threshold:
            _suppress(
                group, len(plan.aggregates), f"min_group_size: noisy {measured} count below {threshold}"
            )
            continue
        for i, agg in enumerate(plan.aggregates):
            cell = group.cells.add()
            spec = columns[i]
            if agg.function == pb.PERCENTILE:
                _statistic_cell(cell, agg, bins[i][g], sd=spec.sd)
                continue
            if agg.function in (pb.VARIANCE, pb.STDDEV):
                count_spec, squares_spec = noise.avg_count(i), noise.part("sum_squares", i)
                assert count_spec is not None and squares_spec is not None
                figures = [values[i][g], counts[i][g], squares[i][g]]
                _statistic_cell(cell, agg, figures, spec.sd, count_spec.sd, squares_spec.sd)
                continue
            cell.sum = values[i][g]
            cell.noise_sd = spec.sd
            if agg.function == pb.AVG:
                count_spec = noise.avg_count(i)
                assert count_spec is not None
                cell.count = counts[i][g]
                cell.count_noise_sd = count_spec.sd
                if cell.count > 0:
                    lo, hi = avg_interval(cell.sum, spec, cell.count, count_spec)
                else:
                    lo, hi = float("-inf"), float("inf")
            else:
                cell.count = cell.sum
                lo, hi = interval(cell.sum, spec)
            cell.ci_low, cell.ci_high = lo, hi
    _release_diagnostics(plan, whole, exact, result)
    result.cost.epsilon = whole.cost.epsilon
    result.cost.rho = whole.cost.rho
    return result, whole.cost
