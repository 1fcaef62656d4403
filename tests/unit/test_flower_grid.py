"""The Flower Grid's translation: strategy messages -> one round request -> one aggregated reply.

The round requests are answered here by the nodes' own trainers summed in-process (what the
secure sum yields, without the masking); tests/integration/test_flower.py runs the same over
real node processes and SecAgg+.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
)

from federation.flower_grid import FlowerGrid, check_strategy, decode_round
from nodes.trainers.sgd import SgdParams, build_model, round_statistics, total_loss
from protocols import federation_pb2 as pb
from protocols.errors import FederationError

NODES = ["douane", "kmar", "politie"]


def _parts(seed: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    parts = []
    for _ in NODES:
        x = np.column_stack([np.ones(400), rng.uniform(-1, 1, (400, 3))])
        p = 1 / (1 + np.exp(-(x @ [0.2, 1.5, -2.0, 0.5])))
        parts.append((x, (rng.uniform(size=400) < p).astype(np.int64)))
    return parts


class Rounds:
    """Answers ModelRoundRequests with the trainers' summed statistics; records the requests."""

    def __init__(self) -> None:
        self.parts = _parts()
        self.model = build_model("logistic", 4, 2)
        self.requests: list[pb.ModelRoundRequest] = []

    def __call__(self, request: pb.ModelRoundRequest) -> pb.ModelRoundResponse:
        self.requests.append(request)
        p = request.spec.params
        params = SgdParams(p.learning_rate, p.local_epochs, p.batch_size, p.proximal_mu, p.l2, 0.0, p.seed)
        w = np.array(request.parameters)
        total = sum(round_statistics(self.model, w, x, y, params) for x, y in self.parts)
        return pb.ModelRoundResponse(
            ok=True,
            model_id="m1",
            iteration=request.iteration,
            sums=list(total),
            blocks=[
                pb.ModelBlock(name="weighted_params", length=4),
                pb.ModelBlock(name="weight", length=1),
                pb.ModelBlock(name="loss", length=1),
            ],
        )


def _grid(rounds: Rounds, **kw: float) -> FlowerGrid:
    spec = pb.ModelSpec(
        dataset="loans",
        trainer="logistic",
        max_iterations=20,
        params=pb.TrainerParams(learning_rate=0.5, local_epochs=2, batch_size=32),
    )
    return FlowerGrid(spec, rounds, lambda: list(NODES), **kw)


@pytest.mark.parametrize("strategy", [FedAvg, FedAvgM, FedProx, FedAdam, FedYogi, FedAdagrad])
def test_supported_strategies_run_unchanged_and_lower_the_loss(strategy: type) -> None:
    rounds = Rounds()
    kwargs: dict[str, float] = {"proximal_mu": 0.1} if strategy is FedProx else {}
    if strategy in (FedAdam, FedYogi, FedAdagrad):
        kwargs["eta"] = 0.3  # the server's step on the averaged update (Reddi et al., ICLR 2021)
    grid = _grid(rounds)
    result = strategy(fraction_evaluate=0.0, min_available_nodes=3, **kwargs).start(
        grid=grid, initial_arrays=ArrayRecord([np.zeros(4)]), num_rounds=3, timeout=60
    )
    w = result.arrays.to_numpy_ndarrays()[0]
    x = np.vstack([p[0] for p in rounds.parts])
    y = np.concatenate([p[1] for p in rounds.parts])
    assert total_loss(rounds.model, w, x, y) < 0.95 * total_loss(rounds.model, np.zeros(4), x, y)
    # One round request per strategy round, each continuing the same model job.
    assert [r.iteration for r in rounds.requests] == [1, 2, 3]
    assert [r.model_id for r in rounds.requests] == ["", "m1", "m1"]
    if strategy is FedProx:
        assert all(r.spec.params.proximal_mu == pytest.approx(0.1) for r in rounds.requests)


