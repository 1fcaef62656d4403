"""Clamping bounds chosen per query by a DP quantile (privacy/auto_bounds.py, nodes/auto_bounds.py):
the share of epsilon, the candidates, OpenDP's choice on real data, and what explain says."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from federation.client import apply_auto_bounds
from federation.query import parse_query
from nodes.config import NodeConfig
from privacy.accounting import PrivacyError
from privacy.auto_bounds import CANDIDATES, DEFAULT_SHARE, bound_share, bounds_cost, candidates, choose_upper
from protocols.errors import FederationError


def test_the_share_must_leave_something_for_the_answer() -> None:
    assert bound_share(0.0) == DEFAULT_SHARE
    assert bound_share(0.25) == 0.25
    for bad in (1.0, 1.5, -0.1, math.nan, math.inf):
        with pytest.raises(PrivacyError) as info:
            bound_share(bad)
        assert info.value.rule == "bound_share"
        assert "leaves no epsilon for the answer" in info.value.message


def test_candidates_are_public_and_geometric_below_the_declared_bound() -> None:
    cands = candidates((0.0, 1000.0))
    assert len(cands) == CANDIDATES and cands == sorted(cands)
    assert cands[-1] == 1000.0 and math.isclose(cands[-2], 1000.0 / math.sqrt(2))
    assert all(0.0 < c <= 1000.0 for c in cands)
    assert candidates((100.0, 200.0))[-1] == 200.0 and candidates((100.0, 200.0))[0] > 100.0


def test_the_chosen_bound_is_a_candidate_near_the_quantile() -> None:
    values = np.random.default_rng(4).gamma(2.0, 1500.0, 50_000)
    truth = float(np.quantile(values, 0.99))  # about 10,000 in [0, 100,000]
    chosen = [choose_upper(values, (0.0, 100_000.0), 0.99, 1.0, 3) for _ in range(7)]
    cands = candidates((0.0, 100_000.0))
    assert all(any(math.isclose(c, v) for v in cands) for c in chosen)
    # Candidates are a factor sqrt(2) apart: the typical choice is one or two steps from the truth.
    assert truth / 2 <= statistics.median(chosen) <= truth * 2


def test_choosing_costs_its_epsilon_and_needs_some() -> None:
    cost = bounds_cost([0.05, 0.05])
    assert cost.epsilon == pytest.approx(0.1) and cost.rho == pytest.approx(2 * 0.05**2 / 2)
    with pytest.raises(PrivacyError):
        choose_upper([1.0, 2.0], (0.0, 10.0), 0.99, 0.0, 1)


def test_the_sdk_asks_for_bounds_only_where_none_are_given() -> None:
    spec = parse_query("SELECT SUM(LEAST(value, 500)) AS a, SUM(value) AS b, COUNT(*) AS n FROM declarations")
    apply_auto_bounds(spec, 0.95, 0.2)
    assert [a.bound_quantile for a in spec.aggregates] == [0.0, 0.95, 0.0]
    assert spec.privacy.bound_share == 0.2
    with pytest.raises(FederationError) as info:
        apply_auto_bounds(parse_query("SELECT COUNT(*) AS n FROM declarations"), 0.99, None)
    assert info.value.rule == "bound_quantile"
    with pytest.raises(FederationError) as info:
        apply_auto_bounds(parse_query("SELECT SUM(value) AS s FROM declarations"), 0.99, 1.0)
    assert info.value.rule == "bound_share"


def test_explain_charges_the_choice_and_plans_the_rest(node_config: NodeConfig) -> None:
    from federation.explain import explain_frame
    from nodes.daemon import dataset_infos

    info = next(i for i in dataset_infos(node_config) if i.name == "declarations")
    plain = parse_query("SELECT SUM(value) AS s FROM declarations")
    plain.privacy.epsilon = 0.8
    auto = parse_query("SELECT SUM(value) AS s FROM declarations")
    auto.privacy.epsilon = 1.0
    apply_auto_bounds(auto, 0.99, 0.2)
    a, p = explain_frame(auto, [info]), explain_frame(plain, [info])
    # The answer runs at 0.8 (declared bounds: the most noise it can have); the node charges 1.0.
    assert a.iloc[0]["noise_sd"] == pytest.approx(p.iloc[0]["noise_sd"])
    assert a.iloc[0]["epsilon"] == pytest.approx(1.0) and p.iloc[0]["epsilon"] == pytest.approx(0.8)
    assert "DP quantile" in a.iloc[0]["note"] and "20%" in a.iloc[0]["note"]


def test_the_cli_takes_bounds_auto() -> None:
    from federation.cli import _query_bounds

    assert _query_bounds(["auto"]) == "auto"
    assert _query_bounds(["value=0:500"]) == {"value": (0.0, 500.0)}
    with pytest.raises(FederationError) as info:
        _query_bounds(["value=auto"])
    assert info.value.rule == "bounds"
