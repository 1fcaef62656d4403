"""Clamping bounds chosen per query by a DP quantile, at a stated share of epsilon.

A SUM or AVG over a column declared [lo, hi] adds noise in proportion to hi - lo. When most values
lie far below hi, an analyst can ask each node to choose its own upper clamp as a differentially
private quantile of the column (``bound_quantile``, e.g. 0.99): OpenDP's quantile mechanism
(``make_private_quantile``: the score of Smith 2011, "Privacy-preserving statistical estimation
with optimal convergence rates", selected by permute-and-flip, McKenna & Sheldon 2020) over
``CANDIDATES`` candidates in (lo, hi], spaced geometrically down from hi (each a factor sqrt(2)
closer to lo). Every candidate above the data scores the same, so few of them must lie there for
the choice to hold up at a small share of epsilon: with an even grid most would, and one of them
often won. The choice spends ``share`` of the query's
epsilon (default ``DEFAULT_SHARE``), split evenly over the columns chosen for; the aggregates run
with the rest. A unit moves at most ``max_rows_per_unit`` rows, the symmetric distance the
mechanism is calibrated to. The chosen bound is released with the answer and charged with it.
Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from privacy.accounting import Cost, PrivacyError
from privacy.opendp_lib import opendp

DEFAULT_SHARE = 0.1
DEFAULT_QUANTILE = 0.99  # bounds="auto": clamp near the 99th percentile
CANDIDATES = 32  # 16 octaves below the declared upper bound, two per octave


def bound_share(requested: float) -> float:
    """The share of epsilon spent on choosing bounds: ``requested``, or the default for 0.

    Refused with rule ``bound_share`` unless it lies strictly between 0 and 1: a share of 1 or
    more leaves nothing for the answer itself.
    """
    share = float(requested) if requested else DEFAULT_SHARE
    if not math.isfinite(share) or not 0.0 < share < 1.0:
        raise PrivacyError(
            "bound_share",
            f"bound_share {requested!r} leaves no epsilon for the answer; give a share between 0 and 1 "
            f"(default {DEFAULT_SHARE:g})",
        )
    return share


def check_quantile(quantile: float) -> float:
    """``bound_quantile`` must be a fraction in (0, 1]; refused with rule ``bound_quantile``."""
    q = float(quantile)
    if not math.isfinite(q) or not 0.0 < q <= 1.0:
        raise PrivacyError("bound_quantile", f"bound_quantile must be a fraction in (0, 1], got {quantile!r}")
    return q


def candidates(declared: tuple[float, float]) -> list[float]:
    """Upper bounds to choose from, ascending: lo + (hi - lo) 2^(-k/2) for k = 0 .. CANDIDATES - 1."""
    lo, hi = float(declared[0]), float(declared[1])
    return sorted({lo + (hi - lo) * 2.0 ** (-k / 2) for k in range(CANDIDATES)})


def choose_upper(
    values: Sequence[float],
    declared: tuple[float, float],
    quantile: float,
    epsilon: float,
    max_rows_per_unit: int,
) -> float:
    """A candidate upper bound near the ``quantile`` of ``values``, epsilon-DP when one unit adds or
    removes at most ``max_rows_per_unit`` of them (OpenDP ``make_private_quantile``)."""
    if not epsilon > 0:
        raise PrivacyError("bound_share", "no epsilon left to choose a bound with")
    dp = opendp()
    lo, hi = float(declared[0]), float(declared[1])
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    cands = candidates(declared)

    def make(scale: float) -> object:
        return dp.m.make_private_quantile(
            domain,
            dp.symmetric_distance(),
            dp.max_divergence(),
            candidates=cands,
            alpha=quantile,
            scale=scale,
        )

    scale = dp.binary_search_param(make, d_in=int(max_rows_per_unit), d_out=float(epsilon))
    measurement = make(scale)
    clamped = [min(max(float(v), lo), hi) for v in values]
    return float(measurement(clamped))  # type: ignore[operator]


def bounds_cost(epsilons: Sequence[float]) -> Cost:
    """What choosing bounds at these epsilons costs: pure DP, composed by addition (rho e^2 / 2 each)."""
    return Cost(epsilon=float(sum(epsilons)), rho=float(sum(e * e / 2 for e in epsilons)))
