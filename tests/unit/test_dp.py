"""DP mechanisms: sensitivities, budget split, OpenDP noise, thresholds, intervals, conversions.

OpenDP draws from the operating system's randomness and cannot be seeded, so the statistical
checks use enough draws that the tolerances sit several standard errors away.
"""

from __future__ import annotations

import math
from dataclasses import replace
from statistics import fmean, pstdev

import pytest

from privacy.accounting import Cost, PrivacyError, epsilon_at_delta, rho_for_epsilon, spent_epsilon
from privacy.dp import (
    MIN_SHARE_SIGMA,
    NoiseSpec,
    avg_interval,
    integer_noise_share,
    interval,
    plan_noise,
    release_counts,
    release_sums,
    sensitivity,
    threshold_for,
)

N = 20_000


def _spec(mechanism: str, scale: float, *, integer: bool, l1: float = 1.0, l2: float = 1.0) -> NoiseSpec:
    """A spec calibrated by plan_noise with the given sensitivity, then read back at ``scale``."""
    kind = "count" if integer else "sum"
    bounds = None if integer else (0.0, l1)
    if mechanism == "laplace":
        plan = plan_noise([(kind, bounds)], 1, epsilon=1.0)
    else:
        plan = plan_noise([(kind, bounds)], 1, rho=1.0)
    spec = plan.columns[0]
    # Widening the noise keeps the guarantee, so the spec stays valid at any larger scale.
    assert scale >= spec.scale
    return replace(spec, scale=scale, sd=math.sqrt(2) * scale if mechanism == "laplace" else scale)


# --------------------------------------------------------------------------- sensitivity


def test_sensitivity_without_group_by() -> None:
    assert sensitivity("count", 20) == (20.0, 20.0)
    assert sensitivity("count_distinct", 20) == (1.0, 1.0)
    assert sensitivity("sum", 20, (0, 2_000_000)) == (40_000_000.0, 40_000_000.0)
    assert sensitivity("sum", 3, (-50, 10)) == (150.0, 150.0)


def test_sensitivity_over_a_public_group_domain() -> None:
    # All k rows may land in one group: COUNT keeps L1 = L2 = k.
    assert sensitivity("count", 9, n_groups=4) == (9.0, 9.0)
    # A unit adds 1 to each group it appears in, at most min(k, groups) of them.
    assert sensitivity("count_distinct", 9, n_groups=4) == (4.0, 2.0)
    l1, l2 = sensitivity("count_distinct", 9, n_groups=100)
    assert l1 == 9.0 and l2 == pytest.approx(3.0)
    assert sensitivity("sum", 2, (-1, 5), n_groups=10) == (10.0, 10.0)


@pytest.mark.parametrize(
    ("args", "kwargs", "rule"),
    [
        (("avg", 5, (0, 1)), {}, "aggregate_kind"),
        (("median", 5, None), {}, "aggregate_kind"),
        (("sum", 5, None), {}, "bounds"),
        (("sum", 5, (3, 1)), {}, "bounds"),
        (("sum", 5, (0, math.inf)), {}, "bounds"),
        (("count", 0, None), {}, "max_rows_per_unit"),
        (("count", 2.5, None), {}, "max_rows_per_unit"),
        (("count", 5, None), {"n_groups": 0}, "n_groups"),
    ],
)
def test_sensitivity_refuses_bad_input(args: tuple, kwargs: dict, rule: str) -> None:
    with pytest.raises(PrivacyError) as err:
        sensitivity(*args, **kwargs)
    assert err.value.rule == rule
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- planning


def test_plan_splits_epsilon_over_columns_threshold_and_avg_count() -> None:
    plan = plan_noise(
        [("count", None), ("sum", (0, 100)), ("avg", (0, 10))], 5, epsilon=1.0, n_groups=3, reuse_count=False
    )
    # count, sum, avg-sum, avg-count, distinct-unit count for the threshold
    assert [c.role for c in plan.components] == ["value", "value", "value", "avg_count", "threshold"]
    share = 1.0 / 5
    count, total, avg_sum = plan.columns
    assert count.scale == pytest.approx(5 / share)
    assert total.scale == pytest.approx(500 / share)
    assert avg_sum.scale == pytest.approx(50 / share)
    assert plan.avg_count(2).scale == pytest.approx(5 / share)
    assert plan.avg_count(0) is None
    assert plan.threshold.kind == "count_distinct"
    assert plan.threshold.scale == pytest.approx(3 / share)  # min(k=5, groups=3)
    assert plan.cost.epsilon == pytest.approx(1.0)
    assert plan.cost.rho == pytest.approx(5 * share**2 / 2)
    assert count.sd == pytest.approx(math.sqrt(2) * count.scale, rel=1e-3)


