"""Union COUNT(DISTINCT) across six nodes (private set intersection) vs a plain federated query.

    python -m bench.bench_distinct [--rows 20000] [--repeat 5] [--quick]

Six node processes (Parquet sources) and a coordinator over real gRPC, in one run: per query shape
the p50 latency and the ratio against the plain COUNT(*) query with the same grouping and filter.
Also prints how far the per-node sum is above the union on this data, and the DP error of the union
at epsilon 1 (median relative error over the released groups).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.signals import local_federation, percentile, wait_until_idle, write_signals
from federation.client import Client
from federation.processes import free_port
from federation.scenario import NODES

WHERE = "WHERE year >= 2021"
QUERIES = {
    "count (baseline)": f"SELECT region, COUNT(*) AS n FROM signals {WHERE} GROUP BY region",
    "per-node distinct": f"SELECT region, COUNT_DISTINCT_PER_NODE(company) AS c FROM signals {WHERE} GROUP BY region",
    "union distinct": f"SELECT region, COUNT(DISTINCT company) AS c FROM signals {WHERE} GROUP BY region",
    "union + count": (
        f"SELECT region, COUNT(DISTINCT company) AS c, COUNT(*) AS n FROM signals {WHERE} GROUP BY region"
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows per node")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="5k rows per node, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeat = 5_000, 3

    root = Path(tempfile.mkdtemp(prefix="bench-distinct-"))
    address = f"127.0.0.1:{free_port()}"
    scenario, paths = write_signals(root, args.rows, address)
    frames = [f[(f["year"] >= 2021) & f["company"].notna()] for f in scenario.frames.values()]
    union = pd.concat(frames).groupby("region")["company"].nunique()
    per_node = sum(f.groupby("region")["company"].nunique() for f in frames)
    excess = (per_node / union - 1).dropna()
    items = sum(len(f[["region", "company"]].drop_duplicates()) for f in frames)
    print(
        f"data: {args.rows:,} rows per node over {len(NODES)} nodes; {items:,} (region, company) items; "
        f"the per-node sum is {excess.min():.0%}-{excess.max():.0%} above the union per region"
    )
    procs = local_federation(root, paths, NODES, address)
    procs.start(timeout=300)
    print(f"nodes idle {wait_until_idle(procs, 600):.1f}s after connecting")
    times: dict[str, list[float]] = {name: [] for name in QUERIES}
    try:
        with Client(address) as fed:
            for sql in QUERIES.values():
                fed.query(sql, timeout=300)  # warm-up
            for _ in range(args.repeat):
                # Interleaved, so every shape sees the same machine load.
                for name, sql in QUERIES.items():
                    t = time.perf_counter()
                    fed.query(sql, timeout=300)
                    times[name].append(time.perf_counter() - t)
            noisy = fed.query(QUERIES["union distinct"], epsilon=1.0, timeout=300).set_index("region")["c"]
    finally:
        procs.stop_all()
    base = statistics.median(times["count (baseline)"])
    print(f"{'query':20s}{'p50':>10s}{'p90':>10s}{'ratio':>9s}")
    for name, values in times.items():
        p50 = statistics.median(values)
        print(f"{name:20s}{p50 * 1e3:8.0f}ms{percentile(values, 0.9) * 1e3:8.0f}ms{p50 / base:8.1f}x")
    released = noisy.dropna()
    errors = [abs(float(released[r]) - union[r]) / union[r] for r in released.index if union.get(r, 0) > 0]
    if errors:
        print(
            f"union at epsilon 1: median relative error {statistics.median(errors):.2%} over {len(errors)} groups"
        )
    for name, sql in QUERIES.items():
        print(f"  {name}: {sql}")


if __name__ == "__main__":
    main()
