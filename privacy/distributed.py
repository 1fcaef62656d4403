"""What a secure (distributed-noise) release is calibrated to.

Under secure aggregation every node adds a share of discrete Gaussian noise; the shares of the
nodes in the sum add up to (at least) the noise one trusted curator would add to the combined
figure: the distributed discrete Gaussian of Kairouz, Liu & Steinke (ICML 2021), shares and their
privacy proof in KLS21 Sec. 4 / Prop. 14 (``privacy.dp.integer_noise_share``).

A sum of discrete Laplace shares is not a discrete Laplace, so pure epsilon-DP has no such
one-noise form with the samplers OpenDP offers. A request in epsilon is therefore served in
zero-concentrated DP at rho = epsilon^2 / 2: the zCDP guarantee an epsilon-DP release gives
(Bun & Steinke 2016, Prop. 1.4), the figure the ledger already records as the rho of an epsilon
release, and the same per-query cap (``nodes.protect.resolve_budget``). The ledger charges it as
a Gaussian release; officers read it as epsilon at their budget's delta.
"""

from __future__ import annotations

from privacy.accounting import PrivacyError

__all__ = ["secure_rho"]


def secure_rho(epsilon: float | None, rho: float | None) -> float:
    """The rho a secure release is calibrated to: ``rho``, or epsilon^2 / 2 for an epsilon request."""
    if (epsilon is None) == (rho is None):
        raise PrivacyError("privacy_request", "give exactly one of epsilon or rho")
    value = rho if rho is not None else float(epsilon) ** 2 / 2.0  # type: ignore[arg-type]
    if not value > 0:
        raise PrivacyError("rho_value", f"rho must be a number > 0, got {value!r}")
    return float(value)
