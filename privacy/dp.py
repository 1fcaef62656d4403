"""Differential-privacy mechanisms for aggregate releases, all noise drawn by OpenDP.

Neighbouring datasets differ by adding or removing one privacy unit with all of its rows (at most
``max_rows_per_unit`` of them after truncation at the node). Mechanisms:

* pure epsilon-DP: Laplace (Dwork, McSherry, Nissim & Smith 2006); on integers the discrete
  Laplace / geometric mechanism (Ghosh, Roughgarden & Sundararajan 2012);
* rho-zCDP: Gaussian (Bun & Steinke 2016); on integers the discrete Gaussian (Canonne, Kamath &
  Steinke 2020);
* distributed noise under secure aggregation: per-node discrete Gaussian shares (Kairouz, Liu &
  Steinke 2021, "The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure
  Aggregation").

Pure functions, no I/O. See docs/privacy.md for the formulas in plain language.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from statistics import NormalDist
from typing import TYPE_CHECKING, Literal

from privacy.accounting import Cost, PrivacyError, epsilon_at_delta, rho_for_epsilon
from privacy.opendp_lib import opendp

if TYPE_CHECKING:
    import opendp.prelude as dp


__all__ = [
    "AggregateKind",
    "Component",
    "Cost",
    "gaussian_vector_share",
    "NoisePlan",
    "NoiseShare",
    "NoiseSpec",
    "PrivacyError",
    "avg_interval",
    "epsilon_at_delta",
    "integer_noise_share",
    "interval",
    "plan_noise",
    "release_counts",
    "release_sums",
    "rho_for_epsilon",
    "sensitivity",
    "variance_parts",
    "threshold_for",
]

AggregateKind = Literal["count", "count_distinct", "sum", "avg", "variance", "percentile"]
MeasureKind = Literal["count", "count_distinct", "sum", "histogram"]
Role = Literal["value", "avg_count", "sum_squares", "threshold"]
Mechanism = Literal["laplace", "gaussian"]
Bounds = tuple[float, float]

# Per-node discrete Gaussian shares below this sigma would make the sum measurably less private
# than one discrete Gaussian (the tau term of KLS21 shrinks like exp(-pi^2 sigma^2)); at 1.5 it is
# ~2e-9 per cell (at 2, ~1e-17). A higher floor adds noise to counts with small sensitivity.
MIN_SHARE_SIGMA = 1.5
# Above this sigma the discrete Gaussian's interval comes from the continuous quantile (see _half_width).
_EXACT_DISCRETE_GAUSSIAN_SCALE = 1e5
# OpenDP rounds privacy maps upward by a few ulps; a share is "met" within this relative slack.
_MAP_SLACK = 1e-9


@dataclass(frozen=True)
class NoiseSpec:
    """Noise for one released measurement (one aggregate over every group of the domain).

    ``scale`` is the Laplace scale b or the Gaussian sigma; ``sd`` the standard deviation of the
    noise (sqrt(2) b, the exact discrete-Laplace value, or sigma, which bounds the discrete Gaussian).
    ``epsilon`` / ``rho`` is the budget share the noise was calibrated to at sensitivity ``l1`` /
    ``l2``. ``integer`` selects the discrete mechanisms (counts, fixed-point sums); plain sums get
    floating-point noise. ``parts > 1`` marks one of several independent shares whose sum
    carries that noise.
    """

    mechanism: Mechanism
    scale: float
    sd: float
    kind: MeasureKind = "count"
    l1: float = 1.0
    l2: float = 1.0
    epsilon: float = 0.0
    rho: float = 0.0
    bounds: Bounds | None = None
    max_rows_per_unit: int = 1
    n_groups: int = 1
    parts: int = 1
    integer: bool = True


@dataclass(frozen=True)
class Component:
    """One noisy measurement of a plan. ``aggregate`` is the index of the requested aggregate it
    serves (``None`` for the distinct-unit count used only for suppression). ``role`` is ``value``
    for the aggregate itself (VARIANCE: its centred sum; PERCENTILE: its histogram), ``avg_count``
    for the row count under an AVG or VARIANCE, ``sum_squares`` for the centred sum of squares
    under a VARIANCE, ``threshold`` for the
    count that decides suppression: a reused COUNT(DISTINCT unit) or COUNT(*) (``aggregate`` set,
    no extra budget), or a separate distinct-unit count."""

    role: Role
    aggregate: int | None
    spec: NoiseSpec


@dataclass(frozen=True)
class NoisePlan:
    """How a query's budget is spread: one ``Component`` per noisy measurement, and the total cost."""

    components: tuple[Component, ...]
    cost: Cost

    @property
    def columns(self) -> list[NoiseSpec]:
        """Spec of each requested aggregate's released value, in request order (AVG: its sum)."""
        out = [c for c in self.components if c.role == "value"]
        return [c.spec for c in sorted(out, key=lambda c: c.aggregate or 0)]

    @property
    def threshold(self) -> NoiseSpec:
        """Spec of the noisy count that suppression is decided on: distinct units, or rows when
        the query's COUNT(*) is reused (``kind == "count"``, see ``threshold_for``)."""
        for c in self.components:
            if c.role == "threshold":
                return c.spec
        raise AssertionError("a plan always has a threshold component")

    def avg_count(self, aggregate: int) -> NoiseSpec | None:
        """Spec of the row count under AVG or VARIANCE number ``aggregate``; else ``None``."""
        return self.part("avg_count", aggregate)

    def part(self, role: Role, aggregate: int) -> NoiseSpec | None:
        """Spec of the component with ``role`` serving aggregate ``aggregate``, if there is one."""
        for c in self.components:
            if c.role == role and c.aggregate == aggregate:
                return c.spec
        return None


