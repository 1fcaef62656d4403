"""HAVING, ORDER BY and LIMIT, applied by the SDK to the released (noisy) figures.

They are post-processing of what the federation released: never sent to a node, never an extra
release, no budget. HAVING and ORDER BY may name an output column (a group key or an aggregate's
name), a SELECT position (ORDER BY 2), or an aggregate written as in SELECT (HAVING COUNT(*) > 10);
an aggregate that is not selected was not released, so it is refused. A suppressed figure is
missing (NULL): a comparison with it is not true, so HAVING drops its row, and ORDER BY puts it
last ascending and first descending, as PostgreSQL does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlglot import exp

from protocols import federation_pb2 as pb
from protocols.errors import QueryError

MAX_LIMIT = 1_000_000

_COMPARE: dict[type[exp.Expression], Callable[[Any, Any], Any]] = {
    exp.EQ: lambda a, b: a == b,
    exp.NEQ: lambda a, b: a != b,
    exp.LT: lambda a, b: a < b,
    exp.LTE: lambda a, b: a <= b,
    exp.GT: lambda a, b: a > b,
    exp.GTE: lambda a, b: a >= b,
}

Condition = Callable[[pd.DataFrame], pd.Series]


@dataclass
class PostProcessing:
    """What the SDK does to the combined answer, in SQL's order: HAVING, ORDER BY, LIMIT."""

    having: Condition | None = None
    order_by: list[tuple[str, bool]] = field(default_factory=list)  # (output column, descending)
    limit: int | None = None
    text: dict[str, str] = field(default_factory=dict)  # the clauses as written, for attrs

    def apply(self, df: pd.DataFrame) -> pd.DataFrame:
        attrs = dict(df.attrs)
        out = df
        if self.having is not None:
            keep = self.having(out).astype("boolean").fillna(False).astype(bool)
            out = out[keep.to_numpy()]
        if self.order_by:
            # Stable sorts from the last key to the first give a multi-key order with a NULLS rule each.
            for column, descending in reversed(self.order_by):
                out = out.sort_values(
                    column,
                    ascending=not descending,
                    na_position="first" if descending else "last",
                    kind="stable",
                )
        if self.limit is not None:
            out = out.head(self.limit)
        out = out.reset_index(drop=True)
        out.attrs = attrs
        if self.text:
            out.attrs["post_processing"] = dict(self.text)
        return out


class _Outputs:
    """The output columns a clause may refer to: names, positions, and selected aggregates."""

    def __init__(
        self, spec: pb.QuerySpec, items: list[exp.Expression], aggregate: Callable[..., pb.Aggregate]
    ):
        self.names = list(spec.group_by) + [a.alias for a in spec.aggregates]
        self.positions: dict[int, str] = {}
        self.aggregate = aggregate
        self.spec = spec
        aliases = iter(a.alias for a in spec.aggregates)
        groups = set(spec.group_by)
        derived = {d.alias for d in spec.derived}
        for position, item in enumerate(items, start=1):
            alias = item.alias.lower() if isinstance(item, exp.Alias) else ""
            node = item.this if isinstance(item, exp.Alias) else item
            if isinstance(node, exp.Column) and node.name.lower() in groups:
                self.positions[position] = node.name.lower()
            elif alias in derived:
                self.positions[position] = alias
            else:
                name = next((d.alias for d in spec.derived if not alias and _is_key(node, d)), None)
                self.positions[position] = name or next(aliases, "")

    def resolve(self, node: exp.Expression, clause: str) -> str:
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Literal) and not node.is_string and clause == "ORDER BY":
            position = int(node.this) if node.this.isdigit() else 0
            if position not in self.positions:
                raise QueryError(
                    "unsupported_clause", f"ORDER BY {node.this}: there is no output column {node.this}"
                )
            return self.positions[position]
        if isinstance(node, exp.Column) and not node.table and node.name.lower() in self.names:
            return node.name.lower()
        try:
            wanted = self.aggregate(node, "")
        except QueryError:
            raise QueryError(
                "unsupported_clause",
                f"{clause} '{node.sql()}': name an output column ({', '.join(self.names)}) or a selected aggregate",
            ) from None
        for agg in self.spec.aggregates:
            if _same_aggregate(agg, wanted):
                return agg.alias
        raise QueryError(
            "unsupported_clause",
            f"{clause} '{node.sql()}': only released figures can be filtered or sorted; add it to SELECT",
        )


