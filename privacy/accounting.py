"""Privacy-loss accounting: costs, zCDP <-> (epsilon, delta) conversion, composition.

Pure epsilon-DP implies (epsilon^2 / 2)-zCDP and rho-zCDP implies (epsilon, delta)-DP for every
delta > 0 (Bun & Steinke 2016, "Concentrated Differential Privacy", Prop. 1.4 and 1.3). The
conversion is OpenDP's ``make_zCDP_to_approxDP``, which uses the tighter bound of Canonne, Kamath
& Steinke 2020 ("The Discrete Gaussian for Differential Privacy"). Sequential composition adds
epsilons (pure DP) and adds rhos (zCDP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from privacy.opendp_lib import opendp
from protocols.errors import FederationError


class PrivacyError(FederationError):
    """A privacy parameter or a DP input breaks a rule; ``rule`` names which."""

    def __init__(self, rule: str, message: str, node: str = "") -> None:
        super().__init__(rule, message, node)


@dataclass(frozen=True)
class Cost:
    """Privacy cost of one release.

    ``epsilon`` is the pure-DP epsilon of a release made only with Laplace noise; it is 0 for a
    Gaussian (zCDP) release. ``rho`` is always the zCDP rho of the release: for a pure release the
    sum of epsilon_i^2 / 2 over its mechanisms, for a Gaussian release its own rho. Keeping both
    lets the ledger pick whichever composition bound is smaller.
    """

    epsilon: float
    rho: float

    def __post_init__(self) -> None:
        for name, value in (("epsilon", self.epsilon), ("rho", self.rho)):
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise PrivacyError("cost_value", f"cost {name} must be a finite number >= 0, got {value!r}")

    @property
    def pure(self) -> bool:
        """True when the release is pure epsilon-DP (Laplace only)."""
        return self.epsilon > 0


def _check_delta(delta: float) -> None:
    if not isinstance(delta, int | float) or not 0 <= delta < 1:
        raise PrivacyError("delta_value", f"delta must be in [0, 1), got {delta!r}")


@lru_cache(maxsize=4096)
def _epsilon_at_delta(rho: float, delta: float) -> float:
    dp = opendp()
    # A unit-scale Gaussian at input distance sqrt(2 rho) is exactly rho-zCDP; OpenDP then converts
    # that rho to its privacy profile. OpenDP rounds the map upward, so the result is conservative.
    gaussian = dp.m.make_gaussian(
        dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=1.0
    )
    profile = dp.c.make_zCDP_to_approxDP(gaussian).map(math.sqrt(2.0 * rho))
    return float(profile.epsilon(delta))


def epsilon_at_delta(rho: float, delta: float) -> float:
    """Smallest epsilon such that rho-zCDP implies (epsilon, delta)-DP, via OpenDP.

    ``rho == 0`` costs nothing; ``delta == 0`` with ``rho > 0`` gives ``inf`` (zCDP never implies
    pure DP).
    """
    if not isinstance(rho, int | float) or not math.isfinite(rho) or rho < 0:
        raise PrivacyError("rho_value", f"rho must be a finite number >= 0, got {rho!r}")
    _check_delta(delta)
    if rho == 0:
        return 0.0
    if delta == 0:
        return math.inf
    return _epsilon_at_delta(float(rho), float(delta))


def rho_for_epsilon(epsilon: float, delta: float) -> float:
    """Largest rho whose (epsilon, delta) conversion stays within ``epsilon`` (bisection over OpenDP)."""
    if not isinstance(epsilon, int | float) or not math.isfinite(epsilon) or epsilon < 0:
        raise PrivacyError("epsilon_value", f"epsilon must be a finite number >= 0, got {epsilon!r}")
    _check_delta(delta)
    if epsilon == 0 or delta == 0:
        return 0.0
    lo, hi = 0.0, float(epsilon)  # epsilon_at_delta(rho) >= rho, so the answer is below epsilon
    for _ in range(100):
        mid = (lo + hi) / 2
        if epsilon_at_delta(mid, delta) <= epsilon:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return lo


def spent_epsilon(pure_epsilon: float, rho_all: float, rho_gaussian: float, delta: float) -> float:
    """Total privacy loss at ``delta`` of a sequence of releases, the smaller of two valid bounds.

    * zCDP: every release as zCDP, rhos add: ``epsilon_at_delta(rho_all, delta)``.
    * mixed: pure releases compose by adding epsilons, Gaussian ones by adding rhos, and the two
      parts compose as (epsilon, delta)-DP: ``pure_epsilon + epsilon_at_delta(rho_gaussian, delta)``.

    ``rho_all`` includes the zCDP rho of the pure releases; ``rho_gaussian`` only the Gaussian ones.
    """
    if rho_all == 0 and pure_epsilon == 0:
        return 0.0
    by_zcdp = epsilon_at_delta(rho_all, delta) if rho_all > 0 else math.inf
    by_parts = pure_epsilon + epsilon_at_delta(rho_gaussian, delta)
    return min(by_zcdp, by_parts)