@dataclass(frozen=True)
class NoiseShare:
    """Distributed noise: every node adds ``per_node`` integer noise to its share before secure
    aggregation. Once ``trusted`` honest nodes' shares are in the sum, the sum carries noise of at
    least ``total_sd``; ``tau`` is the KLS21 distance term (negligible by construction)."""

    per_node: NoiseSpec
    n_nodes: int
    trusted: int
    total_sd: float
    fixed_point_scale: float
    tau: float


# --------------------------------------------------------------------------- sensitivity


def _check_rows(max_rows_per_unit: int) -> None:
    if isinstance(max_rows_per_unit, bool) or not isinstance(max_rows_per_unit, int) or max_rows_per_unit < 1:
        raise PrivacyError(
            "max_rows_per_unit", f"max_rows_per_unit must be an integer >= 1, got {max_rows_per_unit!r}"
        )


def _check_bounds(bounds: object) -> Bounds:
    if not isinstance(bounds, tuple | list) or len(bounds) != 2:
        raise PrivacyError("bounds", f"SUM needs declared bounds [lo, hi], got {bounds!r}")
    lo, hi = bounds
    ok = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (lo, hi))
    if not ok or lo > hi:
        raise PrivacyError("bounds", f"bounds must be finite numbers with lo <= hi, got {bounds!r}")
    return float(lo), float(hi)


def sensitivity(
    kind: str, max_rows_per_unit: int, bounds: Bounds | None = None, *, n_groups: int = 1
) -> tuple[float, float]:
    """(L1, L2) sensitivity of one aggregate released over ``n_groups`` public-domain groups.

    With k = ``max_rows_per_unit``, M = max(|lo|, |hi|) and g = min(k, n_groups):

    * ``count`` (COUNT(*)): L1 = k, L2 = k. The k rows of a unit may all fall in one group.
    * ``count_distinct`` (COUNT(DISTINCT unit)): a unit adds 1 to each group it has a row in, at
      most g groups: L1 = g, L2 = sqrt(g). Without GROUP BY (g = 1) both are 1.
    * ``sum``: L1 = k M, L2 = k M (all rows in one group at the bound of largest magnitude).
    * ``histogram`` (row counts per bin, PERCENTILE): L1 = k, L2 = k. Each row falls in exactly
      one (group, bin) cell, and all k rows of a unit may fall in the same one.

    AVG is released as a SUM and a COUNT, VARIANCE as a centred SUM, a COUNT and a centred SUM of
    squares (see ``variance_parts``); ask for those.
    """
    _check_rows(max_rows_per_unit)
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 1:
        raise PrivacyError("n_groups", f"n_groups must be an integer >= 1, got {n_groups!r}")
    k = max_rows_per_unit
    if kind in ("count", "histogram"):
        return float(k), float(k)
    if kind == "count_distinct":
        g = min(k, n_groups)
        return float(g), math.sqrt(g)
    if kind == "sum":
        lo, hi = _check_bounds(bounds)
        m = max(abs(lo), abs(hi))
        return k * m, k * m
    if kind in ("avg", "variance", "percentile"):
        raise PrivacyError(
            "aggregate_kind",
            f"{kind.upper()} is released as several measurements: ask for their sensitivities",
        )
    raise PrivacyError(
        "aggregate_kind",
        f"unknown aggregate '{kind}': use count, count_distinct, sum, avg, variance or percentile",
    )