def _is_key(node: exp.Expression, key: pb.DerivedKey) -> bool:
    from federation.query import derived_key, same_key

    found = derived_key(node)
    return found is not None and same_key(found, key)


def _same_aggregate(a: pb.Aggregate, b: pb.Aggregate) -> bool:
    left, right = pb.Aggregate(), pb.Aggregate()
    left.CopyFrom(a)
    right.CopyFrom(b)
    left.alias = right.alias = ""
    return left.SerializeToString(deterministic=True) == right.SerializeToString(deterministic=True)


def _operand(node: exp.Expression, outputs: _Outputs) -> Callable[[pd.DataFrame], Any]:
    from federation.query import literal_value

    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Literal | exp.Neg | exp.Boolean):
        value = literal_value(node, "HAVING")
        constant = getattr(value, value.WhichOneof("kind") or "text")
        return lambda df: constant
    column = outputs.resolve(node, "HAVING")
    return lambda df: df[column]


def _condition(node: exp.Expression, outputs: _Outputs) -> Condition:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And | exp.Or):
        parts = [_condition(p, outputs) for p in node.flatten() if isinstance(p, exp.Expression)]
        both = isinstance(node, exp.And)

        def combined(df: pd.DataFrame) -> pd.Series:
            values = [p(df).astype("boolean") for p in parts]
            out = values[0]
            for v in values[1:]:
                out = (out & v) if both else (out | v)
            return out

        return combined
    if isinstance(node, exp.Not):
        inner = _condition(node.this, outputs)
        return lambda df: ~inner(df).astype("boolean")
    for kind, compare in _COMPARE.items():
        if isinstance(node, kind):
            left, right = _operand(node.this, outputs), _operand(node.expression, outputs)
            return lambda df: pd.Series(compare(left(df), right(df)), index=df.index).astype("boolean")
    if isinstance(node, exp.Between):
        value = _operand(node.this, outputs)
        low, high = _operand(node.args["low"], outputs), _operand(node.args["high"], outputs)
        return lambda df: ((value(df) >= low(df)) & (value(df) <= high(df))).astype("boolean")
    raise QueryError(
        "unsupported_clause",
        f"HAVING: use comparisons, BETWEEN, AND, OR and NOT on released figures, not '{node.sql()}'",
    )


def post_processing(
    tree: exp.Select, spec: pb.QuerySpec, aggregate: Callable[..., pb.Aggregate]
) -> PostProcessing:
    """The HAVING, ORDER BY and LIMIT clauses of ``tree`` over ``spec``'s output columns."""
    outputs = _Outputs(spec, list(tree.expressions), aggregate)
    post = PostProcessing()
    having = tree.args.get("having")
    if having is not None:
        post.having = _condition(having.this, outputs)
        post.text["having"] = having.this.sql()
    order = tree.args.get("order")
    if order is not None:
        for item in order.expressions:
            node = item.this if isinstance(item, exp.Ordered) else item
            post.order_by.append((outputs.resolve(node, "ORDER BY"), bool(item.args.get("desc"))))
        post.text["order_by"] = ", ".join(i.sql() for i in order.expressions)
    limit = tree.args.get("limit")
    if limit is not None:
        value = limit.expression if limit.expression is not None else limit.this
        text = value.this if isinstance(value, exp.Literal) and not value.is_string else ""
        if not str(text).isdigit() or int(text) > MAX_LIMIT:
            raise QueryError("malformed_sql", f"LIMIT takes a whole number from 0 to {MAX_LIMIT}")
        post.limit = int(text)
        post.text["limit"] = str(post.limit)
    return post
