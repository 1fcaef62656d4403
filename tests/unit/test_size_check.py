"""The overlap set-size check decided on a noisy size (privacy/size_check.py): a decision on the
data that is a charged DP release, not a free answer about the data."""

from __future__ import annotations

import math

import pytest

from privacy.accounting import PrivacyError
from privacy.size_check import DELTA, check_size, hard_limit, size_noise

LOWER, UPPER = 100, 1000


def test_the_check_costs_its_epsilon_and_scales_noise_with_the_sensitivity() -> None:
    spec, cost = size_noise(0.1, 1)
    assert cost.epsilon == pytest.approx(0.1, rel=1e-6)
    assert spec.scale == pytest.approx(10.0, rel=1e-6)
    wider, cost3 = size_noise(0.1, 3)
    assert cost3.epsilon == pytest.approx(0.1, rel=1e-6)
    assert wider.scale == pytest.approx(3 * spec.scale, rel=1e-6)


def test_far_from_the_bounds_the_decision_is_the_exact_one() -> None:
    for _ in range(50):
        assert not check_size(2, LOWER, UPPER, 0.5, 1).passed
        assert check_size(2, LOWER, UPPER, 0.5, 1).below
        assert check_size(500, LOWER, UPPER, 0.5, 1).passed
        big = check_size(5000, LOWER, UPPER, 0.5, 1)
        assert not big.passed and not big.below


def test_at_the_bound_the_outcome_is_random_not_the_exact_comparison() -> None:
    # The exact comparison would pass every time at size == LOWER and fail every time one below.
    at = [check_size(LOWER, LOWER, UPPER, 0.1, 1).passed for _ in range(300)]
    below = [check_size(LOWER - 1, LOWER, UPPER, 0.1, 1).passed for _ in range(300)]
    assert 0.3 < sum(at) / len(at) < 0.8, sum(at)
    assert 0.3 < sum(below) / len(below) < 0.8, sum(below)


def test_hard_limit_depends_on_the_policy_and_the_request_only() -> None:
    spec, _ = size_noise(0.1, 1)
    # The noise falls below -margin with probability at most DELTA.
    assert hard_limit(UPPER, 0.1, 1) == UPPER + math.ceil(spec.scale * math.log(1 / DELTA))
    assert hard_limit(UPPER, 0.1, 3) > hard_limit(UPPER, 0.1, 1)
    assert hard_limit(UPPER, None, 1) == UPPER  # exact mode: the exact bound


@pytest.mark.parametrize("size", [-1, 1.5, True])
def test_bad_sizes_are_refused_with_a_rule(size: object) -> None:
    with pytest.raises(PrivacyError) as info:
        check_size(size, LOWER, UPPER, 0.1, 1)  # type: ignore[arg-type]
    assert info.value.rule == "dp_input"
