"""Histogram bins and date parts as group keys: parsing, domains derived from the declared bounds
and date range, refusals by rule, and both engines against pandas."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from federation.query import parse_query
from nodes.config import NodeConfig
from nodes.protect import Budget, protect
from nodes.release import compute
from nodes.sources import DataSources
from nodes.validate import Refused, validate
from protocols import federation_pb2 as pb
from protocols.errors import QueryError
from tests.unit.test_sqlgen import shared_frame

# (query, pandas key of the release path's shared frame)
KEYS: list[tuple[str, Any]] = [
    (
        "SELECT FLOOR(value / 250) * 250 AS bin, COUNT(*) FROM declarations GROUP BY bin",
        lambda s: np.floor(s.value / 250.0) * 250.0,
    ),
    (
        "SELECT FLOOR(value / 100), COUNT(*) FROM declarations GROUP BY 1",
        lambda s: np.floor(s.value / 100.0),
    ),
    (
        "SELECT WIDTH_BUCKET(value, 100, 900, 4) AS b, COUNT(*) FROM declarations GROUP BY b",
        lambda s: np.where(
            s.value < 100, 0, np.where(s.value >= 900, 5, np.floor((s.value - 100) * 4 / 800.0) + 1)
        ),
    ),
    (
        "SELECT DATE_TRUNC('quarter', date) AS q, COUNT(*) FROM declarations GROUP BY q",
        lambda s: s.date.dt.to_period("Q").dt.start_time.dt.strftime("%Y-%m-%d"),
    ),
    (
        "SELECT EXTRACT(YEAR FROM date) AS y, COUNT(*) FROM declarations GROUP BY EXTRACT(YEAR FROM date)",
        lambda s: s.date.dt.year,
    ),
    (
        "SELECT MONTH(date) AS m, COUNT(*) FROM declarations GROUP BY m",
        lambda s: s.date.dt.month,
    ),
]
IDS = ["floor-edge", "floor-index", "width-bucket", "date-trunc", "extract-year", "month"]


def pandas_counts(local: pd.DataFrame, config: NodeConfig, key: Any) -> dict[Any, int]:
    """Row counts per key over the release path's rows (mapped, clamped, truncated)."""
    shared = shared_frame(local, config)
    shared = shared[shared.unit.notna()].copy()
    shared["k"] = key(shared)
    # Truncation keeps each unit's first rows by (unit, group key); every key here has one column.
    rows = shared.sort_values(["unit", "k"], na_position="last", kind="stable")
    rows = rows[rows.groupby("unit").cumcount() < config.datasets["declarations"].max_rows_per_unit]
    rows = rows.dropna(subset=["k"])
    return {(v.item() if hasattr(v, "item") else v): int(n) for v, n in rows.groupby("k").size().items()}


def engine_counts(sql: str, sources: DataSources) -> dict[Any, int]:
    plan = validate(parse_query(sql), sources.config)
    exact = compute(plan, sources, exact_release=True)
    domain = set(plan.keys)
    return {key[0]: int(figures[0]) for key, figures in exact.rows.items() if key in domain}


@pytest.mark.parametrize(("sql", "key"), KEYS, ids=IDS)
def test_duckdb_keys_match_pandas(
    sql: str, key: Any, declarations: pd.DataFrame, node_config: NodeConfig, duck_sources: DataSources
) -> None:
    got = engine_counts(sql, duck_sources)
    assert got and got == pandas_counts(declarations, node_config, key)


@pytest.mark.postgres
@pytest.mark.parametrize(("sql", "key"), KEYS, ids=IDS)
def test_postgres_keys_match_duckdb(
    sql: str, key: Any, duck_sources: DataSources, pg_sources: DataSources
) -> None:
    assert engine_counts(sql, pg_sources) == engine_counts(sql, duck_sources)