def test_plan_with_rho_uses_gaussian_and_reuses_distinct_count() -> None:
    plan = plan_noise([("count_distinct", None), ("sum", (-4, 2))], 10, rho=0.5, n_groups=25)
    assert [c.role for c in plan.components] == ["value", "value", "threshold"]
    assert plan.components[2].aggregate == 0 and plan.threshold is plan.columns[0]
    share = 0.5 / 2
    distinct, total = plan.columns
    assert distinct.mechanism == "gaussian" and distinct.integer
    assert distinct.scale == pytest.approx(math.sqrt(10) / math.sqrt(2 * share))
    assert total.scale == pytest.approx(40 / math.sqrt(2 * share)) and not total.integer
    assert plan.cost.epsilon == 0.0 and plan.cost.rho == pytest.approx(0.5)


@pytest.mark.parametrize("budget", [{"epsilon": 1.0}, {"rho": 0.5}])
def test_plan_reuses_count_star_as_threshold_one_share_fewer(budget: dict) -> None:
    aggregates = [("count", None), ("sum", (0, 100)), ("avg", (0, 10))]
    before = plan_noise(aggregates, 5, n_groups=3, reuse_count=False, **budget)
    after = plan_noise(aggregates, 5, n_groups=3, **budget)
    # The separate distinct-unit count is gone: the budget is split over one fewer measurement.
    assert [c.role for c in after.components] == ["value", "value", "value", "avg_count", "threshold"]
    assert after.components[-1].aggregate == 0 and after.threshold is after.columns[0]
    assert after.threshold.kind == "count" and after.threshold.max_rows_per_unit == 5
    measured_before, measured_after = len(before.components), len(after.components) - 1
    assert measured_after == measured_before - 1 == 4
    # The total cost is the request in both plans; each remaining measurement gets a larger share.
    total = budget.get("epsilon", budget.get("rho"))
    for plan, m in ((before, measured_before), (after, measured_after)):
        share = plan.columns[0].epsilon or plan.columns[0].rho
        assert share == pytest.approx(total / m)
        spent = plan.cost.epsilon if "epsilon" in budget else plan.cost.rho
        assert spent == pytest.approx(total)
    # Shares scale the noise by m (Laplace) or sqrt(m) (Gaussian): 4/5 as much as before.
    ratio = 4 / 5 if "epsilon" in budget else math.sqrt(4 / 5)
    for old, new in zip(before.columns, after.columns, strict=True):
        assert new.scale == pytest.approx(old.scale * ratio, rel=1e-6)


def test_plan_prefers_distinct_count_over_count_star_for_the_threshold() -> None:
    plan = plan_noise([("count", None), ("count_distinct", None)], 4, epsilon=1.0, n_groups=5)
    assert [c.role for c in plan.components] == ["value", "value", "threshold"]
    assert plan.components[-1].aggregate == 1 and plan.threshold.kind == "count_distinct"


def test_count_threshold_is_in_rows() -> None:
    plan = plan_noise([("count", None)], 7, epsilon=1.0)
    distinct = plan_noise([("count", None)], 7, epsilon=1.0, reuse_count=False).threshold
    q_rows = threshold_for(1, plan.threshold)  # (m - 1) R vanishes at m = 1: the noise tail alone
    assert threshold_for(10, plan.threshold) == 9 * 7 + q_rows
    assert threshold_for(10, distinct) == 9 + threshold_for(1, distinct)
    # COUNT(*) has sensitivity R: its noise, and so its tail, is R times that of the distinct
    # count at the same share (the distinct count here is measured at half the budget).
    assert plan.threshold.scale == pytest.approx(7 * distinct.scale / 2)


