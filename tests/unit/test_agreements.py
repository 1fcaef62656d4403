"""Decisions the coordinator and the nodes must take identically (privacy/agreements.py): the
secure vector's layout, and overlap noise against what the nodes charge."""

from __future__ import annotations

import itertools

import pytest

from coordinator.overlap import pattern_noise, sum_noise
from coordinator.secure_query import measurement_count, reuses_count
from federation.query import parse_query
from nodes.config import NodeConfig
from nodes.overlap import _charge_plan
from nodes.protect import resolve_budget
from nodes.secure_release import measurements
from nodes.secure_release import reuses_count as node_reuses_count
from nodes.validate import validate
from privacy.agreements import MEASURE_KIND, overlap_plan, secure_layout
from privacy.dp import plan_noise
from protocols import federation_pb2 as pb

SELECTS = ["COUNT(*)", "COUNT(DISTINCT company)", "SUM(value)", "AVG(value)"]


def _queries() -> list[str]:
    out = []
    for n in (1, 2, 3):
        for chosen in itertools.combinations(SELECTS, n):
            out.append(f"SELECT port, {', '.join(chosen)} FROM declarations GROUP BY port")
    return out


@pytest.mark.parametrize("sql", _queries())
@pytest.mark.parametrize("privacy", [{}, {"epsilon": 1.0}, {"rho": 0.5}])
def test_secure_layout_is_the_same_at_node_and_coordinator(
    node_config: NodeConfig, sql: str, privacy: dict[str, float]
) -> None:
    spec = parse_query(sql)
    for field, value in privacy.items():
        setattr(spec.privacy, field, value)
    plan = validate(spec, node_config)
    budget = resolve_budget(spec.privacy, plan.dataset, node_config.node_id)
    # The node's decision (with its budget) and the coordinator's (from the query alone) agree.
    reuse = node_reuses_count(plan, spec.privacy) and budget.dp
    assert reuse == reuses_count(spec)
    node_blocks = measurements(plan, reuse)
    coordinator_blocks = [(b.role, b.aggregate, b.kind) for b in secure_layout(spec)]
    assert node_blocks == coordinator_blocks
    assert measurement_count(spec) == len(node_blocks)
    # ... and the layout is the order in which OpenDP's plan measures them (privacy.dp.plan_noise).
    if budget.dp:
        kinds = [
            (MEASURE_KIND[a.function], (0.0, 1.0) if a.function in (pb.SUM, pb.AVG) else None)
            for a in plan.aggregates
        ]
        noise = plan_noise(kinds, 2, epsilon=budget.epsilon, rho=budget.rho, n_groups=3, reuse_count=reuse)
        measured = [
            (c.role, c.spec.kind)
            for c in noise.components
            if not (c.role == "threshold" and c.aggregate is not None)
        ]
        assert measured == [(role, kind) for role, _, kind in node_blocks]


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 3.0])
@pytest.mark.parametrize("sensitivity", [1, 3])
@pytest.mark.parametrize("parties", [2, 4])
def test_overlap_noise_is_what_the_nodes_charge(epsilon: float, sensitivity: int, parties: int) -> None:
    charged = _charge_plan(epsilon, sensitivity, False, parties)
    plan = overlap_plan(epsilon, sensitivity, parties, aggregate=False)
    assert charged == plan.cost
    assert pattern_noise(epsilon, sensitivity, parties) == plan.components[0].spec
    assert charged.epsilon == pytest.approx(epsilon)

    # Intersection-sum: every party charges the same, whatever the base's value bound.
    charged_sum = _charge_plan(epsilon, sensitivity, True, parties)
    for max_value in (1, 1000, 10**6):
        assert overlap_plan(epsilon, sensitivity, parties, True, float(max_value)).cost == charged_sum
        count_spec, sum_spec = sum_noise(epsilon, sensitivity, max_value)
        assert count_spec.kind == "count_distinct" and sum_spec.kind == "sum"
    assert charged_sum.epsilon == pytest.approx(epsilon)
