"""The noise of a query, known before anything is spent: one computation for nodes and analysts.

``plan_query`` is what a node runs to protect a query (nodes/protect.py) and what the SDK runs on
the public metadata (``DatasetInfo``: bounds, rows per unit, policy) to explain one before it is
sent. Both call the same function on the same inputs, so the noise the SDK predicts is the noise
the node adds. The budget of a DP query is split in two:

* the figures asked for get ``1 - DIAGNOSTIC_SHARE`` of it, spread by ``privacy.dp.plan_noise``;
* the *bounding diagnostics* get ``DIAGNOSTIC_SHARE``, spread equally: the number of units whose
  rows truncation cut (sensitivity 1: a unit is cut or not) and, per SUM/AVG, the number of values
  clamping moved (sensitivity k: a unit keeps at most k rows after truncation).

Sequential composition (DR14, Thm. 3.16; BS16, Lemma 2.3) makes the query's cost the sum of the
two parts. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from privacy.accounting import Cost, PrivacyError
from privacy.distinct import groups_per_unit, union_cost, union_noise
from privacy.dp import Bounds, NoisePlan, NoiseSpec, interval, plan_noise, threshold_for
from privacy.suppression import ThresholdNoise, combined_threshold
from protocols.privacy_request import EPSILON_FLOOR

DIAGNOSTIC_SHARE = 0.05
Z95 = 1.959963984540054  # the combined interval of several nodes is a normal approximation
_SEARCH_STEPS = 60


@dataclass(frozen=True)
class Diagnostic:
    """One bounding figure: ``units_truncated`` (aggregate ``None``) or ``values_clamped`` of an aggregate."""

    name: str
    aggregate: int | None
    spec: NoiseSpec


@dataclass(frozen=True)
class QueryNoise:
    """The whole noise of one query at one node: the figures' plan, the diagnostics, the total cost."""

    figures: NoisePlan
    diagnostics: tuple[Diagnostic, ...]
    cost: Cost


def diagnostics_for(aggregates: Sequence[tuple[str, Bounds | None]]) -> list[tuple[str, int | None]]:
    """The diagnostics a query measures: truncation always, clamping per SUM/AVG."""
    wanted: list[tuple[str, int | None]] = [("units_truncated", None)]
    wanted += [("values_clamped", i) for i, (kind, _) in enumerate(aggregates) if kind in ("sum", "avg")]
    return wanted


def plan_query(
    aggregates: Sequence[tuple[str, Bounds | None]],
    max_rows_per_unit: int,
    epsilon: float | None = None,
    rho: float | None = None,
    *,
    n_groups: int = 1,
    diagnostics: bool = True,
) -> QueryNoise:
    """Plan the noise of a query with ``aggregates`` as (kind, clamping bounds) at k = ``max_rows_per_unit``.

    With ``diagnostics`` the figures get ``1 - DIAGNOSTIC_SHARE`` of the budget and each
    diagnostic an equal part of the rest; without, the figures get all of it.
    """
    if epsilon is None and rho is None:
        raise PrivacyError("privacy_request", "give exactly one of epsilon (Laplace) or rho (Gaussian)")
    total = epsilon if epsilon is not None else rho
    wanted = diagnostics_for(aggregates) if diagnostics else []
    if (
        not isinstance(total, int | float)
        or isinstance(total, bool)
        or not math.isfinite(total)
        or total <= 0
    ):
        raise PrivacyError("privacy_request", f"the budget must be a finite number > 0, got {total!r}")
    main = total * (1 - DIAGNOSTIC_SHARE) if wanted else total
    figures = plan_noise(
        aggregates,
        max_rows_per_unit,
        epsilon=main if epsilon is not None else None,
        rho=main if rho is not None else None,
        n_groups=n_groups,
    )
    measured: list[Diagnostic] = []
    costs = [figures.cost]
    for name, index in wanted:
        share = total * DIAGNOSTIC_SHARE / len(wanted)
        # One count over the whole query (n_groups = 1): a unit moves it by 1 (truncated) or by k (clamped).
        kind, rows = ("count_distinct", 1) if name == "units_truncated" else ("count", max_rows_per_unit)
        plan = plan_noise(
            [(kind, None)],
            rows,
            epsilon=share if epsilon is not None else None,
            rho=share if rho is not None else None,
        )
        measured.append(Diagnostic(name, index, plan.columns[0]))
        costs.append(plan.cost)
    cost = Cost(epsilon=sum(c.epsilon for c in costs), rho=sum(c.rho for c in costs))
    return QueryNoise(figures=figures, diagnostics=tuple(measured), cost=cost)