def variance_parts(bounds: object) -> tuple[float, Bounds, Bounds]:
    """(shift, bounds of x - shift, bounds of (x - shift)^2) for VARIANCE over values in ``bounds``.

    With shift c = (lo + hi) / 2 and h = (hi - lo) / 2, a clamped value x gives x - c in [-h, h]
    and (x - c)^2 in [0, h^2], so the centred SUM has L1 = L2 = k h and the centred SUM of
    squares k h^2 (``sensitivity("sum", ...)``), against k max(|lo|, |hi|) and k max(lo^2, hi^2)
    uncentred. Variance does not change under a shift, so nothing is lost.
    """
    lo, hi = _check_bounds(bounds)
    c = (lo + hi) / 2.0
    h = (hi - lo) / 2.0
    return c, (-h, h), (0.0, h * h)


# --------------------------------------------------------------------------- planning


def _budget(epsilon: float | None, rho: float | None) -> tuple[Mechanism, float]:
    if (epsilon is None) == (rho is None):
        raise PrivacyError("privacy_request", "give exactly one of epsilon (Laplace) or rho (Gaussian)")
    value = epsilon if epsilon is not None else rho
    name = "epsilon" if epsilon is not None else "rho"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise PrivacyError(f"{name}_value", f"{name} must be a finite number > 0, got {value!r}")
    return ("laplace" if epsilon is not None else "gaussian"), float(value)


def _sd(mechanism: Mechanism, scale: float, integer: bool) -> float:
    if mechanism == "gaussian":
        # The discrete Gaussian's variance is at most sigma^2 (CKS20), and within 1e-6 of it for sigma >= 1.
        return scale
    if integer:
        # Discrete Laplace with P(x) ~ exp(-|x|/b) has variance 2u/(1-u)^2, u = exp(-1/b).
        u = math.exp(-1.0 / scale)
        return math.sqrt(2.0 * u) / (1.0 - u)
    return math.sqrt(2.0) * scale


def _measurement(spec: NoiseSpec, scale: float | None = None) -> dp.Measurement:
    return _measurement_of(spec.mechanism, spec.integer, spec.scale if scale is None else scale)


# Building an OpenDP measurement (domains, metric, constructor) cost more than sampling from it,
# and a node built the same few per job. A measurement is immutable and every call samples fresh
# noise, so one per (mechanism, integer, scale) is kept; so are the pure functions of a spec below.
@lru_cache(maxsize=512)
def _measurement_of(mechanism: Mechanism, integer: bool, scale: float) -> dp.Measurement:
    dp = opendp()
    if integer:
        domain = dp.vector_domain(dp.atom_domain(T="i64"))
        if mechanism == "laplace":
            return dp.m.make_laplace(domain, dp.l1_distance(T="i64"), scale=scale)
        return dp.m.make_gaussian(domain, dp.l2_distance(T=float), scale=scale)
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    if mechanism == "laplace":
        return dp.m.make_laplace(domain, dp.l1_distance(T=float), scale=scale)
    return dp.m.make_gaussian(domain, dp.l2_distance(T=float), scale=scale)


def _d_in(spec: NoiseSpec) -> float | int:
    if spec.mechanism == "laplace":
        return int(math.ceil(spec.l1)) if spec.integer else spec.l1
    return spec.l2


