"""Generate the node's own SQL for a checked plan, for DuckDB, PostgreSQL or Spark, with bound parameters.

Analyst text never reaches an engine: identifiers come from the operator's config (quoted), and
every value is a bound parameter. The query applies the release-path protections inside the
engine, close to the data:

* local codes are mapped to the shared vocabulary (a list lookup in DuckDB, ``CASE`` elsewhere),
  unmapped codes drop out;
* numeric values are clamped to the query's bounds (the declared ones, or tighter);
* rows per privacy unit are truncated to ``max_rows_per_unit`` (or the query's lower limit) after filtering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodes.config import Column, Dataset
from nodes.derived import derived_sql
from nodes.validate import AggregatePlan, Plan, python_value
from privacy.dp import variance_parts
from privacy.statistics import PERCENTILE_BINS
from protocols import federation_pb2 as pb

_OPS = {pb.EQ: "=", pb.NE: "<>", pb.LT: "<", pb.LE: "<=", pb.GT: ">", pb.GE: ">="}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class Dialect:
    name: str
    placeholder: str
    double: str
    premapped: bool = False  # file sources carry their shared-vocabulary columns from load time

    def table(self, dataset: Dataset) -> str:
        # A spark source reads a catalog table, or files registered under the node's own view name.
        if self.name == "postgres" or (self.name == "spark" and dataset.source.table):
            return ".".join(quote_ident(part) for part in dataset.source.table.split("."))
        return quote_ident(table_name(dataset))


DUCKDB = Dialect("duckdb", "?", "DOUBLE")
DUCKDB_PREMAPPED = Dialect("duckdb", "?", "DOUBLE", premapped=True)
POSTGRES = Dialect("postgres", "%s", "DOUBLE PRECISION")
# Written as DuckDB text, then rendered for Spark SQL with literals by nodes/spark_sql.py.
SPARK = Dialect("spark", "?", "DOUBLE")


def premapped_name(column: Column) -> str:
    """The load-time column holding ``column``'s shared-vocabulary values (see ``DataSources``)."""
    return f"__shared__{column.local}"


def table_name(dataset: Dataset) -> str:
    """The name under which a file source is registered in the node's DuckDB."""
    return f"ds_{dataset.name}"


@dataclass
class SqlBuilder:
    """Builds SQL text and its bound parameters in the order their placeholders appear."""

    dialect: Dialect
    params: list[Any] = field(default_factory=list)

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return self.dialect.placeholder

    def shared(self, column: Column) -> str:
        """The column as a shared-vocabulary expression."""
        local = quote_ident(column.local)
        if column.kind == "category" and column.codes and self.dialect.premapped:
            return quote_ident(premapped_name(column))
        if column.kind == "category" and column.codes:
            if self.dialect.name == "duckdb":
                return self.lookup(column)
            arms = []
            for value in column.domain:
                codes = column.local_codes_for(value)
                if not codes:
                    continue
                cast = f"CAST({local} AS TEXT)"
                listed = ", ".join(self.bind(str(code)) for code in codes)
                arms.append(f"WHEN {cast} IN ({listed}) THEN {self.bind(value)}")
            return f"(CASE {' '.join(arms)} END)" if arms else "NULL"
        if column.kind == "date":
            return f"CAST({local} AS DATE)"
        if column.kind == "numeric":
            return f"CAST({local} AS {self.dialect.double})"
        return local

    def lookup(self, column: Column) -> str:
        """DuckDB: the shared value at the local code's position in the list of codes; a code not
        in the list (or NULL) gives NULL, as the ``CASE`` of the other engines does. One lookup per
        row costs a quarter of a ``CASE`` that tries each value's codes in turn, which was most of
        a query's time over Parquet read in place (docs/benchmarks.md, "Where the time went")."""
        codes = list(column.codes)
        shared = ", ".join(self.bind(column.codes[code]) for code in codes)
        listed = ", ".join(self.bind(str(code)) for code in codes)
        local = f"CAST({quote_ident(column.local)} AS VARCHAR)"
        return f"[{shared}][list_position([{listed}], {local})]"

    def value(self, column: Column, value: pb.Value) -> str:
        v = python_value(value)
        if isinstance(v, bool):
            v = int(v)
        if column.kind == "date":
            return f"CAST({self.bind(v)} AS DATE)"
        if column.kind == "numeric":
            return f"CAST({self.bind(float(v))} AS {self.dialect.double})"
        return self.bind(v)

    def filter(self, f: pb.Filter, dataset: Dataset) -> str:
        kind = f.WhichOneof("kind")
        if kind == "compare":
            column = dataset.columns[f.compare.column]
            shared = self.shared(column)
            return f"{shared} {_OPS[f.compare.op]} {self.value(column, f.compare.value)}"
        if kind == "in_list":
            column = dataset.columns[f.in_list.column]
            # Placeholders are positional: bind in the order they appear in the text.
            shared = self.shared(column)
            listed = ", ".join(self.value(column, v) for v in f.in_list.values)
            negated = "NOT " if f.in_list.negated else ""
            return f"{shared} {negated}IN ({listed})"
        if kind == "between":
            column = dataset.columns[f.between.column]
            shared = self.shared(column)
            low, high = self.value(column, f.between.low), self.value(column, f.between.high)
            return f"{shared} BETWEEN {low} AND {high}"
        if kind in ("all_of", "any_of"):
            joiner = " AND " if kind == "all_of" else " OR "
            return "(" + joiner.join(self.filter(item, dataset) for item in getattr(f, kind).items) + ")"
        if kind == "negate":
            # Three-valued logic: an unmapped code makes a leaf NULL, and NOT NULL is still NULL,
            # so however many NOTs are stacked, such rows never match.
            return f"(NOT {self.filter(f.negate, dataset)})"
        raise ValueError("empty filter term")  # validate() refuses this first


