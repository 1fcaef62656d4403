"""Parse the analyst's SQL subset into a declarative job spec.

Accepted: ``SELECT <group columns>, COUNT(*), COUNT(DISTINCT unit), SUM(col), AVG(col)
FROM [node.]dataset [WHERE ...] [GROUP BY <columns>]``. A SUM or AVG may clamp its column tighter
than the declared bounds: ``SUM(LEAST(GREATEST(amount, 0), 50000))``. Across nodes COUNT(DISTINCT
unit) counts each entity once (the union, docs/distinct.md); ``COUNT_DISTINCT_PER_NODE(unit)`` asks
for the sum of each node's own distinct count instead. The text is parsed with sqlglot and never
leaves the analyst's machine: only the resulting ``QuerySpec`` message is sent. Whether a column
exists, may be grouped, or a value is in its domain is decided by each node against its own schema.
"""

from __future__ import annotations

from typing import cast

from sqlglot import exp, parse
from sqlglot.errors import ParseError, TokenError

from federation.postprocess import PostProcessing, post_processing
from protocols import federation_pb2 as pb
from protocols.errors import FederationError, QueryError
from protocols.spec_limits import (
    EXPRESSION_TOO_DEEP,
    IN_LIST_TOO_LONG,
    MAX_FILTER_DEPTH,
    MAX_IN_LIST_VALUES,
    check_spec,
)

MAX_SQL_CHARS = 20_000
# The sum of each node's own COUNT(DISTINCT unit): a unit at k nodes counts k times.
PER_NODE = "COUNT_DISTINCT_PER_NODE"

_COMPARE = {
    exp.EQ: pb.EQ,
    exp.NEQ: pb.NE,
    exp.LT: pb.LT,
    exp.LTE: pb.LE,
    exp.GT: pb.GT,
    exp.GTE: pb.GE,
}
# Flip the operator when the literal stands on the left: 2023 < year  ==  year > 2023.
_FLIP = {pb.EQ: pb.EQ, pb.NE: pb.NE, pb.LT: pb.GT, pb.LE: pb.GE, pb.GT: pb.LT, pb.GE: pb.LE}

SUPPORTED_SELECT = (
    "supported: group columns or keys (FLOOR(col / w) * w, WIDTH_BUCKET(col, lo, hi, n), "
    "DATE_TRUNC('year'|'quarter'|'month', date), EXTRACT(YEAR|QUARTER|MONTH FROM date)), COUNT(*), "
    f"COUNT(DISTINCT unit), {PER_NODE}(unit), SUM, AVG, VARIANCE, STDDEV, MEDIAN and PERCENTILE_CONT(q) WITHIN GROUP "
    "(ORDER BY col) of a numeric column"
)
_STATISTICS: dict[type[exp.Expression], tuple[pb.AggregateFunction, str]] = {
    exp.Variance: (pb.VARIANCE, "VARIANCE"),  # VARIANCE and VAR_SAMP
    exp.Stddev: (pb.STDDEV, "STDDEV"),
    exp.StddevSamp: (pb.STDDEV, "STDDEV"),
}

_UNSUPPORTED_CLAUSES = {
    "joins": "JOIN",
    "offset": "OFFSET",
    "with_": "WITH",
    "distinct": "SELECT DISTINCT",
    "qualify": "QUALIFY",
    "windows": "WINDOW",
}


def _column_name(node: exp.Expression, where: str) -> str:
    if isinstance(node, exp.Paren):
        return _column_name(node.this, where)
    if not isinstance(node, exp.Column):
        raise QueryError("unsupported_expression", f"{where}: expected a column name, got '{node.sql()}'")
    if node.table:
        raise QueryError(
            "unsupported_expression", f"{where}: write the column without a table prefix: '{node.name}'"
        )
    return node.name.lower()


def _number(text: str, where: str) -> pb.Value:
    """A numeric literal as an int64 or a double; the sign is part of ``text``."""
    try:
        number = int(text)
    except ValueError:
        try:
            return pb.Value(real=float(text))
        except ValueError:
            raise QueryError("malformed_sql", f"{where}: '{text}' is not a number") from None
    if not -(2**63) <= number < 2**63:
        raise QueryError("malformed_sql", f"{where}: number {text} is out of range")
    return pb.Value(integer=number)


