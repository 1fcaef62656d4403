"""Flower strategies driving the nodes' built-in trainers over three real node processes.

Every round is one secure-aggregated model round (SecAgg+ over real gRPC); the strategy gets one
aggregated reply. FedAvg reaches the pooled logistic loss (statsmodels' maximum likelihood on the
pooled rows) within 1%; strategies that need individual updates are refused before any round;
DP-FedAvg charges every node once per round.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from flwr.serverapp.strategy import FedAdam, FedAvg, FedMedian, Krum

from protocols.errors import FederationError
from tests.integration.conftest import RunningFederation, _drop_schema
from tests.integration.glm_federation import LEVELS, NODES, start_loans

ROWS = 1000
FEATURES = ["x1", "x2", "g"]


@pytest.fixture(scope="module")
def loans_fed(
    tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str
) -> Iterator[tuple[RunningFederation, pd.DataFrame]]:
    fed, schema, pooled = start_loans(tmp_path_factory.mktemp("flower"), postgres_dsn, ROWS)
    try:
        yield fed, pooled
    finally:
        fed.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _design(pooled: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The nodes' design: intercept, numerics scaled to [-1, 1] by their bounds, dummies but the first level."""
    columns = [np.ones(len(pooled)), (pooled.x1.to_numpy() - 50) / 50, pooled.x2.to_numpy() / 5]
    columns += [(pooled.g == level).to_numpy(float) for level in LEVELS[1:]]
    return np.column_stack(columns), pooled.defaulted.to_numpy(float)


def _mean_loss(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    z = x @ w
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def test_fedavg_reaches_the_pooled_logistic_loss(loans_fed: tuple[RunningFederation, pd.DataFrame]) -> None:
    fed, pooled = loans_fed
    x, y = _design(pooled)
    best = -sm.Logit(y, x).fit(disp=0).llf / len(y)
    with fed.client() as client:
        fit = client.fit_flower(
            FedAvg(fraction_evaluate=0.0, min_available_nodes=3, min_train_nodes=3),
            rounds=4,
            data="loans",
            outcome="defaulted",
            features=FEATURES,
            learning_rate=0.5,
            local_epochs=5,
            batch_size=64,
        )
    assert list(fit.params.index) == ["Intercept", "x1", "x2", "g[b]", "g[c]"]
    assert _mean_loss(fit.params.to_numpy(), x, y) <= best * 1.01
    assert list(fit.history["kind"]) == ["train"] * 4
    assert set(fit.history["examples"]) == {len(pooled)}  # the strategy saw sum n_k, never one n_k
    # The loss each round reports is at the parameters it was sent: the pooled loss, computed
    # only from the secure sum of the nodes' summed losses.
    assert fit.history["loss"].iloc[0] == pytest.approx(np.log(2), rel=1e-9)
    assert all(set(r.nodes) == set(NODES) for r in fit.rounds)


def test_fedadam_runs_unchanged_with_an_evaluate_step(
    loans_fed: tuple[RunningFederation, pd.DataFrame],
) -> None:
    fed, pooled = loans_fed
    x, y = _design(pooled)
    with fed.client() as client:
        fit = client.fit_flower(
            FedAdam(eta=0.3, min_available_nodes=3, min_train_nodes=3, min_evaluate_nodes=3),
            rounds=2,
            data="loans",
            outcome="defaulted",
            features=FEATURES,
            local_epochs=2,
        )
    assert list(fit.history["kind"]) == ["train", "evaluate", "train", "evaluate"]
    assert fit.history["loss"].iloc[-1] < np.log(2)
    final = fit.history["loss"].iloc[-1]  # evaluated at the strategy's final parameters
    assert final == pytest.approx(_mean_loss(fit.params.to_numpy(), x, y), rel=1e-6)


@pytest.mark.parametrize("strategy", [FedMedian, Krum])
def test_strategies_needing_individual_updates_are_refused(
    loans_fed: tuple[RunningFederation, pd.DataFrame], strategy: type
) -> None:
    fed, _ = loans_fed
    with fed.client() as client:
        with pytest.raises(FederationError) as err:
            client.fit_flower(strategy(), rounds=1, data="loans", outcome="defaulted", features=FEATURES)
        assert err.value.rule == "flower_strategy"
        # Run directly against the Grid, the strategy is refused at its first round as well.
        grid = client.flower_grid("logistic", "loans", "defaulted", FEATURES, rounds=1)
        with pytest.raises(FederationError) as err:
            strategy(min_available_nodes=3).start(
                grid=grid, initial_arrays=grid.initial_arrays(), num_rounds=1
            )
        assert err.value.rule == "flower_strategy" and grid.history == []


def test_dp_fedavg_charges_every_node_once_per_round(
    loans_fed: tuple[RunningFederation, pd.DataFrame],
) -> None:
    fed, _ = loans_fed
    with fed.client() as client:
        fit = client.fit_flower(
            FedAvg(fraction_evaluate=0.0, min_available_nodes=3, min_train_nodes=3),
            rounds=2,
            data="loans",
            outcome="defaulted",
            features=FEATURES,
            rho=0.5,
            clip_norm=1.0,
            learning_rate=0.5,
            project="flower-dp",
        )
        budget = client.budget("flower-dp")
    # zCDP composes over the job's rounds: each round charges its share of the total.
    assert list(fit.history["rho"]) == pytest.approx([0.25, 0.25])
    assert fit.history["examples"].between(len(NODES) * ROWS * 0.8, len(NODES) * ROWS * 1.2).all()
    assert np.all(np.isfinite(fit.params.to_numpy()))
    loans = budget[budget.dataset == "loans"]
    assert set(loans.node) == set(NODES) and (loans.releases >= 2).all()


@pytest.mark.parametrize(("model", "size"), [("softmax", 3 * 3), ("mlp", 16 * 3 + 3 * 17)])
def test_multiclass_trainers_learn_a_three_level_outcome(
    loans_fed: tuple[RunningFederation, pd.DataFrame], model: str, size: int
) -> None:
    fed, pooled = loans_fed
    with fed.client() as client:
        fit = client.fit_flower(
            FedAvg(fraction_evaluate=0.0, min_available_nodes=3, min_train_nodes=3),
            rounds=2,
            model=model,
            data="loans",
            outcome="g",
            features=["x1", "x2"],
            learning_rate=0.5,
            local_epochs=2,
        )
    assert len(fit.params) == size  # K x d, or the MLP's two layers (16 tanh units by default)
    assert set(fit.history["examples"]) == {len(pooled)}
    # g's shares are 0.5/0.3/0.2 whatever x1, x2: the loss falls towards their entropy (1.03).
    assert fit.history["loss"].iloc[-1] < fit.history["loss"].iloc[0]
    if model == "softmax":
        assert fit.history["loss"].iloc[0] == pytest.approx(np.log(3), rel=1e-9)  # zeros: uniform
