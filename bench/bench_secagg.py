"""Secure aggregation benchmark: our SecAgg+ against Flower 1.41's secure-aggregation primitives.

Run with ``python -m bench.bench_secagg [--quick]``. Flower runs in the separate virtualenv
``bench/.venv-peer`` (``python3 -m venv bench/.venv-peer && bench/.venv-peer/bin/pip install
'flwr==1.41.*'``) through a subprocess that replays the masking and unmasking steps of Flower's
``secaggplus_mod`` and ``SecAggPlusWorkflow.unmask_stage`` on the same graph, threshold and dropouts,
and prints JSON timings. The bare AES-CTR baseline runs in this process.

Scenario per (n, d): k = 5 neighbours, threshold t = 4, 32-bit ring, about 10% of the nodes drop
(some after sharing keys, so their pairwise masks must be removed, some after sending their masked
input, so their self-masks are rebuilt from neighbours' shares).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.fixed_point import FixedPointCodec
from protocols.secagg import SecAggClient, SecAggConfig, SecAggServer

PEER_PYTHON = Path(__file__).resolve().parent / ".venv-peer" / "bin" / "python"
K, THRESHOLD, BITS, VALUE_MAX = 5, 4, 32, 1 << 20

FLOWER_SIDE = r"""
import json, os, sys, time
import numpy as np
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, encrypt, generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    get_parameters_shape, parameters_addition, parameters_mod, parameters_subtraction)
from flwr.common.secure_aggregation.secaggplus_utils import (
    pseudo_rand_gen, share_keys_plaintext_concat, share_keys_plaintext_separate)
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key, bytes_to_public_key, generate_key_pairs, private_key_to_bytes, public_key_to_bytes)

cfg = json.load(sys.stdin)
d, t, mod = cfg["d"], cfg["t"], cfg["mod"]
ids = list(range(1, cfg["n"] + 1))
neigh = {int(u): set(vs) | {int(u)} for u, vs in cfg["graph"].items()}  # Flower counts the node itself
before, after = set(cfg["drop_before_masked"]), set(cfg["drop_after_masked"])
rng = np.random.default_rng(cfg["seed"])
inputs = {u: rng.integers(0, cfg["value_max"], d, dtype=np.int64) for u in ids}

sk1, pk1, sk2, pk2 = {}, {}, {}, {}
for u in ids:
    a, b = generate_key_pairs(), generate_key_pairs()
    sk1[u], pk1[u] = private_key_to_bytes(a[0]), public_key_to_bytes(a[1])
    sk2[u], pk2[u] = private_key_to_bytes(b[0]), public_key_to_bytes(b[1])

# Stage 1, share keys (secaggplus_mod._share_keys), not timed.
seed, held, inbox = {}, {u: {} for u in ids}, {u: [] for u in ids}
for u in ids:
    seed[u] = os.urandom(32)
    order = sorted(neigh[u])
    b_sh, s_sh = create_shares(seed[u], t, len(order)), create_shares(sk1[u], t, len(order))
    for idx, v in enumerate(order):
        if v == u:
            held[u][u] = (b_sh[idx], s_sh[idx])
        else:
            key = generate_shared_key(bytes_to_private_key(sk2[u]), bytes_to_public_key(pk2[v]))
            inbox[v].append((u, encrypt(key, share_keys_plaintext_concat(u, v, b_sh[idx], s_sh[idx]))))

# Stage 2, masked vectors (secaggplus_mod._collect_masked_vectors), timed per node.
mask_times, total = [], [np.zeros(d, dtype=np.int64)]
for u in ids:
    if u in before:
        continue
    start = time.perf_counter()
    available = []
    for src, ct in inbox[u]:
        key = generate_shared_key(bytes_to_private_key(sk2[u]), bytes_to_public_key(pk2[src]))
        _, _, b_share, s_share = share_keys_plaintext_separate(decrypt(key, ct))
        held[u][src] = (b_share, s_share)
        available.append(src)
    vec = [inputs[u]]
    dims = [a.shape for a in vec]
    vec = parameters_addition(vec, pseudo_rand_gen(seed[u], mod, dims))
    for v in available:
        key = generate_shared_key(bytes_to_private_key(sk1[u]), bytes_to_public_key(pk1[v]))
        mask = pseudo_rand_gen(key, mod, dims)
        vec = parameters_addition(vec, mask) if u > v else parameters_subtraction(vec, mask)
    vec = parameters_mod(vec, mod)
    mask_times.append(time.perf_counter() - start)
    total = parameters_addition(total, vec)