def test_fedavg_reply_is_the_weighted_average_with_the_summed_count() -> None:
    rounds = Rounds()
    grid = _grid(rounds)
    result = FedAvg(fraction_evaluate=1.0, min_available_nodes=3).start(
        grid=grid,
        initial_arrays=ArrayRecord([np.zeros(4)]),
        num_rounds=1,
        train_config=ConfigRecord({"lr": 0.25, "local-epochs": 3}),
    )
    train, evaluate = rounds.requests
    assert train.spec.params.learning_rate == 0.25 and train.spec.params.local_epochs == 3
    assert evaluate.spec.params.local_epochs == 0  # evaluation: the loss at the sent parameters
    assert grid.history[0].examples == 1200  # handed to the strategy as "num-examples"
    assert "train_loss" in result.train_metrics_clientapp[1]
    x = np.vstack([p[0] for p in rounds.parts])
    y = np.concatenate([p[1] for p in rounds.parts])
    w = result.arrays.to_numpy_ndarrays()[0]
    assert result.evaluate_metrics_clientapp[1]["loss"] == pytest.approx(
        total_loss(rounds.model, w, x, y) / 1200
    )
    assert [h.kind for h in grid.history] == ["train", "evaluate"]


@pytest.mark.parametrize("strategy", [FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan])
def test_strategies_needing_individual_updates_are_refused_before_any_round(strategy: type) -> None:
    rounds = Rounds()
    with pytest.raises(FederationError) as err:
        strategy(min_available_nodes=3).start(grid=_grid(rounds), initial_arrays=ArrayRecord([np.zeros(4)]))
    assert err.value.rule == "flower_strategy" and strategy.__name__ in err.value.message
    assert rounds.requests == []
    with pytest.raises(FederationError):
        check_strategy(strategy())


def test_sampling_a_subset_of_the_nodes_is_refused() -> None:
    rounds = Rounds()
    with pytest.raises(FederationError) as err:
        FedAvg(fraction_train=0.5, min_train_nodes=1, min_available_nodes=1).start(
            grid=_grid(rounds), initial_arrays=ArrayRecord([np.zeros(4)]), num_rounds=1
        )
    assert err.value.rule == "flower_sampling" and rounds.requests == []


def test_waiting_for_more_nodes_than_serve_the_dataset_ends_with_a_rule() -> None:
    with pytest.raises(FederationError) as err:
        FedAvg(min_available_nodes=5).start(
            grid=_grid(Rounds(), node_wait=1.5), initial_arrays=ArrayRecord([np.zeros(4)]), num_rounds=1
        )
    assert err.value.rule == "flower_nodes"


def test_dp_rounds_move_the_sent_parameters_by_the_mean_clipped_update() -> None:
    response = pb.ModelRoundResponse(
        ok=True,
        sums=[1.0, -2.0, 4.0, 10.0],
        blocks=[
            pb.ModelBlock(name="update_sum", length=2),
            pb.ModelBlock(name="weight", length=1),
            pb.ModelBlock(name="loss", length=1),
        ],
    )
    params, examples, loss = decode_round(response, np.array([0.5, 0.5]))
    np.testing.assert_allclose(params, [0.75, 0.0])
    assert examples == 4.0 and loss == 2.5
    response.blocks[0].length = 3
    with pytest.raises(FederationError):
        decode_round(response, np.array([0.5, 0.5]))


def test_a_refused_round_stops_the_strategy_with_the_nodes_rule() -> None:
    def refuse(request: pb.ModelRoundRequest) -> pb.ModelRoundResponse:
        return pb.ModelRoundResponse(ok=False, error="node kmar: budget exhausted", error_rule="budget")

    grid = FlowerGrid(pb.ModelSpec(dataset="loans", trainer="logistic"), refuse, lambda: list(NODES))
    with pytest.raises(FederationError) as err:
        FedAvg(min_available_nodes=3).start(
            grid=grid, initial_arrays=ArrayRecord([np.zeros(4)]), num_rounds=1
        )
    assert err.value.rule == "budget"
