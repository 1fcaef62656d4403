"""Contribution bounds per query: validation, sensitivity, the bounding figures, feasible ranges,
explain math and accuracy inversion (privacy/bounds.py, privacy/explain.py and their callers)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest

from coordinator.bounding import clip_rows, combine_diagnostics
from federation.client import Client
from federation.display import ResultFrame, interval_text, swamped_columns, swamped_hint, with_interval_text
from federation.query import parse_query
from nodes.config import NodeConfig
from nodes.protect import Budget, protect
from nodes.release import compute
from nodes.sources import DataSources
from nodes.sqlgen import DUCKDB, build_sql
from nodes.validate import Refused, validate
from privacy.accounting import PrivacyError
from privacy.bounds import clip, feasible_range, rows_per_unit, tightened
from privacy.dp import interval, release_sums
from privacy.explain import (
    DIAGNOSTIC_SHARE,
    NodeQuery,
    epsilon_for_accuracy,
    explain,
    half_width,
    plan_query,
)
from protocols import federation_pb2 as pb

# --------------------------------------------------------------------------- bounds validation


def test_tightened_bounds_stay_within_the_declared_ones() -> None:
    assert tightened((0, 1000)) == (0.0, 1000.0)
    assert tightened((0, 1000), 10, 500) == (10.0, 500.0)
    assert tightened((0, 1000), upper=50) == (0.0, 50.0)
    assert tightened((-5, 5), lower=-5) == (-5.0, 5.0)


@pytest.mark.parametrize(
    ("lower", "upper", "rule"),
    [
        (-1, 500, "bounds_outside_declared"),
        (0, 1000.5, "bounds_outside_declared"),
        (None, 2000, "bounds_outside_declared"),
        (600, 500, "bounds"),
        (math.nan, 500, "bounds"),
        (0, math.inf, "bounds"),
    ],
)
def test_widened_or_broken_bounds_are_refused(lower: Any, upper: Any, rule: str) -> None:
    with pytest.raises(PrivacyError) as info:
        tightened((0, 1000), lower, upper)
    assert info.value.rule == rule


def test_rows_per_unit_can_only_be_lowered() -> None:
    assert rows_per_unit(20, 0) == 20 and rows_per_unit(20, 3) == 3
    with pytest.raises(PrivacyError) as info:
        rows_per_unit(20, 21)
    assert info.value.rule == "max_rows_outside_declared"


def test_sql_clamps_parse_into_bounds() -> None:
    spec = parse_query(
        "SELECT SUM(LEAST(GREATEST(value, 0), 50000)) AS a, AVG(GREATEST(LEAST(value, 9), -1.5)) AS b, "
        "SUM(LEAST(value, 3)) AS c, SUM(value) AS d FROM declarations"
    )
    a, b, c, d = spec.aggregates
    assert (a.bounds.lower, a.bounds.upper) == (0, 50000)
    assert (b.bounds.lower, b.bounds.upper) == (-1.5, 9)
    assert c.bounds.upper == 3 and not c.bounds.HasField("lower")
    assert not d.HasField("bounds") and a.column == b.column == "value"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT SUM(LEAST(value, 5, 6)) FROM d",
        "SELECT SUM(LEAST(LEAST(value, 5), 6)) FROM d",
        "SELECT SUM(LEAST(value, 'x')) FROM d",
        "SELECT SUM(LEAST(GREATEST(value, 9), 5)) FROM d",
        "SELECT SUM(LEAST(value, other)) FROM d",
    ],
)
def test_malformed_clamps_are_refused(sql: str) -> None:
    from protocols.errors import QueryError

    with pytest.raises(QueryError):
        parse_query(sql)


def test_sdk_bounds_argument_fills_aggregates_without_a_clamp() -> None:
    spec = Client._spec(
        "SELECT SUM(value) AS s, AVG(LEAST(value, 7)) AS m FROM declarations",
        1.0,
        None,
        {"value": (0, 500)},
        2,
        True,
    )
    assert (spec.aggregates[0].bounds.lower, spec.aggregates[0].bounds.upper) == (0, 500)
    assert spec.aggregates[1].bounds.upper == 7 and not spec.aggregates[1].bounds.HasField("lower")
    assert spec.max_rows_per_unit == 2
    with pytest.raises(Exception) as info:
        Client._spec("SELECT COUNT(*) FROM declarations", None, None, {"value": (0, 1)}, None, True)
    assert getattr(info.value, "rule", "") == "bounds"


def test_node_checks_bounds_against_its_declaration(node_config: NodeConfig) -> None:
    plan = validate(
        parse_query("SELECT SUM(LEAST(GREATEST(value, 10), 500)) AS s, AVG(value) AS m FROM declarations"),
        node_config,
    )
    assert plan.aggregates[0].bounds == (10.0, 500.0)
    assert plan.aggregates[1].bounds == (0.0, 1000.0)  # the declared bounds
    assert plan.tightened
    for sql, rule in (
        ("SELECT SUM(LEAST(value, 1001)) AS s FROM declarations", "bounds_outside_declared"),
        ("SELECT SUM(GREATEST(value, -1)) AS s FROM declarations", "bounds_outside_declared"),
    ):
        with pytest.raises(Refused) as info:
            validate(parse_query(sql), node_config)
        assert info.value.rule == rule and info.value.node == "douane"
        assert "declared bounds [0, 1000]" in info.value.message
    spec = parse_query("SELECT COUNT(*) FROM declarations")
    spec.max_rows_per_unit = 4
    with pytest.raises(Refused) as info:
        validate(spec, node_config)
    assert info.value.rule == "max_rows_outside_declared"
    spec.max_rows_per_unit = 2
    assert validate(spec, node_config).rows_per_unit == 2


def test_exact_releases_refuse_tighter_bounds(tmp_path: Any, customs: Any) -> None:
    config = customs.config_with(tmp_path, policy="dp_required = false")
    assert not validate(parse_query("SELECT SUM(value) FROM declarations"), config).tightened
    for sql in ("SELECT SUM(LEAST(value, 10)) FROM declarations",):
        with pytest.raises(Refused) as info:
            validate(parse_query(sql), config)
        assert info.value.rule == "bounds_need_dp"
    spec = parse_query("SELECT COUNT(*) FROM declarations")
    spec.max_rows_per_unit = 1
    with pytest.raises(Refused) as info:
        validate(spec, config)
    assert info.value.rule == "bounds_need_dp"
    spec.privacy.epsilon = 1.0
    assert validate(spec, config).rows_per_unit == 1


# --------------------------------------------------------------------------- SQL and bounding figures


def _clamped_sum(frame: pd.DataFrame, lo: float, hi: float, k: int) -> tuple[float, int, int]:
    """(sum of kept clamped values, units cut, kept values moved) by pandas, as the node should."""
    rows = frame[frame["kvk_nummer"].notna()].copy()
    rows["v"] = rows["waarde_eur"].clip(lo, hi)
    rows["x"] = ((rows["waarde_eur"] < lo) | (rows["waarde_eur"] > hi)).astype(int)
    rows = rows.sort_values(["kvk_nummer", "v", "x"], kind="stable")
    rows["rn"] = rows.groupby("kvk_nummer").cumcount() + 1
    kept = rows[rows["rn"] <= k]
    cut = int((rows.groupby("kvk_nummer").size() > k).sum())
    return float(kept["v"].sum()), cut, int(kept["x"].sum())


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_bounding_figures_match_pandas(
    engine: str, node_config: NodeConfig, declarations: pd.DataFrame, request: pytest.FixtureRequest
) -> None:
    sources: DataSources = request.getfixturevalue("duck_sources" if engine == "duckdb" else "pg_sources")
    config = sources.config
    spec = parse_query("SELECT SUM(LEAST(GREATEST(value, 20), 300)) AS s, SUM(value) AS t FROM declarations")
    spec.max_rows_per_unit = 2
    plan = validate(spec, config)
    cut, moved_s, moved_t = sources.diagnostics(plan)
    total_s, cut_s, expected_s = _clamped_sum(declarations, 20, 300, 2)
    _, _, expected_t = _clamped_sum(declarations, 0, 1000, 2)
    assert (cut, moved_s, moved_t) == (cut_s, expected_s, expected_t)
    assert cut > 0 and moved_s > moved_t > 0
    exact = sources.run(plan)
    assert exact[0][2] == pytest.approx(total_s)


def test_per_query_bounds_are_bound_parameters(node_config: NodeConfig) -> None:
    plan = validate(
        parse_query("SELECT SUM(LEAST(GREATEST(value, 20), 300)) AS s FROM declarations"), node_config
    )
    sql, params = build_sql(plan, DUCKDB)
    assert "300" not in sql and 300.0 in params and 20.0 in params


def test_a_dp_release_carries_noisy_bounding_figures_in_its_cost(
    node_config: NodeConfig, duck_sources: DataSources
) -> None:
    plan = validate(parse_query("SELECT SUM(value) AS s FROM declarations"), node_config)
    exact = compute(plan, duck_sources, exact_release=False)
    assert exact.bounding is not None and len(exact.bounding) == 2
    result, cost = protect(plan, exact, Budget(epsilon=1.0))
    names = [(d.name, d.aggregate) for d in result.diagnostics]
    assert names == [("units_truncated", ""), ("values_clamped", "s")]
    for d in result.diagnostics:
        assert d.noise_sd > 0 and d.value >= 0 and d.ci_low <= d.value <= d.ci_high
    assert cost.epsilon == pytest.approx(1.0, rel=1e-9)
    spec = parse_query("SELECT SUM(value) AS s FROM declarations")
    spec.no_diagnostics = True
    quiet = validate(spec, node_config)
    result2, cost2 = protect(quiet, compute(quiet, duck_sources, exact_release=False), Budget(epsilon=1.0))
    assert not result2.diagnostics and cost2.epsilon == pytest.approx(1.0, rel=1e-9)
    assert result2.groups[0].cells[0].noise_sd < result.groups[0].cells[0].noise_sd


# --------------------------------------------------------------------------- sensitivity and noise


def test_noise_follows_the_tightened_bounds_and_rows() -> None:
    wide = plan_query([("sum", (0.0, 2_000_000.0))], 20, epsilon=1.0)
    tight = plan_query([("sum", (0.0, 50_000.0))], 20, epsilon=1.0)
    fewer = plan_query([("sum", (0.0, 50_000.0))], 5, epsilon=1.0)
    sd = [p.figures.columns[0].sd for p in (wide, tight, fewer)]
    assert sd[0] / sd[1] == pytest.approx(40, rel=1e-6)
    assert sd[1] / sd[2] == pytest.approx(4, rel=1e-6)
    assert tight.figures.columns[0].l1 == 20 * 50_000


def test_diagnostics_take_a_stated_share_of_the_budget() -> None:
    with_d = plan_query([("count", None), ("sum", (0.0, 10.0))], 4, epsilon=2.0)
    without = plan_query([("count", None), ("sum", (0.0, 10.0))], 4, epsilon=2.0, diagnostics=False)
    assert with_d.cost.epsilon == pytest.approx(2.0, rel=1e-9) == without.cost.epsilon
    assert with_d.figures.cost.epsilon == pytest.approx(2.0 * (1 - DIAGNOSTIC_SHARE), rel=1e-9)
    names = [(d.name, d.aggregate) for d in with_d.diagnostics]
    assert names == [("units_truncated", None), ("values_clamped", 1)]
    truncated, clamped = (d.spec for d in with_d.diagnostics)
    assert (truncated.l1, clamped.l1) == (1.0, 4.0)  # a unit is cut or not; it keeps at most k values
    assert truncated.epsilon == clamped.epsilon == pytest.approx(2.0 * DIAGNOSTIC_SHARE / 2)
    rho = plan_query([("count", None)], 4, rho=0.5)
    assert rho.cost.rho == pytest.approx(0.5, rel=1e-9) and rho.cost.epsilon == 0


# --------------------------------------------------------------------------- feasible range


def test_feasible_ranges() -> None:
    assert feasible_range("count") == (0.0, math.inf)
    assert feasible_range("count_distinct") == (0.0, math.inf)
    assert feasible_range("sum", [(0, 10), (5, 20)]) == (0.0, math.inf)
    assert feasible_range("sum", [(-3, 10)]) == (-math.inf, math.inf)
    assert feasible_range("sum", [(-3, 0), (-9, -1)]) == (-math.inf, 0.0)
    assert feasible_range("avg", [(0, 10), (5, 20)]) == (0, 20)


def test_clip_moves_value_and_interval_and_says_so() -> None:
    assert clip(-4.0, -10.0, 2.0, (0.0, math.inf)) == (0.0, 0.0, 2.0, True)
    assert clip(5.0, 1.0, 9.0, (0.0, math.inf)) == (5.0, 1.0, 9.0, False)
    assert clip(12.0, 8.0, 16.0, (0.0, 10.0)) == (10.0, 8.0, 10.0, True)
    value, lo, hi, moved = clip(math.nan, -1.0, 1.0, (0.0, 1.0))
    assert math.isnan(value) and not moved


def test_a_non_negative_sum_is_never_negative_over_many_dp_runs() -> None:
    """Sums near zero with large noise: unclipped, about half would be negative."""
    spec = plan_query([("sum", (0.0, 1000.0))], 3, epsilon=0.5, diagnostics=False).figures.columns[0]
    raw = release_sums([10.0] * 2000, spec)
    negative = sum(1 for v in raw if v < 0)
    assert negative > 500
    feasible = feasible_range("sum", [(0.0, 1000.0)])
    covered = 0
    for v in raw:
        lo, hi = interval(v, spec)
        value, lo, hi, _ = clip(v, lo, hi, feasible)
        assert value >= 0 and lo >= 0 and lo <= value <= hi
        covered += lo <= 10.0 <= hi
    assert covered / len(raw) > 0.93  # clipping keeps the interval's coverage


def test_coordinator_clips_combined_rows_over_the_nodes_bounds() -> None:
    spec = parse_query("SELECT COUNT(*) AS n, SUM(value) AS s, AVG(LEAST(value, 50)) AS m FROM declarations")
    info = pb.DatasetInfo(node="a", name="declarations")
    info.columns.add(name="value", kind=pb.NUMERIC, lower=0, upper=1000)
    row = pb.CombinedRow()
    row.cells.add(value=-3, ci_low=-9, ci_high=3)
    row.cells.add(value=-40, ci_low=-100, ci_high=20)
    row.cells.add(value=61, ci_low=40, ci_high=80)
    clip_rows(spec, [row], [info])
    n, s, m = row.cells
    assert (n.value, n.ci_low, n.clipped) == (0, 0, True)
    assert (s.value, s.ci_low, s.ci_high, s.feasible_low) == (0, 0, 20, 0)
    assert (m.value, m.ci_high, m.feasible_high) == (50, 50, 50)


def test_bounding_figures_add_up_over_nodes() -> None:
    a = pb.QueryResult()
    a.diagnostics.add(name="units_truncated", value=3, noise_sd=3, ci_low=0, ci_high=9)
    b = pb.QueryResult()
    b.diagnostics.add(name="units_truncated", value=1, noise_sd=4, ci_low=0, ci_high=8)
    (combined,) = combine_diagnostics({"a": a, "b": b})
    assert (combined.value, combined.noise_sd) == (4, 5)
    assert combined.ci_low == 0 and combined.ci_high == pytest.approx(4 + 1.959963984540054 * 5)


# --------------------------------------------------------------------------- explain and accuracy


def _node(name: str, eps: float | None = 1.0, k: int = 3, **kw: Any) -> NodeQuery:
    return NodeQuery(name, (("count", None), ("sum", (0.0, 100.0))), k, 4, 10, epsilon=eps, **kw)


def test_explain_adds_the_nodes_noise() -> None:
    one = explain([_node("a")])
    node = one.nodes[0]
    plan = plan_query([("count", None), ("sum", (0.0, 100.0))], 3, epsilon=1.0, n_groups=4)
    assert node.sd == tuple(c.sd for c in plan.figures.columns)
    assert one.aggregates[0].half_width == half_width(plan.figures.columns[0])
    assert node.epsilon == pytest.approx(1.0)
    three = explain([_node("a"), _node("b", k=1), _node("c", eps=None)])
    sds = [n.sd[1] for n in three.nodes]
    assert sds[2] == 0.0  # an exact release adds nothing
    assert three.aggregates[1].sd == pytest.approx(math.sqrt(sds[0] ** 2 + sds[1] ** 2))
    assert three.aggregates[1].half_width == pytest.approx(1.959963984540054 * three.aggregates[1].sd)
    assert three.threshold is not None and three.threshold_kind == "row"


def test_explain_leaves_out_a_node_that_would_refuse() -> None:
    result = explain([_node("a"), _node("b", refusal=("epsilon_cap", "above the cap"))])
    assert result.aggregates[0].sd == result.nodes[0].sd[0]
    assert result.nodes[1].refusal == ("epsilon_cap", "above the cap")


def test_accuracy_inversion_finds_the_smallest_epsilon() -> None:
    def at(eps: float) -> list[NodeQuery]:
        return [_node("a", eps), _node("b", eps)]

    def width(eps: float) -> float | None:
        return explain(at(eps)).aggregates[0].half_width

    target = 40.0
    eps = epsilon_for_accuracy(width, target, cap=5.0)
    assert explain(at(eps)).aggregates[0].half_width <= target
    assert explain(at(eps * 0.999)).aggregates[0].half_width > target
    with pytest.raises(PrivacyError) as info:
        epsilon_for_accuracy(width, 0.5, cap=5.0)
    assert info.value.rule == "accuracy_unreachable"
    with pytest.raises(PrivacyError) as bad:
        epsilon_for_accuracy(width, -1.0, cap=5.0)
    assert bad.value.rule == "accuracy"


# --------------------------------------------------------------------------- display


def test_interval_text() -> None:
    assert interval_text(1234.0, 1178.0, 1290.0) == "1,234 ± 56"
    assert interval_text(3.5, 0.0, 9.1) == "3.50 [0, 9.10]"


def test_notebook_view_shows_each_figure_with_its_interval() -> None:
    df = ResultFrame({"port": ["A", "B"], "n": pd.array([1234, None], dtype="Int64")})
    df.attrs = {
        "noise": {"n": [{"group": {"port": "A"}, "sd": 20.0, "ci95": (1178.0, 1290.0), "clipped": False}]}
    }
    shown = with_interval_text(df)
    assert shown["n"].tolist() == ["1,234 ± 56", "suppressed"]
    html = df._repr_html_()
    assert "1,234 ± 56" in html and "95% interval" in html
    assert isinstance(df[df["port"] == "A"], ResultFrame)
    assert df["n"].iloc[0] == 1234  # the data stays numeric


def test_a_column_whose_noise_swamps_its_figures_gets_a_hint() -> None:
    # As a customs total under the declared clamp: most ports' totals moved to 0, intervals of 1e8.
    ports = ["Rotterdam", "Amsterdam", "Vlissingen"]
    df = ResultFrame({"port": ports, "n": [5176, 2036, 1086], "total": [5.5e8, 0.0, 0.0]})

    def cells(cis: list[tuple[float, float]]) -> list[dict[str, Any]]:
        return [
            {"group": {"port": p}, "sd": 1.0, "ci95": ci, "clipped": False}
            for p, ci in zip(ports, cis, strict=True)
        ]

    df.attrs = {
        "noise": {
            "n": cells([(5018.0, 5334.0), (1878.0, 2194.0), (928.0, 1244.0)]),
            "total": cells([(2.4e8, 8.7e8), (0.0, 2.0e8), (0.0, 1.6e8)]),
        }
    }
    assert swamped_columns(df) == ["total"]
    hint = swamped_hint(df)
    assert hint is not None and hint.startswith("total: the 95% interval is wider") and "--explain" in hint
    assert "total: the 95% interval is wider" in df._repr_html_()  # the notebook view says it too
    # Tightened for the query: intervals a fraction of the figures, no hint.
    df["total"] = [3.1e8, 1.2e8, 6.0e7]
    df.attrs["noise"]["total"] = cells([(3.0e8, 3.2e8), (1.1e8, 1.3e8), (5.0e7, 7.0e7)])
    assert swamped_columns(df) == [] and swamped_hint(df) is None


def test_explain_union_is_the_coordinators_one_noise() -> None:
    from privacy.distinct import union_cost, union_noise
    from privacy.explain import UnionParty, explain_union
    from privacy.suppression import ThresholdNoise, combined_threshold

    parties = [
        UnionParty("a", 1.0, 3, 10, 10),
        UnionParty("b", 0.5, 8, 10, 12),
        UnionParty("c", None, 1, 1, 1, ("x", "y")),
    ]
    u = explain_union(parties)
    noise = union_noise(union_cost(0.5, 8, 10).epsilon, 8)
    assert u.sd == noise.sd and u.half_width == half_width(noise)
    assert u.threshold == combined_threshold(12, [ThresholdNoise("laplace", noise.scale, 1)])
    assert set(u.costs) == {"a", "b"} and u.costs["a"] == pytest.approx(1.0)


def test_bounding_figures_without_truncation_need_no_window(
    node_config: NodeConfig, duck_sources: DataSources, declarations: pd.DataFrame
) -> None:
    from nodes.sqlgen import DUCKDB_PREMAPPED, diagnostics_sql

    plan = validate(
        parse_query("SELECT SUM(LEAST(GREATEST(value, 20), 300)) AS s FROM declarations"), node_config
    )
    sql, params = diagnostics_sql(plan, DUCKDB_PREMAPPED, truncate=False)
    assert "ROW_NUMBER" not in sql
    (row,) = duck_sources.fetch(plan.dataset, sql, params)
    rows = declarations[declarations["kvk_nummer"].notna()]
    moved = int(((rows["waarde_eur"] < 20) | (rows["waarde_eur"] > 300)).sum())
    assert tuple(row) == (0, moved)
