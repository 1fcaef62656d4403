"""PSI cardinality benchmark: our multi-party ring against OpenMined PSI, side by side.

Run ``python -m bench.bench_psi [--quick]``. The peer library runs in its own virtualenv
(``bench/.venv-peer``) through a subprocess that prints its timing as JSON:

    python3 -m venv bench/.venv-peer
    bench/.venv-peer/bin/pip install --no-deps openmined-psi
    bench/.venv-peer/bin/pip install "protobuf>=6.30,<7"

(``--no-deps`` because openmined-psi pins one exact protobuf release and the same venv
serves other peer benchmarks.) OpenMined PSI is the two-party ECDH protocol on P-256 with
the server set sent as a raw sorted list, its fastest exact setting; it is single-threaded,
while ours spreads blinding over all cores, as a node would.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from nacl.utils import random as random_bytes

from protocols.psi import (
    PsiParty,
    _blind_chunk,
    hash_to_group,
    preblind,
    result_from_final_sets,
    ring_route,
    run_in_memory,
)

PEER_PYTHON = Path(__file__).resolve().parent / ".venv-peer" / "bin" / "python"
PARTIES = ["politie", "om", "fiod", "douane", "belastingdienst", "kmar"]

PEER_SCRIPT = r"""
import json, sys, time
import private_set_intersection.python as psi
n = int(sys.argv[1])
client_items = [f"{i:08d}" for i in range(n)]
server_items = [f"{i:08d}" for i in range(n // 2, n // 2 + n)]
start = time.perf_counter()
client = psi.client.CreateWithNewKey(True)
server = psi.server.CreateWithNewKey(True)
setup = server.CreateSetupMessage(1e-9, len(client_items), server_items, psi.DataStructure.RAW)
request = client.CreateRequest(client_items)
response = server.ProcessRequest(request)
size = client.GetIntersectionSize(setup, response)
print(json.dumps({"seconds": time.perf_counter() - start, "cardinality": size}))
"""


def two_party_sets(n: int) -> dict[str, list[str]]:
    """Same items as the peer script: half of each set is shared."""
    return {
        "douane": [f"{i:08d}" for i in range(n)],
        "belastingdienst": [f"{i:08d}" for i in range(n // 2, n // 2 + n)],
    }


def six_party_sets(n: int) -> dict[str, list[str]]:
    """Each party holds n ids, shifted by n/10 per party: half of all ids are held by all six."""
    return {
        party: [f"{i:08d}" for i in range(p * n // 10, p * n // 10 + n)] for p, party in enumerate(PARTIES)
    }


def time_ours(sets: dict[str, list[str]], job_id: str) -> tuple[float, int]:
    start = time.perf_counter()
    result = run_in_memory(sets, job_id)
    seconds = time.perf_counter() - start
    return seconds, result.held_by_all(sets)


def time_ring(
    sets: dict[str, list[str]], job_id: str, offline: bool = False
) -> tuple[float, float, float, int]:
    """Seconds for the job on this machine, the offline phase before it, and the critical path.

    Parties work in rounds: first each blinds its own set, then in round r each re-blinds the
    set it holds. Run one after another here, each step had the whole machine; on separate
    machines a round takes as long as its slowest step. With ``offline`` every party first
    pre-blinds its whole set under the key of the coming job (``protocols.psi.preblind``, what a
    node does while idle), and the job only looks its own tokens up.
    """
    ring = list(sets)
    start = time.perf_counter()
    prepared = {pid: preblind(sets[pid]) for pid in ring} if offline else {}
    offline_seconds = time.perf_counter() - start
    parties = {pid: PsiParty(pid, job_id, prepared=prepared.get(pid)) for pid in ring}
    start = time.perf_counter()
    in_flight: dict[str, list[bytes]] = {}
    round_time = 0.0
    for pid in ring:
        step = time.perf_counter()
        in_flight[pid] = parties[pid].blind_own(sets[pid])
        round_time = max(round_time, time.perf_counter() - step)
    critical = round_time
    routes = {owner: ring_route(ring, owner) for owner in ring}
    for hop in range(len(ring) - 1):
        round_time = 0.0
        for owner in ring:
            step = time.perf_counter()
            in_flight[owner] = parties[routes[owner][hop]].reblind(in_flight[owner], owner=owner)
            round_time = max(round_time, time.perf_counter() - step)
        critical += round_time
    step = time.perf_counter()
    result = result_from_final_sets(job_id, in_flight)
    critical += time.perf_counter() - step
    return time.perf_counter() - start, offline_seconds, critical, result.held_by_all(ring)


def time_peer(n: int) -> dict | None:
    if not PEER_PYTHON.exists():
        print(f"  openmined-psi: skipped, {PEER_PYTHON} missing (see module docstring)")
        return None
    done = subprocess.run(
        [str(PEER_PYTHON), "-c", PEER_SCRIPT, str(n)], capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        print(f"  openmined-psi: failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _process_chunk(args: tuple[bytes, list[bytes]]) -> list[bytes]:
    key, chunk = args
    return _blind_chunk(key, chunk)


def executor_comparison(n: int) -> dict[str, float]:
    """Seconds to blind n tokens: one thread, a thread pool, a (warm) process pool."""
    points = hash_to_group([f"{i:08d}" for i in range(n)])
    timings = {}
    for label, workers in (("1 thread", 1), ("thread pool", os.cpu_count() or 1)):
        party = PsiParty("douane", "bench-executor", workers=workers)
        start = time.perf_counter()
        party.reblind(points)
        timings[label] = time.perf_counter() - start
    key = random_bytes(32)
    size = -(-n // (4 * (os.cpu_count() or 1)))
    chunks = [(key, points[i : i + size]) for i in range(0, n, size)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_process_chunk, chunks[:2]))  # start the workers outside the timing
        start = time.perf_counter()
        list(pool.map(_process_chunk, chunks))
        timings["process pool"] = time.perf_counter() - start
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k identifiers per party instead of 100k")
    args = parser.parse_args(argv)
    n = 10_000 if args.quick else 100_000
    rows: list[str] = []
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")

    timings = executor_comparison(20_000)
    print("blinding 20000 tokens: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))

    ours, overlap = time_ours(two_party_sets(n), "bench-two-party")
    print(f"2 parties, {n} x {n}: ours {ours:.2f} s (intersection {overlap})")
    peer = time_peer(n)
    if peer is not None:
        if peer["cardinality"] != overlap:
            print(f"  cardinality mismatch: openmined-psi {peer['cardinality']} vs ours {overlap}")
            return 1
        ratio = peer["seconds"] / ours
        print(f"  openmined-psi {peer['seconds']:.2f} s, ratio (openmined / ours) {ratio:.2f}x")
        rows.append(f"| 2 parties, {n} x {n} | {ours:.1f} s | {peer['seconds']:.1f} s | {ratio:.2f}x |")
    else:
        rows.append(f"| 2 parties, {n} x {n} | {ours:.1f} s | not run | |")

    six, _, critical, in_all = time_ring(six_party_sets(n), "bench-six-party")
    print(f"6 parties x {n}: ours {six:.2f} s on this machine (in all six: {in_all})")
    print(f"  critical path with one such machine per party: {critical:.2f} s")
    rows.append(f"| 6 parties x {n}, all on this machine | {six:.1f} s | no multi-party mode | |")
    rows.append(f"| 6 parties x {n}, critical path, one machine per party | {critical:.1f} s | | |")
    online, offline, critical, in_all_again = time_ring(six_party_sets(n), "bench-six-offline", offline=True)
    if in_all_again != in_all:
        print(f"  pre-blinded run disagrees: {in_all_again} vs {in_all}")
        return 1
    print(f"6 parties x {n}, pre-blinded while idle: job {online:.2f} s after {offline:.2f} s offline")
    print(f"  critical path with one such machine per party: {critical:.2f} s")
    rows.append(f"| 6 parties x {n}, pre-blinded, the job | {online:.1f} s | | |")
    rows.append(f"| 6 parties x {n}, pre-blinded, the offline phase before it | {offline:.1f} s | | |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")

    print("\n| case | ours | openmined-psi | speed-up |\n|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
