"""The node's secure-query blocks (nodes/secure_release.py): a group sum too large for the
fixed-point grid is clamped, never refused, so no refusal is decided on an exact sum."""

from __future__ import annotations

from typing import Any

import numpy as np

from nodes.config import NodeConfig
from nodes.secure_release import ROWS_CAP, exact_blocks


def test_secure_group_sum_beyond_the_grid_cap_is_clamped_not_refused(
    customs: Any, node_config: NodeConfig
) -> None:
    plan = customs.plan_for("SELECT port, SUM(value) AS s FROM declarations GROUP BY port", node_config)
    hi = max(abs(b) for b in customs.BOUNDS)
    cap = hi * ROWS_CAP
    n = len(plan.keys)
    sums = [cap * 4] + [10.0] * (n - 1)  # one group more than 2^24 rows at the bound
    blocks = exact_blocks(plan, [1] * n, [1] * n, {0: (sums, [1] * n)})
    value = next(b for b in blocks if b.kind == "sum")
    assert value.values[0] == int(np.int64(round(cap * value.scale)))
    assert value.values[1] == int(round(10.0 * value.scale))
