"""The numpy SGD trainers: exact gradients, FedAvg's statistics layout, DP-FedAvg's clipping."""

from __future__ import annotations

import numpy as np
import pytest

from nodes.trainers.sgd import (
    LOSS_CAP,
    SgdParams,
    build_model,
    initial_parameters,
    local_sgd,
    round_statistics,
    total_loss,
    unit_updates,
)
from protocols.errors import FederationError


def _data(n: int = 400, d: int = 4, k: int = 2, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(n), rng.uniform(-1, 1, (n, d - 1))])
    w = rng.normal(0, 1.5, (k, d))
    logits = x @ w.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    return x, y


@pytest.mark.parametrize(("trainer", "k"), [("logistic", 2), ("softmax", 3), ("mlp", 3)])
def test_row_gradients_match_finite_differences(trainer: str, k: int) -> None:
    x, y = _data(n=5, k=k)
    model = build_model(trainer, x.shape[1], k, hidden=(3,))
    w = initial_parameters(model, seed=3) + np.random.default_rng(0).normal(0, 0.3, model.size())
    analytic = model.row_gradients(w, x, y).sum(axis=0)
    numeric = np.zeros_like(w)
    for j in range(len(w)):
        step = np.zeros_like(w)
        step[j] = 1e-6
        numeric[j] = (total_loss(model, w + step, x, y) - total_loss(model, w - step, x, y)) / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_per_row_parameters_equal_shared_ones() -> None:
    x, y = _data(n=7, k=3)
    model = build_model("mlp", x.shape[1], 3, hidden=(4, 2))
    w = initial_parameters(model, seed=5)
    np.testing.assert_allclose(model.row_gradients(np.tile(w, (7, 1)), x, y), model.row_gradients(w, x, y))


def test_local_sgd_lowers_the_loss_and_the_statistics_are_weighted() -> None:
    x, y = _data()
    model = build_model("logistic", x.shape[1], 2)
    w0 = initial_parameters(model)
    params = SgdParams(learning_rate=0.5, local_epochs=3, batch_size=16, seed=9)
    w1 = local_sgd(model, w0, x, y, params)
    assert total_loss(model, w1, x, y) < 0.9 * total_loss(model, w0, x, y)
    stats = round_statistics(model, w0, x, y, params)
    np.testing.assert_allclose(stats[:-2], len(y) * w1)
    assert stats[-2] == len(y)
    assert stats[-1] == pytest.approx(len(y) * np.log(2))  # loss at the global (zero) parameters


def test_dp_updates_are_clipped_per_unit() -> None:
    x, y = _data(n=300)
    units = np.repeat(np.arange(100), 3)
    model = build_model("logistic", x.shape[1], 2)
    params = SgdParams(learning_rate=5.0, local_epochs=4, clip_norm=0.05)
    total, count = unit_updates(model, np.zeros(model.size()), x, y, units, params)
    assert count == 100
    assert np.linalg.norm(total) <= 100 * 0.05 + 1e-9
    # Removing one unit's rows moves the sum by at most the clip norm (its L2 sensitivity).
    keep = units != 42
    rest, _ = unit_updates(model, np.zeros(model.size()), x[keep], y[keep], units[keep], params)
    assert np.linalg.norm(total - rest) <= 0.05 + 1e-9
    stats = round_statistics(model, np.zeros(model.size()), x, y, params, units=units, rows_per_unit=3)
    assert stats[-2] == 100 and 0 < stats[-1] <= 300 * LOSS_CAP


def test_bad_trainers_and_parameters_are_refused_by_rule() -> None:
    with pytest.raises(FederationError) as err:
        build_model("logistic", 3, 4)
    assert err.value.rule == "model_outcome"
    with pytest.raises(FederationError) as err:
        build_model("gbm", 3, 2)
    assert err.value.rule == "model_trainer"
    model = build_model("logistic", 3, 2)
    x, y = _data(d=3)
    with pytest.raises(FederationError) as err:
        local_sgd(model, np.array([np.nan, 0, 0]), x, y, SgdParams())
    assert err.value.rule == "model_parameters"
