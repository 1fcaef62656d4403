"""Six-party entity overlap as the analyst sees it: six node processes and a coordinator on gRPC.

Run ``python -m bench.bench_overlap [--ids 100000]``. Each partner holds ``--ids`` company
numbers (KvK), shifted by a tenth per partner, so half of all numbers are held by all six.
In the same run it times:

- the protocol alone, every party in this process (``protocols.psi.run_in_memory``): the baseline;
- the federation with ``overlap_preblind = false``: every job computes everything (cold);
- the federation with the offline phase: nodes pre-blind their column when idle, then the job.

All processes share this machine's cores; loopback, development mode (plaintext gRPC).

With ``--parties 8 10 12`` it measures instead how an overlap grows with the number of parties:
one node process per party (``--ids`` numbers each, party k shifted by k/20 of them), every job
cold (no offline phase), the party counts interleaved over ``--repeat`` rounds, 8 as the baseline.
Per count: the job as the analyst's RPC sees it (exact, and with epsilon 1), the answer's size,
the coordinator's CPU seconds per job, the SDK's views (patterns, pairwise, set sizes), and under
DP the error of the set sizes, which are sums of 2^(n-1) noisy pattern counts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.signals import cpu_seconds, local_federation, percentile, wait_until_idle
from federation.client import Client
from federation.overlap import build_request, result_from_response
from federation.processes import free_port
from protocols.psi import run_in_memory

PARTNERS = ["politie", "om", "fiod", "douane", "belastingdienst", "kmar"]


def partner_ids(n: int) -> dict[str, list[str]]:
    return {p: [f"{i:08d}" for i in range(k * n // 10, k * n // 10 + n)] for k, p in enumerate(PARTNERS)}


def write_federation(
    root: Path, ids: dict[str, list[str]], address: str, preblind: bool, policy: str = ""
) -> dict[str, Path]:
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
            f'overlap_columns = ["company"]\noverlap_preblind = {str(preblind).lower()}\n{policy}\n'
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
    procs = local_federation(root, paths, PARTNERS, address)
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


def _memory_mb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024
    return out


def scaling(counts: list[int], n_ids: int, repeat: int) -> int:
    """Cost of one overlap at each party count in ``counts`` (the first is the baseline)."""
    most = max(counts)
    names = [f"p{k:02d}" for k in range(1, most + 1)]
    ids = {
        name: [f"{i:08d}" for i in range(k * n_ids // 20, k * n_ids // 20 + n_ids)]
        for k, name in enumerate(names)
    }
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    figures: dict[int, dict[str, list[float]]] = {n: {} for n in counts}
    policy = "require_budget = false\nbudget_epsilon = 1000000.0\ndataset_budget_epsilon = 1000000.0\n"
    with tempfile.TemporaryDirectory(prefix="bench-overlap-parties-") as tmp:
        root = Path(tmp)
        address = f"127.0.0.1:{free_port()}"
        paths = write_federation(root, ids, address, preblind=False, policy=policy)
        procs = local_federation(root, paths, names, address)
        try:
            procs.start(timeout=300)
            coordinator = procs.procs["coordinator"].pid
            with Client(address, timeout=900) as fed:
                for round_ in range(repeat + 1):  # round 0 warms every node up, untimed
                    for n in counts:
                        datasets = [f"{name}.companies" for name in names[:n]]
                        for epsilon in (None, 1.0):
                            request = build_request("company", datasets, epsilon=epsilon, timeout=300)
                            cpu = cpu_seconds(coordinator)
                            start = time.perf_counter()
                            response = fed._stub.Overlap(request, timeout=900)
                            seconds = time.perf_counter() - start
                            cpu = cpu_seconds(coordinator) - cpu
                            if not response.ok:
                                raise SystemExit(
                                    f"{n} parties: {response.error} [rule: {response.error_rule}]"
                                )
                            start = time.perf_counter()
                            result = result_from_response(response)
                            _ = result.patterns, result.pairwise, result.set_sizes, result.at_least(n)
                            views = time.perf_counter() - start
                            if round_ == 0:
                                continue
                            mode = "exact" if epsilon is None else "dp"
                            f = figures[n]
                            f.setdefault(f"{mode}_seconds", []).append(seconds)
                            f.setdefault(f"{mode}_coordinator_cpu", []).append(cpu)
                            f.setdefault(f"{mode}_views", []).append(views)
                            f.setdefault(f"{mode}_bytes", []).append(float(response.ByteSize()))
                            if epsilon is None:
                                exact_sizes = result.set_sizes
                                if exact_sizes != {d: n_ids for d in datasets}:
                                    raise SystemExit(f"wrong set sizes at {n} parties: {exact_sizes}")
                            else:
                                f.setdefault("noise_sd", []).append(response.noise_sd)
                                f.setdefault("size_error", []).extend(
                                    abs(v - n_ids) for v in result.set_sizes.values()
                                )
                    print(f"  round {round_} done, load average {os.getloadavg()[0]:.1f}")
                memory = _memory_mb(coordinator)
        finally:
            procs.stop_all()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    base = counts[0]
    med = statistics.median
    print(
        f"\n{repeat} rounds, {n_ids} identifiers per party, cold (no offline phase); p50 over rounds, "
        f"ratio to {base} parties\n"
    )
    print(
        "| parties | patterns | exact job (s) | ratio | DP job (s) | ratio | answer (bytes) | "
        "coordinator CPU per job (s) | SDK views (ms) | noise sd per pattern | set-size error, p50 (p90) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in counts:
        f, b = figures[n], figures[base]
        sizes = f["size_error"]
        print(
            f"| {n} | {2**n - 1} | {med(f['exact_seconds']):.2f} | "
            f"{med(f['exact_seconds']) / med(b['exact_seconds']):.2f}x | {med(f['dp_seconds']):.2f} | "
            f"{med(f['dp_seconds']) / med(b['dp_seconds']):.2f}x | {med(f['dp_bytes']):.0f} | "
            f"{med(f['dp_coordinator_cpu']):.2f} | {med(f['dp_views']) * 1e3:.0f} | "
            f"{med(f['noise_sd']):.2f} | {med(sizes):.0f} ({percentile(sizes, 0.9):.0f}) |"
        )
    print(f"\ncoordinator after the run: VmRSS {memory['VmRSS']} MB, peak {memory['VmHWM']} MB")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=100_000, help="identifiers per partner")
    parser.add_argument("--jobs", type=int, default=2, help="jobs per federation")
    parser.add_argument("--parties", type=int, nargs="+", help="party counts to compare, e.g. 8 10 12")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over the party counts (--parties)")
    args = parser.parse_args(argv)
    if args.parties:
        if min(args.parties) < 2:
            parser.error("--parties takes counts of 2 or more")
        return scaling(args.parties, args.ids, args.repeat)
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
