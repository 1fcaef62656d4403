"""GLM statistics for Fisher scoring, as DataSHIELD's ds.glm computes them on each server.

For the current coefficients b (in the scaled design, nodes/model_design.py) a node returns,
over its own rows:

    xtwx      X^T W X, upper triangle row-major       W = (dmu/deta)^2 / V(mu)
    score     X^T (y - mu)                             (canonical links: dmu/deta = V(mu))
    deviance  sum of the family's unit deviances
    n         rows
    loglik    sum of the part of the log-likelihood that does not depend on mu (poisson only)

gaussian/identity, binomial/logit and poisson/log, all canonical, so Fisher scoring is Newton's
method (McCullagh & Nelder 1989, 2.5). The coordinator adds the nodes' blocks (secure sum) and
solves the step.

In DP mode every row's contribution is bounded, so one privacy unit of at most k rows moves each
block by a stated L2 amount (design columns are within [-1, 1]):
mu is clamped into the outcome's bounds (poisson: [0, U]), W <= w_max, |y - mu| <= r_max and a
row's deviance is clipped at d_max. With c = |x|^2 at most (1 for the intercept, 1 per numeric
covariate, 1 per category: one of its dummies at most is 1):

    xtwx  k w_max c      score  k r_max sqrt(c)      deviance  k d_max      n  k

gaussian: w_max 1, r_max = d_max^(1/2) = U - L; binomial: w_max 1/4, r_max 1, d_max 2 ln(1/P_MIN)
with mu clamped into [P_MIN, 1 - P_MIN]; poisson: w_max = r_max = U, d_max = 2 U ln(U / M_MIN) + 2 U
with mu clamped into [M_MIN, U].
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from nodes.model_design import Design, ModelPlan
from nodes.trainers.registry import StatBlock, register
from protocols.errors import FederationError
from protocols.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np

    from nodes.trainers.registry import Array
else:
    np = lazy_module("numpy")

FAMILIES = ("gaussian", "binomial", "poisson")
P_MIN = 1e-6
M_MIN = 1e-3
_CHUNK = 262_144  # rows per chunk: bounded memory for X^T W X over millions of rows


def _clamp(mu: Array, lo: float, hi: float) -> Array:
    return np.clip(mu, lo, hi)


def family_bounds(family: str, outcome: tuple[float, float]) -> tuple[float, float, float]:
    """(w_max, r_max, d_max) of one row in DP mode (module docstring)."""
    lo, hi = outcome
    if family == "gaussian":
        r = hi - lo
        return 1.0, r, r * r
    if family == "binomial":
        return 0.25, 1.0, 2.0 * math.log(1.0 / P_MIN)
    u = max(hi, 1.0)
    return u, u, 2.0 * u * math.log(u / M_MIN) + 2.0 * u


def _special() -> Any:
    """``scipy.special``, loaded when a model is first fitted: an idle node never needs it."""
    import scipy.special

    return scipy.special


def _loglik_bound(outcome: tuple[float, float]) -> float:
    """Largest |y ln y - y - ln y!| over whole counts y in [0, U] (the poisson constant's row bound)."""
    top = int(max(0.0, outcome[1]))
    y = np.arange(0, min(top, 10_000_000) + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0)), 0.0) - y - _special().gammaln(y + 1)
    return float(np.max(np.abs(f))) if len(f) else 0.0


def unit_deviance(family: str, y: Array, mu: Array) -> Array:
    if family == "gaussian":
        return (y - mu) ** 2
    if family == "binomial":
        if np.all((y == 0.0) | (y == 1.0)):
            # 0/1 outcomes, the common case: one logarithm per row.
            return -2.0 * np.log(np.where(y > 0.5, mu, 1.0 - mu))
        return 2.0 * (_special().xlogy(y, y / mu) + _special().xlogy(1.0 - y, (1.0 - y) / (1.0 - mu)))
    return 2.0 * (_special().xlogy(y, y / mu) - (y - mu))


