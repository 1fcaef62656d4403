"""A bound on a set's size decided on a noisy size, so the refusal it may cause is a DP release.

A party's set size decides whether it takes part in a job (``overlap_min_set`` and
``overlap_max_set``). Deciding on the exact size would make the refusal a free, exact yes/no
about the data. Here the size gets discrete Laplace noise from OpenDP (the geometric mechanism,
Ghosh, Roughgarden & Sundararajan 2012) at a budget that is charged before the decision, and the
decision is post-processing of the noisy size (Dwork & Roth 2014, Prop. 2.1).

One privacy unit adds or removes at most ``sensitivity`` identifiers, so the size has L1
sensitivity ``sensitivity`` (a COUNT(*) with that many rows per unit).

Resources still need a hard ceiling: a set above ``hard_limit`` is refused whatever the noise
says. The ceiling sits so far above the upper bound that the noisy check refuses such a set
anyway, except with probability at most ``DELTA``: the check is (epsilon, DELTA)-DP.

Pure functions, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from privacy.accounting import Cost, PrivacyError
from privacy.dp import NoiseSpec, plan_noise, release_counts

__all__ = ["DELTA", "SizeCheck", "check_size", "hard_limit", "size_noise"]

# Probability that the exact hard ceiling decides where the noisy check would have passed.
DELTA = 1e-9


@dataclass(frozen=True)
class SizeCheck:
    """The outcome of one check: whether the set may take part, and what the check cost."""

    passed: bool
    below: bool  # refused for the lower bound
    cost: Cost
    noise_sd: float


def size_noise(epsilon: float, sensitivity: int) -> tuple[NoiseSpec, Cost]:
    """Discrete Laplace for one set size at ``epsilon``, and its cost from OpenDP's privacy map."""
    plan = plan_noise([("count", None)], max_rows_per_unit=sensitivity, epsilon=epsilon, n_groups=1)
    return plan.components[0].spec, plan.cost


def hard_limit(upper: int, epsilon: float | None, sensitivity: int) -> int:
    """The largest set kept in memory: ``upper`` exactly without DP, else ``upper`` plus a margin
    the noise crosses with probability at most ``DELTA``.

    Discrete Laplace with scale b has P(X <= -m) <= exp(-m / b), so m = b ln(1 / DELTA).
    Depends only on the policy and the request, never on the data.
    """
    if epsilon is None:
        return upper
    return _ceiling(upper, size_noise(epsilon, sensitivity)[0])


def _ceiling(upper: int, spec: NoiseSpec) -> int:
    return upper + math.ceil(spec.scale * math.log(1.0 / DELTA))


def check_size(size: int, lower: int, upper: int, epsilon: float, sensitivity: int) -> SizeCheck:
    """Compare a noisy ``size`` with ``[lower, upper]``; the caller charges ``size_noise``'s cost first.

    A size above ``hard_limit`` is refused without looking at the noise (see the module note).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise PrivacyError("dp_input", f"a set size must be a whole number >= 0, got {size!r}")
    if not 0 <= lower <= upper:
        raise PrivacyError("size_bounds", f"size bounds must satisfy 0 <= lower <= upper: [{lower}, {upper}]")
    spec, cost = size_noise(epsilon, sensitivity)
    noisy = release_counts([size], spec)[0]
    below = noisy < lower
    passed = not below and noisy <= upper and size <= _ceiling(upper, spec)
    return SizeCheck(passed=passed, below=below, cost=cost, noise_sd=spec.sd)