def test_every_key_of_the_derived_domain_is_reported(
    node_config: NodeConfig, duck_sources: DataSources
) -> None:
    sql = "SELECT FLOOR(value / 250) * 250 AS bin, COUNT(*) FROM declarations GROUP BY bin"
    plan = validate(parse_query(sql), node_config)
    assert plan.keys == ((0,), (250,), (500,), (750,), (1000,))
    result, _ = protect(plan, compute(plan, duck_sources, exact_release=True), Budget())
    assert [g.key[0].integer for g in result.groups] == [0, 250, 500, 750, 1000]
    quarters = validate(
        parse_query("SELECT DATE_TRUNC('quarter', date) q, COUNT(*) FROM declarations GROUP BY q"),
        node_config,
    )
    assert (
        len(quarters.keys) == 12
        and quarters.keys[0] == ("2021-01-01",)
        and quarters.keys[-1] == ("2023-10-01",)
    )
    bucket = validate(
        parse_query("SELECT WIDTH_BUCKET(value, 0, 10, 3) b, COUNT(*) FROM declarations GROUP BY b"),
        node_config,
    )
    assert bucket.keys == tuple((i,) for i in range(5))


def test_parsing_names_and_matches_keys() -> None:
    spec = parse_query(
        "SELECT port, FLOOR(value / 1000) * 1000, DATE_TRUNC('month', date) AS month, COUNT(*) "
        "FROM declarations GROUP BY port, 2, month"
    )
    assert list(spec.group_by) == ["port", "value_bin", "month"]
    assert [(d.alias, d.transform, d.width, d.part) for d in spec.derived] == [
        ("value_bin", "floor", 1000.0, ""),
        ("month", "date_trunc", 0.0, "month"),
    ]
    # A key grouped on but not selected is still reported, under its default name.
    spec = parse_query("SELECT COUNT(*) FROM declarations GROUP BY EXTRACT(year FROM date)")
    assert list(spec.group_by) == ["date_year"]


@pytest.mark.parametrize(
    ("sql", "rule", "needle"),
    [
        ("SELECT FLOOR(value / 10) * 10, COUNT(*) FROM d", "raw_rows", "GROUP BY"),
        (
            "SELECT FLOOR(value / 10) * 20 AS b, COUNT(*) FROM d GROUP BY b",
            "unsupported_expression",
            "same w",
        ),
        (
            "SELECT DATE_TRUNC('day', date) AS d, COUNT(*) FROM d GROUP BY d",
            "unsupported_expression",
            "month",
        ),
        (
            "SELECT CASE WHEN value > 1 THEN 1 END AS c, COUNT(*) FROM d GROUP BY 1",
            "unsupported_expression",
            "DATE_TRUNC",
        ),
        (
            "SELECT COUNT(*) FROM d GROUP BY CASE WHEN value > 1 THEN 1 END",
            "unsupported_expression",
            "WIDTH_BUCKET",
        ),
        ("SELECT WIDTH_BUCKET(value, 0, 1, 2.5) b, COUNT(*) FROM d GROUP BY b", "malformed_sql", "whole"),
    ],
)
def test_bad_keys_are_refused_by_rule(sql: str, rule: str, needle: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(sql)
    assert caught.value.rule == rule and needle in caught.value.message


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        (
            "SELECT FLOOR(value / 0.001) * 0.001 AS b, COUNT(*) FROM declarations GROUP BY b",
            "too_many_groups",
        ),
        (
            "SELECT WIDTH_BUCKET(value, 0, 1, 5000) AS b, COUNT(*) FROM declarations GROUP BY b",
            "too_many_groups",
        ),
        ("SELECT FLOOR(year / 2) AS b, COUNT(*) FROM declarations GROUP BY b", "not_groupable"),
        ("SELECT EXTRACT(year FROM value) AS b, COUNT(*) FROM declarations GROUP BY b", "not_groupable"),
        ("SELECT value, COUNT(*) FROM declarations GROUP BY value", "not_groupable"),
        ("SELECT FLOOR(company / 2) AS b, COUNT(*) FROM declarations GROUP BY b", "identifier_column"),
    ],
)
def test_node_refuses_keys_by_rule(sql: str, rule: str, node_config: NodeConfig) -> None:
    with pytest.raises(Refused) as caught:
        validate(parse_query(sql), node_config)
    assert caught.value.rule == rule and caught.value.node == node_config.node_id


