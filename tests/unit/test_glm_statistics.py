"""GLM statistics at a node: wide fixed point sums exactly, and one unit moves each block by at most
its stated L2 sensitivity (nodes/trainers/glm.py), for every family, at any coefficients."""

from __future__ import annotations

import numpy as np
import pytest

from nodes.config import Column, Dataset, Policy, Source
from nodes.model_design import Design, ModelPlan, Term
from nodes.trainers.glm import GlmTrainer
from protocols import federation_pb2 as pb
from protocols import wide_fixed_point as wide
from protocols.secagg_errors import SecAggError

K = 2  # rows per unit


def test_wide_fixed_point_sums_exactly_across_parties() -> None:
    rng = np.random.default_rng(1)
    scale = float(2**40)
    parties = [rng.normal(0, 1, 50) * 10.0 ** rng.integers(-6, 18, 50) for _ in range(7)]
    words = np.zeros(50 * wide.LIMBS, dtype=np.uint64)
    for values in parties:
        words += wide.encode(wide.to_grid(values, scale))  # the SecAgg ring adds the same way
    total = [g / scale for g in wide.decode_sum(words, len(parties))]
    exact = [sum(int(round(v * scale)) for v in col) / scale for col in zip(*parties, strict=True)]
    assert total == exact
    np.testing.assert_allclose(total, np.sum(parties, axis=0), rtol=1e-12, atol=1e-9)


def test_wide_fixed_point_refuses_what_does_not_fit() -> None:
    with pytest.raises(SecAggError):
        wide.encode([1 << 127])
    with pytest.raises(SecAggError):
        wide.to_grid([float("nan")], 1.0)


def _plan(family: str, outcome: tuple[float, float]) -> ModelPlan:
    x = Column("x", "x", "numeric", bounds=(-3.0, 5.0))
    g = Column("g", "g", "category", domain=("a", "b", "c"))
    y = Column("y", "y", "numeric", bounds=outcome)
    dataset = Dataset("d", Source("csv"), {"x": x, "g": g, "y": y}, "u", K, Policy())
    spec = pb.ModelSpec(dataset="d", outcome="y", trainer="glm", family=family)
    terms = (
        Term("Intercept"),
        Term("x", "x", None, 1.0, 4.0),
        Term("C(g)[T.b]", "g", "b"),
        Term("C(g)[T.c]", "g", "c"),
    )
    return ModelPlan(dataset, spec, y, outcome, None, ((x, (-3.0, 5.0)),), ((g, ("b", "c")),), terms, None, K)


def _design(rng: np.random.Generator, n: int, outcome: tuple[float, float], counts: bool) -> Design:
    x = np.empty((n, 4))
    x[:, 0] = 1.0
    x[:, 1] = rng.uniform(-1, 1, n)
    level = rng.integers(0, 3, n)
    x[:, 2], x[:, 3] = level == 1, level == 2
    lo, hi = outcome
    y = rng.integers(int(lo), int(hi) + 1, n).astype(float) if counts else rng.uniform(lo, hi, n)
    return Design(x=x, y=y, units=np.repeat(np.arange(n // K), K))


@pytest.mark.parametrize(
    ("family", "outcome", "counts"),
    [("gaussian", (0.0, 100.0), False), ("binomial", (0.0, 1.0), True), ("poisson", (0.0, 20.0), True)],
)
def test_one_unit_moves_each_block_within_its_sensitivity(
    family: str, outcome: tuple[float, float], counts: bool
) -> None:
    rng = np.random.default_rng(7)
    plan = _plan(family, outcome)
    trainer = GlmTrainer()
    worst = {}
    for trial in range(40):
        design = _design(rng, 40, outcome, counts)
        # Extreme coefficients too: the bounds must hold wherever the coordinator evaluates.
        beta = rng.normal(0, 3 if trial % 2 else 0.3, 4)
        # The neighbour: the first unit (its K rows) removed.
        smaller = Design(x=design.x[K:], y=design.y[K:], units=design.units[K:])
        full = trainer.statistics(plan, design, beta, dp=True)
        less = trainer.statistics(plan, smaller, beta, dp=True)
        for a, b in zip(full, less, strict=True):
            moved = float(np.linalg.norm(a.values - b.values))
            assert moved <= a.l2 * (1 + 1e-12), (family, a.name, moved, a.l2)
            worst[a.name] = max(worst.get(a.name, 0.0), moved / a.l2)
    # The bounds are not vacuous: some block comes within a factor 10 of its bound.
    assert max(worst.values()) > 0.1, worst


def test_exact_mode_states_no_sensitivity_and_clamps_nothing() -> None:
    rng = np.random.default_rng(3)
    plan = _plan("poisson", (0.0, 20.0))
    design = _design(rng, 40, (0.0, 20.0), True)
    beta = np.array([4.0, 1.0, 0.0, 0.0])  # mu far above the outcome's bound: clamped only under DP
    exact = {b.name: b for b in GlmTrainer().statistics(plan, design, beta, dp=False)}
    noisy = {b.name: b for b in GlmTrainer().statistics(plan, design, beta, dp=True)}
    assert all(b.l2 == 0 for b in exact.values())
    mu = np.exp(design.x @ beta)
    np.testing.assert_allclose(exact["score"].values, design.x.T @ (design.y - mu))
    assert not np.allclose(noisy["score"].values, exact["score"].values)
