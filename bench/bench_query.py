"""Federated GROUP BY over six nodes vs the same query on the pooled rows in one DuckDB.

    python -m bench.bench_query [--rows 1000000] [--repeat 30] [--no-differencing] [--parquet-in-place]

Both sides run in the same run on the same machine: six node processes (Parquet sources, converted
into DuckDB files at start as files below ``parquet_convert_below`` are; ``--parquet-in-place``
reads them in place instead) and a coordinator over real gRPC, and one in-process DuckDB holding
all six partners' rows. Prints p50/p90 latency for each and the ratio federated / pooled.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import pandas as pd

from bench.signals import QUERIES as SIGNAL_QUERIES
from bench.signals import local_federation, percentile, wait_until_idle, write_signals
from federation.client import Client
from federation.processes import free_port
from federation.scenario import NODES

QUERIES = {"count + distinct": SIGNAL_QUERIES["distinct"], "count": SIGNAL_QUERIES["rows"]}


def pooled_sql(sql: str) -> str:
    """The same query over the pooled table, which already holds the shared vocabulary.

    The federated side's per-node distinct count runs as DuckDB's COUNT(DISTINCT) on the pool:
    the same scan per row, the figure the pooled analyst would ask for.
    """
    return sql.replace("FROM signals", "FROM pooled").replace("COUNT_DISTINCT_PER_NODE(", "COUNT(DISTINCT ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per node")
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--quick", action="store_true", help="100k rows per node, 10 repeats")
    parser.add_argument(
        "--no-differencing",
        action="store_true",
        help="nodes run exact releases without the differencing check (differencing_history = 0)",
    )
    parser.add_argument(
        "--parquet-in-place",
        action="store_true",
        help='nodes read their Parquet files in place (parquet_convert_below = "0")',
    )
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeat = 100_000, 10

    root = Path(tempfile.mkdtemp(prefix="bench-query-"))
    t0 = time.perf_counter()
    address = f"127.0.0.1:{free_port()}"
    scenario, paths = write_signals(root, args.rows, address)
    if args.no_differencing:
        for node in NODES:
            text = paths[node].read_text()
            paths[node].write_text(text.replace("[policy]\n", "[policy]\ndifferencing_history = 0\n", 1))
    if args.parquet_in_place:
        for node in NODES:
            text = paths[node].read_text()
            paths[node].write_text(text.replace("[node]\n", '[node]\nparquet_convert_below = "0"\n', 1))
    check = "off" if args.no_differencing else "on"
    way = "read in place" if args.parquet_in_place else "converted below parquet_convert_below"
    print(f"exact releases; differencing check {check}; Parquet sources {way}")
    total_rows = sum(len(f) for f in scenario.frames.values())
    print(f"data: {total_rows:,} rows over {len(NODES)} nodes, written in {time.perf_counter() - t0:.1f}s")

    pooled = duckdb.connect()
    frame = pd.concat(scenario.frames.values(), ignore_index=True)
    pooled.register("pooled_df", frame)
    pooled.execute("CREATE TABLE pooled AS SELECT * FROM pooled_df")
    del frame

    fed_procs = local_federation(root, paths, NODES, address)
    fed_procs.start(timeout=300)
    # Nodes pre-blind their overlap columns once after start (nodes/preblind.py); measure after.
    print(f"nodes idle {wait_until_idle(fed_procs, 600):.1f}s after connecting (overlap offline phase done)")
    try:
        with Client(address) as fed:
            results = {name: _measure(fed, pooled, sql, args.repeat) for name, sql in QUERIES.items()}
    finally:
        fed_procs.stop_all()

    print(f"{'query':20s}{'federated p50':>15s}{'p90':>8s}{'pooled p50':>12s}{'p90':>8s}{'ratio':>8s}")
    for name, (fed_times, pooled_times) in results.items():
        fed_p50, pooled_p50 = statistics.median(fed_times), statistics.median(pooled_times)
        print(
            f"{name:20s}{fed_p50 * 1e3:13.1f}ms{percentile(fed_times, 0.9) * 1e3:6.1f}ms"
            f"{pooled_p50 * 1e3:10.1f}ms{percentile(pooled_times, 0.9) * 1e3:6.1f}ms{fed_p50 / pooled_p50:7.2f}x"
        )
    for name, sql in QUERIES.items():
        print(f"  {name}: {sql}")
    print("targets: ratio <= 1.5, p50 <= 150 ms")


def _measure(
    fed: Client, pooled: duckdb.DuckDBPyConnection, sql: str, repeat: int
) -> tuple[list[float], list[float]]:
    # Warm-up both sides; the first exact release of a query also records its rows for the
    # differencing check, which takes longer than a repeat.
    fed.query(sql, timeout=300)
    pooled.execute(pooled_sql(sql)).fetchall()
    fed_times, pooled_times = [], []
    for _ in range(repeat):
        # Interleave so both sides see the same machine load.
        t = time.perf_counter()
        df = fed.query(sql, timeout=300)
        fed_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        pooled.execute(pooled_sql(sql)).fetchall()
        pooled_times.append(time.perf_counter() - t)
    assert len(df.attrs["answered"]) == len(NODES)
    return fed_times, pooled_times


if __name__ == "__main__":
    main()
