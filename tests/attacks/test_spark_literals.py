"""Attacks on the Spark release path's one new step: binding values as literals (nodes/spark_sql.py).

Spark SQL reads backslash escapes inside string literals, unlike DuckDB and PostgreSQL, so a value
that is harmless elsewhere could end a Spark literal early. Every hostile value here must read back
as itself, as one literal in one statement, and in real Spark match only the row holding it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlglot

from nodes.config import load_node_config
from nodes.sources import DataSources
from nodes.spark_sql import spark_sql
from tests.unit.conftest import local_frame, toml_text

HOSTILE = [
    "x' OR 1=1 --",
    "\\' OR 1=1 --",
    "\\\\' OR '1'='1",
    "a\\",
    "\\u0027 OR 1=1",
    "\\047; DROP TABLE t",
    "') UNION SELECT kvk_nummer FROM ds_declarations --",
    "x /* comment */ ?",
    "regel\nnieuw\r\t",
    "`ds_declarations`",
    '" OR "1"="1',
    "${spark.app.name}",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_value_is_one_literal_in_one_statement(value: str) -> None:
    sql = spark_sql('SELECT COUNT(*) FROM "ds_declarations" WHERE "goederen" = ? AND "jaar" > ?', [value, -1])
    statements = sqlglot.parse(sql, read="spark")
    assert len(statements) == 1
    literals = [lit.this for lit in statements[0].find_all(sqlglot.exp.Literal) if lit.is_string]
    assert literals == [value]


@pytest.fixture(scope="module")
def hostile_sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataSources]:
    folder: Path = tmp_path_factory.mktemp("spark_attack")
    (folder / "data").mkdir()
    frame = local_frame().head(len(HOSTILE)).copy()
    frame["goederen"] = HOSTILE
    frame["datum"] = pd.to_datetime(frame["datum"]).dt.date
    frame.to_parquet(folder / "data" / "declarations.parquet", index=False)
    conf = 'conf = { "spark.driver.extraJavaOptions" = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC" }'
    path = folder / "node.toml"
    path.write_text(
        toml_text(f'kind = "spark"\nurl = "local[1]"\npath = "data/declarations.parquet"\n{conf}')
    )
    sources = DataSources(load_node_config(path))
    yield sources
    sources.close()


def test_in_spark_each_hostile_value_matches_only_itself(hostile_sources: DataSources) -> None:
    dataset = hostile_sources.config.datasets["declarations"]
    listed = ", ".join("?" for _ in HOSTILE)
    # One statement for all of them keeps this to one Spark job: per value, the rows equal to it.
    sql = f'SELECT "goederen", COUNT(*) FROM "ds_declarations" WHERE "goederen" IN ({listed}) GROUP BY "goederen"'
    rows = dict(hostile_sources.fetch(dataset, sql, list(HOSTILE)))
    assert rows == dict.fromkeys(HOSTILE, 1)
    # A value that is a prefix of a hostile one (the part before an escape) matches nothing.
    ((n,),) = hostile_sources.fetch(
        dataset, 'SELECT COUNT(*) FROM "ds_declarations" WHERE "goederen" = ?', ["\\"]
    )
    assert n == 0
