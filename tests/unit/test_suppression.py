"""The combined suppression threshold (privacy/suppression.py), checked by Monte Carlo with noise
drawn by OpenDP's own samplers, as the nodes draw it."""

from __future__ import annotations

import math

import numpy as np
import opendp.prelude as dp
import pytest

from privacy.accounting import PrivacyError
from privacy.dp import NoiseSpec, plan_noise, threshold_for
from privacy.suppression import THRESHOLD_P, ThresholdNoise, _chernoff, combined_threshold, sum_upper_tail

dp.enable_features("contrib")

DRAWS = 40_000
MIN_GROUP = 10
NODES = 6


def noise(part: ThresholdNoise, n: int) -> np.ndarray:
    """``n`` draws of the part's integer noise from OpenDP (discrete Laplace / discrete Gaussian)."""
    domain = dp.vector_domain(dp.atom_domain(T="i64"))
    if part.mechanism == "laplace":
        meas = dp.m.make_laplace(domain, dp.l1_distance(T="i64"), scale=part.scale)
    else:
        meas = dp.m.make_gaussian(domain, dp.l2_distance(T=float), scale=part.scale)
    return np.asarray(meas([0] * n), dtype=np.int64)


def summed(parts: list[ThresholdNoise], n: int = DRAWS) -> np.ndarray:
    return np.sum([noise(p, n) for p in parts], axis=0)


def tolerance(p: float, n: int) -> float:
    return p + 4 * math.sqrt(p / n)


def drugs_parts(epsilon: float = 1.0, rho: float | None = None) -> list[ThresholdNoise]:
    """Six partners answering COUNT(DISTINCT company), COUNT(*) GROUP BY region (10 regions,
    10 rows per unit): the noisy distinct count is each node's threshold count."""
    plan = plan_noise(
        [("count_distinct", None), ("count", None)],
        10,
        epsilon=None if rho else epsilon,
        rho=rho,
        n_groups=10,
    )
    spec = plan.threshold
    return [ThresholdNoise(spec.mechanism, spec.scale, 1)] * NODES


@pytest.mark.parametrize(
    "parts",
    [
        drugs_parts(),
        drugs_parts(rho=0.5)[:3],
        # Heterogeneous nodes: other caps and contribution bounds give other scales.
        [ThresholdNoise("laplace", b) for b in (4.0, 9.0, 20.0, 40.0)],
        [ThresholdNoise("laplace", 12.0), ThresholdNoise("gaussian", 30.0)],
    ],
    ids=["laplace-drugs", "gaussian-drugs", "laplace-mixed-scales", "laplace-and-gaussian"],
)
def test_a_group_one_unit_below_the_minimum_clears_at_most_one_in_a_thousand(
    parts: list[ThresholdNoise],
) -> None:
    threshold = combined_threshold(MIN_GROUP, parts)
    exact = MIN_GROUP - 1  # the most units a too-small group can have, over all nodes together
    cleared = float(np.mean(exact + summed(parts) >= threshold))
    assert cleared <= tolerance(THRESHOLD_P, DRAWS)


def test_the_tail_is_tight_and_the_fallback_bound_is_above_it() -> None:
    """The convolved tail sits at the Monte Carlo 1 - p quantile of the summed noise; the Chernoff
    bound used for very wide noise is valid (above it) and both are far below the union bound."""
    parts = drugs_parts()
    q = sum_upper_tail(parts)
    true_q = float(np.quantile(summed(parts), 1 - THRESHOLD_P))
    assert 0.9 * true_q <= q <= 1.1 * true_q
    assert q <= _chernoff(parts, THRESHOLD_P) <= 1.5 * q
    union = NODES * sum_upper_tail(parts[:1], THRESHOLD_P / NODES)
    assert _chernoff(parts, THRESHOLD_P) < 0.4 * union
    wide = [ThresholdNoise("laplace", 1e6)] * 3
    assert sum_upper_tail(wide) == _chernoff(wide, THRESHOLD_P)


def test_groups_of_thirty_to_four_hundred_units_per_partner_clear() -> None:
    """Six partners, 7 countries, at most 3 rows per unit, epsilon 1: a country with 30 units of
    one row each at every partner (the smallest group of the benchmark scenario) clears the
    threshold in (practically) every draw, decided on COUNT(DISTINCT unit) or on COUNT(*)."""
    for kind in ("count_distinct", "count"):
        spec = plan_noise([(kind, None)], 3, epsilon=1.0, n_groups=7).threshold
        per_unit = 3 if kind == "count" else 1
        parts = [ThresholdNoise(spec.mechanism, spec.scale, per_unit)] * NODES
        threshold = combined_threshold(MIN_GROUP, parts)
        cleared = float(np.mean(NODES * 30 + summed(parts, 20_000) >= threshold))
        assert cleared >= 0.999, (kind, threshold)


def test_row_counts_scale_the_minimum_by_the_largest_row_bound() -> None:
    """With COUNT(*) as threshold count a unit adds up to R rows: T = (m - 1) max R + q. The worst
    too-small group puts all its units, with R rows each, at the node with the largest R."""
    parts = [
        ThresholdNoise("laplace", 5.0, 5),
        ThresholdNoise("laplace", 20.0, 20),
        ThresholdNoise("laplace", 8.0, 8),
    ]
    q = sum_upper_tail(parts)
    assert combined_threshold(MIN_GROUP, parts) == (MIN_GROUP - 1) * 20 + q
    cleared = float(np.mean((MIN_GROUP - 1) * 20 + summed(parts) >= combined_threshold(MIN_GROUP, parts)))
    assert cleared <= tolerance(THRESHOLD_P, DRAWS)


def test_one_part_keeps_the_single_node_threshold() -> None:
    for mechanism, scale in (("laplace", 20.0), ("gaussian", 14.0)):
        spec = NoiseSpec(mechanism=mechanism, scale=scale, sd=scale)  # type: ignore[arg-type]
        assert combined_threshold(MIN_GROUP, [ThresholdNoise(mechanism, scale)]) == threshold_for(
            MIN_GROUP, spec
        )


def test_gaussian_shares_sum_to_one_gaussian_of_the_summed_variance() -> None:
    """Four discrete Gaussian shares of sigma 5 have the tail of one Gaussian of sigma 10: the
    normal 1 - p quantile (3.09 sigma), below the sub-Gaussian bound (3.72 sigma) used as fallback."""
    shares = [ThresholdNoise("gaussian", 5.0)] * 4
    assert abs(sum_upper_tail(shares) - 10.0 * 3.0902) <= 1.5  # on the integer grid
    assert _chernoff(shares, THRESHOLD_P) == math.ceil(10.0 * math.sqrt(2 * math.log(1 / THRESHOLD_P)))


@pytest.mark.parametrize(
    ("args", "rule"),
    [
        (([],), "threshold_parts"),
        (([ThresholdNoise("uniform", 1.0)],), "mechanism"),
        (([ThresholdNoise("laplace", 0.0)],), "noise_scale"),
        (([ThresholdNoise("laplace", 1.0, 0)],), "max_rows_per_unit"),
        (([ThresholdNoise("laplace", 1.0)], 0.7), "threshold_p"),
    ],
)
def test_bad_input_names_the_rule(args: tuple, rule: str) -> None:
    with pytest.raises(PrivacyError) as err:
        sum_upper_tail(*args)
    assert err.value.rule == rule


def test_bad_minimum_size_names_the_rule() -> None:
    with pytest.raises(PrivacyError) as err:
        combined_threshold(0, [ThresholdNoise("laplace", 1.0)])
    assert err.value.rule == "min_group_size"