@dataclass(frozen=True)
class BoundedRows:
    """The rows a plan aggregates over: filtered, mapped to the shared vocabulary, clamped, and
    (when asked) truncated to the plan's rows per unit. Columns: u, g0..gN, v0..vM (and, for
    diagnostics, x0..xM and rn)."""

    source: str  # a FROM item
    keep: list[str]  # conditions on it
    groups: list[str]
    numeric: dict[tuple[str, tuple[float, float]], str]  # (column, clamping bounds) -> clamped alias

    def value(self, agg: AggregatePlan) -> str | None:
        """The clamped alias an aggregate sums, if it sums one."""
        if agg.column is None or agg.column.kind != "numeric":
            return None
        return self.numeric.get(_clamp_key(agg))


def _clamp_key(agg: AggregatePlan) -> tuple[str, tuple[float, float]]:
    assert agg.column is not None
    return agg.column.name, agg.bounds or agg.column.bounds or (0.0, 0.0)


def bounded_rows(
    plan: Plan,
    b: SqlBuilder,
    truncate: bool = True,
    diagnostics: bool = False,
    carry: tuple[Column, ...] = (),
) -> BoundedRows:
    """The shared inner part of every query a node runs for ``plan`` (aggregates and unit lists).

    With ``diagnostics`` each clamped value gets a flag ``x<i>`` (1 when clamping moved it), and
    rows past the truncation are kept with their rank ``rn`` instead of being dropped.

    ``carry`` adds those columns' raw values as text (``w0``, ``w1``, ...) and breaks ties in the
    truncation order with them, so that which rows are kept no longer depends on the engine; the
    kept rows' (unit, group, value) columns, and so every aggregate, are the same either way.
    """
    dialect, ds = b.dialect, plan.dataset
    unit = quote_ident(ds.columns[ds.privacy_unit].local)
    select = [f"{unit} AS u"]
    for i, column in enumerate(plan.group_columns):
        d = plan.derived[i] if i < len(plan.derived) else None
        if d is not None:
            select.append(f"{derived_sql(d, b.shared(d.column), dialect.name, b.bind)} AS g{i}")
        else:
            select.append(f"{b.shared(column)} AS g{i}")
    numeric: dict[tuple[str, tuple[float, float]], str] = {}
    for agg in plan.aggregates:
        if agg.column is None or agg.column.kind != "numeric" or _clamp_key(agg) in numeric:
            continue
        alias = f"v{len(numeric)}"
        lo, hi = _clamp_key(agg)[1]
        raw = f"CAST({quote_ident(agg.column.local)} AS {dialect.double})"
        low, high = f"CAST({b.bind(lo)} AS {dialect.double})", f"CAST({b.bind(hi)} AS {dialect.double})"
        # A missing value stays missing: LEAST/GREATEST would turn NULL into a bound.
        select.append(
            f"CASE WHEN {raw} IS NULL THEN NULL ELSE LEAST(GREATEST({raw}, {low}), {high}) END AS {alias}"
        )
        if diagnostics:
            low, high = f"CAST({b.bind(lo)} AS {dialect.double})", f"CAST({b.bind(hi)} AS {dialect.double})"
            select.append(f"CASE WHEN {raw} < {low} OR {raw} > {high} THEN 1 ELSE 0 END AS x{len(numeric)}")
        numeric[_clamp_key(agg)] = alias
    text = "VARCHAR" if dialect.name == "duckdb" else "TEXT"
    for i, column in enumerate(carry):
        select.append(f"CAST({quote_ident(column.local)} AS {text}) AS w{i}")
    where = [f"{unit} IS NOT NULL"]
    if plan.filter is not None:
        where.append(b.filter(plan.filter, ds))
    base = f"SELECT {', '.join(select)} FROM {dialect.table(ds)} WHERE {' AND '.join(where)}"
    groups = [f"g{i}" for i in range(len(plan.group_columns))]
    keep = [f"{g} IS NOT NULL" for g in groups]
    if not truncate:
        return BoundedRows(f"({base}) AS base", keep, groups, numeric)
    # Which rows of a unit are kept must not depend on the analyst's choices: order by the
    # unit's own values, so the same data always gives the same bounded contribution.
    order = ", ".join(["u"] + [c.split(" AS ")[-1] for c in select[1:]])
    bounded = f"SELECT *, ROW_NUMBER() OVER (PARTITION BY u ORDER BY {order}) AS rn FROM ({base}) AS base"
    if not diagnostics:
        keep.insert(0, f"rn <= {b.bind(plan.rows_per_unit)}")
    return BoundedRows(f"({bounded}) AS bounded", keep, groups, numeric)