def mean_and_weight(family: str, eta: Array) -> tuple[Array, Array]:
    if family == "gaussian":
        return eta, np.ones_like(eta)
    if family == "binomial":
        mu = 1.0 / (1.0 + np.exp(-eta))
        return mu, mu * (1.0 - mu)
    mu = np.exp(np.minimum(eta, 700.0))
    return mu, mu


def design_norm2(plan: ModelPlan) -> float:
    """Largest |x|^2 of a design row: 1 per numeric column (scaled into [-1, 1]), 1 per category
    (one of its dummies at most is 1) and 1 for the intercept."""
    return float((0 if plan.spec.no_intercept else 1) + len(plan.numeric) + len(plan.categories))


class GlmTrainer:
    """The ``glm`` entry of the trainer catalogue."""

    def check(self, plan: ModelPlan, node: str) -> None:
        family = plan.spec.family or "gaussian"
        if family not in FAMILIES:
            raise FederationError(
                "model_family", f"glm family '{family}' is not one of {', '.join(FAMILIES)}", node
            )
        lo, hi = plan.outcome_bounds
        if family == "binomial" and not (plan.event is not None or (lo >= 0 and hi <= 1)):
            raise FederationError(
                "model_outcome",
                f"a binomial glm needs a 0/1 outcome or a two-level category; '{plan.outcome.name}' "
                f"is declared within [{lo:g}, {hi:g}]",
                node,
            )
        if family == "poisson" and lo < 0:
            raise FederationError(
                "model_outcome",
                f"a poisson glm needs a count outcome; '{plan.outcome.name}' may be negative",
                node,
            )

    def parameter_count(self, plan: ModelPlan) -> int:
        return plan.size

    def statistics(self, plan: ModelPlan, design: Design, parameters: Array, dp: bool) -> list[StatBlock]:
        family = plan.spec.family or "gaussian"
        p = plan.size
        b = np.zeros(p) if len(parameters) == 0 else np.asarray(parameters, dtype=np.float64)
        w_max, r_max, d_max = family_bounds(family, plan.outcome_bounds)
        lo, hi = plan.outcome_bounds
        xtwx = np.zeros((p, p))
        score = np.zeros(p)
        deviance = 0.0
        loglik = 0.0
        for start in range(0, design.n, _CHUNK):
            x = design.x[start : start + _CHUNK]
            y = design.y[start : start + _CHUNK]
            eta = x @ b
            mu, w = mean_and_weight(family, eta)
            if dp:
                if family == "binomial":
                    mu = _clamp(mu, P_MIN, 1 - P_MIN)
                    w = mu * (1 - mu)
                elif family == "poisson":
                    mu = _clamp(mu, M_MIN, w_max)
                    w = mu
                else:
                    mu = _clamp(mu, lo, hi)
            xtwx += (x * w[:, None]).T @ x
            score += x.T @ (y - mu)
            dev = unit_deviance(family, y, mu)
            deviance += float(np.sum(np.minimum(dev, d_max) if dp else dev))
            if family == "poisson":
                loglik += float(np.sum(_special().xlogy(y, y) - y - _special().gammaln(y + 1)))
        k = plan.rows_per_unit if dp else 0
        norm2 = design_norm2(plan)
        upper = xtwx[np.triu_indices(p)]
        blocks = [
            StatBlock("xtwx", upper, k * w_max * norm2),
            StatBlock("score", score, k * r_max * math.sqrt(norm2)),
            StatBlock("deviance", np.array([deviance]), k * d_max),
            StatBlock("n", np.array([float(design.n)]), float(k)),
        ]
        if family == "poisson":
            blocks.append(StatBlock("loglik", np.array([loglik]), k * _loglik_bound(plan.outcome_bounds)))
        return blocks


register("glm", GlmTrainer)

__all__ = ["FAMILIES", "GlmTrainer", "family_bounds", "mean_and_weight", "unit_deviance"]
