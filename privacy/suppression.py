"""One suppression decision on a combined noisy count, shared by the coordinator and the nodes.

A combined figure is the sum of several nodes' noisy figures (local DP) or one sum carrying the
nodes' noise shares (secure aggregation). Its threshold count is the sum of the parts' noisy
threshold counts (distinct units, or rows when a COUNT(*) stands in), so its noise is the sum of
independent integer noises: discrete Laplace (GRS12) and/or discrete Gaussian (CKS20) terms.

``combined_threshold`` picks T such that a group with fewer than ``min_group_size`` units in total
clears T with probability at most p. The tail of the summed noise is computed exactly: each
part's probability mass function on the integers, cut where the mass left out is below 1e-15,
convolved (FFT), with everything left out (and a margin for rounding) counted as tail. When the
support grows too large for that, the Chernoff bound P(S >= q) <= exp(-lambda q) prod_i
E[exp(lambda X_i)], minimised over lambda, is used, with

* discrete Laplace, u = exp(-1/b): E[exp(lambda X)] = (1 - u)^2 / ((1 - u e^lambda)(1 - u e^-lambda)),
  for 0 < lambda < 1/b;
* discrete Gaussian: E[exp(lambda X)] <= exp(lambda^2 sigma^2 / 2) (CKS20, Prop. 6: it is
  sub-Gaussian with the continuous Gaussian's parameter).

With one part the exact tail of ``privacy.dp.threshold_for`` is used, so a single node's decision
is unchanged. Deciding on released noisy figures is post-processing: it costs no budget.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from privacy.accounting import PrivacyError
from privacy.dp import NoiseSpec, threshold_for
from protocols.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")

__all__ = ["THRESHOLD_P", "ThresholdNoise", "combined_threshold", "sum_upper_tail"]

# Probability that a group below the minimum size clears the threshold.
THRESHOLD_P = 1e-3
# Points of the lambda grid; any lambda gives a valid bound, the grid only makes it tight.
_GRID = 4096
# Mass of each part left out of its truncated support, and the largest convolved support.
_CUT = 1e-15
_MAX_SUPPORT = 1 << 20
# Rounding margin on the convolved tail (FFT error is ~1e-16 of the largest mass per point).
_FFT_MARGIN = 1e-10


@dataclass(frozen=True)
class ThresholdNoise:
    """The integer noise on one part of a combined threshold count.

    ``mechanism`` is ``laplace`` (discrete Laplace, scale b) or ``gaussian`` (discrete Gaussian,
    sigma); ``per_unit`` is how much one privacy unit can add to this part's count: 1 for a
    distinct-unit count, ``max_rows_per_unit`` for a row count.
    """

    mechanism: str
    scale: float
    per_unit: int = 1

    def check(self) -> None:
        if self.mechanism not in ("laplace", "gaussian"):
            raise PrivacyError("mechanism", f"unknown mechanism '{self.mechanism}': use laplace or gaussian")
        if not isinstance(self.scale, int | float) or not math.isfinite(self.scale) or self.scale <= 0:
            raise PrivacyError("noise_scale", f"noise scale must be a finite number > 0, got {self.scale!r}")
        if isinstance(self.per_unit, bool) or not isinstance(self.per_unit, int) or self.per_unit < 1:
            raise PrivacyError(
                "max_rows_per_unit", f"per_unit must be an integer >= 1, got {self.per_unit!r}"
            )


def _single(part: ThresholdNoise, p: float) -> int:
    spec = NoiseSpec(mechanism=part.mechanism, scale=part.scale, sd=part.scale)  # type: ignore[arg-type]
    return threshold_for(1, spec, p)


def _log_mgf_laplace(lam: np.ndarray, b: float) -> np.ndarray:
    u = math.exp(-1.0 / b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2.0 * math.log1p(-u) - np.log1p(-u * np.exp(lam)) - np.log1p(-u * np.exp(-lam))


def _pmf(part: ThresholdNoise) -> tuple[np.ndarray, float] | None:
    """The part's mass function on [-K, K] and an upper bound on the mass outside; ``None`` when
    K would be too large to convolve."""
    b = part.scale
    if part.mechanism == "laplace":
        # P(x) = (1 - u) / (1 + u) u^|x|; P(|X| > K) = 2 u^(K+1) / (1 + u).
        u = math.exp(-1.0 / b)
        k = math.ceil(b * math.log(2.0 / _CUT))
        if 2 * k + 1 > _MAX_SUPPORT:
            return None
        x = np.arange(-k, k + 1, dtype=np.float64)
        return (1 - u) / (1 + u) * np.exp(-np.abs(x) / b), 2 * u ** (k + 1) / (1 + u)
    # Discrete Gaussian: P(x) = exp(-x^2 / 2 sigma^2) / Z with Z >= the truncated sum, so the
    # truncated normalisation overstates each mass a little (conservative for the tail), and the
    # mass beyond K is at most 2 exp(-K^2 / 2 sigma^2) (sub-Gaussian, CKS20).
    k = math.ceil(b * math.sqrt(2.0 * math.log(2.0 / _CUT)))
    if 2 * k + 1 > _MAX_SUPPORT:
        return None
    x = np.arange(-k, k + 1, dtype=np.float64)
    weights = np.exp(-(x**2) / (2 * b * b))
    return weights / weights.sum(), 2 * math.exp(-(k**2) / (2 * b * b))


@functools.lru_cache(maxsize=256)
def _exact_tail(parts: tuple[ThresholdNoise, ...], p: float) -> int | None:
    pmfs = [_pmf(x) for x in parts]
    if any(m is None for m in pmfs):
        return None
    size = sum(len(m[0]) for m in pmfs if m is not None) - len(pmfs) + 1
    if size > _MAX_SUPPORT:
        return None
    length = 1 << (size - 1).bit_length()
    spectrum = np.ones(length // 2 + 1, dtype=np.complex128)
    left_out = 0.0
    low = 0
    for mass, out in (m for m in pmfs if m is not None):
        spectrum *= np.fft.rfft(mass, length)
        left_out += out
        low -= (len(mass) - 1) // 2
    total = np.clip(np.fft.irfft(spectrum, length)[:size], 0.0, None)
    tail = np.cumsum(total[::-1])[::-1] + left_out + _FFT_MARGIN
    index = int(np.argmax(tail <= p))
    if tail[index] > p:
        return None
    return low + index


def sum_upper_tail(parts: Sequence[ThresholdNoise], p: float = THRESHOLD_P) -> int:
    """Smallest integer q (as bounded) with P(sum of the parts' noises >= q) <= p."""
    if not parts:
        raise PrivacyError("threshold_parts", "a combined threshold needs at least one noisy part")
    if not isinstance(p, int | float) or not 0 < p < 0.5:
        raise PrivacyError("threshold_p", f"p must be in (0, 0.5), got {p!r}")
    for part in parts:
        part.check()
    if len(parts) == 1:
        return _single(parts[0], p)
    exact = _exact_tail(tuple(parts), p)
    if exact is not None:
        return exact
    return _chernoff(parts, p)


def _chernoff(parts: Sequence[ThresholdNoise], p: float) -> int:
    var = sum(x.scale**2 for x in parts if x.mechanism == "gaussian")
    laplace = [x.scale for x in parts if x.mechanism == "laplace"]
    log_p = math.log(1.0 / p)
    if not laplace:
        # The Chernoff bound of a sub-Gaussian sum, minimised in closed form.
        return int(math.ceil(math.sqrt(2.0 * var * log_p)))
    top = 1.0 / max(laplace)
    lam = top * np.linspace(1.0 / _GRID, 1.0 - 1.0 / _GRID**2, _GRID)
    log_mgf = 0.5 * lam**2 * var
    for b in laplace:
        log_mgf = log_mgf + _log_mgf_laplace(lam, b)
    q = (log_mgf + log_p) / lam
    best = float(np.nanmin(q[np.isfinite(q)]))
    return int(math.ceil(best))


def combined_threshold(min_group_size: int, parts: Sequence[ThresholdNoise], p: float = THRESHOLD_P) -> int:
    """Threshold T on the summed noisy threshold count of ``parts``.

    T = (min_group_size - 1) R + q, R the largest ``per_unit`` over the parts and q the bound of
    ``sum_upper_tail``. A group with fewer than ``min_group_size`` units over all parts adds at
    most (min_group_size - 1) R to the exact sum (a unit adds 1 to a unit count and at most R to
    a row count), so its noisy sum reaches T with probability at most p.
    """
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, int) or min_group_size < 1:
        raise PrivacyError(
            "min_group_size", f"min_group_size must be an integer >= 1, got {min_group_size!r}"
        )
    q = sum_upper_tail(parts, p)
    return (min_group_size - 1) * max(x.per_unit for x in parts) + q
