"""When a GLM fit stops under DP (within_noise), and the intercept-only model it compares with."""

from __future__ import annotations

import numpy as np

from coordinator.glm import null_coefficients, within_noise
from coordinator.model_round import RoundResult
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


def _first(terms: list[str], score0: float, n: float) -> RoundResult:
    p = len(terms)
    return RoundResult(
        sums=np.zeros(p),
        blocks=[],
        terms=terms,
        nodes=[],
        survivors=3,
        block_values={"score": np.asarray([score0] + [0.0] * (p - 1)), "n": np.asarray([n])},
    )


def test_the_null_model_sits_at_the_link_of_the_mean_outcome() -> None:
    # binomial at b = 0: mu = 0.5, so sum(y) = score + n / 2 = 30 of 100 rows, y_bar 0.3.
    b = null_coefficients("binomial", _first(["Intercept", "x1"], -20.0, 100.0))
    assert b is not None and b[0] == np.log(0.3 / 0.7) and b[1] == 0.0
    b = null_coefficients("poisson", _first(["Intercept"], 100.0, 100.0))  # sum(y) = 200
    assert b is not None and b[0] == np.log(2.0)
    b = null_coefficients("gaussian", _first(["Intercept"], 350.0, 100.0))
    assert b is not None and b[0] == 3.5


def test_no_null_model_without_an_intercept_or_on_the_edge() -> None:
    assert null_coefficients("gaussian", _first(["x1"], 1.0, 10.0)) is None
    assert null_coefficients("binomial", _first(["Intercept"], 50.0, 100.0)) is None  # every y is 1
    assert null_coefficients("poisson", _first(["Intercept"], -100.0, 100.0)) is None  # every y is 0
