"""The start-up child (nodes/prepare.py) reads file sources only: a PostgreSQL or Spark source is
the node's own to open, so a Spark node does not start a second JVM in the child."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nodes.config import NodeConfig, load_node_config
from nodes.prepare import file_config, has_start_reads
from tests.unit.conftest import toml_text


def test_a_file_source_is_read_in_the_child(node_config: NodeConfig) -> None:
    assert has_start_reads(node_config)
    assert list(file_config(node_config).datasets) == list(node_config.datasets)


def test_spark_and_postgres_sources_are_left_to_the_node(tmp_path: Path, node_config: NodeConfig) -> None:
    path = tmp_path / "node.toml"
    path.write_text(toml_text('kind = "spark"\nurl = "local[1]"\ntable = "douane.aangiften"'))
    spark = load_node_config(path)
    assert not has_start_reads(spark) and file_config(spark).datasets == {}
    both = dataclasses.replace(
        node_config,
        datasets={**node_config.datasets, **{f"{n}_spark": d for n, d in spark.datasets.items()}},
    )
    assert has_start_reads(both)
    assert list(file_config(both).datasets) == list(node_config.datasets)