total = parameters_mod(total, mod)

# Stage 3, unmask (SecAggPlusWorkflow.unmask_stage), timed.
active = set(ids) - before
responders = active - after
collected = {u: [] for u in ids}
for h in responders:
    for o in neigh[h]:
        if o in held[h]:
            collected[o].append(held[h][o][0] if o in active else held[h][o][1])
start = time.perf_counter()
masked = total
for nid, shares in collected.items():
    if len(shares) < t:
        raise SystemExit(f"not enough shares for {nid}")
    secret = combine_shares(shares)
    if nid in active:
        masked = parameters_subtraction(masked, pseudo_rand_gen(secret, mod, get_parameters_shape(masked)))
    else:
        for v in sorted(neigh[nid] - {nid}):
            key = generate_shared_key(bytes_to_private_key(secret), bytes_to_public_key(pk1[v]))
            mask = pseudo_rand_gen(key, mod, get_parameters_shape(masked))
            masked = parameters_addition(masked, mask) if nid > v else parameters_subtraction(masked, mask)
result = parameters_mod(masked, mod)[0]
unmask = time.perf_counter() - start
want = sum(inputs[u] for u in active) % mod
print(json.dumps({"client_mask_s": min(mask_times), "server_unmask_s": unmask,
                  "correct": bool(np.array_equal(result, want))}))
