"""Attacks on Flower-driven model rounds: learn one row, one node or one unit from an update.

An analyst who drives the strategy chooses every round's parameters and hyper-parameters. With
them they try: gradient inversion on a round whose filter leaves one row (one full-batch step
from known w gives that row's x and y); a round for one node, so its update is not mixed with
others; parameters far out of range; DP rounds without clipping, or with a fresh model id per
round to dodge the split of the budget. Each is refused by rule, or charged as it releases.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from flwr.serverapp.strategy import FedAvg

from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from tests.integration.conftest import RunningFederation, _drop_schema
from tests.integration.glm_federation import NODES, start_loans

FEATURES = ("x1", "x2")


@pytest.fixture(scope="module")
def loans_fed(
    tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str
) -> Iterator[tuple[RunningFederation, pd.DataFrame]]:
    fed, schema, pooled = start_loans(tmp_path_factory.mktemp("flower_attack"), postgres_dsn, 600)
    try:
        yield fed, pooled
    finally:
        fed.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _released(fed: RunningFederation, node: str) -> int:
    log = fed.root / "state" / node / "audit.log"
    if not log.exists():
        return 0
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return sum(1 for e in entries if e["kind"] == "released")


def _spec(**params: float) -> pb.ModelSpec:
    spec = pb.ModelSpec(
        dataset="loans",
        outcome="defaulted",
        trainer="logistic",
        max_iterations=4,
        params=pb.TrainerParams(learning_rate=1.0, local_epochs=1, **params),  # type: ignore[arg-type]
    )
    for name in FEATURES:
        spec.covariates.add(column=name)
    return spec


def _round(
    fed: RunningFederation, spec: pb.ModelSpec, parameters: list[float], model_id: str = ""
) -> pb.ModelRoundResponse:
    with fed.client() as client:
        request = pb.ModelRoundRequest(spec=spec, model_id=model_id, iteration=1, parameters=parameters)
        return client._stub.ModelRound(request, timeout=120)


def test_gradient_inversion_on_a_one_row_filter_is_refused(
    loans_fed: tuple[RunningFederation, pd.DataFrame],
) -> None:
    fed, pooled = loans_fed
    target = pooled.iloc[5]
    before = {node: _released(fed, node) for node in NODES}
    spec = _spec(batch_size=0)
    # One full-batch step from w = 0 on one row moves w by lr * (y - 1/2) * x: the row itself.
    spec.filter.between.CopyFrom(
        pb.Between(column="x1", low=pb.Value(real=target.x1 - 1e-9), high=pb.Value(real=target.x1 + 1e-9))
    )
    response = _round(fed, spec, [0.0, 0.0, 0.0])
    assert not response.ok and response.error_rule == "model_disclosure", response.error
    assert not response.sums and " 1 row" not in response.error
    assert {node: _released(fed, node) for node in NODES} == before


def test_an_update_of_one_node_is_never_released(loans_fed: tuple[RunningFederation, pd.DataFrame]) -> None:
    fed, _ = loans_fed
    spec = _spec()
    spec.node = NODES[0]
    response = _round(fed, spec, [0.0, 0.0, 0.0])
    assert not response.ok and response.error_rule == "secure_min_nodes", response.error
    assert not response.sums
    # Through the Grid, a strategy that samples one node is stopped before any round.
    with fed.client() as client:
        grid = client.flower_grid("logistic", "loans", "defaulted", list(FEATURES), rounds=1)
        with pytest.raises(FederationError) as err:
            FedAvg(fraction_train=0.3, min_train_nodes=1, min_available_nodes=1).start(
                grid=grid, initial_arrays=grid.initial_arrays(), num_rounds=1
            )
    assert err.value.rule == "flower_sampling" and grid.history == []


@pytest.mark.parametrize("parameters", [[0.0, float("nan"), 0.0], [0.0, 1e300, 0.0], [0.0, 0.0]])
def test_crafted_parameters_are_refused_by_rule(
    loans_fed: tuple[RunningFederation, pd.DataFrame], parameters: list[float]
) -> None:
    fed, _ = loans_fed
    before = {node: _released(fed, node) for node in NODES}
    response = _round(fed, _spec(), parameters)
    assert not response.ok and response.error_rule == "model_parameters", response.error
    assert {node: _released(fed, node) for node in NODES} == before


def test_dp_rounds_need_clipping_and_carry_noise_for_one_units_update(
    loans_fed: tuple[RunningFederation, pd.DataFrame],
) -> None:
    fed, _ = loans_fed
    spec = _spec(clip_norm=0.0)
    spec.privacy.rho = 0.4
    spec.project = "flower-attack"
    refused = _round(fed, spec, [0.0, 0.0, 0.0])
    assert not refused.ok and refused.error_rule == "model_trainer", refused.error
    spec.params.clip_norm = 0.5
    response = _round(fed, spec, [0.0, 0.0, 0.0])
    assert response.ok, response.error
    blocks = {b.name: b for b in response.blocks}
    assert set(blocks) == {"update_sum", "weight", "loss"}
    # Each round spends rho / max_iterations, split over the three blocks: the summed noise on
    # the update is at least one curator's Gaussian for sensitivity clip_norm at that share.
    share = 0.4 / spec.max_iterations / len(blocks)
    assert blocks["update_sum"].noise_sd >= 0.5 / np.sqrt(2 * share) * 0.999
    assert all(o.cost.rho == pytest.approx(0.1) for o in response.nodes)


def test_a_fresh_model_id_per_round_still_pays_per_round(
    loans_fed: tuple[RunningFederation, pd.DataFrame],
) -> None:
    fed, _ = loans_fed
    spec = _spec(clip_norm=0.5)
    spec.privacy.rho = 0.2
    spec.project = "flower-fresh-ids"  # not a listed project: it shares the catch-all budget

    def releases() -> pd.Series:
        with fed.client() as client:
            budget = client.budget(spec.project)
        return budget[budget.dataset == "loans"].set_index("node").releases

    before = releases()
    for _ in range(2):  # each call names no model id: two "first rounds" of two jobs
        response = _round(fed, spec, [0.0, 0.0, 0.0])
        assert response.ok, response.error
    # Two releases, each charged rho / max_iterations: nothing is free for restarting the job.
    after = releases()
    assert (
        sorted(after.index) == sorted(NODES)
        and ((after - before.reindex(after.index, fill_value=0)) == 2).all()
    )