@lru_cache(maxsize=1024)
def _calibrate(spec: NoiseSpec) -> NoiseSpec:
    """Set the scale so the OpenDP measurement's privacy map at the sensitivity meets the share."""
    share = spec.epsilon if spec.mechanism == "laplace" else spec.rho
    if spec.mechanism == "laplace":
        scale = _d_in(spec) / share
    else:
        scale = spec.l2 / math.sqrt(2.0 * share)
    d_in = _d_in(spec)
    # OpenDP's float mechanisms may round the map up a little; widen the scale until it fits.
    for _ in range(60):
        if _measurement(spec, scale).map(d_in) <= share * (1 + _MAP_SLACK):
            break
        scale *= 1 + 1e-9
    return replace(spec, scale=scale, sd=_sd(spec.mechanism, scale, spec.integer))


@lru_cache(maxsize=1024)
def _component_cost(spec: NoiseSpec) -> Cost:
    dp = opendp()
    meas = _measurement(spec)
    d_in = _d_in(spec)
    if spec.mechanism == "laplace":
        eps = float(meas.map(d_in))
        return Cost(epsilon=eps, rho=float(dp.c.make_pureDP_to_zCDP(meas).map(d_in)))
    return Cost(epsilon=0.0, rho=float(meas.map(d_in)))


def _reused_threshold(
    parts: Sequence[tuple[str, int | None, str, Bounds | None]], reuse_count: bool
) -> int | None:
    """Index of the requested aggregate whose noisy value decides suppression, if any.

    COUNT(DISTINCT unit) is preferred: its threshold is tighter than one in rows.
    """
    for kind in ("count_distinct", "count") if reuse_count else ("count_distinct",):
        for role, index, measured, _ in parts:
            if role == "value" and measured == kind:
                return index
    return None


def plan_noise(
    aggregates: Sequence[tuple[str, Bounds | None]],
    max_rows_per_unit: int,
    epsilon: float | None = None,
    rho: float | None = None,
    *,
    n_groups: int = 1,
    reuse_count: bool = True,
) -> NoisePlan:
    """Split one query's budget equally over its noisy measurements (sequential composition).

    Measurements: one per requested aggregate (AVG adds a second one, its row count; VARIANCE adds
    its row count and its centred sum of squares; PERCENTILE is one histogram) plus the
    distinct-unit count used for suppression, unless the query already asks for a count whose
    noisy value is then reused as the threshold measurement (post-processing, no extra budget):
    COUNT(DISTINCT unit) first, else COUNT(*) when ``reuse_count`` (its threshold is in rows, see
    ``threshold_for``). With m measurements each gets epsilon/m (Laplace, scale L1 m / epsilon)
    or rho/m (Gaussian, sigma = L2 sqrt(m / (2 rho))). The plan's cost is the sum of the OpenDP
    privacy maps, so it equals the request up to upward rounding.
    """
    mechanism, total = _budget(epsilon, rho)
    if not aggregates:
        raise PrivacyError("aggregates", "a query needs at least one aggregate")
    parts: list[tuple[Role, int | None, MeasureKind, Bounds | None]] = []
    for i, item in enumerate(aggregates):
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise PrivacyError("aggregates", f"aggregate {i} must be a (kind, bounds) pair, got {item!r}")
        kind, bounds = item
        if kind == "avg":
            parts.append(("value", i, "sum", _check_bounds(bounds)))
            parts.append(("avg_count", i, "count", None))
        elif kind == "sum":
            parts.append(("value", i, "sum", _check_bounds(bounds)))
        elif kind == "count" or kind == "count_distinct":
            parts.append(("value", i, "count" if kind == "count" else "count_distinct", None))
        elif kind == "variance":
            _, centred, squares = variance_parts(bounds)
            parts.append(("value", i, "sum", centred))
            parts.append(("avg_count", i, "count", None))
            parts.append(("sum_squares", i, "sum", squares))
        elif kind == "percentile":
            _check_bounds(bounds)
            parts.append(("value", i, "histogram", None))
        else:
            sensitivity(kind, max_rows_per_unit, bounds, n_groups=n_groups)  # raises the clear error
    reused = _reused_threshold(parts, reuse_count)
    if reused is None:
        parts.append(("threshold", None, "count_distinct", None))
    share = total / len(parts)
    components: list[Component] = []
    for role, index, kind, bounds in parts:
        l1, l2 = sensitivity(kind, max_rows_per_unit, bounds, n_groups=n_groups)
        spec = NoiseSpec(
            mechanism=mechanism,
            scale=1.0,
            sd=1.0,
            kind=kind,
            l1=l1,
            l2=l2,
            epsilon=share if mechanism == "laplace" else 0.0,
            rho=share if mechanism == "gaussian" else 0.0,
            bounds=bounds,
            max_rows_per_unit=max_rows_per_unit,
            n_groups=n_groups,
            integer=kind != "sum",
        )
        components.append(Component(role=role, aggregate=index, spec=_calibrate(spec)))
    if reused is not None:
        first = next(c for c in components if c.role == "value" and c.aggregate == reused)
        components.append(Component(role="threshold", aggregate=first.aggregate, spec=first.spec))
        measured = components[:-1]
    else:
        measured = components
    costs = [_component_cost(c.spec) for c in measured]
    cost = Cost(epsilon=sum(c.epsilon for c in costs), rho=sum(c.rho for c in costs))
    return NoisePlan(components=tuple(components), cost=cost)


