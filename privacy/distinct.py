"""Noise and cost of a union COUNT(DISTINCT unit) per group (docs/privacy.md, "Distinct entities").

The union count of a group changes by at most 1 when one privacy unit is added to or removed from
one party's dataset, and only in the groups the unit has a row in at that party: after truncation
to ``max_rows_per_unit`` rows that is at most ``min(max_rows_per_unit, groups)`` groups. That is
the L1 sensitivity of the vector of union counts, the same as a node's own COUNT(DISTINCT unit),
so each party charges what it would for that aggregate, and the coordinator adds discrete Laplace
noise (OpenDP) calibrated to the largest sensitivity over the parties at the smallest epsilon any
party charged. The noisy count is also the one suppression is decided on (post-processing).
"""

from __future__ import annotations

from privacy.accounting import Cost
from privacy.dp import NoiseSpec, plan_noise


def groups_per_unit(max_rows_per_unit: int, n_groups: int) -> int:
    """How many groups' union counts one unit of one dataset can move (each by at most 1)."""
    return max(1, min(int(max_rows_per_unit), int(n_groups)))


def union_cost(epsilon: float, max_rows_per_unit: int, n_groups: int) -> Cost:
    """What a party charges for its part of a union count at ``epsilon`` (OpenDP's privacy map)."""
    return plan_noise(
        [("count_distinct", None)], max_rows_per_unit=max_rows_per_unit, epsilon=epsilon, n_groups=n_groups
    ).cost


def union_noise(epsilon: float, sensitivity: int) -> NoiseSpec:
    """Discrete Laplace noise for union counts moved by at most ``sensitivity`` groups per unit."""
    plan = plan_noise(
        [("count_distinct", None)], max_rows_per_unit=sensitivity, epsilon=epsilon, n_groups=sensitivity
    )
    return plan.columns[0]
