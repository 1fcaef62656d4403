"""GLM by Fisher scoring over secure-aggregated rounds, as DataSHIELD's ds.glm drives it.

Round k sends the coefficients b_k; the nodes' summed statistics at b_k are X^T W X, the score
X^T (y - mu), the deviance and n (nodes/trainers/glm.py). The coordinator takes the Newton step
b_{k+1} = b_k + (X^T W X)^-1 score (canonical links: Fisher scoring is Newton's method) and stops
when |dev_k - dev_{k-1}| / (|dev_k| + 0.1) < tolerance (1e-8, R's glm.control and ds.glm). The
answer is one more step from the last evaluated coefficients, with covariance
phi (X^T W X)^-1 there (phi = deviance / (n - p) for gaussian, as statsmodels' GLM; else 1).

The nodes work on numeric covariates scaled by their public bounds (protocols/model_terms.py);
b = A g maps the coefficients g of the scaled design back to the columns' units, and the
covariance to A Cov A^T.

DP mode: the statistics carry Gaussian noise of a known sd per block. The noise on the score
moves the last step by H^-1 e, e ~ N(0, s^2 I), so each coefficient gets a noise sd from
diag(H^-1 H^-1) s^2 (mapped by A), reported next to the sampling standard error; a noisy
X^T W X is first made positive definite (eigenvalues floored), which is post-processing. The
deviance criterion cannot hold under noise, so a DP fit stops when its score is indistinguishable
from the noise (``within_noise``, a chi-square test at level 0.99): later rounds would only spend
budget. Stopping is decided on released figures, so it is post-processing too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from coordinator.model_round import RoundResult
from protocols import federation_pb2 as pb
from protocols.model_terms import scaling

DEFAULT_TOLERANCE = 1e-8
DEFAULT_ITERATIONS = 25
NOISE_LEVEL = 0.99  # a DP fit stops once its score is this likely to be noise alone
_EIGEN_FLOOR = 1e-8  # relative to the largest eigenvalue, for a noisy X^T W X


@dataclass
class FitTimes:
    nodes: float = 0.0
    secagg: float = 0.0
    solve: float = 0.0
    per_round: list[tuple[float, float, float]] = field(default_factory=list)


def unpack_upper(upper: np.ndarray, p: int) -> np.ndarray:
    h = np.zeros((p, p))
    h[np.triu_indices(p)] = upper
    return h + np.triu(h, 1).T


def _positive_definite(h: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(h)
    floor = max(float(values.max()), 1e-300) * _EIGEN_FLOOR
    if values.min() >= floor:
        return h
    return (vectors * np.maximum(values, floor)) @ vectors.T


def back_transform(spec: pb.ModelSpec, info: pb.DatasetInfo, terms: list[str]) -> np.ndarray:
    """A with b = A g: from the scaled design's coefficients to the columns' own units."""
    p = len(terms)
    a = np.eye(p)
    columns = {c.name: c for c in info.columns}
    intercept = not spec.no_intercept
    for cov in spec.covariates:
        column = columns.get(cov.column)
        if column is None or column.kind != pb.NUMERIC or cov.column not in terms:
            continue
        lo = cov.bounds.lower if cov.HasField("bounds") and cov.bounds.HasField("lower") else column.lower
        hi = cov.bounds.upper if cov.HasField("bounds") and cov.bounds.HasField("upper") else column.upper
        mid, half = scaling(lo, hi, intercept)
        j = terms.index(cov.column)
        a[j, j] = 1.0 / half
        if intercept:
            a[0, j] = -mid / half
    return a


def within_noise(result: RoundResult, p: int, level: float = NOISE_LEVEL) -> bool:
    """Under DP, the noisy score is what noise alone would give at the optimum: the fit has converged.

    Each round's score carries noise e_k ~ N(0, s^2 I), and each noisy step leaves the coefficients
    off the optimum by H^-1 e_{k-1}, so at the noisy fixed point the score is e_{k-1} + e_k to first
    order and |score|^2 / (2 s^2) follows chi-square with p degrees of freedom. Below its ``level``
    quantile no further round could tell a better coefficient from the noise, so the rounds left
    are not run and not charged. Exact fits (s = 0) never stop here; they use the deviance
    criterion.
    """
    score_sd = next((b.noise_sd for b in result.blocks if b.name == "score"), 0.0)
    if score_sd <= 0:
        return False
    from scipy.stats import chi2  # loaded on the first DP fit, not at coordinator start

    score = result.block("score")
    return float(score @ score) / (2 * score_sd**2) <= float(chi2.ppf(level, p))


_MEAN_AT_ZERO = {"gaussian": 0.0, "binomial": 0.5, "poisson": 1.0}  # g^-1(0) per canonical link


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0.0 else x * math.log(y)


def null_deviance(family: str, first: RoundResult) -> float | None:
    """The intercept-only model's deviance, in closed form from the first round's figures at b = 0.

    With an intercept, that model's fitted mean is the mean outcome y_bar for every canonical link
    (McCullagh & Nelder 1989, 2.5). At b = 0 every row has mu_0 = g^-1(0), so the first round gives
    S = sum(y) = score_0 + n mu_0 and D_0 = sum d(y, mu_0), and the null deviance follows without
    another pass over the rows:
    gaussian D_0 - n y_bar^2; poisson D_0 + 2 S - 2 n - 2 S ln y_bar;
    binomial D_0 - 2 n ln 2 - 2 S ln y_bar - 2 (n - S) ln(1 - y_bar).
    None without an intercept.
    """
    if not first.terms or first.terms[0] != "Intercept":
        return None
    n = float(first.block("n")[0])
    if n <= 0:
        return None
    d0 = float(first.block("deviance")[0])
    total = float(first.block("score")[0]) + n * _MEAN_AT_ZERO[family]
    y_bar = total / n
    if family == "gaussian":
        return d0 - n * y_bar**2
    if family == "poisson":
        return d0 + 2.0 * total - 2.0 * n - 2.0 * _xlogy(total, y_bar)
    return d0 - 2.0 * n * math.log(2.0) - 2.0 * _xlogy(total, y_bar) - 2.0 * _xlogy(n - total, 1.0 - y_bar)


def fit(
    spec: pb.ModelSpec,
    info: pb.DatasetInfo,
    run_round: Callable[[int, list[float]], RoundResult],
    response: pb.ModelResponse,
    times: FitTimes | None = None,
) -> None:
    """Run Fisher scoring round by round and fill ``response`` (params, covariance, fit figures)."""
    times = times or FitTimes()
    family = spec.family or "gaussian"
    cap = int(spec.max_iterations) or DEFAULT_ITERATIONS
    tolerance = spec.tolerance or DEFAULT_TOLERANCE
    beta: np.ndarray | None = None
    previous: float | None = None
    result: RoundResult | None = None
    first: RoundResult | None = None
    converged = False
    iteration = 0
    for iteration in range(1, cap + 1):
        result = run_round(iteration, [] if beta is None else beta.tolist())
        if first is None:
            first = result
        started = time.monotonic()
        p = len(result.terms)
        if beta is None:
            beta = np.zeros(p)
        dev = float(result.block("deviance")[0])
        response.deviance_trace.append(dev)
        h = _positive_definite(unpack_upper(result.block("xtwx"), p))
        step = np.linalg.solve(h, result.block("score"))
        solve = time.monotonic() - started
        times.nodes += result.seconds_nodes
        times.secagg += result.seconds_secagg
        times.solve += solve
        times.per_round.append((result.seconds_nodes, result.seconds_secagg, solve))
        if previous is not None and abs(dev - previous) / (abs(dev) + 0.1) < tolerance:
            converged = True
            break
        if within_noise(result, p):
            converged = True
            break
        previous = dev
        if iteration < cap:
            beta = beta + step
    assert result is not None and beta is not None
    p = len(result.terms)
    h = _positive_definite(unpack_upper(result.block("xtwx"), p))
    inverse = np.linalg.inv(h)
    final = beta + inverse @ result.block("score")
    n = float(result.block("n")[0])
    dev = float(result.block("deviance")[0])
    dispersion = dev / (n - p) if family == "gaussian" and n > p else 1.0
    if family == "gaussian":
        llf = -n / 2.0 * (math.log(2 * math.pi * dev / n) + 1.0) if n > 0 and dev > 0 else math.nan
    elif family == "binomial":
        llf = -dev / 2.0
    else:
        llf = -dev / 2.0 + float(result.block("loglik")[0])
    a = back_transform(spec, info, result.terms)
    params = a @ final
    covariance = a @ (dispersion * inverse) @ a.T
    score_sd = next((b.noise_sd for b in result.blocks if b.name == "score"), 0.0)
    noise = a @ (score_sd**2 * inverse @ inverse) @ a.T if score_sd > 0 else np.zeros((p, p))
    response.terms.extend(result.terms)
    response.params.extend(params.tolist())
    response.covariance.extend(covariance.ravel().tolist())
    response.noise_sd.extend(np.sqrt(np.maximum(np.diag(noise), 0.0)).tolist())
    response.deviance = dev
    response.n = n
    response.iterations = iteration
    response.converged = converged
    response.dispersion = dispersion
    response.log_likelihood = llf
    # Exact fits only: under DP the first round's figures are clipped as well as noisy.
    null = null_deviance(family, first) if first is not None and score_sd == 0 else None
    response.null_deviance = math.nan if null is None else null


__all__ = [
    "DEFAULT_ITERATIONS",
    "DEFAULT_TOLERANCE",
    "FitTimes",
    "back_transform",
    "fit",
    "null_deviance",
    "unpack_upper",
    "within_noise",
]