@pytest.mark.parametrize("budget", [{"epsilon": 1.0}, {"rho": 0.5}])
def test_row_threshold_holds_back_groups_below_the_minimum_size(budget: dict) -> None:
    """A group of fewer than m units, however its rows are laid out within R rows per unit,
    clears the row threshold with probability <= p. OpenDP draws cannot be seeded: enough draws
    keep the tolerance several standard errors above p."""
    m, r, p = 5, 6, 0.01
    plan = plan_noise([("count", None)], r, n_groups=4, **budget)
    spec = plan.threshold
    threshold = threshold_for(m, spec, p)
    layouts = {
        "m-1 units at R rows": (m - 1) * r,
        "m-1 units, one row short": (m - 1) * r - 1,
        "one unit at R rows": r,
        "m-1 units at one row": m - 1,
        "empty": 0,
    }
    for name, rows in layouts.items():
        released = sum(1 for v in release_counts([rows] * N, spec) if v >= threshold)
        assert released / N <= 1.3 * p, name
    # Well above the threshold, groups are almost always kept.
    big = threshold + int(6 * spec.sd)
    kept = sum(1 for v in release_counts([big] * 2000, spec) if v >= threshold)
    assert kept >= 1990


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({}, "privacy_request"),
        ({"epsilon": 1.0, "rho": 1.0}, "privacy_request"),
        ({"epsilon": -1.0}, "epsilon_value"),
        ({"rho": math.nan}, "rho_value"),
    ],
)
def test_plan_refuses_bad_budget(kwargs: dict, rule: str) -> None:
    with pytest.raises(PrivacyError) as err:
        plan_noise([("count", None)], 3, **kwargs)
    assert err.value.rule == rule


def test_plan_refuses_bad_aggregates() -> None:
    with pytest.raises(PrivacyError) as err:
        plan_noise([], 3, epsilon=1.0)
    assert err.value.rule == "aggregates"
    with pytest.raises(PrivacyError) as err:
        plan_noise([("max", None)], 3, epsilon=1.0)
    assert err.value.rule == "aggregate_kind"
    with pytest.raises(PrivacyError) as err:
        plan_noise([("avg", None)], 3, epsilon=1.0)
    assert err.value.rule == "bounds"


# --------------------------------------------------------------------------- noise


@pytest.mark.parametrize(
    ("mechanism", "integer"), [("laplace", True), ("gaussian", True), ("laplace", False), ("gaussian", False)]
)
def test_noise_sd_matches_the_claimed_scale(mechanism: str, integer: bool) -> None:
    spec = _spec(mechanism, 6.0, integer=integer)
    if integer:
        draws = [float(x) for x in release_counts([0] * N, spec)]
    else:
        draws = release_sums([0.0] * N, spec)
    expected_sd = math.sqrt(2) * 6.0 if mechanism == "laplace" else 6.0
    assert pstdev(draws) == pytest.approx(expected_sd, rel=0.05)
    assert abs(fmean(draws)) < 6 * expected_sd / math.sqrt(N)
    if integer:
        assert all(float(x).is_integer() for x in draws[:100])


def test_release_keeps_values_in_place() -> None:
    spec = _spec("laplace", 2.0, integer=True)
    noisy = release_counts([1_000_000, 0, 500], spec)
    assert len(noisy) == 3 and abs(noisy[0] - 1_000_000) < 200 and abs(noisy[2] - 500) < 200
    assert release_counts([], spec) == []


def test_release_refuses_bad_input_and_weak_noise() -> None:
    counts = plan_noise([("count", None)], 4, epsilon=1.0).columns[0]
    sums = plan_noise([("sum", (0, 1))], 4, epsilon=1.0).columns[0]
    cases = [
        (lambda: release_counts([1.5], counts), "dp_input"),
        (lambda: release_counts([True], counts), "dp_input"),
        (lambda: release_sums([math.nan], sums), "dp_input"),
        (lambda: release_sums([1.0], counts), "noise_kind"),
        (lambda: release_counts([1], sums), "noise_kind"),
        (lambda: release_counts([1], replace(counts, scale=counts.scale / 2)), "noise_scale"),
        (lambda: release_sums([1.0], replace(sums, scale=-1.0)), "noise_scale"),
    ]
    for call, rule in cases:
        with pytest.raises(PrivacyError) as err:
            call()
        assert err.value.rule == rule


# --------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize("budget", [{"epsilon": 1.0}, {"rho": 0.5}])
def test_threshold_releases_small_cells_rarely(budget: dict) -> None:
    plan = plan_noise([("sum", (0, 10))], 4, n_groups=6, **budget)
    spec = plan.threshold
    for p, n, tolerance in ((0.01, N, 0.013), (1e-3, N, 0.0022)):
        threshold = threshold_for(10, spec, p)
        assert threshold > 9
        # Worst case: the largest count that must be suppressed.
        released = sum(1 for v in release_counts([9] * n, spec) if v >= threshold)
        assert released / n <= tolerance
    # A clearly large cell is almost always released.
    big = threshold_for(10, spec, 1e-3) + int(6 * spec.sd)
    kept = sum(1 for v in release_counts([big] * 2000, spec) if v >= threshold_for(10, spec, 1e-3))
    assert kept >= 1990


