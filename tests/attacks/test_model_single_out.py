"""Attacks on the model release path: single out one row or one node through a GLM.

An analyst (or a curious coordinator) tries to learn one row's values from exact X^T W X and
score releases (Huth et al., Bioinformatics 2023, reconstruct data from exact covariance-type
releases): a filter that leaves one row, a dummy level held by a few units, a round sent to a
single node so its statistics are not mixed with others. Each is refused by rule, the refusal
names no count, and nothing is released.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pandas as pd
import pytest

from protocols import federation_pb2 as pb
from tests.integration.conftest import RunningFederation, _drop_schema
from tests.integration.glm_federation import NODES, start_loans


@pytest.fixture(scope="module")
def loans_fed(
    tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str
) -> Iterator[tuple[RunningFederation, pd.DataFrame]]:
    fed, schema, pooled = start_loans(tmp_path_factory.mktemp("glm_attack"), postgres_dsn, 600)
    try:
        yield fed, pooled
    finally:
        fed.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _released(fed: RunningFederation, node: str) -> list[dict]:
    log = fed.root / "state" / node / "audit.log"
    if not log.exists():  # written with the node's first job
        return []
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [e for e in entries if e["kind"] == "released"]


def _fit(fed: RunningFederation, spec: pb.ModelSpec) -> pb.ModelResponse:
    with fed.client() as client:
        return client._stub.Model(pb.ModelRequest(spec=spec), timeout=120)


def test_a_filter_that_leaves_one_row_is_refused_without_a_count(
    loans_fed: tuple[RunningFederation, pd.DataFrame],
) -> None:
    fed, pooled = loans_fed
    target = pooled.iloc[17]
    before = {node: len(_released(fed, node)) for node in NODES}
    spec = pb.ModelSpec(dataset="loans", outcome="amount", trainer="glm", family="gaussian")
    spec.covariates.add(column="x2")
    # x1 pins one row: with an intercept and x2, two equations of X^T X and X^T y give its values.
    spec.filter.between.CopyFrom(
        pb.Between(column="x1", low=pb.Value(real=target.x1 - 1e-9), high=pb.Value(real=target.x1 + 1e-9))
    )
    response = _fit(fed, spec)
    assert not response.ok and response.error_rule == "model_disclosure", response.error
    assert not response.params and not response.covariance
    assert f"{target.amount:.2f}" not in response.error and " 1 row" not in response.error
    assert {node: len(_released(fed, node)) for node in NODES} == before


def test_a_round_sent_to_one_node_is_refused(loans_fed: tuple[RunningFederation, pd.DataFrame]) -> None:
    fed, _ = loans_fed
    spec = pb.ModelSpec(dataset="loans", outcome="amount", trainer="glm", family="gaussian", node=NODES[0])
    spec.covariates.add(column="x1")
    with fed.client() as client:
        response = client._stub.ModelRound(pb.ModelRoundRequest(spec=spec, iteration=1), timeout=60)
    # One node's statistics would be its own exact sums: there is no secure sum of one.
    assert not response.ok and response.error_rule == "secure_min_nodes", response.error
    assert not response.sums


def test_a_rare_level_cannot_be_isolated_by_a_dummy(
    loans_fed: tuple[RunningFederation, pd.DataFrame],
) -> None:
    fed, _ = loans_fed
    spec = pb.ModelSpec(dataset="loans", outcome="claims", trainer="glm", family="poisson")
    spec.covariates.add(column="x1")
    # The dummy of "rare" (3 rows per node) would make X^T W X carry those rows' own sums.
    spec.covariates.add(column="rare")
    response = _fit(fed, spec)
    assert not response.ok and response.error_rule == "model_disclosure", response.error
    assert "3" not in response.error.replace("0.33", "")
