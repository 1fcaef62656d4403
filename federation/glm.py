"""GLMs from the analyst's side: a formula becomes a ``ModelSpec``; the answer a statsmodels-like result.

    fed.glm("anomaly ~ turnover + C(sector)", data="vat_returns", family="binomial", epsilon=1.0)

Formulas are read with formulaic (Wilkinson-Rogers notation): the outcome, numeric columns, and
categories (``C(col)``, or a bare category column) dummy-coded with treatment contrasts over the
column's public domain; ``C(col, Treatment('level'))`` picks the reference level; ``- 1`` drops
the intercept. Interactions and transformations are not part of the spec (nodes run built-in
code only) and are refused. The answer holds params, standard errors, z, p, 95% intervals,
deviance, AIC and the rows used; under DP each coefficient also carries the sd the noise adds
to it, and the intervals are widened by it (docs/modelling.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.values import to_value

FAMILIES = {"gaussian": "Gaussian (identity)", "binomial": "Binomial (logit)", "poisson": "Poisson (log)"}
_CATEGORY = re.compile(
    r"^C\(\s*(?P<col>[A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(?:,\s*(?:Treatment|contr\.treatment)\(\s*(?:reference\s*=\s*)?(?P<ref>'[^']*'|\"[^\"]*\"|-?\d+)\s*\))?\s*\)$"
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _error(message: str) -> FederationError:
    return FederationError("model_formula", message)


def parse_formula(formula: str, info: pb.DatasetInfo) -> pb.ModelSpec:
    """The outcome, covariates and intercept of ``formula`` over dataset ``info``'s declared columns."""
    from formulaic import Formula
    from formulaic.errors import FormulaicError

    try:
        parsed = Formula(formula)
    except (FormulaicError, SyntaxError, ValueError) as exc:
        raise _error(f"cannot read the formula {formula!r}: {exc}") from None
    lhs = [str(t) for t in getattr(parsed, "lhs", [])]
    if len(lhs) != 1 or not _NAME.match(lhs[0]):
        raise _error("the formula needs one outcome column on the left of '~'")
    columns = {c.name: c for c in info.columns}
    spec = pb.ModelSpec(dataset=info.name, outcome=lhs[0], no_intercept=True)
    for term in parsed.rhs:
        factors = list(term.factors)
        if len(factors) != 1:
            raise _error(f"interaction '{term}' is not supported: nodes run built-in designs only")
        expr = str(factors[0].expr).strip()
        if expr == "1":
            spec.no_intercept = False
            continue
        match = _CATEGORY.match(expr)
        name = match.group("col") if match else expr
        if not _NAME.match(name) or name not in columns:
            raise _error(
                f"'{expr}' is not a declared column of {info.name} (transformations are not supported)"
            )
        column = columns[name]
        cov = spec.covariates.add(column=name)
        if match and match.group("ref") is not None:
            ref = match.group("ref").strip("'\"")
            cov.reference.CopyFrom(
                to_value(
                    int(ref)
                    if ref.lstrip("-").isdigit()
                    and column.domain
                    and column.domain[0].WhichOneof("kind") == "integer"
                    else ref
                )
            )
        if match and column.kind != pb.CATEGORY:
            raise _error(f"C({name}) needs a category column; '{name}' is not one")
    if lhs[0] not in columns:
        raise _error(f"outcome '{lhs[0]}' is not a declared column of {info.name}")
    return spec