def half_width(spec: NoiseSpec, level: float = 0.95) -> float:
    """Half-width of the ``level`` interval of one node's figure with noise ``spec``."""
    return interval(0.0, spec, level)[1]


# --------------------------------------------------------------------------- explain


@dataclass(frozen=True)
class NodeQuery:
    """What the public metadata says about how one node would run a query.

    ``aggregates`` are (kind, clamping bounds) after the per-query bounds were applied; ``epsilon``
    and ``rho`` the budget the node would use after its policy (default, cap); both ``None``: an
    exact release. ``refusal`` is a (rule, reason) pair when the policy refuses the request.
    """

    node: str
    aggregates: tuple[tuple[str, Bounds | None], ...]
    max_rows_per_unit: int
    n_groups: int
    min_group_size: int
    epsilon: float | None = None
    rho: float | None = None
    diagnostics: bool = True
    refusal: tuple[str, str] | None = None


@dataclass(frozen=True)
class NodeExplanation:
    node: str
    epsilon: float  # what the node would charge (pure DP); 0 for exact or zCDP
    rho: float
    sd: tuple[float, ...]  # per aggregate, that node's noise sd on the released value (AVG: its sum)
    count_sd: tuple[float, ...]  # per aggregate, AVG: sd of its count; else 0
    half_width: tuple[float, ...]  # per aggregate, that node's 95% half-width (AVG: of its sum)
    threshold: int | None  # node-level suppression threshold on the node's noisy count
    threshold_kind: str  # "unit" or "row"
    refusal: tuple[str, str] | None = None
    threshold_noise: ThresholdNoise | None = None  # the noise on the node's threshold count


@dataclass(frozen=True)
class AggregateExplanation:
    index: int
    kind: str
    sd: float  # the combined figure's noise sd (AVG: of the combined sum)
    count_sd: float  # AVG: the combined count's noise sd
    half_width: float | None  # combined 95% half-width; None for AVG (it depends on the count)


@dataclass(frozen=True)
class Explanation:
    aggregates: tuple[AggregateExplanation, ...]
    nodes: tuple[NodeExplanation, ...]
    # Aggregates that are a union COUNT(DISTINCT) across nodes, noised once at the coordinator, and
    # the threshold on the noisy union count (privacy/distinct.py).
    union: tuple[int, ...] = ()
    union_threshold: int | None = None
    # The one suppression decision on the summed noisy count (privacy/suppression.py), over the
    # nodes that would answer under DP: suppress a group whose sum is below ``threshold``.
    threshold: int | None = None
    threshold_kind: str = ""


def explain_node(query: NodeQuery) -> NodeExplanation:
    """The noise one node would add, from its public metadata alone."""
    n = len(query.aggregates)
    if query.refusal is not None:
        return NodeExplanation(
            query.node, 0.0, 0.0, (0.0,) * n, (0.0,) * n, (0.0,) * n, None, "", query.refusal
        )
    if query.epsilon is None and query.rho is None:
        return NodeExplanation(
            query.node, 0.0, 0.0, (0.0,) * n, (0.0,) * n, (0.0,) * n, query.min_group_size, "unit"
        )
    noise = plan_query(
        query.aggregates,
        query.max_rows_per_unit,
        epsilon=query.epsilon,
        rho=query.rho,
        n_groups=query.n_groups,
        diagnostics=query.diagnostics,
    )
    columns = noise.figures.columns
    count_sd = tuple((spec.sd if (spec := noise.figures.avg_count(i)) is not None else 0.0) for i in range(n))
    threshold = noise.figures.threshold
    per_unit = threshold.max_rows_per_unit if threshold.kind == "count" else 1
    return NodeExplanation(
        node=query.node,
        epsilon=noise.cost.epsilon,
        rho=noise.cost.rho if not noise.cost.pure else 0.0,
        sd=tuple(c.sd for c in columns),
        count_sd=count_sd,
        half_width=tuple(half_width(c) for c in columns),
        threshold=threshold_for(query.min_group_size, threshold),
        threshold_kind="row" if threshold.kind == "count" else "unit",
        threshold_noise=ThresholdNoise(threshold.mechanism, threshold.scale, per_unit),
    )


