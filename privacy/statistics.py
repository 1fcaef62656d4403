"""VARIANCE, STDDEV and PERCENTILE_CONT from released (noisy or exact) figures: post-processing only.

* VARIANCE / STDDEV: each node releases, per group, the row count n, the centred sum
  S1 = sum(x - c) and the centred sum of squares S2 = sum((x - c)^2) of its clamped values,
  c the middle of the declared bounds (``privacy.dp.variance_parts``). The parts add across nodes;
  the sample variance (SQL ``VAR_SAMP``, pandas ``var()``) is (S2 - S1^2 / n) / (n - 1), put into
  its feasible range [0, (hi - lo)^2 / 4 * n / (n - 1)]. Its interval is the delta-method normal
  interval from the three independent noises, cut to the feasible range; STDDEV is the square
  root of the value and of both ends.
* PERCENTILE_CONT(q) / MEDIAN: each node releases the row counts of ``PERCENTILE_BINS`` equal-width
  bins over the declared bounds. The bins add across nodes; negative noisy counts are set to 0
  and the quantile is read off the cumulative counts, linear within a bin (the histogram
  estimator of e.g. Smith 2011, "Privacy-preserving statistical estimation with optimal
  convergence rates"). Its interval runs between bin edges: it covers the noise on the counts
  and where within its bin the quantile lies, which the counts cannot tell (``percentile``).

Pure functions, no I/O; nothing here spends budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PERCENTILE_BINS = 64
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Moments:
    """Count, centred sum and centred sum of squares about ``shift``, with their noise variances."""

    n: float
    s1: float
    s2: float
    shift: float
    low: float
    high: float
    var_n: float = 0.0
    var_s1: float = 0.0
    var_s2: float = 0.0

    def recentred(self, shift: float) -> Moments:
        """The same moments about another centre: x - shift = (x - c) + d with d = c - shift.

        Exact for exact figures; under noise the variances are propagated as if the parts were
        independent (they are, before this step).
        """
        d = self.shift - shift
        if d == 0:
            return self
        return Moments(
            n=self.n,
            s1=self.s1 + d * self.n,
            s2=self.s2 + 2 * d * self.s1 + d * d * self.n,
            shift=shift,
            low=self.low,
            high=self.high,
            var_n=self.var_n,
            var_s1=self.var_s1 + d * d * self.var_n,
            var_s2=self.var_s2 + 4 * d * d * self.var_s1 + d**4 * self.var_n,
        )


def add_moments(parts: Sequence[Moments]) -> Moments:
    """The moments of the union of the parts' rows (about the first part's centre)."""
    if not parts:
        raise ValueError("no moments to add")
    shift = parts[0].shift
    total = Moments(0.0, 0.0, 0.0, shift, min(p.low for p in parts), max(p.high for p in parts))
    for part in parts:
        p = part.recentred(shift)
        total = Moments(
            n=total.n + p.n,
            s1=total.s1 + p.s1,
            s2=total.s2 + p.s2,
            shift=shift,
            low=total.low,
            high=total.high,
            var_n=total.var_n + p.var_n,
            var_s1=total.var_s1 + p.var_s1,
            var_s2=total.var_s2 + p.var_s2,
        )
    return total


@dataclass(frozen=True)
class Estimate:
    """A released statistic with its noise sd (0 when exact) and its 95% interval."""

    value: float
    sd: float
    ci_low: float
    ci_high: float


UNDEFINED = Estimate(math.nan, 0.0, -math.inf, math.inf)


def variance(m: Moments, z: float = Z95) -> Estimate:
    """Sample variance (n - 1 in the denominator) from ``m``; undefined when n <= 1."""
    n = m.n
    if not n > 1:
        return UNDEFINED
    centred = m.s2 - m.s1 * m.s1 / n
    value = centred / (n - 1)
    cap = (m.high - m.low) ** 2 / 4 * n / (n - 1)
    # Partial derivatives of (S2 - S1^2 / n) / (n - 1) for the delta method.
    d_s2 = 1 / (n - 1)
    d_s1 = -2 * m.s1 / (n * (n - 1))
    d_n = m.s1 * m.s1 / (n * n * (n - 1)) - centred / (n - 1) ** 2
    sd = math.sqrt(d_s2**2 * m.var_s2 + d_s1**2 * m.var_s1 + d_n**2 * m.var_n)
    value = min(max(value, 0.0), cap)
    return Estimate(value, sd, max(0.0, value - z * sd), min(cap, value + z * sd))


def stddev(m: Moments, z: float = Z95) -> Estimate:
    """Sample standard deviation: the square root of ``variance`` and of its interval's ends."""
    v = variance(m, z)
    if math.isnan(v.value):
        return UNDEFINED
    value = math.sqrt(v.value)
    # Delta method away from 0; at 0 the sd of the root is that of the variance's root.
    sd = v.sd / (2 * value) if value > 0 else math.sqrt(v.sd)
    return Estimate(value, sd, math.sqrt(v.ci_low), math.sqrt(v.ci_high))


