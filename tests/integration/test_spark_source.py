"""A node whose datasets live on Spark, over real processes and gRPC: its answers equal the pooled
answers the DuckDB nodes are held to, alone and combined with a DuckDB node (KMar, CSV).

Douane's two datasets are served through Spark Connect, the way a node reaches a production
cluster: a Spark Connect server (pyspark's own, ``local[1]``, on loopback) reads the scenario's own
rows from Parquet, and the node dials it at ``sc://``. Local sessions (``local[N]``), the same
engine code in the node's process, are held to DuckDB's answers in tests/unit/test_spark_source.py.
One server and one federation for the module.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from bench.spark_connect import spark_connect_server
from federation import scenario as vocabulary
from federation.scenario import generate, ground_truth_overlap
from tests.integration.conftest import ROWS, SEED, RunningFederation, _drop_schema, start_federation
from tests.integration.expected import assert_same, pooled

NODES = ["douane", "kmar"]
# The Spark node checks and opens its sources on a JVM that is still warming up before it dials the
# coordinator: that takes seconds on an idle machine and minutes on a loaded one.
START = 300
# Per-node time for one job: a Spark job plans and runs in a JVM that is still warming up.
JOB = 120.0


def _spark_douane(paths: dict[str, Path], url: str) -> None:
    """Serve every Douane dataset from Spark over the same rows the CSV files hold."""
    config = tomllib.loads(paths["douane"].read_text())
    frames = generate(SEED, ROWS).local_frames
    for dataset in config["datasets"]:
        parquet = paths["douane"].parent.parent / "data" / "douane" / f"{dataset['name']}.parquet"
        frames[f"douane.{dataset['name']}"].to_parquet(parquet, index=False)
        dataset["source"] = {"kind": "spark", "url": url, "path": str(parquet)}
    for node in NODES:
        text = tomllib.loads(paths[node].read_text())
        text["policy"].update(overlap_dp_required=False, overlap_check_epsilon=0.5)
        if node == "douane":
            text["policy"].update(overlap_min_set=20, overlap_key_bits=1024)
            text["datasets"] = config["datasets"]
        paths[node].write_text(tomli_w.dumps(text))


@pytest.fixture(scope="module")
def spark_fed(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    root = tmp_path_factory.mktemp("spark")
    with spark_connect_server(root / "spark-connect.log", timeout=START) as url:
        running, schema = start_federation(
            root, postgres_dsn, nodes=NODES, edit=lambda paths: _spark_douane(paths, url), timeout=START
        )
        try:
            yield running
        finally:
            running.procs.stop_all()
            _drop_schema(postgres_dsn, schema)


def test_the_spark_node_answers_like_the_duckdb_nodes(spark_fed: RunningFederation) -> None:
    source = tomllib.loads(spark_fed.paths["douane"].read_text())["datasets"][0]["source"]
    assert source["kind"] == "spark" and source["url"].startswith("sc://127.0.0.1:")
    sql = (
        "SELECT port, COUNT(*) AS n, SUM(value) AS total, AVG(value) AS mean, "
        "COUNT(DISTINCT company) AS companies FROM declarations "
        "WHERE year = 2023 AND goods_category <> 'textiles' GROUP BY port"
    )
    with spark_fed.client() as fed:
        df = fed.query(sql, timeout=JOB)
    expected = pooled(
        spark_fed.scenario,
        "declarations",
        ["port"],
        {"port": list(vocabulary.PORTS)},
        "company",
        {
            "n": ("count", None),
            "total": ("sum", "value"),
            "mean": ("avg", "value"),
            "companies": ("count_distinct", None),
        },
        where=lambda d: (d["year"] == 2023) & (d["goods_category"] != "textiles"),
    )
    assert_same(df, expected, ["port"])
    assert df.attrs["answered"] == ["douane"]
    assert df["n"].notna().sum() >= 2  # released cells are compared, not only suppressed ones


def test_a_spark_node_and_a_duckdb_node_combine(spark_fed: RunningFederation) -> None:
    sql = "SELECT region, COUNT(*) AS n FROM signals WHERE phenomenon <> 'drugs' GROUP BY region"
    with spark_fed.client() as fed:
        df = fed.query(sql, timeout=JOB)
    expected = pooled(
        spark_fed.scenario,
        "signals",
        ["region"],
        {"region": list(vocabulary.REGIONS)},
        "company",
        {"n": ("count", None)},
        where=lambda d: d["phenomenon"] != "drugs",
        nodes=NODES,
    )
    assert_same(df, expected, ["region"])
    assert sorted(df.attrs["answered"]) == NODES


def test_overlap_reads_identifiers_from_spark(spark_fed: RunningFederation) -> None:
    pair = ["douane.declarations", "kmar.signals"]
    with spark_fed.client() as fed:
        o = fed.overlap(
            on="company", datasets=pair, where={"douane.declarations": "port = 'Rotterdam'"}, timeout=JOB
        )
    frames = dict(spark_fed.scenario.frames)
    frames["douane.declarations"] = frames["douane.declarations"].query("port == 'Rotterdam'")
    truth = ground_truth_overlap(dataclasses.replace(spark_fed.scenario, frames=frames), "company", pair)
    assert o.exact
    assert {p: int(c) for p, c in o.counts.items() if c} == truth
