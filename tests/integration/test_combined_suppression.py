"""One suppression decision on the combined figure, over real node processes and gRPC.

A cross-partner question at epsilon 1 with the default policy (DP required): every node's part of
every region is below that node's own noisy threshold at one partner at least, so node-level
suppression would blank all ten regions; decided once on the summed noisy unit count, every
region is released, in a plain query and under secure aggregation. A node whose policy says
``suppression = "node"`` still suppresses its own small groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from federation.scenario import REGIONS
from privacy.dp import threshold_for
from privacy.explain import plan_query
from privacy.suppression import ThresholdNoise, combined_threshold
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

ROWS = 14_000
MIN_GROUP = 10
DRUGS = (
    "SELECT region, COUNT_DISTINCT_PER_NODE(company) AS companies, COUNT(*) AS signals FROM signals "
    "WHERE phenomenon = 'drugs' GROUP BY region"
)
NODE_LEVEL = ["politie", "om", "kmar"]
NODE_MIN = 400


def _per_node_units(fed: RunningFederation, nodes: list[str]) -> pd.DataFrame:
    """Exact distinct companies with drugs signals per region (rows) and node (columns)."""
    out = {}
    for node in nodes:
        frame = fed.scenario.frames[f"{node}.signals"]
        frame = frame[(frame["phenomenon"] == "drugs") & frame["company"].notna()]
        out[node] = frame.groupby("region")["company"].nunique()
    return pd.DataFrame(out).reindex(list(REGIONS)).fillna(0).astype(int)


def _drugs_threshold_noise() -> tuple[int, float]:
    """(node-level threshold, scale) of the noisy distinct count of DRUGS at one node, epsilon 1."""
    # The node's own plan: the figures get their share after the bounding figures' (privacy/explain.py).
    spec = plan_query(
        [("count_distinct", None), ("count", None)], 10, epsilon=1.0, n_groups=len(REGIONS)
    ).figures.threshold
    return threshold_for(MIN_GROUP, spec), spec.scale


@pytest.fixture(scope="module")
def combined(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    """Six partners with the default policy: DP required, epsilon 1, suppression combined."""
    running, schema = start_federation(
        tmp_path_factory.mktemp("combined"),
        postgres_dsn,
        dp_required=True,
        rows=ROWS,
        projects=("combined-drugs", "combined-drugs-secure", "combined-small"),
    )
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


@pytest.fixture(scope="module")
def node_level(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    """Three partners; KMar's officer requires node-level suppression, with a minimum group size
    (NODE_MIN) far above any of its groups here."""

    def edit(paths: dict[str, Path]) -> None:
        text = paths["kmar"].read_text().replace("min_group_size = 10\n", f"min_group_size = {NODE_MIN}\n", 1)
        paths["kmar"].write_text(text.replace("[policy]\n", '[policy]\nsuppression = "node"\n', 1))

    running, schema = start_federation(
        tmp_path_factory.mktemp("node-level"),
        postgres_dsn,
        nodes=NODE_LEVEL,
        dp_required=True,
        edit=edit,
        projects=("node-level", "node-level-secure"),
    )
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def test_cross_partner_regions_are_all_released_at_epsilon_one(combined: RunningFederation) -> None:
    units = _per_node_units(combined, [n for n in combined.procs.node_configs])
    node_threshold, scale = _drugs_threshold_noise()
    # Precondition: at every region some partner holds fewer units than its own noisy threshold
    # (node-level suppression would blank all ten), while the sum clears the combined threshold
    # by more than four standard deviations of the summed noise.
    assert (units.min(axis=1) < node_threshold).all()
    parts = [ThresholdNoise("laplace", scale)] * len(units.columns)
    threshold = combined_threshold(MIN_GROUP, parts)
    sd = (len(parts) * 2) ** 0.5 * scale
    assert (units.sum(axis=1) > threshold + 4 * sd).all()
    with combined.client() as fed:
        df = fed.query(DRUGS, epsilon=1.0, project="combined-drugs")
    assert set(df.attrs["answered"]) == set(units.columns)
    assert df.attrs["suppressed"] == []
    assert df["companies"].notna().all() and len(df) == len(REGIONS)
    for item in df.attrs["noise"]["companies"]:
        lo, hi = item["ci95"]
        assert lo < units.sum(axis=1)[item["group"]["region"]] + 6 * sd and hi > lo
    # The decision cost nothing extra: each node charged the query's epsilon once.
    for node in df.attrs["nodes"]:
        assert node["cost"]["epsilon"] == pytest.approx(1.0, rel=1e-6)


def test_secure_cross_partner_regions_are_all_released(combined: RunningFederation) -> None:
    with combined.client() as fed:
        df = fed.query(DRUGS, epsilon=1.0, secure=True, project="combined-drugs-secure")
    assert len(df.attrs["answered"]) == len(combined.procs.node_configs)
    assert df.attrs["suppressed"] == []
    assert df["companies"].notna().all() and len(df) == len(REGIONS)
    units = _per_node_units(combined, list(combined.procs.node_configs)).sum(axis=1)
    # One curator's noise: the secure answer is closer than the six plain noises allow.
    for item in df.attrs["noise"]["companies"]:
        region = item["group"]["region"]
        got = float(df.set_index("region").loc[region, "companies"])
        assert abs(got - units[region]) < 8 * item["sd"]
        assert item["sd"] < (len(units) * 2) ** 0.5 * _drugs_threshold_noise()[1]


def test_small_groups_below_the_combined_threshold_stay_suppressed(combined: RunningFederation) -> None:
    """A grouping with groups far below the minimum size: those are suppressed by the one
    combined rule, and the reason says so."""
    sql = (
        "SELECT region, phenomenon, year, COUNT_DISTINCT_PER_NODE(company) AS companies FROM signals "
        "WHERE region = 'Limburg' AND phenomenon = 'corruption' GROUP BY region, phenomenon, year"
    )
    with combined.client() as fed:
        df = fed.query(sql, epsilon=0.2, project="combined-small")
    reasons = [by for item in df.attrs["suppressed"] for by in item["by"]]
    assert reasons, "the grouping needs suppressed groups"
    assert all(by.startswith("combined: min_group_size: summed noisy unit count below") for by in reasons)


def test_node_policy_keeps_node_level_suppression(node_level: RunningFederation) -> None:
    """Every region is suppressed by KMar's own decision on its own noisy count, and the reason
    names KMar's node-level rule, not the combined one."""
    units = _per_node_units(node_level, NODE_LEVEL)
    # The node's own plan: the figures get their share after the bounding figures' (privacy/explain.py).
    spec = plan_query(
        [("count_distinct", None), ("count", None)], 10, epsilon=1.0, n_groups=len(REGIONS)
    ).figures.threshold
    own = threshold_for(NODE_MIN, spec)
    assert (units["kmar"] < own - 8 * 2**0.5 * spec.scale).all()
    with node_level.client() as fed:
        df = fed.query(DRUGS, epsilon=1.0, project="node-level")
    assert set(df.attrs["answered"]) == set(NODE_LEVEL)
    suppressed = {item["group"]["region"]: item["by"] for item in df.attrs["suppressed"]}
    assert set(suppressed) == set(REGIONS)
    for region in REGIONS:
        assert suppressed[region] == [f"kmar: min_group_size: noisy unit count below {own}"]
    assert df["companies"].isna().all()


def test_node_level_policy_refuses_a_secure_sum(node_level: RunningFederation) -> None:
    """A secure sum cannot suppress one node's part, so KMar refuses with the rule, before it
    computes or spends anything; the other partners' secure sum goes on without it."""
    with node_level.client() as fed:
        df = fed.query(DRUGS, epsilon=1.0, secure=True, project="node-level-secure")
        budget = fed.budget("node-level-secure")
    outcomes = {n["node"]: n for n in df.attrs["nodes"]}
    assert outcomes["kmar"]["status"] == "refused"
    assert outcomes["kmar"]["rule"] == "suppression_node"
    assert set(df.attrs["answered"]) == {"politie", "om"}
    kmar = budget[(budget["node"] == "kmar") & (budget["dataset"] == "signals")]
    assert kmar.empty or int(kmar["releases"].iloc[0]) == 0
