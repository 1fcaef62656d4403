"""Contribution bounds chosen per query, and the feasible range of a released figure.

A dataset declares bounds [lo, hi] for each numeric column and a maximum number of rows per
privacy unit k. An analyst may ask for tighter clamping [a, b] within [lo, hi] and a smaller k'
<= k for one query: the sensitivity (privacy/dp.py ``sensitivity``) then follows a, b and k',
so the noise is smaller. Widening is never allowed: the declared values are what the node's
officer signed off.

Every exact answer lies in a *feasible range* that follows from the bounds alone: a count is never
negative, a SUM of values clamped to [a, b] with a >= 0 is never negative, an AVG lies in [a, b].
Moving a noisy figure and its interval into that range is post-processing (DR14, Prop. 2.1): it
costs no budget and never moves the figure further from the truth. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from typing import Literal

from privacy.accounting import PrivacyError

Bounds = tuple[float, float]
Kind = Literal["count", "count_distinct", "sum", "avg"]


def tightened(declared: Bounds, lower: float | None = None, upper: float | None = None) -> Bounds:
    """The clamping bounds for one aggregate: ``lower``/``upper`` where given, else the declared ones.

    Refused with rule ``bounds_outside_declared`` when a requested bound lies outside the declared
    range, and ``bounds`` when it is not a finite number or lower > upper.
    """
    lo, hi = float(declared[0]), float(declared[1])
    a = lo if lower is None else lower
    b = hi if upper is None else upper
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise PrivacyError("bounds", f"clamping bounds must be finite numbers, got {v!r}")
    if a < lo or b > hi:
        raise PrivacyError(
            "bounds_outside_declared",
            f"clamping bounds [{a:g}, {b:g}] reach outside the declared bounds [{lo:g}, {hi:g}]; "
            "bounds can only be tightened",
        )
    if a > b:
        raise PrivacyError("bounds", f"clamping bounds [{a:g}, {b:g}] have lower above upper")
    return float(a), float(b)


def rows_per_unit(declared: int, requested: int) -> int:
    """The rows per unit a query truncates to: ``requested`` (0: the declared maximum).

    Refused with rule ``max_rows_outside_declared`` above the declared maximum.
    """
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise PrivacyError(
            "max_rows_per_unit", f"max_rows_per_unit must be a whole number >= 1, got {requested!r}"
        )
    if requested == 0:
        return declared
    if requested > declared:
        raise PrivacyError(
            "max_rows_outside_declared",
            f"max_rows_per_unit {requested} is above the declared maximum {declared}; it can only be lowered",
        )
    return requested


def feasible_range(kind: str, bounds: list[Bounds] | None = None) -> Bounds:
    """The range any exact answer of ``kind`` lies in, over nodes that clamped to ``bounds``.

    Counts: [0, inf). SUM: [0, inf) when every lower bound is >= 0, (-inf, 0] when every upper
    bound is <= 0, else unbounded. AVG: [smallest lower bound, largest upper bound].
    """
    if kind in ("count", "count_distinct"):
        return 0.0, math.inf
    if not bounds:
        return -math.inf, math.inf
    if kind == "sum":
        low = 0.0 if all(lo >= 0 for lo, _ in bounds) else -math.inf
        high = 0.0 if all(hi <= 0 for _, hi in bounds) else math.inf
        return low, high
    if kind == "avg":
        return min(lo for lo, _ in bounds), max(hi for _, hi in bounds)
    raise PrivacyError("aggregate_kind", f"unknown aggregate '{kind}'")


def clip(value: float, ci_low: float, ci_high: float, feasible: Bounds) -> tuple[float, float, float, bool]:
    """Move a noisy ``value`` and its interval into ``feasible``; the last item says whether anything moved.

    The exact answer lies in ``feasible``, so the clipped interval covers it whenever the
    unclipped one did. A missing value (NaN) stays missing.
    """
    low, high = feasible
    if math.isnan(value):
        return value, ci_low, ci_high, False
    new = (min(max(x, low), high) for x in (value, ci_low, ci_high))
    v, lo, hi = new
    return v, lo, hi, (v, lo, hi) != (value, ci_low, ci_high)
