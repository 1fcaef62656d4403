"""Group keys computed from a column: histogram bins of a numeric column and parts of a date.

Each key's domain is derived from public metadata only (the column's declared bounds or date
range, and the numbers in the query), so every key of it is public and reported, like a category
column's domain. A numeric value is clamped to its declared bounds before it is binned, so every
row falls in a bin of the domain; a date outside the declared range falls in no key and is left
out. The number of keys is counted before any is listed, and bounded by the node's
``max_groups`` (rule ``too_many_groups``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nodes.config import CategoryValue, Column
from protocols import federation_pb2 as pb
from protocols.errors import FederationError

DATE_PARTS = ("year", "quarter", "month")
_EXACT_INT = 2**53


@dataclass(frozen=True)
class Derived:
    """A checked derived key: the column it reads, the transform, and its public domain."""

    key: pb.DerivedKey
    column: Column
    label: str  # e.g. "FLOOR(value / 1000) * 1000"; names the grouping in audit and differencing
    domain: tuple[CategoryValue, ...]


def _refuse(rule: str, message: str) -> FederationError:
    return FederationError(rule, message)


def _too_many(count: int, max_groups: int, label: str) -> None:
    if count > max_groups:
        raise _refuse(
            "too_many_groups",
            f"{label} has {count} keys over the declared range; the policy allows {max_groups}",
        )


def _number(x: float) -> CategoryValue:
    """A bin edge as a whole number when it is one (as the engine's FLOOR gives it), else a float."""
    return int(x) if x == math.floor(x) and abs(x) < _EXACT_INT else x  # type: ignore[return-value]


def _floor(key: pb.DerivedKey, column: Column, max_groups: int) -> tuple[str, tuple[CategoryValue, ...]]:
    w = key.width
    if not math.isfinite(w) or w <= 0:
        raise _refuse("malformed_request", f"FLOOR({column.name} / w): w must be a finite number > 0")
    lo, hi = column.bounds or (0.0, 0.0)
    first, last = math.floor(lo / w), math.floor(hi / w)
    index = key.part == "index"
    label = f"FLOOR({column.name} / {w:g})" + ("" if index else f" * {w:g}")
    _too_many(last - first + 1, max_groups, label)
    if index:
        return label, tuple(range(first, last + 1))
    # j * w is the same IEEE product the engine's FLOOR(v / w) * w gives.
    return label, tuple(_number(j * w) for j in range(first, last + 1))


def _width_bucket(
    key: pb.DerivedKey, column: Column, max_groups: int
) -> tuple[str, tuple[CategoryValue, ...]]:
    lo, hi, n = key.low, key.high, key.buckets
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or n < 1:
        raise _refuse(
            "malformed_request", "WIDTH_BUCKET(col, low, high, n) needs finite low < high and a whole n >= 1"
        )
    label = f"WIDTH_BUCKET({column.name}, {lo:g}, {hi:g}, {n})"
    _too_many(n + 2, max_groups, label)
    return label, tuple(range(0, n + 2))


def _periods(start: dt.date, end: dt.date, step: int) -> range:
    """Month numbers (year * 12 + month - 1) of the periods of ``step`` months from start to end."""
    first = (start.year * 12 + start.month - 1) // step * step
    return range(first, end.year * 12 + end.month, step)


def _date(key: pb.DerivedKey, column: Column, max_groups: int) -> tuple[str, tuple[CategoryValue, ...]]:
    part = key.part
    name = "DATE_TRUNC" if key.transform == "date_trunc" else "EXTRACT"
    if part not in DATE_PARTS:
        raise _refuse("malformed_request", f"{name} takes one of {', '.join(DATE_PARTS)}, not '{part}'")
    label = (
        f"DATE_TRUNC('{part}', {column.name})"
        if name == "DATE_TRUNC"
        else f"EXTRACT({part} FROM {column.name})"
    )
    if name == "EXTRACT" and part != "year":
        return label, tuple(range(1, 5 if part == "quarter" else 13))
    if column.date_range is None:
        raise _refuse(
            "not_groupable",
            f"{label}: column '{column.name}' declares no date range, so its {part}s have no public domain",
        )
    start, end = column.date_range
    if name == "EXTRACT":
        _too_many(end.year - start.year + 1, max_groups, label)
        return label, tuple(range(start.year, end.year + 1))
    periods = _periods(start, end, {"year": 12, "quarter": 3, "month": 1}[part])
    _too_many(len(periods), max_groups, label)
    return label, tuple(dt.date(m // 12, m % 12 + 1, 1).isoformat() for m in periods)


def derive(key: pb.DerivedKey, column: Column, max_groups: int) -> Derived:
    """Check ``key`` against ``column`` and derive its domain; raise ``FederationError`` naming the rule."""
    numeric = key.transform in ("floor", "width_bucket")
    if key.transform not in ("floor", "width_bucket", "date_trunc", "extract"):
        raise _refuse("malformed_request", f"unknown group key transform '{key.transform}'")
    wanted = "numeric" if numeric else "date"
    if column.kind != wanted:
        raise _refuse(
            "not_groupable",
            f"{key.transform.upper()} needs a {wanted} column; '{column.name}' is {column.kind}",
        )
    if key.transform == "floor":
        label, domain = _floor(key, column, max_groups)
    elif key.transform == "width_bucket":
        label, domain = _width_bucket(key, column, max_groups)
    else:
        label, domain = _date(key, column, max_groups)
    return Derived(key=key, column=column, label=label, domain=domain)


def derived_sql(d: Derived, value: str, dialect: str, bind: Callable[[Any], str]) -> str:
    """The engine expression of ``d``'s key over ``value`` (the column's SQL, numeric or date).

    ``bind`` adds one bound parameter and returns its placeholder; it is called in the order the
    placeholders appear in the text. Both engines compute the same IEEE doubles.
    """
    key = d.key
    text = "VARCHAR" if dialect == "duckdb" else "TEXT"
    double = "DOUBLE" if dialect == "duckdb" else "DOUBLE PRECISION"
    if key.transform in ("date_trunc", "extract"):
        day = f"CAST({value} AS DATE)"
        if key.transform == "extract":
            return f"CAST(EXTRACT({key.part.upper()} FROM {day}) AS BIGINT)"
        # The unit is one of DATE_PARTS (checked by ``derive``), never analyst text.
        return f"CAST(CAST(DATE_TRUNC('{key.part}', CAST({day} AS TIMESTAMP)) AS DATE) AS {text})"
    lo, hi = d.column.bounds or (0.0, 0.0)

    def number(x: float) -> str:
        return f"CAST({bind(float(x))} AS {double})"

    def clamped() -> str:
        return f"LEAST(GREATEST({value}, {number(lo)}), {number(hi)})"

    if key.transform == "floor":
        if key.part == "index":
            return f"CAST(FLOOR({clamped()} / {number(key.width)}) AS BIGINT)"
        return f"FLOOR({clamped()} / {number(key.width)}) * {number(key.width)}"
    n = int(key.buckets)
    # f-strings evaluate left to right, so the parameters are bound in text order.
    return (
        f"CASE WHEN {clamped()} < {number(key.low)} THEN 0 WHEN {clamped()} >= {number(key.high)} "
        f"THEN {n + 1} ELSE CAST(FLOOR(({clamped()} - {number(key.low)}) * {n} "
        f"/ {number(key.high - key.low)}) AS BIGINT) + 1 END"
    )
