"""Memory of idle nodes: the six scenario nodes and the coordinator, connected and done with their
offline overlap phase, before any job.

    python -m bench.bench_idle_memory [--rows 1000]

Prints resident (VmRSS), private (RssAnon) and shared-file (RssFile) memory per process, next to a
same-run baseline: a bare interpreter that has only imported grpc and duckdb and opened one DuckDB
database, the floor any node process stands on. Shared library pages (RssFile) are counted in
every process's VmRSS but held once by the machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.signals import local_federation, wait_until_idle, write_signals
from federation.processes import free_port
from federation.scenario import NODES

FLOOR = (
    "import grpc, duckdb, sys, time; c = duckdb.connect(':memory:'); c.execute('SELECT 1').fetchall(); "
    "print('ready', flush=True); sys.stdin.read()"
)


def memory(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) // 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="signals rows per node")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    address = f"127.0.0.1:{free_port()}"
    _, paths = write_signals(root, args.rows, address)
    floor = subprocess.Popen(
        [sys.executable, "-c", FLOOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    procs = local_federation(root, paths, NODES, address)
    try:
        assert floor.stdout is not None and floor.stdout.readline().strip() == "ready"
        procs.start(timeout=300)
        wait_until_idle(procs, 300)
        time.sleep(1.0)
        base = memory(floor.pid)
        rows = {name: memory(p.pid) for name, p in procs.procs.items()}
    finally:
        procs.stop_all()
        floor.kill()
        floor.wait(timeout=10)
    print(f"{'process':28s}{'VmRSS MB':>10s}{'RssAnon MB':>12s}{'RssFile MB':>12s}{'RSS / floor':>13s}")
    print(f"{'floor (grpc + duckdb only)':28s}{base['VmRSS']:10d}{base['RssAnon']:12d}{base['RssFile']:12d}")
    for name, m in rows.items():
        print(
            f"{name:28s}{m['VmRSS']:10d}{m['RssAnon']:12d}{m['RssFile']:12d}{m['VmRSS'] / base['VmRSS']:12.2f}x"
        )
    nodes = [m for name, m in rows.items() if name != "coordinator"]
    print(
        f"idle node median: VmRSS {statistics.median(m['VmRSS'] for m in nodes):.0f} MB, "
        f"private {statistics.median(m['RssAnon'] for m in nodes):.0f} MB"
    )


if __name__ == "__main__":
    main()
