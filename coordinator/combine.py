"""Combine per-node protected results into one answer.

Counts and sums add per group; AVG is the total sum over the total count. Noise variances add;
the 95% interval is the node's own when one node contributed, else a normal approximation.
VARIANCE / STDDEV add the nodes' counts, centred sums and centred sums of squares, PERCENTILE adds
their bin counts; the statistic and its interval are read off the totals (privacy/statistics.py).

Suppression:

* DP releases carry each node's noisy threshold count per group and the noise it was made with
  (``QueryResult.threshold``). Suppression is decided once, on the sum of those counts, against
  a threshold calibrated to the summed noise and the strictest ``min_group_size`` among the
  answering nodes (privacy/suppression.py): post-processing of released figures, no budget.
* A group that a node suppressed itself (exact mode, or DP with policy ``suppression = "node"``)
  is suppressed in the combined answer too: releasing the other nodes' part would let an
  analyst subtract it from a later, larger total.
"""

from __future__ import annotations

import math

from privacy.statistics import Estimate, Moments, add_moments, percentile, stddev, variance
from privacy.suppression import ThresholdNoise, combined_threshold
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.values import from_value

_STATISTICS = (pb.VARIANCE, pb.STDDEV, pb.PERCENTILE)

Z95 = 1.959963984540054


def _decision(answers: dict[str, pb.QueryResult], min_group_sizes: dict[str, int]) -> tuple[int, str] | None:
    """(threshold, what it counts) for the summed threshold counts; ``None`` without DP parts."""
    parts = [
        ThresholdNoise(r.threshold.mechanism, r.threshold.scale, max(1, r.threshold.per_unit))
        for r in answers.values()
        if r.HasField("threshold")
    ]
    if not parts:
        return None
    sizes = [int(r.threshold.min_group_size) for r in answers.values() if r.HasField("threshold")]
    sizes += [size for node, size in min_group_sizes.items() if node in answers]
    measured = "row" if any(r.threshold.kind == "count" for r in answers.values()) else "unit"
    return combined_threshold(max(1, *sizes), parts), measured


def _statistic(agg: pb.Aggregate, cells: list[pb.Cell]) -> Estimate:
    """VARIANCE / STDDEV / PERCENTILE over the union of the nodes' rows, from their cells."""
    if agg.function == pb.PERCENTILE:
        shapes = {(c.low, c.high, len(c.bins)) for c in cells}
        if len(shapes) != 1:
            raise FederationError(
                "statistic_bounds_differ",
                f"the nodes bin '{agg.column}' over different declared bounds; PERCENTILE_CONT needs the same",
            )
        low, high, width = shapes.pop()
        totals = [sum(c.bins[j] for c in cells) for j in range(width)]
        sd = math.sqrt(sum(c.bins_noise_sd**2 for c in cells))
        return percentile(totals, low, high, agg.quantile, sd)
    parts = [
        Moments(
            c.count,
            c.sum,
            c.sum_squares,
            c.shift,
            c.low,
            c.high,
            c.count_noise_sd**2,
            c.noise_sd**2,
            c.sum_squares_noise_sd**2,
        )
        for c in cells
    ]
    total = add_moments(parts)
    return variance(total) if agg.function == pb.VARIANCE else stddev(total)


def combine(
    spec: pb.QuerySpec, answers: dict[str, pb.QueryResult], min_group_sizes: dict[str, int] | None = None
) -> list[pb.CombinedRow]:
    """Combined rows; ``min_group_sizes`` (node -> its policy's, from its DatasetInfo) adds the
    answering exact-mode nodes' minimum sizes to the strictest one the decision uses."""
    decision = _decision(answers, min_group_sizes or {})
    counts: dict[tuple, float] = {}
    rows: dict[tuple, pb.CombinedRow] = {}
    totals: dict[tuple, list[list[float]]] = {}
    single: dict[tuple, list[pb.Cell | None]] = {}
    parts: dict[tuple, list[list[pb.Cell]]] = {}
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
                parts[key] = [[] for _ in range(n_aggs)]
                order.append(key)
            row = rows[key]
            if answers[node].HasField("threshold"):
                counts[key] = counts.get(key, 0.0) + group.threshold_count
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
                parts[key][i].append(cell)
    out = []
    for key in order:
        row = rows[key]
        if decision is not None and not row.suppressed and counts.get(key, 0.0) < decision[0]:
            row.suppressed = True
            row.suppressed_by.append(
                f"combined: min_group_size: summed noisy {decision[1]} count below {decision[0]}"
            )
        for i, agg in enumerate(spec.aggregates):
            cell = row.cells.add()
            if row.suppressed:
                cell.suppressed = True
                continue
            s, c, var_s, var_c, contributors = totals[key][i]
            if agg.function in _STATISTICS:
                estimate = _statistic(agg, parts[key][i])
                cell.value, cell.noise_sd = estimate.value, estimate.sd
                cell.ci_low, cell.ci_high = estimate.ci_low, estimate.ci_high
                continue
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
