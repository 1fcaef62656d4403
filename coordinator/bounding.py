"""Post-processing of a combined answer that follows from the contribution bounds.

* Every combined figure and its interval are moved into the range any exact answer lies in
  (privacy/bounds.py ``feasible_range``): a count is never negative, a SUM of a non-negative
  column neither, an AVG stays within the clamping bounds. Post-processing, no budget.
* The nodes' noisy bounding figures (units cut by truncation, values moved by clamping) are
  added up over the answering nodes, their noise variances too.
"""

from __future__ import annotations

import math

from privacy.agreements import MEASURE_KIND
from privacy.bounds import clip, feasible_range
from protocols import federation_pb2 as pb

Z95 = 1.959963984540054


def clamping_bounds(agg: pb.Aggregate, info: pb.DatasetInfo) -> tuple[float, float] | None:
    """The bounds a node clamped ``agg`` to: the query's where set, else the declared ones."""
    column = next((c for c in info.columns if c.name == agg.column), None)
    if column is None or column.kind != pb.NUMERIC:
        return None
    lower = agg.bounds.lower if agg.bounds.HasField("lower") else column.lower
    upper = agg.bounds.upper if agg.bounds.HasField("upper") else column.upper
    return lower, upper


def clip_rows(spec: pb.QuerySpec, rows: list[pb.CombinedRow], infos: list[pb.DatasetInfo]) -> None:
    """Move every released cell of ``rows`` into its feasible range, in place, over the answering nodes' ``infos``."""
    for i, agg in enumerate(spec.aggregates):
        kind = MEASURE_KIND.get(agg.function, "")
        if not kind:
            continue
        bounds = [b for info in infos if (b := clamping_bounds(agg, info)) is not None]
        low, high = feasible_range(kind, bounds if kind in ("sum", "avg") else None)
        for row in rows:
            cell = row.cells[i]
            cell.feasible_low, cell.feasible_high = low, high
            if cell.suppressed:
                continue
            cell.value, cell.ci_low, cell.ci_high, moved = clip(
                cell.value, cell.ci_low, cell.ci_high, (low, high)
            )
            cell.clipped = moved


def combine_diagnostics(answers: dict[str, pb.QueryResult]) -> list[pb.Diagnostic]:
    """Sum each bounding figure over the nodes that sent it; the interval as for any combined count."""
    totals: dict[tuple[str, str], list[float]] = {}
    single: dict[tuple[str, str], pb.Diagnostic] = {}
    for node in sorted(answers):
        for d in answers[node].diagnostics:
            key = (d.name, d.aggregate)
            t = totals.setdefault(key, [0.0, 0.0, 0.0])
            t[0] += d.value
            t[1] += d.noise_sd**2
            t[2] += 1
            single[key] = d
    out = []
    for key, (value, var, contributors) in totals.items():
        sd = math.sqrt(var)
        if contributors == 1:
            lo, hi = single[key].ci_low, single[key].ci_high
        else:
            lo, hi = value - Z95 * sd, value + Z95 * sd
        value, lo, hi, _ = clip(value, lo, hi, (0.0, math.inf))
        out.append(
            pb.Diagnostic(name=key[0], aggregate=key[1], value=value, noise_sd=sd, ci_low=lo, ci_high=hi)
        )
    return out