def literal_value(node: exp.Expression, where: str) -> pb.Value:
    """Turn a SQL literal into a wire ``Value``; anything else is refused."""
    if isinstance(node, exp.Paren):
        return literal_value(node.this, where)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        # Range-check after negating, so the smallest int64 is accepted.
        return _number("-" + node.this.this, where)
    if isinstance(node, exp.Boolean):
        return pb.Value(boolean=bool(node.this))
    if isinstance(node, exp.Literal):
        return pb.Value(text=node.this) if node.is_string else _number(node.this, where)
    raise QueryError("unsupported_expression", f"{where}: expected a literal value, got '{node.sql()}'")


def _filter(node: exp.Expression, depth: int = 1) -> pb.Filter:
    # Refused while reading, before any message is built: the protobuf runtime itself fails on
    # nesting near its decoder limit (protocols/spec_limits.py).
    if depth > MAX_FILTER_DEPTH:
        raise QueryError(
            EXPRESSION_TOO_DEEP, f"WHERE nests NOT, AND and OR more than {MAX_FILTER_DEPTH} levels deep"
        )
    if isinstance(node, exp.Paren):
        return _filter(node.this, depth)
    if isinstance(node, exp.And | exp.Or):
        items = [_filter(cast(exp.Expression, part), depth + 1) for part in node.flatten()]
        group = pb.FilterList(items=items)
        return pb.Filter(all_of=group) if isinstance(node, exp.And) else pb.Filter(any_of=group)
    if isinstance(node, exp.Not):
        inner = node.this.this if isinstance(node.this, exp.Paren) else node.this
        if isinstance(inner, exp.In):
            f = _filter(inner, depth)
            f.in_list.negated = not f.in_list.negated
            return f
        return pb.Filter(negate=_filter(node.this, depth + 1))
    for kind, op in _COMPARE.items():
        if isinstance(node, kind):
            left, right = node.this, node.expression
            if isinstance(right, exp.Column | exp.Paren) and not isinstance(left, exp.Column):
                left, right, op = right, left, _FLIP[op]
            column = _column_name(left, "WHERE")
            return pb.Filter(compare=pb.Comparison(column=column, op=op, value=literal_value(right, "WHERE")))
    if isinstance(node, exp.In):
        if node.args.get("query") is not None:
            raise QueryError("unsupported_expression", "WHERE: subqueries are not allowed in IN (...)")
        column = _column_name(node.this, "WHERE")
        if len(node.expressions) > MAX_IN_LIST_VALUES:
            raise QueryError(
                IN_LIST_TOO_LONG,
                f"WHERE: the IN list for '{column}' has more than {MAX_IN_LIST_VALUES} values",
            )
        values = [literal_value(v, "WHERE") for v in node.expressions]
        if not values:
            raise QueryError("malformed_sql", f"WHERE: IN list for '{column}' is empty")
        return pb.Filter(in_list=pb.InList(column=column, values=values))
    if isinstance(node, exp.Between):
        column = _column_name(node.this, "WHERE")
        return pb.Filter(
            between=pb.Between(
                column=column,
                low=literal_value(node.args["low"], "WHERE"),
                high=literal_value(node.args["high"], "WHERE"),
            )
        )
    raise QueryError(
        "unsupported_expression",
        f"WHERE: only comparisons, IN, BETWEEN, AND, OR and NOT are allowed, not '{node.sql()}'",
    )


def _bound(node: exp.Expression, where: str) -> float:
    value = literal_value(node, where)
    if value.WhichOneof("kind") not in ("integer", "real"):
        raise QueryError("malformed_sql", f"{where}: a clamping bound must be a number, not '{node.sql()}'")
    return float(getattr(value, value.WhichOneof("kind")))