def explain(queries: Sequence[NodeQuery]) -> Explanation:
    """Per aggregate, the noise of the combined figure over the nodes that would answer.

    Noise variances add over nodes. One node: its own exact interval; several: z sigma, the
    normal approximation the coordinator uses for the combined interval (coordinator/combine.py).
    """
    nodes = tuple(explain_node(q) for q in queries)
    answering = [e for e in nodes if e.refusal is None]
    if not queries:
        raise PrivacyError("unknown_dataset", "no node serves this dataset")
    kinds = [k for k, _ in queries[0].aggregates]
    out = []
    for i, kind in enumerate(kinds):
        var = sum(e.sd[i] ** 2 for e in answering)
        count_var = sum(e.count_sd[i] ** 2 for e in answering)
        sd = math.sqrt(var)
        if kind == "avg":
            width = None
        elif len(answering) == 1:
            width = answering[0].half_width[i]
        else:
            width = Z95 * sd
        out.append(AggregateExplanation(i, kind, sd, math.sqrt(count_var), width))
    parts = [e.threshold_noise for e in answering if e.threshold_noise is not None]
    if not parts:
        return Explanation(tuple(out), nodes)
    sizes = [q.min_group_size for q, e in zip(queries, nodes, strict=True) if e.refusal is None]
    kind = "row" if any(e.threshold_kind == "row" for e in answering if e.threshold_noise) else "unit"
    return Explanation(
        tuple(out), nodes, threshold=combined_threshold(max(sizes), parts), threshold_kind=kind
    )


# --------------------------------------------------------------------------- accuracy


def epsilon_for_accuracy(width_at: Callable[[float], float | None], target: float, cap: float) -> float:
    """The smallest epsilon (to 4 significant digits, rounded up) whose combined 95% half-width,
    ``width_at(epsilon)``, is at most ``target``.

    The half-width falls as epsilon grows, so a bisection finds it. Refused with
    ``accuracy_unreachable`` when even ``cap`` (the smallest per-query cap among the nodes) does
    not reach ``target``, and with ``accuracy`` when the figure has no fixed half-width (an AVG).
    """
    if (
        not isinstance(target, int | float)
        or isinstance(target, bool)
        or not math.isfinite(target)
        or target <= 0
    ):
        raise PrivacyError("accuracy", f"accuracy must be a 95% half-width > 0, got {target!r}")

    def width(eps: float) -> float:
        result = width_at(eps)
        if result is None:
            raise PrivacyError(
                "accuracy", "accuracy= needs a COUNT or SUM: an AVG's interval depends on its count"
            )
        return result

    reached = width(cap)
    if reached > target:
        raise PrivacyError(
            "accuracy_unreachable",
            f"a 95% half-width of {target:g} needs more than the per-query cap epsilon {cap:g} "
            f"(at the cap: +-{reached:.4g})",
        )
    low, high = max(cap * 1e-6, EPSILON_FLOOR), cap
    for _ in range(_SEARCH_STEPS):
        if high / low < 1 + 1e-5:
            break
        mid = math.sqrt(low * high)
        if width(mid) <= target:
            high = mid
        else:
            low = mid
    # Round up to 4 significant digits; rounding up only narrows the interval.
    digits = 3 - math.floor(math.log10(high))
    rounded = math.ceil(high * 10**digits) / 10**digits
    return max(min(rounded, cap), EPSILON_FLOOR)


# --------------------------------------------------------------------------- union COUNT(DISTINCT)


@dataclass(frozen=True)
class UnionParty:
    """One node's part in a union COUNT(DISTINCT unit) across nodes (privacy/distinct.py)."""

    node: str
    epsilon: float | None  # None: an exact release
    max_rows_per_unit: int
    n_groups: int
    min_group_size: int
    refusal: tuple[str, str] | None = None


@dataclass(frozen=True)
class UnionExplanation:
    sd: float
    half_width: float
    threshold: int  # on the noisy union count itself
    costs: dict[str, float]  # epsilon each party charges for its part


def explain_union(parties: Sequence[UnionParty]) -> UnionExplanation:
    """The one noise the coordinator adds to union counts: discrete Laplace at the smallest epsilon any
    party charges, for the largest number of groups one unit moves (coordinator/distinct.py)."""
    answering = [p for p in parties if p.refusal is None]
    if not answering:
        raise PrivacyError("unknown_dataset", "no node would take part in the union")
    costs = {
        p.node: union_cost(p.epsilon, p.max_rows_per_unit, p.n_groups).epsilon if p.epsilon else 0.0
        for p in answering
    }
    size = max(p.min_group_size for p in answering)
    charged = [c for c in costs.values() if c > 0]
    if not charged:
        return UnionExplanation(0.0, 0.0, size, costs)
    moved = max(groups_per_unit(p.max_rows_per_unit, p.n_groups) for p in answering)
    noise = union_noise(min(charged), moved)
    threshold = combined_threshold(size, [ThresholdNoise("laplace", noise.scale, 1)])
    return UnionExplanation(noise.sd, half_width(noise), threshold, costs)