# --------------------------------------------------------------------------- release


@lru_cache(maxsize=1024)
def _guard(spec: NoiseSpec) -> dp.Measurement:
    if spec.mechanism not in ("laplace", "gaussian"):
        raise PrivacyError("mechanism", f"unknown mechanism '{spec.mechanism}': use laplace or gaussian")
    if not math.isfinite(spec.scale) or spec.scale <= 0:
        raise PrivacyError("noise_scale", f"noise scale must be a finite number > 0, got {spec.scale!r}")
    meas = _measurement(spec)
    # A share of distributed noise is checked as the sum of ``parts`` shares it belongs to.
    whole = (
        meas
        if spec.parts == 1 or spec.mechanism == "laplace"
        else _measurement(spec, spec.scale * math.sqrt(spec.parts))
    )
    share = spec.epsilon if spec.mechanism == "laplace" else spec.rho
    if share <= 0 or whole.map(_d_in(spec)) > share * (1 + _MAP_SLACK):
        raise PrivacyError(
            "noise_scale",
            f"noise scale {spec.scale:g} is too small for sensitivity {_d_in(spec)} at its budget share",
        )
    return meas


def release_counts(values: Sequence[int], spec: NoiseSpec) -> list[int]:
    """Add integer noise (discrete Laplace or discrete Gaussian, from OpenDP) to a vector of counts."""
    if not spec.integer:
        raise PrivacyError("noise_kind", "release_counts needs an integer spec; use release_sums for sums")
    clean: list[int] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not -(2**62) <= v < 2**62:
            raise PrivacyError("dp_input", f"counts must be integers within +-2^62, got {v!r}")
        clean.append(v)
    meas = _guard(spec)
    if not clean:
        return []
    return [int(x) for x in meas(clean)]


def release_sums(values: Sequence[float], spec: NoiseSpec) -> list[float]:
    """Add floating-point Laplace or Gaussian noise (OpenDP, vector domain, L1/L2 metric) to sums."""
    if spec.integer:
        raise PrivacyError("noise_kind", "release_sums needs a floating-point spec; use release_counts")
    clean: list[float] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise PrivacyError("dp_input", f"sums must be finite numbers, got {v!r}")
        clean.append(float(v))
    meas = _guard(spec)
    if not clean:
        return []
    return [float(x) for x in meas(clean)]


# --------------------------------------------------------------------------- distributed noise