def test_threshold_refuses_bad_input() -> None:
    spec = plan_noise([("count", None)], 2, epsilon=1.0).threshold
    for args, rule in (((0, spec), "min_group_size"), ((5, spec, 0.7), "threshold_p")):
        with pytest.raises(PrivacyError) as err:
            threshold_for(*args)
        assert err.value.rule == rule


# --------------------------------------------------------------------------- intervals


@pytest.mark.parametrize(
    ("mechanism", "integer"), [("laplace", True), ("gaussian", True), ("laplace", False), ("gaussian", False)]
)
def test_interval_covers_about_95_percent(mechanism: str, integer: bool) -> None:
    spec = _spec(mechanism, 7.0, integer=integer)
    truth = 100
    if integer:
        noisy = [float(v) for v in release_counts([truth] * N, spec)]
    else:
        noisy = release_sums([float(truth)] * N, spec)
    covered = sum(1 for v in noisy if interval(v, spec)[0] <= truth <= interval(v, spec)[1]) / N
    # A discrete interval has a whole-number half-width chosen to cover at least 95%, so it covers
    # a little more (96.2% for the discrete Gaussian at sigma 7); the bounds allow about four
    # standard errors at N draws either side.
    assert 0.94 <= covered <= (0.968 if integer else 0.965)
    lo, hi = interval(0.0, spec)
    if not integer:
        expected = 7.0 * math.log(20) if mechanism == "laplace" else 1.959964 * 7.0
        assert hi == pytest.approx(expected, rel=1e-5) and lo == pytest.approx(-expected, rel=1e-5)


def test_avg_interval_is_conservative() -> None:
    plan = plan_noise([("avg", (0, 10))], 2, epsilon=2.0)
    sum_spec, count_spec = plan.columns[0], plan.avg_count(0)
    assert count_spec is not None
    true_sum, true_count = 4_000.0, 800
    n = 5_000
    sums = release_sums([true_sum] * n, sum_spec)
    counts = release_counts([true_count] * n, count_spec)
    covered = 0
    for s, c in zip(sums, counts, strict=True):
        lo, hi = avg_interval(s, sum_spec, float(c), count_spec)
        covered += lo <= true_sum / true_count <= hi
    assert covered / n >= 0.95
    assert avg_interval(10.0, sum_spec, 1.0, count_spec) == (-math.inf, math.inf)


def test_interval_refuses_bad_level() -> None:
    with pytest.raises(PrivacyError) as err:
        interval(1.0, _spec("gaussian", 3.0, integer=False), level=1.0)
    assert err.value.rule == "interval_level"


# --------------------------------------------------------------------------- distributed noise


def test_integer_noise_share_sum_carries_the_target_noise() -> None:
    spec = plan_noise([("count", None)], 5, rho=0.02).columns[0]  # sigma = 25
    share = integer_noise_share(4, spec)
    assert share.per_node.scale == pytest.approx(spec.scale / 2)
    assert share.total_sd >= spec.scale * (1 - 1e-12)
    assert share.tau < 1e-12
    n = 8_000
    per_node = [release_counts([0] * n, share.per_node) for _ in range(4)]
    summed = [float(sum(col)) for col in zip(*per_node, strict=True)]
    assert pstdev(summed) == pytest.approx(spec.scale, rel=0.06)


def test_integer_noise_share_floor_trust_and_laplace() -> None:
    weak = plan_noise([("count", None)], 1, rho=50.0).columns[0]  # sigma = 0.2
    assert integer_noise_share(6, weak).per_node.scale == MIN_SHARE_SIGMA
    # At the floor the KLS21 distance term stays negligible.
    assert integer_noise_share(6, weak).tau < 1e-8
    spec = plan_noise([("count", None)], 5, rho=0.02).columns[0]
    assert integer_noise_share(6, spec, trusted=3).per_node.scale == pytest.approx(spec.scale / math.sqrt(3))
    pure = plan_noise([("count", None)], 5, epsilon=0.5).columns[0]
    lap = integer_noise_share(6, pure)
    assert lap.per_node.scale == pure.scale  # every node adds the full Laplace noise
    assert lap.total_sd == pytest.approx(pure.sd * math.sqrt(6))


