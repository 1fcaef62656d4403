"""Check a job spec against the node's declared schema and policy, producing a checked plan.

Everything the analyst sends is untrusted. A spec that names an unknown or unexposed dataset, an
unknown column, an identifier, a value outside a public domain or an operation the policy does
not allow is refused with the rule that fired.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

from nodes.config import CategoryValue, Column, Dataset, NodeConfig
from nodes.derived import Derived, derive
from privacy.auto_bounds import check_quantile
from privacy.bounds import rows_per_unit, tightened
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.spec_limits import MAX_FILTER_TERMS, SpecTooLarge, check_spec

MAX_AGGREGATES = 20

_OPERATION = {
    pb.COUNT: "count",
    pb.COUNT_DISTINCT: "count_distinct",
    pb.SUM: "sum",
    pb.AVG: "avg",
    pb.VARIANCE: "variance",
    pb.STDDEV: "variance",  # the same release, post-processed
    pb.PERCENTILE: "percentile",
}
# Aggregates over one numeric column with declared bounds.
NUMERIC_FUNCTIONS = (pb.SUM, pb.AVG, pb.VARIANCE, pb.STDDEV, pb.PERCENTILE)
_NAMES = {pb.VARIANCE: "VARIANCE", pb.STDDEV: "STDDEV", pb.PERCENTILE: "PERCENTILE_CONT"}
_RANGE_OPS = {pb.LT, pb.LE, pb.GT, pb.GE}


class Refused(FederationError):
    """The node refuses the job; ``rule`` names the policy rule or schema check that fired."""


@dataclass(frozen=True)
class AggregatePlan:
    function: int
    column: Column | None
    alias: str
    bounds: tuple[float, float] | None = None  # numeric aggregates: the clamping bounds of this query
    quantile: float = 0.0  # PERCENTILE only
    bound_quantile: float = 0.0  # SUM/AVG: upper clamp chosen at this DP quantile (nodes/auto_bounds.py)


@dataclass(frozen=True)
class Plan:
    dataset: Dataset
    group_columns: tuple[Column, ...]
    aggregates: tuple[AggregatePlan, ...]
    filter: pb.Filter | None
    keys: tuple[tuple[CategoryValue, ...], ...]
    max_rows_per_unit: int = 0  # rows per unit this query truncates to; 0: the dataset's maximum
    derived: tuple[Derived | None, ...] = ()  # per group column: the derived key it computes, if any
    diagnostics: bool = True  # under DP, also release how much truncation and clamping changed

    @property
    def rows_per_unit(self) -> int:
        return self.max_rows_per_unit or self.dataset.max_rows_per_unit

    @property
    def tightened(self) -> bool:
        """Whether the query asks for tighter bounds or fewer rows per unit than declared."""
        return self.rows_per_unit < self.dataset.max_rows_per_unit or any(
            a.column is not None and a.bounds is not None and a.bounds != a.column.bounds
            for a in self.aggregates
        )


def python_value(value: pb.Value) -> CategoryValue | float | bool:
    kind = value.WhichOneof("kind")
    if kind is None:
        raise Refused("malformed_request", "a filter value is empty")
    return getattr(value, kind)


class Checker:
    def __init__(self, config: NodeConfig, dataset: Dataset) -> None:
        self.node = config.node_id
        self.dataset = dataset
        self.terms = 0

    def refuse(self, rule: str, message: str) -> Refused:
        return Refused(rule, f"{message} (dataset {self.dataset.name})", node=self.node)

    def column(self, name: str, use: str) -> Column:
        column = self.dataset.column(name)
        if column is None:
            known = ", ".join(sorted(c.name for c in self.dataset.columns.values() if c.kind != "identifier"))
            raise self.refuse("unknown_column", f"column '{name}' is not declared; known columns: {known}")
        if column.kind == "identifier" and use != "count_distinct":
            raise self.refuse(
                "identifier_column",
                f"column '{name}' is an identifier; identifiers are never grouped, filtered or output",
            )
        return column

    def value_for(self, column: Column, value: pb.Value, op: int = pb.EQ) -> CategoryValue | float:
        if value.WhichOneof("kind") is None:
            raise self.refuse("malformed_request", f"a filter value for '{column.name}' is empty")
        v = python_value(value)
        if isinstance(v, bool):
            v = int(v)
        if column.kind == "category":
            if op in _RANGE_OPS:
                numeric_domain = all(isinstance(d, int) for d in column.domain)
                if numeric_domain and not isinstance(v, int):
                    raise self.refuse(
                        "type_mismatch",
                        f"column '{column.name}' has whole numbers; compare it to a whole number",
                    )
                if not numeric_domain:
                    raise self.refuse(
                        "unsupported_filter",
                        f"column '{column.name}' is a text category; use =, <>, IN or NOT IN",
                    )
                return v
            numbers = all(isinstance(d, int) for d in column.domain)
            if numbers and isinstance(v, str) or not numbers and not isinstance(v, str):
                kind, example = (
                    ("whole numbers", column.domain[0]) if numbers else ("text", f"'{column.domain[0]}'")
                )
                raise self.refuse(
                    "type_mismatch",
                    f"column '{column.name}' holds {kind}; compare it to {kind}, e.g. {column.name} = {example}, "
                    f"not {v!r}",
                )
            if v not in column.domain:
                shown = ", ".join(repr(d) for d in column.domain[:12])
                more = " ..." if len(column.domain) > 12 else ""
                raise self.refuse(
                    "value_outside_domain",
                    f"value {v!r} is not in the public domain of column '{column.name}' ({shown}{more})",
                )
            return v
        if column.kind == "numeric":
            if not isinstance(v, int | float):
                raise self.refuse(
                    "type_mismatch", f"column '{column.name}' is numeric; compare it to a number"
                )
            return float(v)
        if column.kind == "date":
            if not isinstance(v, str):
                raise self.refuse("type_mismatch", f"column '{column.name}' is a date; use 'YYYY-MM-DD'")
            try:
                dt.date.fromisoformat(v)
            except ValueError:
                raise self.refuse(
                    "type_mismatch", f"'{v}' is not a date 'YYYY-MM-DD' for '{column.name}'"
                ) from None
            return v
        raise self.refuse("identifier_column", f"column '{column.name}' cannot be filtered")

    def filter(self, f: pb.Filter) -> None:
        self.terms += 1
        if self.terms > MAX_FILTER_TERMS:
            raise self.refuse("oversized_request", f"the filter has more than {MAX_FILTER_TERMS} terms")
        kind = f.WhichOneof("kind")
        if kind == "compare":
            if f.compare.op not in pb.CompareOp.values() or f.compare.op == pb.COMPARE_UNSPECIFIED:
                raise self.refuse("malformed_request", "a comparison has no operator")
            column = self.column(f.compare.column, "filter")
            self.value_for(column, f.compare.value, f.compare.op)
        elif kind == "in_list":
            column = self.column(f.in_list.column, "filter")
            if not f.in_list.values:
                raise self.refuse("malformed_request", f"the IN list for '{column.name}' is empty")
            for value in f.in_list.values:
                self.value_for(column, value)
        elif kind == "between":
            column = self.column(f.between.column, "filter")
            if column.kind == "category":
                self.value_for(column, f.between.low, pb.GE)
                self.value_for(column, f.between.high, pb.LE)
            else:
                self.value_for(column, f.between.low)
                self.value_for(column, f.between.high)
        elif kind in ("all_of", "any_of"):
            items = getattr(f, kind).items
            if not items:
                raise self.refuse("malformed_request", "an AND/OR has no terms")
            for item in items:
                self.filter(item)
        elif kind == "negate":
            self.filter(f.negate)
        else:
            raise self.refuse("malformed_request", "a filter term is empty")


def validate(spec: pb.QuerySpec, config: NodeConfig) -> Plan:
    """Return a checked plan for ``spec`` or raise ``Refused`` with the rule that fired."""
    try:
        check_spec(spec, config.node_id)  # depth, terms, list and name bounds: protocols/spec_limits.py
    except SpecTooLarge as exc:
        raise Refused(exc.rule, exc.message, node=config.node_id) from None
    dataset = config.datasets.get(spec.dataset)
    if dataset is None or not dataset.exposed:
        raise Refused(
            "dataset_not_exposed", f"dataset '{spec.dataset}' is not served here", node=config.node_id
        )
    check = Checker(config, dataset)
    policy = dataset.policy
    if not spec.aggregates:
        raise check.refuse("raw_rows", "a query needs at least one aggregate")
    if len(spec.aggregates) > MAX_AGGREGATES:
        raise check.refuse("oversized_request", f"more than {MAX_AGGREGATES} aggregates")

    groups: list[Column] = []
    derived: list[Derived | None] = []
    keyed = {d.alias: d for d in spec.derived}
    if len(keyed) != len(spec.derived) or not set(keyed) <= set(spec.group_by):
        raise check.refuse("malformed_request", "every derived group key needs its own name in GROUP BY")
    for name in spec.group_by:
        if name in keyed:
            source = check.column(keyed[name].column, "group")
            try:
                d = derive(keyed[name], source, policy.max_groups)
            except FederationError as exc:
                raise check.refuse(exc.rule, exc.message) from None
            # The grouping is named for its transform, so audit and differencing tell them apart.
            groups.append(Column(name=d.label, local=source.local, kind="category", domain=d.domain))
            derived.append(d)
            continue
        grouped = check.column(name, "group")
        if grouped.kind != "category":
            raise check.refuse(
                "not_groupable",
                f"column '{name}' is {grouped.kind}; only category columns with a public domain can be "
                "grouped, or a numeric or date column through FLOOR, WIDTH_BUCKET, DATE_TRUNC or EXTRACT",
            )
        groups.append(grouped)
        derived.append(None)
    if len({c.name for c in groups}) != len(groups):
        raise check.refuse("malformed_request", "GROUP BY names a column twice")

    aggregates: list[AggregatePlan] = []
    for agg in spec.aggregates:
        operation = _OPERATION.get(agg.function)
        if operation is None:
            raise check.refuse("malformed_request", "an aggregate has no function")
        if operation not in policy.operations:
            raise check.refuse(
                "operation_not_allowed",
                f"operation {operation.upper()} is not allowed by policy (allowed: {', '.join(policy.operations)})",
            )
        column: Column | None = None
        if agg.function == pb.COUNT_DISTINCT:
            column = check.column(agg.column, "count_distinct")
            if column.name != dataset.privacy_unit:
                raise check.refuse(
                    "unsupported_aggregate",
                    f"COUNT(DISTINCT ...) is only allowed on the privacy unit '{dataset.privacy_unit}'",
                )
        elif agg.function in NUMERIC_FUNCTIONS:
            column = check.column(agg.column, "aggregate")
            name = _NAMES.get(agg.function, operation.upper())
            if column.kind != "numeric":
                raise check.refuse(
                    "not_numeric", f"{name}({agg.column}) needs a numeric column with declared bounds"
                )
        bounds = (
            _clamping(check, agg, column)
            if column is not None and agg.function in NUMERIC_FUNCTIONS
            else None
        )
        if agg.HasField("bounds") and bounds is None:
            raise check.refuse("malformed_request", f"{operation.upper()} takes no clamping bounds")
        if agg.function == pb.PERCENTILE and not 0.0 <= agg.quantile <= 1.0:
            raise check.refuse("malformed_request", "PERCENTILE_CONT needs a fraction between 0 and 1")
        bound_q = _bound_quantile(check, agg)
        aggregates.append(
            AggregatePlan(
                function=agg.function,
                column=column,
                alias=agg.alias or operation,
                bounds=bounds,
                quantile=float(agg.quantile) if agg.function == pb.PERCENTILE else 0.0,
                bound_quantile=bound_q,
            )
        )

    cells = 1
    for column in groups:
        cells *= len(column.domain)
    if cells > policy.max_groups:
        raise check.refuse(
            "too_many_groups",
            f"the grouping has {cells} cells; the policy allows at most {policy.max_groups}",
        )

    if spec.HasField("filter"):
        check.filter(spec.filter)
    try:
        max_rows = rows_per_unit(dataset.max_rows_per_unit, int(spec.max_rows_per_unit))
    except FederationError as exc:
        raise check.refuse(exc.rule, exc.message) from None
    keys = tuple(itertools.product(*(c.domain for c in groups))) if groups else ((),)
    plan = Plan(
        dataset=dataset,
        group_columns=tuple(groups),
        aggregates=tuple(aggregates),
        filter=spec.filter if spec.HasField("filter") else None,
        keys=keys,
        max_rows_per_unit=max_rows,
        diagnostics=not spec.no_diagnostics,
        derived=tuple(derived),
    )
    dp = spec.privacy.epsilon > 0 or spec.privacy.rho > 0 or policy.dp_required
    if (plan.tightened or any(a.bound_quantile for a in plan.aggregates)) and not dp:
        # Exact releases of the same group at two clampings (or truncations) differ by the values
        # of the few rows in between: a way around min_group_size. Under DP the noise covers it.
        raise check.refuse(
            "bounds_need_dp",
            "tighter bounds or fewer rows per unit are only allowed with differential privacy",
        )
    return plan


def _bound_quantile(check: Checker, agg: pb.Aggregate) -> float:
    """A SUM/AVG's ``bound_quantile`` (0: none), checked: a fraction in (0, 1], without bounds."""
    if not agg.bound_quantile:
        return 0.0
    if agg.function not in (pb.SUM, pb.AVG):
        raise check.refuse("bound_quantile", "bounds chosen by a DP quantile apply to SUM and AVG only")
    if agg.HasField("bounds"):
        raise check.refuse(
            "bound_quantile", f"{agg.alias}: give clamping bounds or a bound quantile, not both"
        )
    try:
        return check_quantile(agg.bound_quantile)
    except FederationError as exc:
        raise check.refuse(exc.rule, f"{agg.alias}: {exc.message}") from None


def _clamping(check: Checker, agg: pb.Aggregate, column: Column) -> tuple[float, float]:
    """The clamping bounds of a SUM/AVG: the declared ones, tightened where the query asks."""
    declared = column.bounds or (0.0, 0.0)
    if not agg.HasField("bounds"):
        return declared
    lower = agg.bounds.lower if agg.bounds.HasField("lower") else None
    upper = agg.bounds.upper if agg.bounds.HasField("upper") else None
    try:
        return tightened(declared, lower, upper)
    except FederationError as exc:
        raise check.refuse(exc.rule, f"{agg.alias or column.name}: {exc.message}") from None
