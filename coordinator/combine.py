"""Combine per-node protected results into one answer.

Counts and sums add per group; AVG is the total sum over the total count. A group that any
answering node suppressed is suppressed in the combined answer too: releasing the other nodes'
part would let an analyst subtract it from a later, larger total. Noise variances add; the 95%
interval is the node's own when one node contributed, else a normal approximation.
"""

from __future__ import annotations

import math

from protocols import federation_pb2 as pb
from protocols.values import from_value

Z95 = 1.959963984540054


def combine(spec: pb.QuerySpec, answers: dict[str, pb.QueryResult]) -> list[pb.CombinedRow]:
    rows: dict[tuple, pb.CombinedRow] = {}
    totals: dict[tuple, list[list[float]]] = {}
    single: dict[tuple, list[pb.Cell | None]] = {}
    order: list[tuple] = []
    n_aggs = len(spec.aggregates)
    for node in sorted(answers):
        for group in answers[node].groups:
            key = tuple(from_value(v) for v in group.key)
            if key not in rows:
                row = pb.CombinedRow()
                row.key.extend(group.key)
                rows[key] = row
                # per aggregate: sum, count, sum-noise variance, count-noise variance, contributors
                totals[key] = [[0.0, 0.0, 0.0, 0.0, 0.0] for _ in range(n_aggs)]
                single[key] = [None] * n_aggs
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
                t[4] += 1
                single[key][i] = cell
    out = []
    for key in order:
        row = rows[key]
        for i, agg in enumerate(spec.aggregates):
            cell = row.cells.add()
            if row.suppressed:
                cell.suppressed = True
                continue
            s, c, var_s, var_c, contributors = totals[key][i]
            if agg.function == pb.AVG:
                value = s / c if c > 0 else math.nan
                # Delta method for a ratio of independent noisy sum and count.
                sd = math.sqrt(var_s / c**2 + (s**2) * var_c / c**4) if c > 0 else 0.0
            else:
                value, sd = s, math.sqrt(var_s)
            cell.value = value
            cell.noise_sd = sd
            only = single[key][i]
            if contributors == 1 and only is not None and sd > 0:
                # One node's noise: its exact interval (Laplace and discrete tails are not normal).
                cell.ci_low, cell.ci_high = only.ci_low, only.ci_high
            else:
                # Several independent noises: normal approximation with the summed variance.
                cell.ci_low = value - Z95 * sd
                cell.ci_high = value + Z95 * sd
        out.append(row)
    return out