def test_integer_noise_share_fixed_point_sum() -> None:
    spec = plan_noise([("sum", (0, 1000))], 3, rho=0.5).columns[0]
    share = integer_noise_share(5, spec, fixed_point_scale=2**16)
    assert share.per_node.integer and share.per_node.kind == "sum"
    assert share.per_node.l2 == 3 * 1000 * 2**16
    assert share.per_node.scale == pytest.approx(spec.scale * 2**16 / math.sqrt(5))
    noisy = release_counts([7 * 2**16, 0], share.per_node)
    assert all(isinstance(v, int) for v in noisy)


def test_integer_noise_share_refuses_bad_input() -> None:
    spec = plan_noise([("count", None)], 5, rho=0.02).columns[0]
    for kwargs, rule in (
        ({"n_nodes": 0}, "n_nodes"),
        ({"n_nodes": 3, "trusted": 4}, "trusted_nodes"),
        ({"n_nodes": 3, "fixed_point_scale": 8.0}, "fixed_point"),
    ):
        with pytest.raises(PrivacyError) as err:
            integer_noise_share(spec=spec, **kwargs)
        assert err.value.rule == rule


# --------------------------------------------------------------------------- conversions


def test_epsilon_at_delta_and_back() -> None:
    eps = epsilon_at_delta(0.5, 1e-6)
    # Between the tight conversion and the classic rho + 2 sqrt(rho ln(1/delta)) bound.
    assert 0.5 < eps <= 0.5 + 2 * math.sqrt(0.5 * math.log(1e6))
    assert epsilon_at_delta(0.0, 1e-6) == 0.0
    assert epsilon_at_delta(0.1, 0.0) == math.inf
    assert epsilon_at_delta(0.2, 1e-6) < epsilon_at_delta(0.3, 1e-6)
    rho = rho_for_epsilon(eps, 1e-6)
    assert rho == pytest.approx(0.5, rel=1e-6) and epsilon_at_delta(rho, 1e-6) <= eps
    with pytest.raises(PrivacyError) as err:
        epsilon_at_delta(-1.0, 1e-6)
    assert err.value.rule == "rho_value"
    with pytest.raises(PrivacyError) as err:
        rho_for_epsilon(1.0, 1.5)
    assert err.value.rule == "delta_value"


def test_spent_epsilon_takes_the_smaller_bound() -> None:
    # Ten pure releases of epsilon 1: pure composition (10) beats zCDP at delta 1e-6.
    assert spent_epsilon(10.0, 10 * 0.5, 0.0, 1e-6) == pytest.approx(10.0)
    # A hundred small ones: zCDP wins.
    many = spent_epsilon(100 * 0.1, 100 * 0.005, 0.0, 1e-6)
    assert many == pytest.approx(epsilon_at_delta(0.5, 1e-6)) and many < 10.0
    with pytest.raises(PrivacyError) as err:
        Cost(epsilon=-1.0, rho=0.0)
    assert err.value.rule == "cost_value"


def test_measurements_are_built_once_and_still_draw_fresh_noise() -> None:
    """A plan's OpenDP measurements are kept per (mechanism, integer, scale) and its calibration
    per spec: the same plan again gives the same scales and cost without building anything, and
    each release from a kept measurement still samples new noise."""
    from privacy import dp as dp_module

    for cached in (
        dp_module._measurement_of,
        dp_module._calibrate,
        dp_module._component_cost,
        dp_module._guard,
    ):
        cached.cache_clear()
    aggregates = [("count", None), ("sum", (0.0, 100.0))]
    first = plan_noise(aggregates, 2, rho=0.25, n_groups=12)
    built = dp_module._measurement_of.cache_info().misses
    again = plan_noise(aggregates, 2, rho=0.25, n_groups=12)
    assert again == first  # same scales, sds and cost
    assert dp_module._measurement_of.cache_info().misses == built  # nothing built again
    # The calibrated scale is the one an uncached calibration finds.
    for component in first.components:
        raw = replace(component.spec, scale=1.0, sd=1.0)
        assert dp_module._calibrate.__wrapped__(raw) == component.spec
    spec = first.columns[0]
    draws = {tuple(release_counts([0] * 20, spec)) for _ in range(5)}
    assert len(draws) > 1  # fresh noise on every call
    assert dp_module._guard(spec) is dp_module._guard(spec)
