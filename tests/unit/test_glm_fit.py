"""When a GLM fit stops under DP (within_noise), and the intercept-only model it compares with."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.glm import null_deviance, within_noise
from coordinator.model_round import RoundResult
from nodes.trainers.glm import mean_and_weight, unit_deviance
from protocols import federation_pb2 as pb


def _round(score: list[float], score_sd: float) -> RoundResult:
    return RoundResult(
        sums=np.asarray(score),
        blocks=[pb.ModelBlock(name="score", noise_sd=score_sd)],
        terms=[f"t{i}" for i in range(len(score))],
        nodes=[],
        survivors=3,
        block_values={"score": np.asarray(score)},
    )


def test_an_exact_fit_never_stops_on_the_score_test() -> None:
    assert not within_noise(_round([0.0, 0.0], 0.0), 2)


def test_a_score_the_size_of_its_noise_stops_the_fit() -> None:
    # |score|^2 / (2 sd^2) = 1 with p = 5: well inside chi-square(5).
    assert within_noise(_round([1.0, -1.0, 0.0, 0.0, 0.0], 1.0), 5)


def test_a_score_far_above_its_noise_goes_on() -> None:
    # |score|^2 / (2 sd^2) = 20 with p = 5: above the 0.99 quantile (15.1).
    assert not within_noise(_round([4.0, -4.0, 2.0, 2.0, 0.0], 1.0), 5)


def test_the_quantile_grows_with_the_number_of_coefficients() -> None:
    score = [4.0] * 3  # |score|^2 / 2 = 24: too large for p = 3 (quantile 11.3), fine for p = 30
    assert not within_noise(_round(score, 1.0), 3)
    assert within_noise(_round(score, 1.0), 30)


@pytest.mark.parametrize(
    ("family", "y"),
    [
        ("gaussian", np.array([3.0, -1.5, 7.25, 0.0, 12.0, 4.5])),
        ("poisson", np.array([0.0, 1.0, 4.0, 2.0, 9.0, 0.0, 3.0])),
        ("binomial", np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0])),
        ("binomial", np.array([0.0, 0.25, 1.0, 0.6, 0.9, 0.0])),  # proportions
    ],
)
def test_the_null_deviance_in_closed_form_equals_the_direct_sum(family: str, y: np.ndarray) -> None:
    # The first round's figures at b = 0, as a node computes them (nodes/trainers/glm.py).
    mu0 = mean_and_weight(family, np.zeros_like(y))[0]
    first = RoundResult(
        sums=np.zeros(1),
        blocks=[],
        terms=["Intercept", "x1"],
        nodes=[],
        survivors=3,
        block_values={
            "score": np.array([float(np.sum(y - mu0)), 0.0]),
            "deviance": np.array([float(np.sum(unit_deviance(family, y, mu0)))]),
            "n": np.array([float(len(y))]),
        },
    )
    direct = float(np.sum(unit_deviance(family, y, np.full_like(y, y.mean()))))
    assert null_deviance(family, first) == pytest.approx(direct, rel=1e-12, abs=1e-12)


def test_no_null_deviance_without_an_intercept() -> None:
    first = RoundResult(
        sums=np.zeros(1),
        blocks=[],
        terms=["x1"],
        nodes=[],
        survivors=3,
        block_values={"score": np.array([1.0]), "deviance": np.array([4.0]), "n": np.array([3.0])},
    )
    assert null_deviance("gaussian", first) is None
