"""A spark source (nodes/spark_source.py) on a real local Spark session: the same SQL as DuckDB's,
rendered for Spark SQL with literals (nodes/spark_sql.py), gives the same rows as DuckDB and pandas
on the same awkward customs data (unmapped codes, missing units, values outside the bounds, units
over the row limit, an injection string), and ``federation node check`` works on it.

One Spark session for the whole module: starting the JVM is the slow part.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlglot

from nodes.check import ERROR, OK, WARNING, check_sources
from nodes.config import NodeConfig, Source, load_node_config
from nodes.differencing import contribution_rows, fingerprint
from nodes.distinct import unit_rows
from nodes.sources import DataSources
from nodes.spark_source import connect_url
from nodes.spark_sql import RenderError, literal, spark_sql
from nodes.sqlgen import SPARK, build_sql
from protocols.errors import ConfigError, FederationError
from tests.unit.conftest import toml_text
from tests.unit.test_sqlgen import INJECTION, PLANS, expected_rows, normal, plan_for

# Quick start on a busy machine: C1 only and a serial collector for a short-lived small JVM.
TEST_CONF = (
    'conf = { "spark.driver.extraJavaOptions" = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC", '
    '"spark.sql.shuffle.partitions" = "1" }'
)

# Plans beyond tests/unit/test_sqlgen.py's: derived keys, statistics, negated mapped codes.
MORE = [
    "SELECT FLOOR(value / 250) * 250 AS bin, COUNT(*) FROM declarations GROUP BY bin",
    "SELECT WIDTH_BUCKET(value, 100, 900, 4) AS b, SUM(value) FROM declarations GROUP BY b",
    "SELECT DATE_TRUNC('quarter', date) AS q, COUNT(*) FROM declarations GROUP BY q",
    "SELECT EXTRACT(YEAR FROM date) AS y, MONTH(date) AS m, COUNT(*) FROM declarations GROUP BY y, m",
    "SELECT port, VARIANCE(value), STDDEV(value), MEDIAN(value) FROM declarations GROUP BY port",
    "SELECT inspected, COUNT(*) FROM declarations WHERE NOT port IN ('Rotterdam') OR value < -1 GROUP BY inspected",
]


# ------------------------------------------------------------------ rendering, no Spark needed


def test_literals_are_made_by_sqlglot_from_their_type() -> None:
    assert literal(3) == "3" and literal(-2) == "(-2)"
    assert literal(True) == "TRUE" and literal(None) == "NULL"
    assert literal(1.5) == "1.5e0" and literal(-1e-300) == "(-1e-300)"
    assert literal(dt.date(2022, 2, 2)) == "'2022-02-02'"
    assert float(literal(0.1)[:-2]) == 0.1  # the shortest text that reads back as the same double
    for bad in (float("nan"), float("inf"), b"x", object()):
        with pytest.raises(RenderError):
            literal(bad)


@pytest.mark.parametrize(
    "text", [INJECTION, "a\\b", "it's", "\\'; DROP TABLE t; --", "x?", "regel\nnieuw", "ü€"]
)
def test_strings_read_back_as_themselves_in_spark(text: str) -> None:
    sql = spark_sql('SELECT "we?ird" FROM t WHERE a = ? AND b = CAST(? AS DOUBLE)', [text, -0.5])
    # Spark's reader (backslash escapes) gives back exactly the bound value, and the ``?`` in the
    # quoted identifier was not taken for a placeholder.
    tree = sqlglot.parse_one(sql, read="spark")
    strings = [lit.this for lit in tree.find_all(sqlglot.exp.Literal) if lit.is_string]
    assert strings == [text]
    assert "`we?ird`" in sql and "-0.5e0" in sql


def test_placeholders_and_parameters_must_match() -> None:
    with pytest.raises(RenderError):
        spark_sql("SELECT ? FROM t", [])
    with pytest.raises(RenderError):
        spark_sql("SELECT 1 FROM t", [1])


def test_values_never_appear_in_the_node_sql(node_config: NodeConfig) -> None:
    plan = plan_for(
        "SELECT port, SUM(value) FROM declarations WHERE goods = 'x'' OR 1=1 --' AND value > 123.25 GROUP BY port",
        node_config,
    )
    sql, params = build_sql(plan, SPARK)
    assert INJECTION not in sql and "123.25" not in sql and INJECTION in params
    assert "'x\\' OR 1=1 --'" in spark_sql(sql, params)


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ('kind = "spark"\nurl = "local[1]"', "either a catalog table or a path"),
        ('kind = "spark"\nurl = "local[1]"\ntable = "t"\npath = "x"', "either a catalog table or a path"),
        ('kind = "spark"\nurl = "http://x"\ntable = "t"', "url must start with"),
        ('kind = "spark"\nurl = "local[1]"\npath = "x"\nformat = "csv"', "format must be one of"),
        (
            'kind = "spark"\nurl = "spark://h:7077"\ntable = "t"\ntoken_env = "T"',
            "token_env is for Spark Connect",
        ),
        ('kind = "spark"\nurl = "sc://h:15002/;token=abc"\ntable = "t"', "environment variable"),
    ],
)
def test_bad_spark_sources_are_refused_naming_the_rule(tmp_path: Path, source: str, rule: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(toml_text(source))
    with pytest.raises(ConfigError, match=rule):
        load_node_config(path)


def test_a_connect_token_comes_from_the_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    source = Source(kind="spark", url="sc://spark.example:15002/;use_ssl=true", table="t", token_env="TOK")
    monkeypatch.delenv("TOK", raising=False)
    with pytest.raises(FederationError, match="TOK") as caught:
        connect_url(source)  # fails closed, naming the variable, not a value
    assert caught.value.rule == "source_unavailable"
    monkeypatch.setenv("TOK", "s3cret")
    assert connect_url(source) == "sc://spark.example:15002/;use_ssl=true;token=s3cret"
    bare = dataclasses.replace(source, url="sc://spark.example:15002")
    assert connect_url(bare) == "sc://spark.example:15002/;token=s3cret"


# ------------------------------------------------------------------ a real local Spark session


@pytest.fixture(scope="module")
def spark_sources(
    tmp_path_factory: pytest.TempPathFactory, declarations: pd.DataFrame
) -> Iterator[DataSources]:
    folder = tmp_path_factory.mktemp("douane_spark")
    (folder / "data").mkdir()
    frame = declarations.copy()
    frame["datum"] = pd.to_datetime(frame["datum"]).dt.date
    frame.to_parquet(folder / "data" / "declarations.parquet", index=False)
    path = folder / "node.toml"
    path.write_text(
        toml_text(f'kind = "spark"\nurl = "local[1]"\npath = "data/declarations.parquet"\n{TEST_CONF}')
    )
    sources = DataSources(load_node_config(path))
    yield sources
    sources.close()


@pytest.mark.parametrize("sql", [q for q, _ in PLANS])
def test_spark_matches_duckdb_and_pandas(
    sql: str, declarations: pd.DataFrame, duck_sources: DataSources, spark_sources: DataSources
) -> None:
    plan = plan_for(sql, spark_sources.config)
    assert plan.dataset.source.kind == "spark"
    got = normal(spark_sources.run(plan))
    assert got == normal(duck_sources.run(plan_for(sql, duck_sources.config)))
    mask = dict(PLANS)[sql]
    assert got == normal(expected_rows(declarations, spark_sources.config, plan, mask))


@pytest.mark.parametrize("sql", MORE)
def test_derived_keys_and_statistics_match_duckdb(
    sql: str, duck_sources: DataSources, spark_sources: DataSources
) -> None:
    got = normal(spark_sources.run(plan_for(sql, spark_sources.config)))
    assert got and got == normal(duck_sources.run(plan_for(sql, duck_sources.config)))


def test_bounding_figures_and_unit_lists_match_duckdb(
    duck_sources: DataSources, spark_sources: DataSources
) -> None:
    sql = (
        "SELECT port, SUM(value), COUNT(DISTINCT company) FROM declarations WHERE year >= 2022 GROUP BY port"
    )
    spark_plan, duck_plan = plan_for(sql, spark_sources.config), plan_for(sql, duck_sources.config)
    assert spark_sources.needs_truncation(spark_plan)  # data on a cluster is never trusted to be bounded
    assert spark_sources.diagnostics(spark_plan) == duck_sources.diagnostics(duck_plan)
    assert spark_sources.diagnostics(spark_plan)[0] > 0  # the figures count something
    assert sorted(unit_rows(spark_plan, spark_sources)) == sorted(unit_rows(duck_plan, duck_sources))
    # The differencing defence reads row digests computed in the engine: 16 raw bytes each.
    digests = contribution_rows(spark_plan, spark_sources)
    assert digests and all(isinstance(r[-1], bytes) and len(r[-1]) == 16 for r in digests)
    assert len(digests) == len(contribution_rows(duck_plan, duck_sources))
    assert (
        fingerprint(spark_plan, spark_sources).split(":")[0]
        == fingerprint(duck_plan, duck_sources).split(":")[0]
    )
    assert spark_sources.unmapped(spark_plan) == duck_sources.unmapped(duck_plan)


def test_node_check_reports_table_columns_and_unmapped_values(
    node_config: NodeConfig, spark_sources: DataSources
) -> None:
    found = check_sources(spark_sources.config)
    assert [f.level for f in found if f.rule == "source"] == [OK]
    assert "rows" in next(f.message for f in found if f.rule == "source")
    spark_unmapped = sorted(f.message for f in found if f.level == WARNING)
    assert spark_unmapped and spark_unmapped == sorted(
        f.message for f in check_sources(node_config) if f.level == WARNING
    )


def test_missing_table_and_columns_are_findings_not_crashes(
    tmp_path: Path, spark_sources: DataSources
) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        toml_text(f'kind = "spark"\nurl = "local[1]"\ntable = "no_such_db.aangiften"\n{TEST_CONF}')
    )
    (finding,) = check_sources(load_node_config(path))
    assert (finding.level, finding.rule) == (ERROR, "source_unavailable")
    assert "no_such_db" not in finding.message  # Spark's own message is not passed on
    source = spark_sources.config.datasets["declarations"].source
    renamed = toml_text(f'kind = "spark"\nurl = "local[1]"\npath = "{source.location}"\n{TEST_CONF}').replace(
        'local = "haven"', 'local = "haven_code"'
    )
    path.write_text(renamed)
    (finding,) = [f for f in check_sources(load_node_config(path)) if f.level == ERROR]
    assert finding.rule == "unknown_local_column" and "haven_code" in finding.message
    with pytest.raises(FederationError, match="haven_code") as caught:
        DataSources(load_node_config(path))  # a node does not start on it either
    assert caught.value.rule == "config"


def test_a_failing_spark_query_names_the_dataset_only(spark_sources: DataSources) -> None:
    dataset = spark_sources.config.datasets["declarations"]
    with pytest.raises(FederationError) as caught:
        spark_sources.fetch(dataset, 'SELECT "no_such_column" FROM ds_declarations', [])
    assert caught.value.rule == "source_unavailable"
    assert "no_such_column" not in str(caught.value) and "declarations" in str(caught.value)