def _clamp(node: exp.Expression, where: str) -> tuple[exp.Expression, pb.ClampBounds]:
    """Peel ``LEAST(GREATEST(col, lo), hi)`` (either order, either alone) off an aggregate's argument."""
    bounds = pb.ClampBounds()
    for _ in range(2):
        while isinstance(node, exp.Paren):
            node = node.this
        if not isinstance(node, exp.Least | exp.Greatest):
            break
        side = "upper" if isinstance(node, exp.Least) else "lower"
        if bounds.HasField(side) or len(node.expressions) != 1:
            raise QueryError(
                "unsupported_expression",
                f"{where}: clamp with LEAST(GREATEST(column, lower), upper), not '{node.sql()}'",
            )
        setattr(bounds, side, _bound(node.expressions[0], where))
        node = node.this
    if bounds.HasField("lower") and bounds.HasField("upper") and bounds.lower > bounds.upper:
        raise QueryError("malformed_sql", f"{where}: the clamping lower bound is above the upper bound")
    return node, bounds


def _aggregate(node: exp.Expression, alias: str) -> pb.Aggregate:
    if isinstance(node, exp.Count):
        arg = node.this
        if isinstance(arg, exp.Star):
            return pb.Aggregate(function=pb.COUNT, alias=alias or "count")
        if isinstance(arg, exp.Distinct) and len(arg.expressions) == 1:
            column = _column_name(arg.expressions[0], "COUNT(DISTINCT ...)")
            return pb.Aggregate(
                function=pb.COUNT_DISTINCT, column=column, alias=alias or f"distinct_{column}"
            )
        raise QueryError(
            "unsupported_aggregate",
            f"SELECT: only COUNT(*) and COUNT(DISTINCT <privacy unit>) are allowed, not '{node.sql()}'",
        )
    if isinstance(node, exp.Anonymous) and str(node.this).upper() == PER_NODE:
        if len(node.expressions) != 1:
            raise QueryError(
                "unsupported_aggregate", f"SELECT: {PER_NODE} takes one column, the privacy unit"
            )
        column = _column_name(node.expressions[0], f"{PER_NODE}(...)")
        return pb.Aggregate(
            function=pb.COUNT_DISTINCT, column=column, alias=alias or f"distinct_{column}", per_node=True
        )
    if isinstance(node, exp.Sum | exp.Avg):
        where = f"SELECT {node.key.upper()}(...)"
        inner, bounds = _clamp(node.this, where)
        column = _column_name(inner, where)
        function = pb.SUM if isinstance(node, exp.Sum) else pb.AVG
        aggregate = pb.Aggregate(function=function, column=column, alias=alias or f"{node.key}_{column}")
        if bounds.HasField("lower") or bounds.HasField("upper"):
            aggregate.bounds.CopyFrom(bounds)
        return aggregate
    for kind, (statistic, name) in _STATISTICS.items():
        if isinstance(node, kind):
            return _with_bounds(node.this, f"SELECT {name}(...)", statistic, alias, name.lower())
    if isinstance(node, exp.Median):
        aggregate = _with_bounds(node.this, "SELECT MEDIAN(...)", pb.PERCENTILE, alias, "median")
        aggregate.quantile = 0.5
        return aggregate
    if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont):
        return _percentile(node, alias)
    raise QueryError("unsupported_aggregate", f"SELECT: '{node.sql()}' is not allowed; {SUPPORTED_SELECT}")


def _with_bounds(
    argument: exp.Expression, where: str, function: pb.AggregateFunction, alias: str, prefix: str
) -> pb.Aggregate:
    """An aggregate of one numeric column, optionally clamped tighter: ``LEAST(GREATEST(col, lo), hi)``."""
    inner, bounds = _clamp(argument, where)
    column = _column_name(inner, where)
    aggregate = pb.Aggregate(function=function, column=column, alias=alias or f"{prefix}_{column}")
    if bounds.HasField("lower") or bounds.HasField("upper"):
        aggregate.bounds.CopyFrom(bounds)
    return aggregate