def integer_noise_share(
    n_nodes: int, spec: NoiseSpec, *, trusted: int | None = None, fixed_point_scale: float = 1.0
) -> NoiseShare:
    """Integer noise each node adds before secure aggregation so the sum carries ``spec``'s noise.

    Gaussian: each node adds a discrete Gaussian with sigma_i = sigma / sqrt(t), t = ``trusted``
    (default ``n_nodes``), floored at ``MIN_SHARE_SIGMA``. The sum of t such shares has variance
    >= sigma^2 and is close to one discrete Gaussian: by KLS21 Prop. 14 its Renyi divergence of
    order a is at most a rho + tau d over d cells, with ``tau`` as reported (~2e-9 at the floor).
    Laplace: sums of discrete Laplace are not Laplace, so each node adds the full discrete Laplace
    noise: pure DP then holds as long as one node is honest, at n times the variance.

    Sums travel as fixed-point integers: rows are put on the grid round(v * S) before summing, so
    the integer sensitivity uses bounds widened to whole grid steps.
    """
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, int) or n_nodes < 1:
        raise PrivacyError("n_nodes", f"n_nodes must be an integer >= 1, got {n_nodes!r}")
    t = n_nodes if trusted is None else trusted
    if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= n_nodes:
        raise PrivacyError("trusted_nodes", f"trusted must be an integer in [1, {n_nodes}], got {trusted!r}")
    if (
        not isinstance(fixed_point_scale, int | float)
        or not math.isfinite(fixed_point_scale)
        or fixed_point_scale <= 0
    ):
        raise PrivacyError(
            "fixed_point", f"fixed_point_scale must be a finite number > 0, got {fixed_point_scale!r}"
        )
    if spec.integer and fixed_point_scale != 1:
        raise PrivacyError("fixed_point", "counts are already integers: use fixed_point_scale = 1")
    base = spec
    if not spec.integer:
        lo, hi = spec.bounds or (0.0, 0.0)
        grid = (math.floor(lo * fixed_point_scale), math.ceil(hi * fixed_point_scale))
        l1, l2 = sensitivity("sum", spec.max_rows_per_unit, grid, n_groups=spec.n_groups)
        base = replace(spec, integer=True, l1=l1, l2=l2, bounds=(float(grid[0]), float(grid[1])))
        base = _calibrate(base)
    if base.mechanism == "laplace":
        per_node = base
        total_sd = per_node.sd * math.sqrt(n_nodes)
        return NoiseShare(per_node, n_nodes, t, total_sd, float(fixed_point_scale), 0.0)
    sigma_i = max(base.scale / math.sqrt(t), MIN_SHARE_SIGMA)
    # The guard checks sigma_i * sqrt(t) >= sigma; the floor only ever adds noise.
    per_node = replace(base, scale=sigma_i, sd=sigma_i, parts=t)
    tau = 10.0 * sum(math.exp(-2.0 * math.pi**2 * sigma_i**2 * j / (j + 1)) for j in range(1, t))
    return NoiseShare(per_node, n_nodes, t, sigma_i * math.sqrt(t), float(fixed_point_scale), tau)


# --------------------------------------------------------------------------- thresholds, intervals


def _total_scale(spec: NoiseSpec) -> float:
    """Scale of the noise on the released value: for Gaussian shares, that of their sum."""
    return spec.scale * math.sqrt(spec.parts) if spec.mechanism == "gaussian" else spec.scale


def _upper_tail(spec: NoiseSpec, p: float) -> float:
    """Smallest q with P(noise >= q) <= p, for the spec's noise."""
    b = _total_scale(spec)
    if spec.mechanism == "laplace":
        if spec.integer:
            # Discrete Laplace: P(X >= q) = u^q / (1 + u) for integer q >= 1, u = exp(-1/b).
            u = math.exp(-1.0 / b)
            return float(max(1, math.ceil(math.log(p * (1 + u)) / math.log(u))))
        return b * math.log(1.0 / (2.0 * p))
    if spec.integer:
        # Sub-Gaussian tail of the discrete Gaussian (CKS20): P(X >= q) <= exp(-q^2 / (2 sigma^2)).
        return float(math.ceil(b * math.sqrt(2.0 * math.log(1.0 / p))))
    return b * NormalDist().inv_cdf(1.0 - p)


def threshold_for(min_group_size: int, spec: NoiseSpec, p: float = 1e-3) -> int:
    """Noisy-count threshold T: suppress a cell when its noisy threshold count is below T.

    ``spec`` is the plan's threshold spec (integer noise), with P(noise >= q) <= p:

    * distinct units (``kind == "count_distinct"``): T = (min_group_size - 1) + ceil(q). A cell
      with fewer than ``min_group_size`` units has a true count of at most min_group_size - 1;
    * rows (``kind == "count"``, a reused COUNT(*)): T = (min_group_size - 1) R + ceil(q) with
      R = ``spec.max_rows_per_unit``. Each unit has at most R rows, so a cell with fewer than
      ``min_group_size`` units has at most (min_group_size - 1) R rows.

    Either way such a cell clears T with probability at most ``p``.
    """
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, int) or min_group_size < 1:
        raise PrivacyError(
            "min_group_size", f"min_group_size must be an integer >= 1, got {min_group_size!r}"
        )
    if not isinstance(p, int | float) or not 0 < p < 0.5:
        raise PrivacyError("threshold_p", f"p must be in (0, 0.5), got {p!r}")
    q = _upper_tail(spec, p)
    per_unit = spec.max_rows_per_unit if spec.kind == "count" else 1
    return (min_group_size - 1) * per_unit + int(math.ceil(q))