"""


def node_ids(n: int) -> list[str]:
    return [f"n{i:03d}" for i in range(1, n + 1)]


def pick_dropouts(config: SecAggConfig, count_before: int, count_after: int) -> tuple[list[str], list[str]]:
    """Spread dropouts so every remaining node keeps t responding holders (else unmasking must fail)."""
    before: list[str] = []
    after: list[str] = []
    blocked: set[str] = set()
    for u in config.node_ids:
        if len(before) == count_before and len(after) == count_after:
            break
        if u in blocked:
            continue
        (before if len(before) < count_before else after).append(u)
        # Keep dropped nodes two hops apart so no neighbourhood loses more than one holder.
        blocked |= {u} | config.graph[u] | {w for v in config.graph[u] for w in config.graph[v]}
    if len(before) < count_before or len(after) < count_after:
        raise SystemExit("graph too small for the requested dropouts")
    return before, after


def run_ours(n: int, d: int, seed: int) -> dict[str, object]:
    config = SecAggConfig(f"bench-{n}-{d}", tuple(node_ids(n)), THRESHOLD, K, d, bits=BITS)
    before, after = pick_dropouts(config, max(1, n // 20), n // 20)
    signing = {u: Ed25519PrivateKey.generate() for u in config.node_ids}
    verify = {u: key.public_key() for u, key in signing.items()}
    clients = {u: SecAggClient(config, u, signing[u], verify) for u in config.node_ids}
    server = SecAggServer(config, verify)
    codec = FixedPointCodec(lo=0, hi=VALUE_MAX, scale=1, bits=BITS, max_parties=n)
    rng = np.random.default_rng(seed)
    inputs = {u: rng.integers(0, VALUE_MAX, d, dtype=np.int64) for u in config.node_ids}
    for c in clients.values():
        server.receive(c.advertise().to_bytes())
    for u, msg in server.close_round().items():
        server.receive(clients[u].share_keys(msg.to_bytes()).to_bytes())
    mask_times, ratios = [], []
    for u, msg in server.close_round().items():
        if u in before:
            continue
        encoded = codec.encode(inputs[u])
        wire = msg.to_bytes()
        # The bare baseline runs right before each node's masking so both see the same machine load.
        bare, _ = bare_aes_ctr(d, len(config.graph[u]) + 1, 1)
        start = time.perf_counter()
        masked = clients[u].masked_input(wire, encoded)
        mask_times.append(time.perf_counter() - start)
        ratios.append(mask_times[-1] / bare)
        server.receive(masked.to_bytes())
    for u, msg in server.close_round().items():
        if u not in after:
            server.receive(clients[u].unmask(msg.to_bytes()).to_bytes())
    start = time.perf_counter()
    server.close_round()
    unmask = time.perf_counter() - start
    got = codec.decode_sum(server.result(), as_integer=True)
    want = np.sum([inputs[u] for u in config.node_ids if u not in before], axis=0)
    return {
        "client_mask_s": min(mask_times),
        "ratio_to_bare": statistics.median(ratios),
        "server_unmask_s": unmask,
        "correct": bool(np.array_equal(got, want)),
        "before": before,
        "after": after,
        "config": config,
    }


def bare_aes_ctr(d: int, streams: int, reps: int) -> tuple[float, float]:
    """Best-of-reps time for ``streams`` AES-CTR masks of d uint64 words.

    Returns (fresh allocation per mask, keystream written into one reused buffer).
    """
    zeros = bytes(8 * d)
    keys = [os.urandom(32) for _ in range(streams)]
    fresh, reused = [], []
    buf = bytearray(8 * d + 15)
    for _ in range(reps):
        start = time.perf_counter()
        for key in keys:
            enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
            np.frombuffer(enc.update(zeros), dtype=np.uint64)
        fresh.append(time.perf_counter() - start)
        start = time.perf_counter()
        for key in keys:
            Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update_into(zeros, buf)
        reused.append(time.perf_counter() - start)
    return min(fresh), min(reused)


def run_flower(n: int, d: int, seed: int, ours: dict[str, object]) -> dict[str, float] | None:
    if not PEER_PYTHON.exists():
        return None
    config = ours["config"]
    assert isinstance(config, SecAggConfig)
    number = {u: i + 1 for i, u in enumerate(config.node_ids)}
    payload = {
        "n": n,
        "d": d,
        "t": THRESHOLD,
        "mod": 1 << BITS,
        "seed": seed,
        "value_max": VALUE_MAX,
        "graph": {number[u]: sorted(number[v] for v in vs) for u, vs in config.graph.items()},
        "drop_before_masked": [number[u] for u in ours["before"]],  # type: ignore[union-attr]
        "drop_after_masked": [number[u] for u in ours["after"]],  # type: ignore[union-attr]
    }
    proc = subprocess.run(
        [str(PEER_PYTHON), "-c", FLOWER_SIDE],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if proc.returncode != 0:
        print(f"Flower side failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d = 1e5 only, fewer repetitions")
    args = parser.parse_args()
    dims = [100_000] if args.quick else [100_000, 1_000_000]
    reps = 3 if args.quick else 5
    rows = []
    for d in dims:
        fresh, reused = bare_aes_ctr(d, K + 1, reps)
        for n in (6, 50):
            ours = run_ours(n, d, seed=n)
            flower = run_flower(n, d, seed=n, ours=ours)
            rows.append((n, d, ours, flower, fresh, reused))
    header = (
        "| n | d | dropped | our mask (ms) | bare AES-CTR x6 (ms) | ours / bare (median) | keystream-only x6 (ms) "
        "| Flower mask (ms) | Flower / ours | our unmask (ms) | Flower unmask (ms) | Flower / ours | sums exact |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for n, d, ours, flower, fresh, reused in rows:
        om, ou = float(ours["client_mask_s"]) * 1e3, float(ours["server_unmask_s"]) * 1e3
        dropped = f"{len(ours['before'])}+{len(ours['after'])}"  # type: ignore[arg-type]
        if flower is None:
            fm = fu = "n/a"
            rm = ru = "n/a"
            exact = str(ours["correct"])
        else:
            fm, fu = f"{flower['client_mask_s'] * 1e3:.1f}", f"{flower['server_unmask_s'] * 1e3:.1f}"
            rm = f"{flower['client_mask_s'] * 1e3 / om:.1f}x"
            ru = f"{flower['server_unmask_s'] * 1e3 / ou:.1f}x"
            exact = f"{ours['correct']}/{flower['correct']}"
        print(
            f"| {n} | {d:.0e} | {dropped} | {om:.1f} | {fresh * 1e3:.1f} | {float(ours['ratio_to_bare']):.2f} "
            f"| {reused * 1e3:.1f} | {fm} | {rm} | {ou:.1f} | {fu} | {ru} | {exact} |"
        )


if __name__ == "__main__":
    main()