def _percentile(node: exp.WithinGroup, alias: str) -> pb.Aggregate:
    """``PERCENTILE_CONT(q) WITHIN GROUP (ORDER BY col)``, q a number in [0, 1]."""
    value = literal_value(node.this.this, "PERCENTILE_CONT(...)")
    q = value.integer if value.WhichOneof("kind") == "integer" else value.real
    if value.WhichOneof("kind") not in ("integer", "real") or not 0 <= q <= 1:
        raise QueryError("malformed_sql", "PERCENTILE_CONT(q): q must be a number between 0 and 1")
    order = node.expression
    items = order.expressions if isinstance(order, exp.Order) else []
    if len(items) != 1 or items[0].args.get("desc"):
        raise QueryError(
            "unsupported_expression",
            "PERCENTILE_CONT(q) needs WITHIN GROUP (ORDER BY <numeric column>), ascending",
        )
    label = f"p{round(q * 100, 4):g}".replace(".", "_")
    where = "PERCENTILE_CONT(...) WITHIN GROUP (ORDER BY ...)"
    aggregate = _with_bounds(items[0].this, where, pb.PERCENTILE, alias, label)
    aggregate.quantile = float(q)
    return aggregate


_DATE_FUNCTIONS: dict[type[exp.Expression], str] = {
    exp.Year: "year",
    exp.Quarter: "quarter",
    exp.Month: "month",
}


def _number_arg(node: exp.Expression | None, where: str, whole: bool = False) -> float:
    value = literal_value(node, where) if node is not None else pb.Value()
    kind = value.WhichOneof("kind")
    if kind not in ("integer", "real") or (whole and kind != "integer"):
        raise QueryError("malformed_sql", f"{where}: expected {'a whole number' if whole else 'a number'}")
    return float(getattr(value, kind))


def _date_part(node: exp.Expression | None, where: str) -> str:
    text = node.name if isinstance(node, exp.Literal | exp.Var | exp.Column) else ""
    part = text.lower()
    if part not in ("year", "quarter", "month"):
        raise QueryError("unsupported_expression", f"{where}: use 'year', 'quarter' or 'month', not '{text}'")
    return part


def derived_key(node: exp.Expression) -> pb.DerivedKey | None:
    """A histogram bin or date part over one column, or ``None`` when ``node`` is neither.

    FLOOR(col / w) * w (the bin's lower edge), FLOOR(col / w) (its number), FLOOR(col),
    WIDTH_BUCKET(col, low, high, n), DATE_TRUNC('year'|'quarter'|'month', col) and
    EXTRACT(YEAR|QUARTER|MONTH FROM col) (or YEAR(col), QUARTER(col), MONTH(col)).
    """
    while isinstance(node, exp.Paren):
        node = node.this
    edge = isinstance(node, exp.Mul) and isinstance(node.this, exp.Floor)
    floor = node.this if edge else node
    if isinstance(floor, exp.Floor) and floor.args.get("decimals") is None:
        inner = floor.this
        while isinstance(inner, exp.Paren):
            inner = inner.this
        if isinstance(inner, exp.Div):
            column = _column_name(inner.this, "FLOOR(col / w)")
            width = _number_arg(inner.expression, "FLOOR(col / w)")
        else:
            column, width = _column_name(inner, "FLOOR(col)"), 1.0
        if edge and _number_arg(node.expression, "FLOOR(col / w) * w") != width:
            raise QueryError("unsupported_expression", "FLOOR(col / w) * w: multiply by the same w")
        part = "" if edge or width == 1.0 else "index"
        return pb.DerivedKey(column=column, transform="floor", width=width, part=part)
    if isinstance(node, exp.WidthBucket):
        where = "WIDTH_BUCKET(col, low, high, n)"
        return pb.DerivedKey(
            column=_column_name(node.this, where),
            transform="width_bucket",
            low=_number_arg(node.args.get("min_value"), where),
            high=_number_arg(node.args.get("max_value"), where),
            buckets=int(_number_arg(node.args.get("num_buckets"), where, whole=True)),
        )
    if isinstance(node, exp.DateTrunc | exp.TimestampTrunc):
        where = "DATE_TRUNC(part, col)"
        part = _date_part(node.args.get("unit"), where)
        return pb.DerivedKey(column=_column_name(node.this, where), transform="date_trunc", part=part)
    if isinstance(node, exp.Extract):
        where = "EXTRACT(part FROM col)"
        part = _date_part(node.this, where)
        return pb.DerivedKey(column=_column_name(node.expression, where), transform="extract", part=part)
    for kind, part in _DATE_FUNCTIONS.items():
        if type(node) is kind:
            return pb.DerivedKey(
                column=_column_name(node.this, f"{part.upper()}(col)"), transform="extract", part=part
            )
    return None