def _read_quantile(counts: Sequence[float], low: float, high: float, rank: float) -> float:
    """The value at ``rank`` (0 .. total) of the histogram, linear within a bin."""
    width = (high - low) / len(counts)
    rank = min(max(rank, 0.0), sum(counts))
    below = 0.0
    for j, c in enumerate(counts):
        if c > 0 and below + c >= rank:
            return low + width * (j + (rank - below) / c)
        below += c
    return high


def percentile(
    bins: Sequence[float], low: float, high: float, q: float, bin_sd: float = 0.0, z: float = Z95
) -> Estimate:
    """PERCENTILE_CONT(q) from row counts per equal-width bin over [low, high]; ``bin_sd`` is the
    noise sd of each (summed) bin count, 0 for exact counts.

    The interval covers both errors: the noise, and where within its bin the quantile lies, which
    the counts do not tell (linear interpolation can be off by up to a bin width). Let D(k) be the
    count below bin edge k minus q times the total; the true quantile lies in the bin b with
    D(b) <= 0 <= D(b + 1). The noisy D~(k) differs from D(k) by a normal-like error of sd s_k
    (below), and D~ rises with k (counts are cut at 0). Then D~(b) < z s_b except with
    probability 2.5%, and D~(b + 1) > -z s_{b+1} likewise, so the interval from the last edge with
    D~(k) <= -z s_k to the first edge with D~(k) >= z s_k holds the quantile at least 95% of the
    time whatever the rows look like inside a bin. Exact counts give the quantile's bin.
    """
    counts = [max(0.0, float(c)) for c in bins]
    total = sum(counts)
    if not counts or not total > 0 or not 0 <= q <= 1:
        return UNDEFINED
    rank = q * total
    value = _read_quantile(counts, low, high, rank)
    n_bins = len(counts)
    width = (high - low) / n_bins
    # The error of (counts below edge k) - q * total is (1 - q) times the noise on the k bins below
    # minus q times the noise on the bins above: variance ((1-q)^2 k + q^2 (B - k)) sd^2.
    margin = [z * bin_sd * math.sqrt((1 - q) ** 2 * k + q * q * (n_bins - k)) for k in range(n_bins + 1)]
    # The noise alone, mapped through the histogram's CDF: the stated sd.
    j = min(n_bins, max(0, int((value - low) / width))) if width > 0 else 0
    sd = 0.0
    if bin_sd > 0:
        noise_lo = _read_quantile(counts, low, high, rank - margin[j])
        noise_hi = _read_quantile(counts, low, high, rank + margin[j])
        sd = (noise_hi - noise_lo) / (2 * z)
    cumulative = [0.0]
    for c in counts:
        cumulative.append(cumulative[-1] + c)
    # Exact counts (no margin) give the quantile's own bin.
    below = [
        k
        for k in range(n_bins + 1)
        if cumulative[k] - rank < -margin[k] or (not bin_sd > 0 and cumulative[k] <= rank)
    ]
    above = [
        k
        for k in range(n_bins + 1)
        if cumulative[k] - rank > margin[k] or (not bin_sd > 0 and cumulative[k] >= rank)
    ]
    lo = min(value, low + width * max(below)) if below else low
    hi = max(value, low + width * min(above)) if above else high
    return Estimate(value, sd, lo, hi)
