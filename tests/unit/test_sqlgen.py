"""SQL generated per engine from a checked plan (nodes/sqlgen.py), run in real DuckDB and PostgreSQL.

Each plan's answer is checked against a pandas computation of the same release-path rules:
codes mapped to the shared vocabulary (unmapped codes drop out), values clamped to their bounds,
rows per privacy unit truncated to ``max_rows_per_unit`` keeping the first rows ordered by
(unit, group values, clamped values), and rows without a privacy unit ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from federation.query import parse_query
from nodes.config import NodeConfig, load_node_config
from nodes.sources import DataSources
from nodes.sqlgen import DUCKDB, POSTGRES, build_sql
from nodes.validate import Plan, validate
from protocols import federation_pb2 as pb

Mask = Callable[[pd.DataFrame], pd.Series]

INJECTION = "x' OR 1=1 --"

# (query, the WHERE clause written over the shared-vocabulary frame with SQL's three-valued logic)
PLANS: list[tuple[str, Mask]] = [
    ("SELECT COUNT(*), COUNT(DISTINCT company) FROM declarations", lambda s: s.unit.notna()),
    (
        "SELECT port, COUNT(*), COUNT(DISTINCT company) FROM declarations GROUP BY port",
        lambda s: s.unit.notna(),
    ),
    (
        "SELECT port, year, SUM(value), AVG(value) FROM declarations GROUP BY port, year",
        lambda s: s.unit.notna(),
    ),
    (
        "SELECT inspected, goods, COUNT(*), SUM(value) FROM declarations "
        "WHERE year >= 2022 AND goods IN ('drugs', 'precursors') GROUP BY inspected, goods",
        lambda s: (s.year >= 2022) & s.goods.isin(["drugs", "precursors"]),
    ),
    (
        "SELECT year, COUNT(*) FROM declarations WHERE port <> 'Rotterdam' GROUP BY year",
        lambda s: s.port != "Rotterdam",
    ),
    (
        "SELECT port, AVG(value) FROM declarations WHERE NOT (port = 'Rotterdam' OR inspected = 1) GROUP BY port",
        lambda s: ~((s.port == "Rotterdam") | (s.inspected == 1)),
    ),
    (
        "SELECT port, COUNT(*) FROM declarations "
        "WHERE port NOT IN ('Amsterdam', 'Moerdijk') OR year = 2021 GROUP BY port",
        lambda s: ((s.port != "Amsterdam") & (s.port != "Moerdijk")) | (s.year == 2021),
    ),
    (
        "SELECT goods, COUNT(*), SUM(value) FROM declarations WHERE value BETWEEN 10 AND 500 GROUP BY goods",
        lambda s: (s.value_raw >= 10) & (s.value_raw <= 500),
    ),
    (
        "SELECT COUNT(*), SUM(value) FROM declarations WHERE date >= '2022-06-01' AND date < '2023-01-01'",
        lambda s: (s.date >= pd.Timestamp("2022-06-01")) & (s.date < pd.Timestamp("2023-01-01")),
    ),
    (
        "SELECT year, inspected, COUNT(DISTINCT company), SUM(value), COUNT(*) AS n FROM declarations "
        "WHERE year < 2023 AND 2021 <= year GROUP BY year, inspected",
        lambda s: (s.year < 2023) & (s.year >= 2021),
    ),
    (
        "SELECT port, COUNT(*) FROM declarations WHERE inspected = TRUE AND value > -10.5 GROUP BY port",
        lambda s: (s.inspected == 1) & (s.value_raw > -10.5),
    ),
    (
        "SELECT COUNT(*), SUM(value), AVG(value) FROM declarations WHERE value > 100000",
        lambda s: s.value_raw > 100000,
    ),
    (
        "SELECT goods, COUNT(*), SUM(value) FROM declarations WHERE goods = 'x'' OR 1=1 --' GROUP BY goods",
        lambda s: s.goods == INJECTION,
    ),
]
IDS = [f"plan{i}" for i in range(len(PLANS))]


def shared_frame(local: pd.DataFrame, config: NodeConfig) -> pd.DataFrame:
    """The local rows in the shared vocabulary, with nullable dtypes so comparisons with NA stay NA."""
    cols = config.datasets["declarations"].columns
    lo, hi = cols["value"].bounds or (0.0, 0.0)
    raw = local["waarde_eur"].astype("Float64")
    return pd.DataFrame(
        {
            "unit": local["kvk_nummer"].astype("string"),
            "port": local["haven"].map(cols["port"].codes).astype("string"),
            "goods": local["goederen"].astype("string"),
            "year": local["jaar"].astype("Int64"),
            "inspected": local["geinspecteerd"].map(cols["inspected"].codes).astype("Int64"),
            "value_raw": raw,
            "value": raw.clip(lower=lo, upper=hi),
            "date": pd.to_datetime(local["datum"]),
        }
    )


def expected_rows(local: pd.DataFrame, config: NodeConfig, plan: Plan, mask: Mask) -> list[tuple[Any, ...]]:
    """pandas computation of what ``build_sql`` must return for ``plan``."""
    shared = shared_frame(local, config)
    keep = mask(shared).astype("boolean").fillna(False).astype(bool) & shared.unit.notna()
    rows = shared[keep]
    groups = [f"g{i}" for i in range(len(plan.group_columns))]
    frame = pd.DataFrame({"unit": rows.unit})
    for g, column in zip(groups, plan.group_columns, strict=True):
        frame[g] = rows[column.name]
    values: dict[str, str] = {}
    for agg in plan.aggregates:
        if agg.function in (pb.SUM, pb.AVG) and agg.column is not None and agg.column.name not in values:
            values[agg.column.name] = f"v{len(values)}"
            frame[values[agg.column.name]] = rows[agg.column.name]

    order = ["unit", *groups, *values.values()]
    frame = frame.sort_values(order, na_position="last", kind="stable")
    max_rows = plan.dataset.max_rows_per_unit
    frame = frame[frame.groupby("unit").cumcount() < max_rows]
    frame = frame.dropna(subset=groups)

    def summary(part: pd.DataFrame) -> tuple[Any, ...]:
        out: list[Any] = [len(part), part.unit.nunique()]
        for agg in plan.aggregates:
            if agg.function in (pb.SUM, pb.AVG) and agg.column is not None:
                v = part[values[agg.column.name]].dropna()
                out += [float(v.sum()) if len(v) else None, len(v)]
        return tuple(out)

    if not groups:
        return [summary(frame)]
    return [
        tuple(key if isinstance(key, tuple) else (key,)) + summary(part)
        for key, part in frame.groupby(groups)
    ]


def normal(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    def cell(v: Any) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        if isinstance(v, float):
            return round(v, 6)
        if hasattr(v, "item"):  # numpy scalar
            return cell(v.item())
        return v

    return sorted((tuple(cell(v) for v in row) for row in rows), key=lambda r: tuple(map(str, r)))


def plan_for(sql: str, config: NodeConfig) -> Plan:
    return validate(parse_query(sql), config)


# ---------------------------------------------------------------- both engines against pandas


@pytest.mark.parametrize(("sql", "mask"), PLANS, ids=IDS)
def test_duckdb_matches_pandas(
    sql: str, mask: Mask, declarations: pd.DataFrame, node_config: NodeConfig, duck_sources: DataSources
) -> None:
    plan = plan_for(sql, node_config)
    got = normal(duck_sources.run(plan))
    assert got, "a plan always returns at least one row or group"
    assert got == normal(expected_rows(declarations, node_config, plan, mask))


@pytest.mark.postgres
@pytest.mark.parametrize(("sql", "mask"), PLANS, ids=IDS)
def test_postgres_matches_duckdb_and_pandas(
    sql: str,
    mask: Mask,
    declarations: pd.DataFrame,
    node_config: NodeConfig,
    duck_sources: DataSources,
    pg_sources: DataSources,
) -> None:
    pg_plan = plan_for(sql, pg_sources.config)
    assert pg_plan.dataset.source.kind == "postgres"
    got = normal(pg_sources.run(pg_plan))
    assert got == normal(duck_sources.run(plan_for(sql, node_config)))
    assert got == normal(expected_rows(declarations, pg_sources.config, pg_plan, mask))


def test_the_data_exercises_every_protection(declarations: pd.DataFrame, node_config: NodeConfig) -> None:
    """Guard for the fixtures: the checks above are only meaningful if the awkward cases exist."""
    shared = shared_frame(declarations, node_config)
    assert shared.unit.isna().sum() > 0
    assert shared.port.isna().sum() > 0
    assert (~declarations.jaar.isin(node_config.datasets["declarations"].columns["year"].domain)).sum() > 0
    assert ((shared.value_raw < 0) | (shared.value_raw > 1000)).sum() > 0
    per_unit = shared.groupby("unit").size()
    assert per_unit.max() > node_config.datasets["declarations"].max_rows_per_unit
    assert (shared.goods == INJECTION).sum() > 0


# ---------------------------------------------------------------- parameters are bound


@pytest.mark.parametrize("dialect", [DUCKDB, POSTGRES], ids=["duckdb", "postgres"])
def test_values_never_appear_in_sql_text(node_config: NodeConfig, dialect: Any) -> None:
    plan = plan_for(
        "SELECT port, SUM(value) FROM declarations WHERE goods = 'x'' OR 1=1 --' "
        "AND value > 123.25 AND date < '2022-02-02' GROUP BY port",
        node_config,
    )
    sql, params = build_sql(plan, dialect)
    for value in (INJECTION, "123.25", "2022-02-02", "Rotterdam", "RTM"):
        assert value not in sql
    assert INJECTION in params and 123.25 in params and "2022-02-02" in params
    assert sql.count(dialect.placeholder) == len(params)


def test_injection_text_matches_only_itself(
    declarations: pd.DataFrame, node_config: NodeConfig, duck_sources: DataSources
) -> None:
    plan = plan_for("SELECT COUNT(*) FROM declarations WHERE goods = 'x'' OR 1=1 --'", node_config)
    everything = plan_for("SELECT COUNT(*) FROM declarations", node_config)
    (n_rows, n_units), *_ = duck_sources.run(plan)
    (all_rows, _), *_ = duck_sources.run(everything)
    assert 0 < n_rows < all_rows
    expected = expected_rows(declarations, node_config, plan, lambda s: s.goods == INJECTION)
    assert (n_rows, n_units) == expected[0]


@pytest.mark.postgres
def test_injection_text_matches_only_itself_in_postgres(
    declarations: pd.DataFrame, pg_sources: DataSources
) -> None:
    config = pg_sources.config
    plan = plan_for(
        "SELECT goods, COUNT(*) FROM declarations WHERE goods IN ('x'' OR 1=1 --') GROUP BY goods", config
    )
    rows = pg_sources.run(plan)
    assert [r[0] for r in rows] == [INJECTION]
    assert normal(rows) == normal(expected_rows(declarations, config, plan, lambda s: s.goods == INJECTION))


# ---------------------------------------------------------------- single protections on tiny data


def tiny_sources(tmp_path: Path, customs: Any, rows: list[dict[str, Any]]) -> DataSources:
    frame = pd.DataFrame(rows, columns=list(customs.LOCAL_TYPES))
    return DataSources(load_node_config(customs.write_csv_node(tmp_path, frame)))


def row(unit: str | None, haven: str = "RTM", value: float | None = 10.0, jaar: int = 2022) -> dict[str, Any]:
    return {
        "kvk_nummer": unit,
        "haven": haven,
        "goederen": "drugs",
        "jaar": jaar,
        "geinspecteerd": "J",
        "waarde_eur": value,
        "datum": "2022-01-01",
    }


def test_rows_per_unit_are_truncated(tmp_path: Path, customs: Any) -> None:
    sources = tiny_sources(tmp_path, customs, [row("11111111", value=100.0 + i) for i in range(10)])
    plan = plan_for("SELECT COUNT(*), COUNT(DISTINCT company), SUM(value) FROM declarations", sources.config)
    # Kept: the unit's smallest values, 100 + 101 + 102.
    assert sources.run(plan) == [(customs.MAX_ROWS, 1, 303.0, customs.MAX_ROWS)]


def test_values_are_clamped_to_bounds(tmp_path: Path, customs: Any) -> None:
    sources = tiny_sources(
        tmp_path, customs, [row("1", value=-500.0), row("2", value=5000.0), row("3", value=7.5)]
    )
    plan = plan_for("SELECT SUM(value), AVG(value) FROM declarations", sources.config)
    lo, hi = customs.BOUNDS
    assert sources.run(plan) == [(3, 3, lo + hi + 7.5, 3, lo + hi + 7.5, 3)]


def test_unmapped_codes_and_missing_units_drop_out(tmp_path: Path, customs: Any) -> None:
    rows = [row("1", haven="ANT"), row("2", haven="RTM"), row(None, haven="RTM"), row("3", haven="AMS")]
    sources = tiny_sources(tmp_path, customs, rows)
    plan = plan_for("SELECT port, COUNT(*) FROM declarations GROUP BY port", sources.config)
    assert normal(sources.run(plan)) == [("Amsterdam", 1, 1), ("Rotterdam", 1, 1)]
    # Negating a filter must not bring the unmapped code back.
    plan = plan_for("SELECT COUNT(*) FROM declarations WHERE NOT port = 'Rotterdam'", sources.config)
    assert sources.run(plan) == [(1, 1)]


def test_missing_numeric_values_are_left_out(tmp_path: Path, customs: Any) -> None:
    rows = [row("1", value=None), row("2", value=40.0), row("3", value=None), row("4", value=60.0)]
    sources = tiny_sources(tmp_path, customs, rows)
    plan = plan_for("SELECT COUNT(*), AVG(value) FROM declarations", sources.config)
    (n_rows, n_units, total, count), *_ = sources.run(plan)
    assert (n_rows, n_units) == (4, 4)
    assert (total, count) == (100.0, 2)


def test_double_negation_equals_the_filter(
    declarations: pd.DataFrame, node_config: NodeConfig, duck_sources: DataSources
) -> None:
    plain = duck_sources.run(
        plan_for("SELECT COUNT(*) FROM declarations WHERE port = 'Rotterdam'", node_config)
    )
    double = duck_sources.run(
        plan_for("SELECT COUNT(*) FROM declarations WHERE NOT NOT port = 'Rotterdam'", node_config)
    )
    assert double == plain