def key_text(key: pb.DerivedKey) -> str:
    """The SQL a derived key was written as (for messages)."""
    if key.transform == "floor":
        return f"FLOOR({key.column} / {key.width:g})" + ("" if key.part == "index" else f" * {key.width:g}")
    if key.transform == "width_bucket":
        return f"WIDTH_BUCKET({key.column}, {key.low:g}, {key.high:g}, {key.buckets})"
    if key.transform == "date_trunc":
        return f"DATE_TRUNC('{key.part}', {key.column})"
    return f"EXTRACT({key.part.upper()} FROM {key.column})"


def _default_name(key: pb.DerivedKey) -> str:
    if key.transform in ("date_trunc", "extract"):
        return f"{key.column}_{key.part}"
    return f"{key.column}_{'bucket' if key.transform == 'width_bucket' else 'bin'}"


def same_key(a: pb.DerivedKey, b: pb.DerivedKey) -> bool:
    left, right = pb.DerivedKey(), pb.DerivedKey()
    left.CopyFrom(a)
    right.CopyFrom(b)
    left.alias = right.alias = ""
    return left.SerializeToString(deterministic=True) == right.SerializeToString(deterministic=True)


def _selected_keys(items: list[exp.Expression]) -> dict[int, tuple[str, pb.DerivedKey | None]]:
    """SELECT items that are group keys, by 1-based position: (output name, derived key or None)."""
    out: dict[int, tuple[str, pb.DerivedKey | None]] = {}
    for position, item in enumerate(items, start=1):
        alias = item.alias.lower() if isinstance(item, exp.Alias) else ""
        node = item.this if isinstance(item, exp.Alias) else item
        if isinstance(node, exp.Star):
            raise QueryError("raw_rows", "SELECT * would return raw rows; select aggregates instead")
        if isinstance(node, exp.Column):
            column = _column_name(node, "SELECT")
            if alias and alias != column:
                raise QueryError(
                    "unsupported_expression", f"SELECT: a group column keeps its name: '{column}'"
                )
            out[position] = (column, None)
            continue
        key = derived_key(node)
        if key is not None:
            key.alias = alias or _default_name(key)
            out[position] = (key.alias, key)
    return out


def _group_keys(
    items: list[exp.Expression], selected: dict[int, tuple[str, pb.DerivedKey | None]]
) -> list[tuple[str, pb.DerivedKey | None]]:
    """GROUP BY items as (name, derived key or None): a column, a SELECT key's name or position,
    or a derived key written out (matched to the SELECT item that computes the same key)."""
    by_name = {name: key for name, key in selected.values() if key is not None}
    out: list[tuple[str, pb.DerivedKey | None]] = []
    for item in items:
        if isinstance(item, exp.Literal) and not item.is_string:
            position = int(_number_arg(item, "GROUP BY position", whole=True))
            if position not in selected:
                raise QueryError(
                    "unsupported_expression",
                    f"GROUP BY {position}: SELECT item {position} is not a group key; {SUPPORTED_SELECT}",
                )
            out.append(selected[position])
            continue
        if isinstance(item, exp.Column) and item.name.lower() in by_name and not item.table:
            out.append((item.name.lower(), by_name[item.name.lower()]))
            continue
        key = derived_key(item)
        if key is None:
            out.append((_group_column(item), None))
            continue
        match = next((k for k in by_name.values() if k is not None and same_key(k, key)), None)
        if match is None:
            key.alias = _default_name(key)
            match = key
        out.append((match.alias, match))
    return out


def _group_column(node: exp.Expression) -> str:
    inner = node.this if isinstance(node, exp.Paren) else node
    if isinstance(inner, exp.Column):
        return _column_name(inner, "GROUP BY")
    raise QueryError(
        "unsupported_expression",
        f"GROUP BY '{node.sql()}': group by a category column or a key; {SUPPORTED_SELECT}",
    )


