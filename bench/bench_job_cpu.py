"""CPU seconds one job costs each node process and the coordinator, plain and secure.

    python -m bench.bench_job_cpu [--nodes 20] [--jobs 10]

The federation of ``bench.bench_scale`` (one OS process per node, mutual TLS, Parquet slices).
After two untimed rounds of warm-up, user + system CPU of every process is read from
``/proc/PID/stat`` before and after ``--jobs`` plain queries, then ``--jobs`` secure DP queries
(SecAgg+, epsilon 1) over all nodes; printed per job: the coordinator's, the median and largest
node's and the sum over nodes. On two cores the latency of a job over many nodes is bounded
below by that sum (plus the coordinator's) divided by two.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench.bench_scale import QUERY, processes, warm_up, write_federation
from bench.signals import cpu_seconds
from federation.client import Client
from federation.processes import free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-job-cpu-"))
    address = f"127.0.0.1:{free_port()}"
    paths, ids = write_federation(root, args.nodes, 200, address)
    kit = root / "pki" / "kits" / "analyst"
    procs = processes(root, paths, ids, address)
    lines = []
    try:
        procs.start(timeout=900)
        time.sleep(3)
        with Client(address, timeout=300, tls_dir=kit) as fed:
            for _ in range(2):
                warm_up(fed, args.nodes)
            pids = {name: p.pid for name, p in procs.procs.items()}
            secure: dict[str, Any] = {"secure": True, "epsilon": 1.0, "project": "bench"}
            for label, run in (
                ("plain", partial(fed.query, QUERY.format(table="signals"), timeout=120)),
                ("secure", partial(fed.query, QUERY.format(table="signals"), timeout=120, **secure)),
            ):
                before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                latencies = []
                for _ in range(args.jobs):
                    t = time.perf_counter()
                    run()
                    latencies.append(time.perf_counter() - t)
                per_job = {name: (cpu_seconds(pid) - before[name]) / args.jobs for name, pid in pids.items()}
                nodes = [per_job[node] for node in ids]
                lines.append(
                    f"{label:7s}{statistics.median(latencies) * 1e3:9.0f}{per_job['coordinator'] * 1e3:14.0f}"
                    f"{statistics.median(nodes) * 1e3:14.1f}{max(nodes) * 1e3:12.1f}{sum(nodes) * 1e3:14.0f}"
                )
    finally:
        procs.stop_all()
    print(f"{args.nodes} nodes, {args.jobs} jobs each; CPU ms per job")
    print(f"{'':7s}{'p50 ms':>9s}{'coordinator':>14s}{'node median':>14s}{'node max':>12s}{'all nodes':>14s}")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
