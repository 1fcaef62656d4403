"""Secure DP GROUP BY (SecAgg+ with distributed noise) vs the plain federated query, six nodes.

    python -m bench.bench_secure_query [--rows 1000000] [--repeat 20] [--query distinct|rows] [--quick]

Both run in the same run against the same six node processes (Parquet sources) and coordinator
over real gRPC, interleaved so both see the same machine load:

* plain: the query path without secure aggregation and without DP (``dp_required = false``);
* secure: the same query with ``secure=True`` and ``epsilon=1``: each node adds its share of
  distributed noise, charges its ledger, and takes part in four SecAgg rounds relayed by the
  coordinator, which unmasks only the sum.

Query shapes (``--query``): ``distinct`` asks for COUNT(*) and COUNT_DISTINCT_PER_NODE(company), so the
distinct-unit count is computed and reused as the threshold count; ``rows`` asks for COUNT(*)
only, whose noisy value then decides suppression against a threshold in rows, and the nodes skip
the distinct-unit scan.

Prints p50/p90 latency of each and the ratio secure / plain.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.signals import QUERIES, local_federation, percentile, wait_until_idle, write_signals
from federation.client import Client
from federation.processes import free_port
from federation.scenario import NODES
from nodes.config import load_node_config
from nodes.context import open_ledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of signals per node")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--query", choices=sorted(QUERIES), default="distinct", help="query shape")
    parser.add_argument("--quick", action="store_true", help="100k rows per node, 10 repeats")
    args = parser.parse_args()
    query = QUERIES[args.query]
    if args.quick:
        args.rows, args.repeat = 100_000, 10

    root = Path(tempfile.mkdtemp(prefix="bench-secure-query-"))
    address = f"127.0.0.1:{free_port()}"
    t0 = time.perf_counter()
    _, paths = write_signals(root, args.rows, address)
    print(
        f"data: {args.rows:,} signals rows x {len(NODES)} nodes, written in {time.perf_counter() - t0:.1f}s"
    )

    # Every run spends on signals at every node under the development catch-all '*', which
    # shares one budget: each node's officer grants it one large enough for the whole benchmark,
    # and caps the dataset there as well.
    for node in NODES:
        ledger = open_ledger(load_node_config(paths[node]))
        ledger.set_budget("signals", "*", 1e6, 1e-6, by="benchmark")
        ledger.set_cap("signals", 1e6, 1e-6, by="benchmark")

    procs = local_federation(root, paths, NODES, address)
    procs.start(timeout=300)
    # Nodes pre-blind their overlap columns once after start (nodes/preblind.py); measure after.
    print(f"nodes idle {wait_until_idle(procs, 600):.1f}s after connecting (overlap offline phase done)")
    plain_times: list[float] = []
    secure_times: list[float] = []
    try:
        with Client(address, timeout=120) as fed:
            fed.query(query)  # warm-up both paths
            fed.query(query, secure=True, epsilon=args.epsilon, project="bench")
            for _ in range(args.repeat):
                t = time.perf_counter()
                plain = fed.query(query)
                plain_times.append(time.perf_counter() - t)
                t = time.perf_counter()
                secure = fed.query(query, secure=True, epsilon=args.epsilon, project="bench")
                secure_times.append(time.perf_counter() - t)
            assert len(plain.attrs["answered"]) == len(NODES)
            assert len(secure.attrs["answered"]) == len(NODES) and secure.attrs["noise"]
    finally:
        procs.stop_all()

    plain_p50, secure_p50 = statistics.median(plain_times), statistics.median(secure_times)
    print(f"query: {query}")
    print(f"{'':36s}{'p50 ms':>10s}{'p90 ms':>10s}")
    print(
        f"{'plain (no SecAgg, no DP)':36s}{plain_p50 * 1e3:10.1f}{percentile(plain_times, 0.9) * 1e3:10.1f}"
    )
    label = f"secure DP (SecAgg+, epsilon {args.epsilon:g})"
    print(f"{label:36s}{secure_p50 * 1e3:10.1f}{percentile(secure_times, 0.9) * 1e3:10.1f}")
    print(f"ratio secure/plain (p50): {secure_p50 / plain_p50:.2f}x")


if __name__ == "__main__":
    main()