@dataclass
class GLMResult:
    """A fitted GLM, read like statsmodels' GLMResults."""

    family: str
    formula: str
    dataset: str
    params: pd.Series
    cov_params: pd.DataFrame
    deviance: float
    llf: float
    nobs: float
    iterations: int
    converged: bool
    scale: float
    noise_sd: pd.Series
    rho: float
    job_id: str
    nodes: pd.DataFrame = field(default_factory=pd.DataFrame)
    deviance_trace: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    # The intercept-only model's deviance (exact fits with an intercept; NaN otherwise).
    null_deviance: float = math.nan

    @property
    def dp(self) -> bool:
        return bool((self.noise_sd > 0).any())

    @property
    def bse(self) -> pd.Series:
        """Sampling standard errors, sqrt(diag(phi (X^T W X)^-1))."""
        return pd.Series(np.sqrt(np.maximum(np.diag(self.cov_params.values), 0.0)), index=self.params.index)

    @property
    def total_se(self) -> pd.Series:
        """Standard error and noise sd together (equal to ``bse`` without DP)."""
        return np.sqrt(self.bse**2 + self.noise_sd**2)

    @property
    def tvalues(self) -> pd.Series:
        return self.params / self.total_se

    @property
    def pvalues(self) -> pd.Series:
        return pd.Series(2.0 * norm.sf(np.abs(self.tvalues)), index=self.params.index)

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Wald intervals; under DP widened by the noise (noise-aware)."""
        z = float(norm.ppf(1.0 - alpha / 2.0))
        half = z * self.total_se
        return pd.DataFrame({0: self.params - half, 1: self.params + half})

    @property
    def df_model(self) -> int:
        return len(self.params) - (1 if "Intercept" in self.params.index else 0)

    @property
    def aic(self) -> float:
        """-2 llf + 2 (df_model + 1), as statsmodels' GLM."""
        return -2.0 * self.llf + 2.0 * (self.df_model + 1)

    def summary(self) -> str:
        ci = self.conf_int()
        rows = [
            f"{'Generalized Linear Model Regression Results':^78}",
            "=" * 78,
            f"Dep. formula: {self.formula:<40} Dataset: {self.dataset}",
            f"Family: {FAMILIES.get(self.family, self.family):<26} No. Observations: {self.nobs:>14,.0f}",
            f"Iterations: {self.iterations:<8} Converged: {str(self.converged):<16} Deviance: {self.deviance:>18.4f}",
            f"Log-Likelihood: {self.llf:<18.4f} AIC: {self.aic:<18.4f} Scale: {self.scale:.4g}",
            f"Null deviance: {self.null_deviance:<19.4f} Df: {self.nobs - 1:<,.0f}"
            if math.isfinite(self.null_deviance)
            else "Null deviance: -- (exact fits with an intercept only)",
            f"Privacy: {'DP, rho ' + format(self.rho, '.4g') + ' per node' if self.dp else 'exact (no noise)'}",
            "=" * 78,
        ]
        head = f"{'':<30}{'coef':>11}{'std err':>11}{'z':>8}{'P>|z|':>8}{'[0.025':>10}{'0.975]':>10}"
        if self.dp:
            head += f"{'noise sd':>10}"
        rows.append(head)
        rows.append("-" * len(head))
        for name in self.params.index:
            line = (
                f"{name[:30]:<30}{self.params[name]:>11.4f}{self.bse[name]:>11.4f}{self.tvalues[name]:>8.3f}"
                f"{self.pvalues[name]:>8.3f}{ci.loc[name, 0]:>10.3f}{ci.loc[name, 1]:>10.3f}"
            )
            if self.dp:
                line += f"{self.noise_sd[name]:>10.4f}"
            rows.append(line)
        rows.append("=" * 78)
        if self.dp:
            rows.append(
                "z, P and the interval use sqrt(std err^2 + noise sd^2): the noise is part of the error."
            )
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.summary()


def result_from(response: pb.ModelResponse, family: str, formula: str, dataset: str) -> GLMResult:
    if not response.ok:
        raise FederationError(response.error_rule or "model_failed", response.error)
    terms = list(response.terms)
    p = len(terms)
    cov = np.asarray(response.covariance, dtype=np.float64).reshape(p, p)
    nodes = pd.DataFrame(
        [{"node": o.node, "status": o.status, "rho": o.cost.rho, "reason": o.reason} for o in response.nodes]
    )
    noise = list(response.noise_sd) or [0.0] * p
    return GLMResult(
        family=family,
        formula=formula,
        dataset=dataset,
        params=pd.Series(list(response.params), index=terms, dtype=float),
        cov_params=pd.DataFrame(cov, index=terms, columns=terms),
        deviance=response.deviance,
        llf=response.log_likelihood if math.isfinite(response.log_likelihood) else math.nan,
        nobs=response.n,
        iterations=response.iterations,
        converged=response.converged,
        scale=response.dispersion,
        noise_sd=pd.Series(noise, index=terms, dtype=float),
        rho=response.rho,
        job_id=response.job_id,
        nodes=nodes,
        deviance_trace=list(response.deviance_trace),
        null_deviance=response.null_deviance,
        seconds={
            "nodes": response.seconds_nodes,
            "secagg": response.seconds_secagg,
            "solve": response.seconds_solve,
        },
    )


__all__ = ["FAMILIES", "GLMResult", "parse_formula", "result_from"]
