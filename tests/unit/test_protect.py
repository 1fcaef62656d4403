"""Disclosure control on exact aggregates (nodes/release.py compute, nodes/protect.py protect).

Every key of the declared domain is reported, empty groups included, so the shape of an answer
reveals nothing; a group with fewer distinct privacy units than ``min_group_size`` is suppressed
as a whole row. The node here keeps node-level suppression under DP too (policy
``suppression = "node"``); the default, a decision on the combined figure, is tested at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from federation.query import parse_query
from nodes import release as release_path
from nodes.config import NodeConfig, load_node_config
from nodes.protect import Budget, Exact, needs_units, protect
from nodes.release import compute
from nodes.sources import DataSources
from nodes.validate import validate
from privacy.accounting import PrivacyError
from privacy.dp import plan_noise, threshold_for
from privacy.explain import plan_query
from protocols import federation_pb2 as pb
from protocols.values import from_value

MIN_GROUP = 3
NODE_LEVEL = f'min_group_size = {MIN_GROUP}\nsuppression = "node"'


def decl(unit: str, haven: str, value: float, jaar: int = 2022) -> dict[str, Any]:
    return {
        "kvk_nummer": unit,
        "haven": haven,
        "goederen": "drugs",
        "jaar": jaar,
        "geinspecteerd": "N",
        "waarde_eur": value,
        "datum": "2022-05-01",
    }


# Rotterdam: exactly MIN_GROUP units (released). Amsterdam: MIN_GROUP - 1 units with many rows
# (suppressed). Vlissingen: MIN_GROUP + 1 units, one of them over the row limit and one value over
# the upper bound. Moerdijk: no rows at all. ANT is not in the domain.
ROWS = [
    decl("10000001", "RTM", 10.0, 2021),
    decl("10000002", "RTM", 20.0, 2022),
    decl("10000003", "RTM", 30.0, 2023),
    *[decl("10000004", "AMS", 5.0) for _ in range(3)],
    *[decl("10000005", "AMS", 7.0) for _ in range(3)],
    decl("10000006", "VLI", 100.0),
    decl("10000007", "VLI", 200.0),
    decl("10000008", "VLI", 5000.0),  # clamped to 1000
    *[decl("10000009", "VLI", 1.0) for _ in range(6)],  # truncated to 3 rows
    decl("10000010", "ANT", 50.0),
]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, customs: Any) -> NodeConfig:
    folder = tmp_path_factory.mktemp("protect")
    frame = pd.DataFrame(ROWS, columns=list(customs.LOCAL_TYPES))
    return load_node_config(customs.write_csv_node(folder, frame, dataset_policy=NODE_LEVEL))


@pytest.fixture(scope="module")
def sources(config: NodeConfig) -> Iterator[DataSources]:
    s = DataSources(config)
    yield s
    s.close()


def release(sql: str, config: NodeConfig, sources: DataSources) -> pb.QueryResult:
    """Exact mode (no DP): disclosure control only, at no privacy cost."""
    plan = validate(parse_query(sql), config)
    result, cost = protect(plan, compute(plan, sources), Budget())
    assert (cost.epsilon, cost.rho) == (0.0, 0.0)
    return result


def by_key(result: pb.QueryResult) -> dict[tuple[Any, ...], pb.GroupResult]:
    return {tuple(from_value(v) for v in g.key): g for g in result.groups}


def cells(group: pb.GroupResult) -> list[tuple[float, float]]:
    return [(c.sum, c.count) for c in group.cells]


SQL = "SELECT port, COUNT(*), COUNT(DISTINCT company), SUM(value), AVG(value) FROM declarations GROUP BY port"


def test_dataset_policy_overrides_the_node_minimum(config: NodeConfig) -> None:
    assert config.policy.min_group_size != MIN_GROUP
    assert config.datasets["declarations"].policy.min_group_size == MIN_GROUP


def test_every_domain_key_is_reported_in_domain_order(config: NodeConfig, sources: DataSources) -> None:
    result = release(SQL, config, sources)
    domain = config.datasets["declarations"].columns["port"].domain
    assert [tuple(from_value(v) for v in g.key) for g in result.groups] == [(p,) for p in domain]
    assert all(len(g.cells) == 4 for g in result.groups)
    assert "Antwerpen" not in str(result) and "ANT" not in str(result)


def test_group_with_exactly_the_minimum_is_released(config: NodeConfig, sources: DataSources) -> None:
    rotterdam = by_key(release(SQL, config, sources))[("Rotterdam",)]
    assert not rotterdam.suppressed
    assert rotterdam.suppression_rule == ""
    assert cells(rotterdam) == [(3.0, 3.0), (3.0, 3.0), (60.0, 3.0), (60.0, 3.0)]


def test_small_group_is_suppressed_as_a_whole_row(config: NodeConfig, sources: DataSources) -> None:
    amsterdam = by_key(release(SQL, config, sources))[("Amsterdam",)]
    # Six rows, but only two companies: the row count must not rescue the group.
    assert amsterdam.suppressed
    assert amsterdam.suppression_rule.startswith("min_group_size")
    assert str(MIN_GROUP) in amsterdam.suppression_rule
    assert len(amsterdam.cells) == 4
    assert all(c == pb.Cell() for c in amsterdam.cells)


def test_empty_group_is_reported_and_suppressed(config: NodeConfig, sources: DataSources) -> None:
    moerdijk = by_key(release(SQL, config, sources))[("Moerdijk",)]
    assert moerdijk.suppressed
    assert moerdijk.suppression_rule.startswith("min_group_size")
    assert all(c == pb.Cell() for c in moerdijk.cells)


def test_released_values_are_bounded_and_truncated(config: NodeConfig, sources: DataSources) -> None:
    vlissingen = by_key(release(SQL, config, sources))[("Vlissingen",)]
    assert not vlissingen.suppressed
    # 3 single-row units + 3 of the 6 rows of the fourth; 5000 is clamped to the upper bound 1000.
    assert cells(vlissingen) == [(6.0, 6.0), (4.0, 4.0), (1303.0, 6.0), (1303.0, 6.0)]


def test_integer_category_keys_and_two_grouping_columns(config: NodeConfig, sources: DataSources) -> None:
    result = release(
        "SELECT year, port, COUNT(DISTINCT company) FROM declarations GROUP BY year, port", config, sources
    )
    ds = config.datasets["declarations"]
    assert len(result.groups) == len(ds.columns["year"].domain) * len(ds.columns["port"].domain)
    assert all(g.key[0].WhichOneof("kind") == "integer" for g in result.groups)
    assert all(g.key[1].WhichOneof("kind") == "text" for g in result.groups)
    groups = by_key(result)
    # Vlissingen 2022 has four companies; Rotterdam's three are spread over three years.
    assert cells(groups[(2022, "Vlissingen")]) == [(4.0, 4.0)]
    assert groups[(2022, "Rotterdam")].suppressed
    assert [k for k, g in groups.items() if not g.suppressed] == [(2022, "Vlissingen")]


def test_ungrouped_query_has_one_group(config: NodeConfig, sources: DataSources) -> None:
    result = release("SELECT COUNT(*), SUM(value) FROM declarations", config, sources)
    assert len(result.groups) == 1
    (group,) = result.groups
    assert list(group.key) == []
    assert not group.suppressed
    # 3 + 6 + 6 rows after truncation, plus the unmapped ANT row: port is not used here.
    assert cells(group) == [(16.0, 16.0), (60.0 + 36.0 + 1303.0 + 50.0, 16.0)]


def test_filter_that_leaves_too_few_units_suppresses_everything(
    config: NodeConfig, sources: DataSources
) -> None:
    result = release("SELECT COUNT(*) FROM declarations WHERE value > 150", config, sources)
    assert [g.suppressed for g in result.groups] == [True]


def test_compute_returns_exact_rows_per_key(config: NodeConfig, sources: DataSources) -> None:
    plan = validate(parse_query(SQL), config)
    exact = compute(plan, sources)
    assert isinstance(exact, Exact)
    assert exact.rows[("Amsterdam",)][:2] == (6, 2)
    assert ("Moerdijk",) not in exact.rows


def test_protect_without_any_rows_reports_the_full_domain(config: NodeConfig) -> None:
    plan = validate(parse_query(SQL), config)
    result, _ = protect(plan, Exact(rows={}), Budget())
    assert len(result.groups) == len(plan.keys)
    assert all(g.suppressed for g in result.groups)


def test_min_group_size_one_releases_single_units(tmp_path: Path, customs: Any) -> None:
    frame = pd.DataFrame([decl("10000001", "MOE", 12.0)], columns=list(customs.LOCAL_TYPES))
    config = load_node_config(customs.write_csv_node(tmp_path, frame, dataset_policy="min_group_size = 1"))
    sources = DataSources(config)
    try:
        groups = by_key(release("SELECT port, SUM(value) FROM declarations GROUP BY port", config, sources))
    finally:
        sources.close()
    assert cells(groups[("Moerdijk",)]) == [(12.0, 1.0)]
    assert all(g.suppressed for k, g in groups.items() if k != ("Moerdijk",))


def test_dp_mode_also_reports_the_full_domain(config: NodeConfig, sources: DataSources) -> None:
    plan = validate(parse_query(SQL), config)
    result, cost = protect(plan, compute(plan, sources), Budget(epsilon=1.0))
    assert cost.epsilon > 0 or cost.rho > 0
    assert [tuple(from_value(v) for v in g.key) for g in result.groups] == list(plan.keys)
    for group in result.groups:
        assert len(group.cells) == len(plan.aggregates)
        if group.suppressed:
            assert all(c == pb.Cell() for c in group.cells)


def _both_paths(sql: str, config: NodeConfig, sources: DataSources) -> tuple[pb.QueryResult, pb.QueryResult]:
    plan = validate(parse_query(sql), config)
    slow, _ = protect(plan, compute(plan, sources), Budget())
    fast, _ = protect(plan, compute(plan, sources, exact_release=True), Budget())
    return slow, fast


def test_skipping_the_distinct_count_never_changes_an_answer(
    config: NodeConfig, sources: DataSources
) -> None:
    # Amsterdam has many rows but too few units: the shortcut must not release it.
    for sql in (
        "SELECT port, COUNT(*) AS n, SUM(value) AS s FROM declarations GROUP BY port",
        "SELECT COUNT(*) AS n FROM declarations WHERE port = 'Amsterdam'",
        "SELECT COUNT(*) AS n FROM declarations",
    ):
        slow, fast = _both_paths(sql, config, sources)
        assert slow == fast, sql


def test_shortcut_is_taken_only_when_every_group_is_large(
    config: NodeConfig, sources: DataSources, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = config.datasets["declarations"]
    big = ds.policy.min_group_size * ds.max_rows_per_unit
    plan = validate(parse_query("SELECT COUNT(*) AS n FROM declarations"), config)
    # A small file source counts distinct units at once (nodes/release.py, SMALL_SOURCE_ROWS).
    assert compute(plan, sources, exact_release=True).rows == compute(plan, sources).rows
    monkeypatch.setattr(release_path, "SMALL_SOURCE_ROWS", 0)  # as a large source
    exact = compute(plan, sources, exact_release=True)
    n_rows, n_units = exact.rows[()][0], exact.rows[()][1]
    assert n_rows >= big
    assert n_units == -(-n_rows // ds.max_rows_per_unit)  # the lower bound, not the exact count
    # A grouping with one small group falls back to the exact distinct counts everywhere.
    grouped = validate(parse_query("SELECT port, COUNT(*) AS n FROM declarations GROUP BY port"), config)
    assert compute(grouped, sources, exact_release=True).rows == compute(grouped, sources).rows


# --------------------------------------------------------------------------- DP threshold on COUNT(*)


def test_only_dp_count_star_queries_skip_the_distinct_count(config: NodeConfig) -> None:
    dp = Budget(epsilon=1.0)
    cases = {
        "SELECT port, COUNT(*) AS n FROM declarations GROUP BY port": False,
        "SELECT port, COUNT(*) AS n, SUM(value) AS s FROM declarations GROUP BY port": False,
        "SELECT port, COUNT(*) AS n, COUNT(DISTINCT company) AS c FROM declarations GROUP BY port": True,
        "SELECT port, SUM(value) AS s FROM declarations GROUP BY port": True,
        "SELECT port, AVG(value) AS a FROM declarations GROUP BY port": True,
    }
    for sql, expected in cases.items():
        plan = validate(parse_query(sql), config)
        assert needs_units(plan, dp) is expected, sql
        assert needs_units(plan, Budget(rho=0.5)) is expected, sql
        assert needs_units(plan, Budget()) is True, sql  # exact releases suppress on units


def test_count_star_release_runs_without_distinct_counts(config: NodeConfig, sources: DataSources) -> None:
    plan = validate(parse_query("SELECT port, COUNT(*) AS n FROM declarations GROUP BY port"), config)
    exact = compute(plan, sources, units=False)
    assert not exact.units and exact.rows[("Amsterdam",)][:2] == (6, None)
    result, cost = protect(plan, exact, Budget(epsilon=1.0))
    # One measurement: COUNT(*) carries the whole budget and doubles as the threshold count.
    assert cost.epsilon == pytest.approx(1.0)
    assert len(result.groups) == len(plan.keys)
    for group in result.groups:
        if group.suppressed:
            assert "noisy row count below" in group.suppression_rule


def test_release_without_distinct_counts_refuses_when_it_needs_them(
    config: NodeConfig, sources: DataSources
) -> None:
    plan = validate(parse_query(SQL), config)
    exact = compute(plan, sources, units=False)
    with pytest.raises(PrivacyError) as err:
        protect(plan, exact, Budget(epsilon=1.0))
    assert err.value.rule == "units_missing"


def test_many_rows_from_few_units_stay_suppressed(config: NodeConfig, sources: DataSources) -> None:
    """Amsterdam: MIN_GROUP - 1 units at max_rows_per_unit rows each, the most rows a group below
    the minimum size can have. It must clear the row threshold with probability <= 1e-3."""
    plan = validate(
        parse_query("SELECT port, COUNT(*) AS n FROM declarations WHERE port = 'Amsterdam' GROUP BY port"),
        config,
    )
    exact = compute(plan, sources, units=False)
    assert (
        exact.rows[("Amsterdam",)][0] == (MIN_GROUP - 1) * config.datasets["declarations"].max_rows_per_unit
    )
    runs = 300
    released = 0
    for _ in range(runs):
        result, _ = protect(plan, exact, Budget(epsilon=1.0))
        released += sum(1 for g in result.groups if not g.suppressed)
    # 0.3 releases are expected at p = 1e-3; more than 5 would be a broken threshold.
    assert released <= 5


def test_row_threshold_decides_suppression(tmp_path: Path, customs: Any) -> None:
    """With little noise the rule is visible: a group is released iff its noisy row count clears
    (m - 1) R + q. Rotterdam has many single-row units; Vlissingen has MIN_GROUP + 1 units but
    fewer rows than the threshold, so the row rule holds it back too (the price of the shortcut)."""
    rows = [decl(f"2{i:07d}", "RTM", 1.0) for i in range(40)]
    rows += [decl("30000001", "AMS", 1.0) for _ in range(3)] + [
        decl("30000002", "AMS", 1.0) for _ in range(3)
    ]
    rows += [decl(f"4{i:07d}", "VLI", 1.0) for i in range(MIN_GROUP + 1)]
    frame = pd.DataFrame(rows, columns=list(customs.LOCAL_TYPES))
    node = load_node_config(customs.write_csv_node(tmp_path, frame, dataset_policy=NODE_LEVEL))
    s = DataSources(node)
    try:
        plan = validate(parse_query("SELECT port, COUNT(*) AS n FROM declarations GROUP BY port"), node)
        result, _ = protect(plan, compute(plan, s, units=False), Budget(epsilon=5.0))
    finally:
        s.close()
    ds = node.datasets["declarations"]
    spec = plan_noise([("count", None)], ds.max_rows_per_unit, epsilon=5.0, n_groups=len(plan.keys)).threshold
    threshold = threshold_for(MIN_GROUP, spec)
    assert (MIN_GROUP - 1) * ds.max_rows_per_unit < threshold < 40
    groups = by_key(result)
    assert not groups[("Rotterdam",)].suppressed
    assert groups[("Rotterdam",)].cells[0].sum >= threshold
    for port in ("Amsterdam", "Vlissingen", "Moerdijk"):
        assert groups[(port,)].suppressed
        assert groups[(port,)].suppression_rule == f"min_group_size: noisy row count below {threshold}"


# --------------------------------------------------------------------------- combined suppression (default)


def test_default_dp_release_leaves_suppression_to_the_combined_figure(tmp_path: Path, customs: Any) -> None:
    """Policy ``suppression = "combined"`` (the default): no group is suppressed at the node, even
    Amsterdam with MIN_GROUP - 1 units; each group carries its noisy threshold count and the result
    the noise it was made with, for the coordinator's one decision."""
    frame = pd.DataFrame(ROWS, columns=list(customs.LOCAL_TYPES))
    node = load_node_config(
        customs.write_csv_node(tmp_path, frame, dataset_policy=f"min_group_size = {MIN_GROUP}")
    )
    assert node.datasets["declarations"].policy.suppression == "combined"
    s = DataSources(node)
    try:
        plan = validate(parse_query(SQL), node)
        result, _ = protect(plan, compute(plan, s), Budget(epsilon=1.0))
        rows_plan = validate(parse_query("SELECT port, COUNT(*) AS n FROM declarations GROUP BY port"), node)
        rows_result, _ = protect(rows_plan, compute(rows_plan, s, units=False), Budget(rho=0.5))
    finally:
        s.close()
    assert not any(g.suppressed for g in result.groups)
    # COUNT(DISTINCT company) is the threshold count, as released.
    assert all(g.threshold_count == g.cells[1].sum for g in result.groups)
    # The node's plan, bounding figures included (privacy/explain.py).
    noise = plan_query(
        [("count", None), ("count_distinct", None), ("sum", (0.0, 1000.0)), ("avg", (0.0, 1000.0))],
        node.datasets["declarations"].max_rows_per_unit,
        epsilon=1.0,
        n_groups=len(plan.keys),
    ).figures.threshold
    assert result.threshold == pb.Threshold(
        kind="count_distinct",
        mechanism="laplace",
        scale=noise.scale,
        per_unit=1,
        min_group_size=MIN_GROUP,
        suppression="combined",
    )
    # A reused COUNT(*) is a row count: one unit adds up to max_rows_per_unit to it.
    assert rows_result.threshold.kind == "count" and rows_result.threshold.mechanism == "gaussian"
    assert rows_result.threshold.per_unit == node.datasets["declarations"].max_rows_per_unit
    assert all(g.threshold_count == g.cells[0].sum for g in rows_result.groups)


def test_exact_release_carries_no_threshold_basis(config: NodeConfig, sources: DataSources) -> None:
    result = release(SQL, config, sources)
    assert not result.HasField("threshold")