def _closed_integer_width(accuracy: float) -> float:
    """OpenDP's discrete accuracy a has P(|noise| >= a) <= alpha; integer noise then stays within
    ceil(a) - 1 with probability >= 1 - alpha."""
    return float(max(math.ceil(accuracy) - 1, 0))


def _half_width(spec: NoiseSpec, level: float) -> float:
    dp = opendp()
    alpha = 1.0 - level
    b = _total_scale(spec)
    if spec.mechanism == "laplace":
        if spec.integer:
            return _closed_integer_width(dp.discrete_laplacian_scale_to_accuracy(b, alpha))
        return b * math.log(1.0 / alpha)
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    if spec.integer:
        if b <= _EXACT_DISCRETE_GAUSSIAN_SCALE:
            return _closed_integer_width(dp.discrete_gaussian_scale_to_accuracy(b, alpha))
        # OpenDP's exact tail sums over the support, linear in sigma; this far out the discrete
        # Gaussian matches the continuous one to far below float precision, plus one for rounding.
        return float(math.ceil(z * b) + 1)
    return b * z


def _check_level(level: float) -> None:
    if not isinstance(level, int | float) or not 0 < level < 1:
        raise PrivacyError("interval_level", f"level must be in (0, 1), got {level!r}")


def interval(value: float, spec: NoiseSpec, level: float = 0.95) -> tuple[float, float]:
    """Interval that holds the exact value with probability ``level`` over the noise.

    Laplace: value -+ b ln(1 / (1 - level)); Gaussian: value -+ z sigma (z = 1.96 at 95%).
    Integer mechanisms use OpenDP's exact discrete accuracy.
    """
    _check_level(level)
    h = _half_width(spec, level)
    return value - h, value + h


def avg_interval(
    noisy_sum: float, sum_spec: NoiseSpec, noisy_count: float, count_spec: NoiseSpec, level: float = 0.95
) -> tuple[float, float]:
    """Conservative interval for AVG = sum / count from the noisy sum and the noisy count.

    Each of the two is given its own interval at level 1 - (1 - level)/2 (union bound), and the
    result is the range of sum / count over that rectangle. When the count interval reaches 0
    or below, the average is unbounded and (-inf, inf) is returned.
    """
    _check_level(level)
    inner = 1.0 - (1.0 - level) / 2.0
    s_lo, s_hi = interval(noisy_sum, sum_spec, inner)
    c_lo, c_hi = interval(noisy_count, count_spec, inner)
    if c_lo <= 0:
        return -math.inf, math.inf
    ratios = [s_lo / c_lo, s_lo / c_hi, s_hi / c_lo, s_hi / c_hi]
    return min(ratios), max(ratios)


def gaussian_vector_share(n_nodes: int, l2: float, rho: float, *, trusted: int) -> NoiseShare:
    """Distributed discrete Gaussian for a vector on an integer grid: the sum of ``trusted``
    shares carries the noise one curator would add at L2 sensitivity ``l2`` (grid units) and
    budget ``rho`` (zCDP), calibrated against OpenDP's privacy map (KLS21, as for counts)."""
    if not (isinstance(l2, int | float) and math.isfinite(l2) and l2 > 0):
        raise PrivacyError("noise_scale", f"L2 sensitivity must be a finite number > 0, got {l2!r}")
    if not (isinstance(rho, int | float) and math.isfinite(rho) and rho > 0):
        raise PrivacyError("rho_value", f"rho must be a finite number > 0, got {rho!r}")
    spec = _calibrate(NoiseSpec(mechanism="gaussian", scale=1.0, sd=1.0, kind="sum", l2=float(l2), rho=rho))
    return integer_noise_share(n_nodes, spec, trusted=trusted)
