"""GLMs by Fisher scoring across three real node processes, every round secure-aggregated.

Exact mode must equal statsmodels on the pooled rows (coefficients within 1e-8, standard errors
within 1e-6 relative) for the three families with numeric and categorical covariates. DP mode
lands near the exact fit. The nodes' guards refuse designs that would disclose small groups.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from tests.integration.conftest import RunningFederation, _drop_schema, wait_disconnected
from tests.integration.glm_federation import NODES, start_loans

ROWS = 1500
FAMILIES = {
    "binomial": ("defaulted", sm.families.Binomial()),
    "poisson": ("claims", sm.families.Poisson()),
    "gaussian": ("amount", sm.families.Gaussian()),
}


@pytest.fixture(scope="module")
def loans_fed(
    tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str
) -> Iterator[tuple[RunningFederation, pd.DataFrame]]:
    fed, schema, pooled = start_loans(tmp_path_factory.mktemp("glm"), postgres_dsn, ROWS)
    try:
        yield fed, pooled
    finally:
        fed.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_exact_glm_equals_statsmodels_on_pooled_rows(
    loans_fed: tuple[RunningFederation, pd.DataFrame], family: str
) -> None:
    fed, pooled = loans_fed
    outcome, sm_family = FAMILIES[family]
    formula = f"{outcome} ~ x1 + x2 + C(g)"
    with fed.client() as client:
        result = client.glm(formula, data="loans", family=family)
    reference = smf.glm(formula, data=pooled, family=sm_family).fit(tol=1e-12)
    assert result.converged and not result.dp
    order = list(result.params.index)  # the formula's order; patsy puts categories first
    assert sorted(order) == sorted(reference.params.index)
    np.testing.assert_allclose(result.params, reference.params[order], rtol=0, atol=1e-8)
    np.testing.assert_allclose(result.bse, reference.bse[order], rtol=1e-6)
    assert result.nobs == len(pooled)
    assert result.deviance == pytest.approx(reference.deviance, rel=1e-9)
    assert result.null_deviance == pytest.approx(reference.null_deviance, rel=1e-9)
    assert f"Null deviance: {result.null_deviance:.4f}" in result.summary()
    assert result.aic == pytest.approx(reference.aic, rel=1e-9)
    np.testing.assert_allclose(result.pvalues, reference.pvalues[order], rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(result.conf_int(), reference.conf_int().loc[order], rtol=1e-6, atol=1e-9)
    assert "C(g)[T.b]" in result.summary() and "Deviance" in result.summary()
    assert {row.node for row in result.nodes.itertuples()} == set(NODES)


def test_dp_glm_lands_near_the_exact_fit(loans_fed: tuple[RunningFederation, pd.DataFrame]) -> None:
    fed, _ = loans_fed
    formula = "defaulted ~ x1 + x2 + C(g)"
    with fed.client() as client:
        exact = client.glm(formula, data="loans", family="binomial")
        noisy = client.glm(formula, data="loans", family="binomial", rho=1.0, max_iterations=6)
    assert noisy.dp and (noisy.noise_sd > 0).all()
    assert noisy.iterations <= 6
    assert math.isnan(noisy.null_deviance)  # its figures are clipped under DP: not released
    # Noise-aware: the difference stays within a few of the stated noise sds, and within the
    # sampling standard errors on this many rows.
    gap = (noisy.params - exact.params).abs()
    assert (gap <= 5 * noisy.noise_sd + 0.5 * exact.bse).all(), pd.DataFrame(
        {"gap": gap, "sd": noisy.noise_sd}
    )
    ci = noisy.conf_int()
    assert ((ci[1] - ci[0]) > (exact.conf_int()[1] - exact.conf_int()[0])).all()
    # Charged per round, rho / max_iterations each, at every node.
    for row in noisy.nodes.itertuples():
        assert row.rho == pytest.approx(1.0 / 6 * noisy.iterations, rel=1e-6)


def test_dp_glm_stops_once_its_score_is_noise_and_spends_only_those_rounds(
    loans_fed: tuple[RunningFederation, pd.DataFrame],
) -> None:
    fed, _ = loans_fed
    formula = "defaulted ~ x1 + x2 + C(g)"
    with fed.client() as client:
        exact = client.glm(formula, data="loans", family="binomial")
        noisy = client.glm(formula, data="loans", family="binomial", rho=1.0, max_iterations=25)
    # The deviance criterion cannot hold under noise; the score test ends the fit well before the cap.
    assert noisy.converged and noisy.iterations < 25, noisy.iterations
    for row in noisy.nodes.itertuples():
        assert row.rho == pytest.approx(1.0 / 25 * noisy.iterations, rel=1e-6) and row.rho < 1.0
    gap = (noisy.params - exact.params).abs()
    assert (gap <= 5 * noisy.noise_sd + 0.5 * exact.bse).all(), pd.DataFrame(
        {"gap": gap, "sd": noisy.noise_sd}
    )


def _audit(fed: RunningFederation, node: str) -> list[dict]:
    log = fed.root / "state" / node / "audit.log"
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_every_round_is_audited_as_a_secure_release(
    loans_fed: tuple[RunningFederation, pd.DataFrame],
) -> None:
    fed, _ = loans_fed
    with fed.client() as client:
        result = client.glm("amount ~ x1", data="loans", family="gaussian")
    for node in NODES:
        released = [e["payload"] for e in _audit(fed, node) if e["kind"] == "released"]
        mine = [p for p in released if p.get("model_id") == result.job_id]
        assert sorted(p["iteration"] for p in mine) == list(range(1, result.iterations + 1))
        assert all(p["secure"] and len(p["digest"]) == 64 for p in mine)


@pytest.mark.parametrize(
    ("formula", "kwargs", "rule"),
    [
        # A dummy level with fewer than min_group_size rows at every node.
        ("defaulted ~ x1 + C(rare)", {"family": "binomial"}, "model_disclosure"),
        ("claims ~ x1 + x2 + z", {"family": "poisson"}, "model_formula"),
        ("claims ~ x1:x2", {"family": "poisson"}, "model_formula"),
        ("claims ~ x1", {"family": "binomial"}, "model_outcome"),
    ],
)
def test_guards_refuse_with_their_rule(
    loans_fed: tuple[RunningFederation, pd.DataFrame], formula: str, kwargs: dict, rule: str
) -> None:
    fed, _ = loans_fed
    with fed.client() as client, pytest.raises(FederationError) as info:
        client.glm(formula, data="loans", **kwargs)
    assert info.value.rule == rule, info.value


def _round(fed: RunningFederation, spec: pb.ModelSpec, iteration: int) -> pb.ModelRoundResponse:
    with fed.client() as client:
        request = pb.ModelRoundRequest(spec=spec, iteration=iteration)
        return client._stub.ModelRound(request, timeout=60)


def test_a_round_past_the_iteration_cap_is_refused(loans_fed: tuple[RunningFederation, pd.DataFrame]) -> None:
    fed, _ = loans_fed
    spec = pb.ModelSpec(dataset="loans", outcome="amount", trainer="glm", family="gaussian", max_iterations=3)
    spec.covariates.add(column="x1")
    ok = _round(fed, spec, 3)
    assert ok.ok, ok.error
    assert len(ok.sums) == 3 + 2 + 2  # X^T W X upper triangle (2x2), score, deviance, n
    past = _round(fed, spec, 4)
    assert not past.ok and past.error_rule == "model_iterations", past.error


def test_too_many_parameters_for_the_rows_is_refused(
    loans_fed: tuple[RunningFederation, pd.DataFrame],
) -> None:
    fed, pooled = loans_fed
    # The filter leaves a handful of rows per node: 5 parameters are more than 0.33 x rows.
    spec = pb.ModelSpec(dataset="loans", outcome="amount", trainer="glm", family="gaussian")
    for column in ("x1", "x2", "g"):
        spec.covariates.add(column=column)
    spec.filter.compare.CopyFrom(pb.Comparison(column="x1", op=pb.LT, value=pb.Value(real=0.5)))
    assert 0 < (pooled.x1 < 0.5).sum() < 5 * 3 * len(NODES)
    with fed.client() as client:
        response = client._stub.Model(pb.ModelRequest(spec=spec), timeout=60)
    assert not response.ok and response.error_rule == "model_disclosure", response.error
    # One rule whichever check fired, and no count in the reason.
    assert str(int((pooled.x1 < 0.5).sum())) not in response.error.replace("0.33", "")


def test_a_refused_fit_names_the_disconnected_node(loans_fed: tuple[RunningFederation, pd.DataFrame]) -> None:
    fed, _ = loans_fed
    proc = fed.procs.procs["kmar"]
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        with fed.client() as client:
            wait_disconnected(client, "kmar")  # after three missed heartbeats kmar is no longer asked
            with pytest.raises(FederationError) as info:
                client.glm("amount ~ x1", data="loans", family="gaussian")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    fed.procs.wait_for_nodes(set(NODES), timeout=30)
    # The two connected nodes refuse to join a sum of fewer than 3; the refusal says who is absent.
    message = str(info.value)
    assert info.value.rule == "secure_min_nodes", message
    assert "this one has 2" in message
    assert "kmar: disconnected (not connected: last heard" in message


def test_cli_prints_the_summary_table(loans_fed: tuple[RunningFederation, pd.DataFrame]) -> None:
    fed, pooled = loans_fed
    env = {
        **os.environ,
        "FEDERATION_COORDINATOR": fed.address,
        "FEDERATION_TLS_DIR": str(fed.root / "pki" / "kits" / "analyst"),
    }
    run = subprocess.run(
        [sys.executable, "-m", "federation.cli", "glm", "amount ~ x1 + C(g)", "--data", "loans"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert "Generalized Linear Model" in run.stdout and "C(g)[T.c]" in run.stdout
    assert f"{len(pooled):,}" in run.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "federation.cli", "glm", "amount ~ x1:x2", "--data", "loans"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert bad.returncode != 0 and "model_formula" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr
