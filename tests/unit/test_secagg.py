"""Secure aggregation: exact sums, fixed point, dropouts at every round, forged and replayed messages."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import secagg_messages as m
from protocols.fixed_point import FixedPointCodec
from protocols.secagg import SecAggClient, SecAggConfig, SecAggError, SecAggServer, run_in_memory
from protocols.secagg_graph import neighbour_graph
from protocols.shamir import combine_shares, split_secret

PARTNERS = ("politie", "om", "fiod", "douane", "belastingdienst", "kmar")


def _ids(n: int) -> list[str]:
    return list(PARTNERS[:n]) if n <= len(PARTNERS) else [f"node{i:02d}" for i in range(n)]


def _int_inputs(n: int, dim: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {u: rng.integers(-(10**9), 10**9, dim, dtype=np.int64) for u in _ids(n)}


class Party:
    """A coordinator and its nodes, driven round by round so tests can intercept messages."""

    def __init__(
        self, n: int, threshold: int, k: int, dim: int, job_id: str = "job-1", bits: int = 64
    ) -> None:
        self.config = SecAggConfig(job_id, tuple(_ids(n)), threshold, k, dim, bits=bits)
        self.signing = {u: Ed25519PrivateKey.generate() for u in self.config.node_ids}
        self.verify = {u: key.public_key() for u, key in self.signing.items()}
        self.clients = {
            u: SecAggClient(self.config, u, self.signing[u], self.verify) for u in self.config.node_ids
        }
        self.server = SecAggServer(self.config, self.verify)


# --- exact sums -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "threshold"), [(3, 2), (6, 4), (10, 6)])
def test_integer_sum_is_exact_classic(n: int, threshold: int) -> None:
    inputs = _int_inputs(n, 257, seed=n)
    got = run_in_memory(inputs, threshold=threshold, k=n - 1)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, np.sum(list(inputs.values()), axis=0))


@pytest.mark.parametrize(("n", "k", "threshold"), [(6, 2, 2), (10, 4, 3), (10, 3, 3)])
def test_integer_sum_is_exact_secagg_plus(n: int, k: int, threshold: int) -> None:
    inputs = _int_inputs(n, 101, seed=100 + n + k)
    np.testing.assert_array_equal(run_in_memory(inputs, threshold, k), np.sum(list(inputs.values()), axis=0))


def test_small_ring_sum_is_exact() -> None:
    codec = FixedPointCodec(lo=-1000, hi=1000, scale=1, bits=24, max_parties=6)
    inputs = _int_inputs(6, 64, seed=7)
    inputs = {u: v % 1001 for u, v in inputs.items()}
    got = run_in_memory(inputs, 4, 5, drop_after={"om": 3}, codec=codec)
    np.testing.assert_array_equal(got, np.sum(list(inputs.values()), axis=0))


# --- fixed point --------------------------------------------------------------------------------------


def test_float_round_trip_within_quantisation_error() -> None:
    rng = np.random.default_rng(11)
    codec = FixedPointCodec(lo=-5.0, hi=5.0, scale=2.0**20, bits=64, max_parties=6)
    inputs = {u: rng.uniform(-5, 5, 500) for u in PARTNERS}
    got = run_in_memory(inputs, 4, 5, codec=codec)
    want = np.sum(list(inputs.values()), axis=0)
    assert np.max(np.abs(got - want)) <= len(inputs) * codec.resolution


def test_out_of_range_value_raises_instead_of_wrapping() -> None:
    codec = FixedPointCodec(lo=0.0, hi=1.0, scale=1000.0, bits=32, max_parties=10)
    with pytest.raises(SecAggError) as err:
        codec.encode(np.array([0.5, 1.5]))
    assert err.value.rule == "fixed_point_range"
    with pytest.raises(SecAggError) as err:
        codec.encode(np.array([0.5, math.nan]))
    assert err.value.rule == "fixed_point_range"
    with pytest.raises(SecAggError) as err:
        FixedPointCodec(lo=0, hi=10, scale=1, bits=64).encode(np.array([3, 11]))
    assert err.value.rule == "fixed_point_range"


def test_sum_that_could_overflow_the_ring_is_refused() -> None:
    with pytest.raises(SecAggError) as err:
        FixedPointCodec(lo=-1.0, hi=1.0, scale=2.0**20, bits=24, max_parties=50)
    assert err.value.rule == "fixed_point_overflow"
    assert "50 parties" in str(err.value)


def test_real_inputs_without_codec_are_refused() -> None:
    with pytest.raises(SecAggError) as err:
        run_in_memory({"om": np.array([0.5]), "fiod": np.array([0.25])}, 2, 1)
    assert err.value.rule == "fixed_point_codec_required"


# --- dropouts -----------------------------------------------------------------------------------------


def _expected(inputs: dict[str, np.ndarray], excluded: set[str]) -> np.ndarray:
    return np.sum([v for u, v in inputs.items() if u not in excluded], axis=0)


def test_drop_before_share_keys_is_excluded() -> None:
    inputs = _int_inputs(6, 64, seed=21)
    got = run_in_memory(inputs, 4, 5, drop_after={"fiod": 1, "kmar": 0})
    np.testing.assert_array_equal(got, _expected(inputs, {"fiod", "kmar"}))


def test_drop_before_masked_input_is_excluded() -> None:
    inputs = _int_inputs(6, 64, seed=22)
    got = run_in_memory(inputs, 4, 5, drop_after={"douane": 2, "om": 2})
    np.testing.assert_array_equal(got, _expected(inputs, {"douane", "om"}))


def test_drop_after_masked_input_is_recovered() -> None:
    inputs = _int_inputs(6, 64, seed=23)
    got = run_in_memory(inputs, 4, 5, drop_after={"politie": 3, "belastingdienst": 3})
    np.testing.assert_array_equal(got, _expected(inputs, set()))


def test_mixed_dropouts_in_secagg_plus() -> None:
    config = SecAggConfig("job-mixed", tuple(_ids(12)), 3, 4, 64)
    ids = config.node_ids

    def recoverable(drops: dict[str, int]) -> bool:
        # Every node in the sum needs t responding holders among its neighbours and itself.
        masked = [u for u in ids if drops.get(u, 4) >= 3]
        responders = {u for u in ids if u not in drops}
        return all(len((config.graph[u] | {u}) & responders) >= 3 for u in masked)

    # The graph is fixed by the job id; pick the first drop pattern (one per phase) it can survive.
    drops = next(
        d
        for a, b, c in itertools.permutations(ids[:6], 3)
        if recoverable(d := {a: 1, b: 2, c: 3, ids[-1]: 3})
    )
    inputs = _int_inputs(12, 64, seed=24)
    got = run_in_memory(inputs, 3, 4, drop_after=drops, job_id="job-mixed")
    np.testing.assert_array_equal(got, _expected(inputs, {u for u, r in drops.items() if r < 3}))


@pytest.mark.parametrize(("phase", "what"), [(0, "advertised"), (1, "shared"), (2, "masked"), (3, "unmask")])
def test_too_few_survivors_raises_threshold_error(phase: int, what: str) -> None:
    inputs = _int_inputs(6, 16, seed=30 + phase)
    with pytest.raises(SecAggError) as err:
        run_in_memory(inputs, 4, 5, drop_after={"om": phase, "fiod": phase, "kmar": phase})
    assert err.value.rule == "secagg_threshold"
    assert "needed at least 4" in str(err.value) and "only 3" in str(err.value) and what in str(err.value)


def test_secagg_plus_neighbourhood_below_threshold_raises() -> None:
    config = SecAggConfig("job-graph", tuple(_ids(10)), 3, 4, 8)
    target = config.node_ids[0]
    neighbours = sorted(config.graph[target])
    inputs = _int_inputs(10, 8, seed=40)
    # Globally 7 of 10 survive, but only one of the target's four neighbours does.
    with pytest.raises(SecAggError) as err:
        run_in_memory(inputs, 3, 4, drop_after={v: 3 for v in neighbours[:3]}, job_id="job-graph")
    assert err.value.rule == "secagg_threshold"
    assert f"'{target}' needs 3 shares, only 2" in str(err.value)


# --- authentication and replay ------------------------------------------------------------------------


def test_forged_advertisement_is_rejected_by_coordinator_and_nodes() -> None:
    p = Party(3, 2, 2, 4)
    adverts = {u: c.advertise() for u, c in p.clients.items()}
    attacker_key = Ed25519PrivateKey.generate()
    honest = adverts["om"]
    # Substituted mask key under the original signature.
    forged = replace(honest, mask_public=bytes(32 - 1) + b"\x09")
    with pytest.raises(SecAggError) as err:
        p.server.receive(forged)
    assert err.value.rule == "secagg_bad_signature"
    # Signed, but by a key that is not the node's.
    resigned = replace(honest, signature=attacker_key.sign(honest.signed_payload()))
    with pytest.raises(SecAggError) as err:
        p.server.receive(resigned.to_bytes())
    assert err.value.rule == "secagg_bad_signature"
    # A coordinator that slips a forged key into the directory is caught by the nodes.
    directory = m.KeyDirectory("job-1", (adverts["fiod"], adverts["politie"], forged))
    with pytest.raises(SecAggError) as err:
        p.clients["politie"].share_keys(directory)
    assert err.value.rule == "secagg_bad_signature"


def test_each_node_gets_and_checks_only_its_neighbours_keys() -> None:
    """SecAgg+ with 30 nodes and k = 6: a node's key directory holds its 6 neighbours and itself,
    not all 30, and a node spends no signature check on a key it never uses."""
    p = Party(30, 4, 6, 3)
    adverts = {u: c.advertise() for u, c in p.clients.items()}
    for advert in adverts.values():
        p.server.receive(advert.to_bytes())
    directories = p.server.close_round()
    for u, directory in directories.items():
        assert isinstance(directory, m.KeyDirectory)
        assert {a.node_id for a in directory.adverts} == p.config.graph[u] | {u}
    u = p.config.node_ids[0]
    assert set(p.clients[u]._verify) == p.config.graph[u] | {u}  # k + 1 keys loaded, not n
    stranger = next(v for v in p.config.node_ids if v != u and v not in p.config.graph[u])
    neighbour = next(iter(p.config.graph[u]))

    def directory_with_forged(v: str) -> m.KeyDirectory:
        forged = replace(adverts[v], mask_public=bytes(31) + b"\x09")  # under the original signature
        return m.KeyDirectory("job-1", tuple(forged if w == v else adverts[w] for w in sorted(adverts)))

    # A full directory with a forged stranger: not a key this node uses, so nothing to refuse.
    shares = p.clients[u].share_keys(directory_with_forged(stranger))
    assert {s.recipient for s in shares.shares} == p.config.graph[u]
    # A forged neighbour is caught as before.
    fresh = SecAggClient(p.config, u, p.signing[u], p.verify)
    fresh.advertise()
    with pytest.raises(SecAggError) as err:
        fresh.share_keys(directory_with_forged(neighbour))
    assert err.value.rule == "secagg_bad_signature"


def test_message_replayed_from_another_job_is_rejected() -> None:
    old = Party(3, 2, 2, 4, job_id="job-old")
    new = Party(3, 2, 2, 4, job_id="job-new")
    new.verify.update(old.verify)  # same long-term keys in both jobs
    server = SecAggServer(new.config, old.verify)
    replayed = old.clients["om"].advertise()
    with pytest.raises(SecAggError) as err:
        server.receive(replayed.to_bytes())
    assert err.value.rule == "secagg_wrong_job"
    # Relabelling the job breaks the signature, which covers the job id.
    with pytest.raises(SecAggError) as err:
        server.receive(replace(replayed, job_id="job-new"))
    assert err.value.rule == "secagg_bad_signature"


def test_message_from_the_wrong_round_is_rejected() -> None:
    p = Party(3, 2, 2, 4)
    advert = p.clients["om"].advertise()
    raw = bytearray(advert.to_bytes())
    raw[5] = m.ROUND_MASKED_INPUT
    with pytest.raises(SecAggError) as err:
        p.server.receive(bytes(raw))
    assert err.value.rule == "secagg_wrong_round"
    p.server.receive(advert)
    for u in ("fiod", "politie"):
        p.server.receive(p.clients[u].advertise())
    p.server.close_round()
    with pytest.raises(SecAggError) as err:
        p.server.receive(advert)  # a round-1 message replayed in round 2
    assert err.value.rule == "secagg_wrong_round"


def test_tampered_share_and_second_unmask_are_refused() -> None:
    p = Party(3, 2, 2, 4)
    for c in p.clients.values():
        p.server.receive(c.advertise())
    for u, d in p.server.close_round().items():
        p.server.receive(p.clients[u].share_keys(d))
    deliveries = p.server.close_round()
    bad = deliveries["om"]
    first = bad.shares[0]
    tampered = replace(first, ciphertext=bytes([first.ciphertext[0] ^ 1]) + first.ciphertext[1:])
    with pytest.raises(SecAggError) as err:
        p.clients["om"].masked_input(replace(bad, shares=(tampered, *bad.shares[1:])), np.zeros(4, np.uint64))
    assert err.value.rule == "secagg_bad_share"
    u = "fiod"
    p.server.receive(p.clients[u].masked_input(deliveries[u], np.zeros(4, np.uint64)))
    p.server.receive(p.clients["politie"].masked_input(deliveries["politie"], np.zeros(4, np.uint64)))
    request = p.server.close_round()[u]
    p.clients[u].unmask(request)
    with pytest.raises(SecAggError) as err:
        p.clients[u].unmask(replace(request, survivors=("fiod",), dropped=("om", "politie")))
    assert err.value.rule == "secagg_wrong_round"


# --- what the coordinator sees ------------------------------------------------------------------------


def _chi_square_bound(dof: int, z: float = 4.75) -> float:
    # Wilson-Hilferty approximation of the chi-square quantile; z = 4.75 is a 1e-6 false-alarm rate.
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def test_masked_inputs_look_uniform_and_hide_the_plaintext() -> None:
    dim = 1 << 15
    p = Party(6, 4, 5, dim)
    rng = np.random.default_rng(5)
    codec = FixedPointCodec(lo=0, hi=3, scale=1, bits=64, max_parties=6)
    # Low-entropy plaintexts are the hardest case for a mask to hide.
    plain = {u: rng.integers(0, 4, dim) for u in p.config.node_ids}
    for c in p.clients.values():
        p.server.receive(c.advertise())
    for u, d in p.server.close_round().items():
        p.server.receive(p.clients[u].share_keys(d))
    seen: dict[str, np.ndarray] = {}
    for u, d in p.server.close_round().items():
        msg = p.clients[u].masked_input(d, codec.encode(plain[u]))
        seen[u] = m.MaskedInput.from_bytes(msg.to_bytes()).vector
        p.server.receive(msg)
    for u, d in p.server.close_round().items():
        p.server.receive(p.clients[u].unmask(d))
    p.server.close_round()
    np.testing.assert_array_equal(codec.decode_sum(p.server.result(), as_integer=True), sum(plain.values()))

    bound = _chi_square_bound(255)
    expected = dim / 256
    for u, y in seen.items():
        assert np.count_nonzero(y == codec.encode(plain[u])) < 4  # chance agreement is ~dim / 2^64
        for shift in (0, 56):  # lowest and highest byte of each word
            counts = np.bincount(((y >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.int64), minlength=256)
            stat = float(np.sum((counts - expected) ** 2 / expected))
            assert stat < bound, f"{u}: byte at bit {shift} is not uniform (chi2={stat:.1f} >= {bound:.1f})"


# --- building blocks -------------------------------------------------------------------------------


def test_graph_is_symmetric_and_regular() -> None:
    ids = [f"n{i}" for i in range(20)]
    for k in (2, 4, 5, 19):
        g = neighbour_graph(ids, k, b"seed")
        assert all(u not in g[u] for u in ids)
        assert all(u in g[v] for u in ids for v in g[u])
        assert {len(v) for v in g.values()} == {k}
    assert neighbour_graph(ids, 4, b"a") != neighbour_graph(ids, 4, b"b")


def test_shamir_any_threshold_subset_recovers_and_fewer_do_not() -> None:
    secret = bytes([0, 0, 7]) + bytes(range(29))
    shares = split_secret(secret, 3, [1, 2, 5, 9, 11])
    assert combine_shares([shares[2], shares[9], shares[11]], 3) == secret
    assert combine_shares([shares[1], shares[5], shares[9]], 3) == secret
    with pytest.raises(SecAggError) as err:
        combine_shares([shares[1], shares[5]], 3)
    assert err.value.rule == "secagg_threshold"


def test_bad_threshold_is_refused() -> None:
    with pytest.raises(SecAggError) as err:
        SecAggConfig("job", tuple(PARTNERS), 3, 5, 4)  # 3 is not more than half of 6 holders
    assert err.value.rule == "secagg_config"
    with pytest.raises(SecAggError) as err:
        SecAggConfig("job", tuple(PARTNERS), 4, 2, 4)  # 4 exceeds the 3 holders each node has
    assert err.value.rule == "secagg_config"


def test_masks_split_over_threads_equal_one_stream() -> None:
    """A long vector masked in parts on several threads gets the very same keystream."""
    import os

    from protocols import secagg_prg

    values = np.arange(3 * secagg_prg.PARALLEL_MIN_WORDS + 7, dtype=np.uint64)
    terms = [(os.urandom(32), 1), (os.urandom(32), -1), (os.urandom(32), 1)]
    split = secagg_prg.apply_masks(values, terms)
    whole = np.empty_like(values)
    secagg_prg._mask_range(values, terms, whole, 0, len(values))
    assert np.array_equal(split, whole)
    assert not np.array_equal(split, values)


def test_a_message_sent_alike_to_every_survivor_is_encoded_once() -> None:
    from coordinator.round_exchange import encode_round

    p = Party(12, 4, 6, 3)
    for c in p.clients.values():
        p.server.receive(c.advertise().to_bytes())
    for u, directory in encode_round(p.server).items():
        p.server.receive(p.clients[u].share_keys(directory).to_bytes())
    codec = FixedPointCodec(lo=0, hi=100, bits=64, max_parties=12)
    for u, delivery in encode_round(p.server).items():
        p.server.receive(p.clients[u].masked_input(delivery, codec.encode(np.arange(3))).to_bytes())
    requests = encode_round(p.server)
    assert len(requests) == 12 and len({id(b) for b in requests.values()}) == 1  # one encoding
    for u, request in requests.items():
        p.server.receive(p.clients[u].unmask(request).to_bytes())
    encode_round(p.server)
    assert codec.decode_sum(p.server.result()).tolist() == [0.0, 12.0, 24.0]
