"""Six-party entity overlap as the analyst sees it: six node processes and a coordinator on gRPC.

Run ``python -m bench.bench_overlap [--ids 100000]``. Each partner holds ``--ids`` company
numbers (KvK), shifted by a tenth per partner, so half of all numbers are held by all six.
In the same run it times:

- the protocol alone, every party in this process (``protocols.psi.run_in_memory``): the baseline;
- the federation with ``overlap_preblind = false``: every job computes everything (cold);
- the federation with the offline phase: nodes pre-blind their column when idle, then the job.

All processes share this machine's cores; loopback, development mode (plaintext gRPC).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.signals import wait_until_idle
from federation.client import Client
from federation.processes import LocalFederation, free_port
from protocols.psi import run_in_memory

PARTNERS = ["politie", "om", "fiod", "douane", "belastingdienst", "kmar"]


def partner_ids(n: int) -> dict[str, list[str]]:
    return {p: [f"{i:08d}" for i in range(k * n // 10, k * n // 10 + n)] for k, p in enumerate(PARTNERS)}


def write_federation(root: Path, ids: dict[str, list[str]], address: str, preblind: bool) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = {"coordinator": root / "coordinator.toml"}
    paths["coordinator"].write_text(
        "[coordinator]\n"
        f'listen = "{address}"\ninsecure = true\nstate_dir = "state/coordinator"\n'
        "node_timeout_seconds = 600\nmax_message_bytes = 4194304\n\n"
        '[[projects]]\nname = "default"\npurpose = "benchmark of entity overlap"\n'
        'legal_basis = "synthetic data"\nmembers = ["*"]\nexpires = "2099-12-31"\n'
    )
    for node, values in ids.items():
        folder = root / node
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"kvk": values, "sector": ["trade"] * len(values)}).to_parquet(
            folder / "companies.parquet"
        )
        paths[node] = folder / "node.toml"
        paths[node].write_text(
            f'[node]\nid = "{node}"\ncoordinator = "{address}"\ninsecure = true\nstate_dir = "state"\n\n'
            "[policy]\ndp_required = false\noverlap_dp_required = false\n"
            f'overlap_columns = ["company"]\noverlap_preblind = {str(preblind).lower()}\n\n'
            '[[datasets]]\nname = "companies"\nprivacy_unit = "company"\nmax_rows_per_unit = 1\n\n'
            '[datasets.source]\nkind = "parquet"\npath = "companies.parquet"\n\n'
            '[[datasets.columns]]\nname = "company"\nlocal = "kvk"\nkind = "identifier"\nid_type = "kvk"\n\n'
            '[[datasets.columns]]\nname = "sector"\nlocal = "sector"\nkind = "category"\ndomain = ["trade"]\n'
        )
    return paths


def preblinded_share(root: Path, job_id: str) -> float:
    """Share of the partners' own tokens that came from their offline phase (their audit logs)."""
    blinded = preblinded = 0
    for node in PARTNERS:
        for line in (root / node / "state" / "audit.log").read_text().splitlines():
            payload = json.loads(line)["payload"]
            if payload.get("overlap") == job_id and "blinded" in payload:
                blinded += payload["blinded"]
                preblinded += payload["preblinded"]
    return preblinded / blinded if blinded else 0.0


def time_federation(
    root: Path, ids: dict[str, list[str]], preblind: bool, jobs: int
) -> tuple[list[float], float]:
    """Seconds per overlap job, and how long the nodes' offline phase took after start."""
    address = f"127.0.0.1:{free_port()}"
    paths = write_federation(root, ids, address, preblind)
    procs = LocalFederation(
        coordinator_config=paths["coordinator"],
        node_configs={n: paths[n] for n in PARTNERS},
        address=address,
        log_dir=root / "logs",
    )
    datasets = [f"{n}.companies" for n in PARTNERS]
    times = []
    try:
        procs.start(timeout=120)
        offline = wait_until_idle(procs, 600)
        with Client(address, timeout=600) as fed:
            for _ in range(jobs):
                start = time.perf_counter()
                result = fed.overlap(on="company", datasets=datasets, timeout=600)
                times.append(time.perf_counter() - start)
                expected = len(ids[PARTNERS[0]]) // 2
                if result.at_least(6) != expected:
                    raise SystemExit(f"wrong answer: {result.at_least(6)} in all six, expected {expected}")
                share = preblinded_share(root, result.job_id)
                print(
                    f"  job {len(times)}: {times[-1]:.1f} s, {share:.0%} of own tokens from the offline phase"
                )
                if preblind:
                    wait_until_idle(procs, 600)  # the next job finds a fresh set, as a quiet node would
    finally:
        procs.stop_all()
    return times, offline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=100_000, help="identifiers per partner")
    parser.add_argument("--jobs", type=int, default=2, help="jobs per federation")
    args = parser.parse_args(argv)
    ids = partner_ids(args.ids)
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")

    start = time.perf_counter()
    result = run_in_memory(ids, "bench-in-memory")
    in_memory = time.perf_counter() - start
    print(f"protocol alone, one process: {in_memory:.1f} s (in all six: {result.at_least(6)})")

    with tempfile.TemporaryDirectory(prefix="bench-overlap-") as tmp:
        cold, _ = time_federation(Path(tmp) / "cold", ids, preblind=False, jobs=1)
        print(
            f"federation, no offline phase: {cold[0]:.1f} s ({cold[0] / in_memory:.2f}x the protocol alone)"
        )
        warm, offline = time_federation(Path(tmp) / "warm", ids, preblind=True, jobs=args.jobs)
        best = min(warm)
        print(
            f"federation, after the offline phase ({offline:.1f} s at start): jobs "
            + ", ".join(f"{t:.1f} s" for t in warm)
            + f"; {best / in_memory:.2f}x the protocol alone"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    n = args.ids
    print("\n| case | seconds | ratio to the protocol alone |\n|---|---|---|")
    print(f"| protocol alone, 6 x {n}, one process | {in_memory:.1f} | 1.00x |")
    print(f"| federation, 6 x {n}, no offline phase | {cold[0]:.1f} | {cold[0] / in_memory:.2f}x |")
    print(
        f"| federation, 6 x {n}, after the offline phase (p50 of {len(warm)}) | {sorted(warm)[len(warm) // 2]:.1f} | "
        f"{sorted(warm)[len(warm) // 2] / in_memory:.2f}x |"
    )
    print(f"| offline phase after the nodes connected, all six on this machine | {offline:.1f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