def diagnostics_sql(plan: Plan, dialect: Dialect, truncate: bool = True) -> tuple[str, list[Any]]:
    """``(sql, params)`` for the exact bounding figures of ``plan``, one row: the number of units
    truncation cut (a row past the limit that would otherwise count), then per SUM/AVG aggregate
    the number of kept values that clamping moved.

    Without ``truncate`` (no unit has more rows than the limit) nothing is cut: no window is needed
    and the first figure is 0.
    """
    b = SqlBuilder(dialect)
    rows = bounded_rows(plan, b, truncate=truncate, diagnostics=True)
    limit = int(plan.rows_per_unit)  # a validated whole number, not analyst text
    outer = [f"COUNT(DISTINCT CASE WHEN rn > {limit} THEN u END)" if truncate else "0"]
    for agg in plan.aggregates:
        if agg.function in (pb.SUM, pb.AVG):
            value = rows.value(agg)
            assert value is not None
            flag = f"x{value[1:]}"
            kept = f"CASE WHEN rn <= {limit} THEN {flag} ELSE 0 END" if truncate else flag
            outer.append(f"COALESCE(SUM({kept}), 0)")
    sql = f"SELECT {', '.join(outer)} FROM {rows.source}"
    if rows.keep:
        sql += f" WHERE {' AND '.join(rows.keep)}"
    return sql, b.params


def build_sql(
    plan: Plan, dialect: Dialect, truncate: bool = True, units: bool = True
) -> tuple[str, list[Any]]:
    """Return ``(sql, params)``. Output columns: g0..gN, n_rows, n_units, then per numeric aggregate:
    SUM/AVG s_i, c_i; VARIANCE/STDDEV s_i, c_i and q_i, the sum of squares about the middle of the
    bounds; PERCENTILE the row counts of ``PERCENTILE_BINS`` equal-width bins over the bounds.

    Without ``units`` the distinct-unit count (the costly part of most queries) is left out and
    ``n_units`` is NULL.
    """
    b = SqlBuilder(dialect)
    rows = bounded_rows(plan, b, truncate)
    outer = list(rows.groups) + [
        "COUNT(*) AS n_rows",
        "COUNT(DISTINCT u) AS n_units" if units else "NULL AS n_units",
    ]
    double = dialect.double
    # The outer SELECT's placeholders come before the inner ones in the text: bind them apart.
    ob = SqlBuilder(dialect)
    for i, agg in enumerate(plan.aggregates):
        v = rows.value(agg)
        if v is None:
            continue
        lo, hi = _clamp_key(agg)[1]
        if agg.function == pb.PERCENTILE:
            for j in range(PERCENTILE_BINS):
                low, span = ob.bind(lo), ob.bind(hi - lo)
                index = (
                    f"LEAST(FLOOR(({v} - CAST({low} AS {double})) * {PERCENTILE_BINS} "
                    f"/ CAST({span} AS {double})), {PERCENTILE_BINS - 1})"
                )
                outer.append(f"COUNT(CASE WHEN {index} = {j} THEN 1 END) AS p{i}_{j}")
            continue
        outer.append(f"SUM({v}) AS s{i}")
        outer.append(f"COUNT({v}) AS c{i}")
        if agg.function in (pb.VARIANCE, pb.STDDEV):
            c = variance_parts((lo, hi))[0]
            centred = [f"({v} - CAST({ob.bind(c)} AS {double}))" for _ in range(2)]
            outer.append(f"SUM({centred[0]} * {centred[1]}) AS q{i}")
    sql = f"SELECT {', '.join(outer)} FROM {rows.source}"
    if rows.keep:
        sql += f" WHERE {' AND '.join(rows.keep)}"
    if rows.groups:
        sql += f" GROUP BY {', '.join(rows.groups)}"
    return sql, ob.params + b.params