def parse_query(sql: str) -> pb.QuerySpec:
    """Parse ``sql`` into a ``QuerySpec``; raise ``QueryError`` naming the rule on anything else.

    HAVING, ORDER BY and LIMIT are checked but are not part of the spec: the SDK applies them to
    the released figures (``parse_with_post``)."""
    return parse_with_post(sql)[0]


def parse_with_post(sql: str) -> tuple[pb.QuerySpec, PostProcessing]:
    """The job spec nodes receive, and the HAVING / ORDER BY / LIMIT the SDK applies afterwards."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryError("malformed_sql", "the query is empty")
    if len(sql) > MAX_SQL_CHARS:
        raise QueryError(
            "oversized_request", f"the query is {len(sql)} characters; the limit is {MAX_SQL_CHARS}"
        )
    try:
        statements = [s for s in parse(sql) if s is not None]
    except (ParseError, TokenError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise QueryError("malformed_sql", f"cannot parse the query: {first}") from None
    except RecursionError:
        raise QueryError(EXPRESSION_TOO_DEEP, "the query is nested too deeply") from None
    if len(statements) != 1:
        raise QueryError("malformed_sql", "exactly one SELECT statement is allowed")
    tree = statements[0]
    if not isinstance(tree, exp.Select):
        raise QueryError(
            "malformed_sql", f"expected one SELECT statement, could not read '{sql.strip()[:60]}' as one"
        )
    for arg, label in _UNSUPPORTED_CLAUSES.items():
        if tree.args.get(arg):
            raise QueryError("unsupported_clause", f"{label} is not supported")

    source = tree.args.get("from_") or tree.args.get("from")
    if source is None or not isinstance(source.this, exp.Table):
        raise QueryError("malformed_sql", "FROM must name one dataset, e.g. FROM declarations")
    table: exp.Table = source.this
    if not isinstance(table.this, exp.Identifier) or not table.name or table.this.quoted:
        raise QueryError("malformed_sql", f"FROM '{table.sql()}': name a dataset, e.g. FROM declarations")
    if table.catalog:
        raise QueryError("malformed_sql", f"FROM '{table.sql()}': use dataset or node.dataset")
    spec = pb.QuerySpec(dataset=table.name.lower(), node=(table.db or "").lower())

    selected = _selected_keys(tree.expressions)
    group = tree.args.get("group")
    group_by = _group_keys(group.expressions if group else [], selected)
    names = [name for name, _ in group_by]
    if len(set(names)) != len(names):
        raise QueryError("malformed_sql", "GROUP BY names a column or key twice")
    spec.group_by.extend(names)
    spec.derived.extend(key for _, key in group_by if key is not None)
    for position, (name, key) in selected.items():
        if name not in names:
            shown = key_text(key) if key is not None else f"column '{name}'"
            raise QueryError(
                "raw_rows",
                f"SELECT item {position}: {shown} is not in GROUP BY; raw values never leave a node",
            )

    seen_aliases: set[str] = set()
    for item in tree.expressions:
        alias = item.alias if isinstance(item, exp.Alias) else ""
        node = item.this if isinstance(item, exp.Alias) else item
        if isinstance(node, exp.Column) or derived_key(node) is not None:
            continue  # a group key, checked above
        aggregate = _aggregate(node, alias.lower())
        if aggregate.alias in seen_aliases or aggregate.alias in names:
            raise QueryError("malformed_sql", f"SELECT: output name '{aggregate.alias}' is used twice")
        seen_aliases.add(aggregate.alias)
        spec.aggregates.append(aggregate)
    if not spec.aggregates:
        raise QueryError("raw_rows", "SELECT needs at least one aggregate (COUNT, SUM or AVG)")

    where = tree.args.get("where")
    if where is not None:
        try:
            spec.filter.CopyFrom(_filter(where.this))
        except RecursionError:
            raise QueryError(EXPRESSION_TOO_DEEP, "WHERE is nested too deeply") from None
    try:
        check_spec(spec)
    except FederationError as exc:
        raise QueryError(exc.rule, exc.message) from None
    return spec, post_processing(tree, spec, _aggregate)
