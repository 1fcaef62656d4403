"""Combine per-node protected results into one answer.

Counts and sums add per group; AVG is the total sum over the total count. A group that any
answering node suppressed is suppressed in the combined answer too: releasing the other nodes'
part would let an analyst subtract it from a later, larger total.
"""

from __future__ import annotations

import math

from protocols import federation_pb2 as pb
from protocols.values import from_value

Z95 = 1.959963984540054


def combine(spec: pb.QuerySpec, answers: dict[str, pb.QueryResult]) -> list[pb.CombinedRow]:
    rows: dict[tuple, pb.CombinedRow] = {}
    totals: dict[tuple, list[list[float]]] = {}
    order: list[tuple] = []
    n_aggs = len(spec.aggregates)
    for node in sorted(answers):
        for group in answers[node].groups:
            key = tuple(from_value(v) for v in group.key)
            if key not in rows:
                row = pb.CombinedRow()
                row.key.extend(group.key)
                rows[key] = row
                # per aggregate: sum, count, sum-noise variance, count-noise variance
                totals[key] = [[0.0, 0.0, 0.0, 0.0] for _ in range(n_aggs)]
                order.append(key)
            row = rows[key]
            if group.suppressed:
                row.suppressed = True
                row.suppressed_by.append(f"{node}: {group.suppression_rule}")
                continue
            for i, cell in enumerate(group.cells[:n_aggs]):
                t = totals[key][i]
                t[0] += cell.sum
                t[1] += cell.count
                t[2] += cell.noise_sd**2
                t[3] += cell.count_noise_sd**2
    out = []
    for key in order:
        row = rows[key]
        for i, agg in enumerate(spec.aggregates):
            cell = row.cells.add()
            if row.suppressed:
                cell.suppressed = True
                continue
            s, c, var_s, var_c = totals[key][i]
            if agg.function == pb.AVG:
                value = s / c if c > 0 else math.nan
                # Delta method for a ratio of independent noisy sum and count.
                sd = math.sqrt(var_s / c**2 + (s**2) * var_c / c**4) if c > 0 else 0.0
            else:
                value, sd = s, math.sqrt(var_s)
            cell.value = value
            cell.noise_sd = sd
            cell.ci_low = value - Z95 * sd
            cell.ci_high = value + Z95 * sd
        out.append(row)
    return out
