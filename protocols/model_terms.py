"""How a numeric covariate enters a model's design: scaled by its public bounds.

Nodes scale each numeric covariate to z = (x - mid) / half so that |z| <= 1 and every statistic's
sensitivity follows from the spec alone (nodes/model_design.py); the coordinator maps the
coefficients back to the column's own units (coordinator/glm.py). Without an intercept a shift
would change the model, so only the scale is applied: mid = 0, half = max(|lo|, |hi|).
"""

from __future__ import annotations


def scaling(lo: float, hi: float, intercept: bool) -> tuple[float, float]:
    """(mid, half) of a numeric covariate clamped to [lo, hi]."""
    if intercept:
        half = (hi - lo) / 2.0
        return (lo + hi) / 2.0, half if half > 0 else 1.0
    half = max(abs(lo), abs(hi))
    return 0.0, half if half > 0 else 1.0


__all__ = ["scaling"]
