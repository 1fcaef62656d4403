"""A Spark source against the node's DuckDB source on the same rows and the same queries.

    python -m bench.bench_spark [--rows 1000000] [--repeat 9] [--quick]

One node's declarations in one Parquet file, served two ways in this process: ``kind = "parquet"``
(DuckDB, read in place: the node's embedded default) and ``kind = "spark"`` (a local Spark
session, ``local[2]``, reading the same file). Each query runs the node's compute step (validate,
then the SQL of ``nodes.sqlgen`` with truncation and clamping) in exact mode; the two sides are
interleaved so both see the same machine load. Prints p50 per query and the ratio Spark/DuckDB,
then the resident memory of a node-sized process per engine (its own process tree: Python, and
for Spark the JVM it starts), each measured in a fresh subprocess after one query.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from federation.query import parse_query
from nodes.config import load_node_config
from nodes.release import compute
from nodes.sources import DataSources
from nodes.validate import validate

QUERIES = {
    "count + sum by port": (
        "SELECT port, COUNT(*) AS n, SUM(value) AS total FROM declarations WHERE year >= 2021 GROUP BY port"
    ),
    "count distinct by port": "SELECT port, COUNT(DISTINCT company) AS companies FROM declarations GROUP BY port",
}

CONFIG = """
[node]
id = "douane"
state_dir = "state"

[policy]
min_group_size = 10
dp_required = false

[[datasets]]
name = "declarations"
privacy_unit = "company"
max_rows_per_unit = 20

[datasets.source]
{source}

[[datasets.columns]]
name = "company"
kind = "identifier"
id_type = "kvk"

[[datasets.columns]]
name = "port"
local = "haven"
kind = "category"
domain = ["Rotterdam", "Amsterdam", "Vlissingen", "Moerdijk"]
codes = {{ RTM = "Rotterdam", AMS = "Amsterdam", VLI = "Vlissingen", MOE = "Moerdijk" }}

[[datasets.columns]]
name = "year"
kind = "category"
domain = [2019, 2020, 2021, 2022, 2023, 2024]

[[datasets.columns]]
name = "value"
kind = "numeric"
bounds = [0, 2000000]
"""

SOURCES = {
    "duckdb": 'kind = "parquet"\npath = "declarations.parquet"',
    "spark": 'kind = "spark"\nurl = "local[2]"\npath = "declarations.parquet"\n'
    'conf = { "spark.driver.memory" = "1g", "spark.sql.shuffle.partitions" = "2" }',
}


def _write(folder: Path, rows: int) -> None:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "company": [f"{10_000_000 + u:08d}" for u in rng.integers(0, rows // 8, rows)],
            "haven": rng.choice(["RTM", "AMS", "VLI", "MOE", "ANT"], rows),
            "year": rng.integers(2019, 2025, rows),
            "value": np.minimum(rng.lognormal(10.5, 1.2, rows), 3_000_000.0),
        }
    )
    frame.to_parquet(folder / "declarations.parquet", index=False)
    for engine, source in SOURCES.items():
        (folder / engine).mkdir(exist_ok=True)
        (folder / engine / "node.toml").write_text(CONFIG.format(source=source.replace('"decl', '"../decl')))


def _run(sources: DataSources, sql: str) -> float:
    t0 = time.perf_counter()
    plan = validate(parse_query(sql), sources.config)
    compute(plan, sources, exact_release=True)
    return time.perf_counter() - t0


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and every process below it (the JVM pyspark starts), in MB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total / 1024


def _serve(folder: Path, engine: str) -> None:
    """Subprocess: open one engine like a node does, answer one query, print the tree's RSS."""
    sources = DataSources(load_node_config(folder / engine / "node.toml"))
    try:
        _run(sources, QUERIES["count + sum by port"])
        print(f"{_tree_rss_mb(os.getpid()):.0f}")
    finally:
        sources.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="100k rows, 3 repeats")
    parser.add_argument("--serve", nargs=2, metavar=("FOLDER", "ENGINE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    # The benchmark's data has an unmapped port code on purpose; the per-query note is noise here.
    logging.getLogger("federation.node").setLevel(logging.ERROR)
    if args.serve:
        _serve(Path(args.serve[0]), args.serve[1])
        return
    rows, repeat = (100_000, 3) if args.quick else (args.rows, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _write(folder, rows)
        t0 = time.perf_counter()
        engines = {name: DataSources(load_node_config(folder / name / "node.toml")) for name in SOURCES}
        opened = time.perf_counter() - t0
        try:
            for sql in QUERIES.values():  # warm both engines (JIT, file cache) once
                for sources in engines.values():
                    _run(sources, sql)
            times: dict[tuple[str, str], list[float]] = {}
            for _ in range(repeat):
                for name, sql in QUERIES.items():
                    for engine, sources in engines.items():
                        times.setdefault((name, engine), []).append(_run(sources, sql))
        finally:
            for sources in engines.values():
                sources.close()
        memory = {
            engine: subprocess.run(
                [sys.executable, "-m", "bench.bench_spark", "--serve", str(folder), engine],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[-1]
            for engine in SOURCES
        }
    print(
        f"{rows} rows, exact mode, p50 of {repeat} interleaved runs (validate + compute); sources opened in {opened:.1f} s"
    )
    for name in QUERIES:
        duck = statistics.median(times[(name, "duckdb")])
        spark = statistics.median(times[(name, "spark")])
        print(
            f"  {name:<24} duckdb {duck * 1000:8.1f} ms   spark {spark * 1000:8.1f} ms   x{spark / duck:6.2f}"
        )
    print(
        f"  node-sized process RSS after one query: duckdb {memory['duckdb']} MB, spark {memory['spark']} MB"
    )


if __name__ == "__main__":
    main()