def test_a_date_column_without_a_range_has_no_year_domain(tmp_path: Path, customs: Any) -> None:
    config = customs.config_with(tmp_path)
    dataset = config.datasets["declarations"]
    path = tmp_path / "node.toml"
    path.write_text(path.read_text().replace('range = ["2021-01-01", "2023-12-31"]\n', ""))
    from nodes.config import load_node_config

    bare = load_node_config(path)
    assert (
        dataset.columns["date"].date_range is not None
        and bare.datasets["declarations"].columns["date"].date_range is None
    )
    with pytest.raises(Refused) as caught:
        validate(parse_query("SELECT YEAR(date) y, COUNT(*) FROM declarations GROUP BY y"), bare)
    assert caught.value.rule == "not_groupable" and "range" in caught.value.message
    # Months and quarters have a fixed domain.
    assert (
        len(validate(parse_query("SELECT MONTH(date) m, COUNT(*) FROM declarations GROUP BY m"), bare).keys)
        == 12
    )


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.derived[0].__setattr__("width", 0.0),
        lambda s: s.derived[0].__setattr__("width", math.nan),
        lambda s: s.derived[0].__setattr__("transform", "round"),
        lambda s: s.derived[0].__setattr__("alias", "other"),
        lambda s: s.derived[0].__setattr__("part", "day"),
    ],
)
def test_crafted_keys_are_refused(edit: Any, node_config: NodeConfig) -> None:
    spec = parse_query("SELECT FLOOR(value / 250) * 250 AS bin, COUNT(*) FROM declarations GROUP BY bin")
    edit(spec)
    if spec.derived[0].part == "day":
        spec.derived[0].transform = "date_trunc"
        spec.derived[0].column = "date"
    with pytest.raises(Refused) as caught:
        validate(spec, node_config)
    assert caught.value.rule == "malformed_request"


def test_config_checks_the_date_range(tmp_path: Path, customs: Any) -> None:
    from nodes.config import load_node_config
    from protocols.errors import ConfigError

    customs.config_with(tmp_path)
    path = tmp_path / "node.toml"
    for bad in ('["2023-01-01", "2021-01-01"]', '["2021-13-01", "2022-01-01"]', '["2021-01-01"]'):
        path.write_text(path.read_text().replace('range = ["2021-01-01", "2023-12-31"]', f"range = {bad}"))
        with pytest.raises(ConfigError):
            load_node_config(path)
        customs.config_with(tmp_path)
    assert pb.ColumnInfo(first_day="2021-01-01").first_day == "2021-01-01"


def test_explain_counts_the_same_keys_as_the_node(node_config: NodeConfig) -> None:
    from federation.explain import explanation, node_query
    from nodes.daemon import dataset_infos

    sql = (
        "SELECT FLOOR(value / 250) * 250 AS b, DATE_TRUNC('quarter', date) AS q, YEAR(date) AS y, "
        "WIDTH_BUCKET(value, 0, 10, 3) AS w, STDDEV(value) AS sd, MEDIAN(value) AS med, COUNT(*) AS n "
        "FROM declarations GROUP BY b, q, y, w"
    )
    spec = parse_query(sql)
    spec.privacy.epsilon = 1.0
    info = next(i for i in dataset_infos(node_config) if i.name == "declarations")
    plan = validate(spec, node_config)
    assert node_query(spec, info).n_groups == len(plan.keys) == 5 * 12 * 3 * 5
    assert [a.kind for a in explanation(spec, [info]).aggregates] == ["variance", "percentile", "count"]


def test_explain_hints_at_secure_aggregation_when_it_would_narrow_the_interval(
    node_config: NodeConfig,
) -> None:
    from federation.explain import explain_frame
    from nodes.daemon import dataset_infos

    info = next(i for i in dataset_infos(node_config) if i.name == "declarations")
    infos = [info]
    for name in ("politie", "om"):
        other = pb.DatasetInfo()
        other.CopyFrom(info)
        other.node = name
        infos.append(other)

    def hint(sql: str, nodes: list[pb.DatasetInfo], epsilon: float = 1.0, secure: bool = False) -> str:
        spec = parse_query(sql)
        spec.privacy.epsilon = epsilon
        spec.secure = secure
        return str(explain_frame(spec, nodes).attrs.get("hint", ""))

    counts = "SELECT port, COUNT(*) AS n, SUM(value) AS total FROM declarations GROUP BY port"
    line = hint(counts, infos)
    assert "secure=True" in line and "3 nodes" in line and "sqrt(3)" in line
    # Nothing to gain: one node, a query already secure, or a statistic the secure path lacks.
    assert hint(counts, infos[:1]) == ""
    assert hint(counts, infos, secure=True) == ""
    assert hint("SELECT port, MEDIAN(value) AS m FROM declarations GROUP BY port", infos) == ""
