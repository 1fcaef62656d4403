"""Multi-party PSI cardinality: correctness against plain Python, unlinkability, leakage, shuffling."""

from __future__ import annotations

import hashlib
import random
from itertools import combinations

import nacl.bindings as sodium
import pytest
from nacl.public import PrivateKey

from protocols.identifiers import normalise_many
from protocols.psi import (
    DOMAIN,
    PreBlinded,
    PsiError,
    PsiParty,
    _edwards_to_montgomery,
    at_least,
    hash_to_group,
    open_tokens,
    pack_tokens,
    pairwise,
    pattern_counts,
    preblind,
    result_from_final_sets,
    ring_route,
    run_in_memory,
    seal_tokens,
    shuffled,
    unpack_tokens,
)

PARTIES = ["politie", "om", "fiod", "douane", "belastingdienst", "kmar"]


def _random_sets(n_parties: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    universe = [f"{rng.randrange(10**8):08d}" for _ in range(120)]
    return {party: rng.sample(universe, rng.randrange(20, 70)) for party in PARTIES[:n_parties]}


def _truth(sets: dict[str, list[str]]) -> dict[frozenset[str], int]:
    holders: dict[str, set[str]] = {}
    for party, items in sets.items():
        for item in items:
            holders.setdefault(item, set()).add(party)
    truth: dict[frozenset[str], int] = {}
    for parties in holders.values():
        key = frozenset(parties)
        truth[key] = truth.get(key, 0) + 1
    return truth


def _run_ring(sets: dict[str, list[str]], job_id: str) -> tuple[dict[str, PsiParty], dict[str, list[bytes]]]:
    """The ring by hand, keeping the parties so tests can probe their keys afterwards."""
    parties = {pid: PsiParty(pid, job_id) for pid in sets}
    in_flight = {pid: parties[pid].blind_own(items) for pid, items in sets.items()}
    for owner in sets:
        for holder in ring_route(list(sets), owner):
            in_flight[owner] = parties[holder].reblind(in_flight[owner], owner=owner)
    return parties, in_flight


@pytest.mark.parametrize(("n_parties", "seed"), [(3, 1), (4, 2), (5, 3), (6, 4)])
def test_counts_match_plain_python(n_parties: int, seed: int) -> None:
    sets = _random_sets(n_parties, seed)
    result = run_in_memory(sets, job_id=f"job-{seed}")
    truth = _truth(sets)
    assert result.patterns == truth
    assert result.set_sizes == {p: len(set(items)) for p, items in sets.items()}
    for a, b in combinations(sorted(sets), 2):
        assert result.pairwise()[(a, b)] == len(set(sets[a]) & set(sets[b]))
    for k in range(1, n_parties + 1):
        expected = sum(
            1 for item in set().union(*map(set, sets.values())) if sum(item in s for s in sets.values()) >= k
        )
        assert result.at_least(k) == expected
    trio = sorted(sets)[:3]
    assert result.held_by_all(trio) == len(set.intersection(*(set(sets[p]) for p in trio)))
    assert result.union_size() == len(set().union(*map(set, sets.values())))


def test_known_overlaps_and_ring_order_do_not_matter() -> None:
    sets = {
        "douane": [f"{i:08d}" for i in range(0, 40)],
        "belastingdienst": [f"{i:08d}" for i in range(30, 60)],
        "politie": [f"{i:08d}" for i in range(35, 45)] + ["99999999"],
    }
    expected = {
        frozenset({"douane"}): 30,
        frozenset({"douane", "belastingdienst"}): 5,
        frozenset({"douane", "belastingdienst", "politie"}): 5,
        frozenset({"belastingdienst"}): 15,
        frozenset({"belastingdienst", "politie"}): 5,
        frozenset({"politie"}): 1,
    }
    forward = run_in_memory(sets, "job-a")
    backward = run_in_memory(sets, "job-b", order=["politie", "belastingdienst", "douane"])
    assert forward.patterns == expected
    assert backward.patterns == expected
    assert forward.at_least(3) == 5
    assert pairwise(forward.patterns)[("belastingdienst", "douane")] == 10


def test_duplicates_count_once() -> None:
    result = run_in_memory({"a": ["x", "x", "y"], "b": ["x", "z", "z"]}, "job-dup")
    assert result.set_sizes == {"a": 2, "b": 2}
    assert result.patterns == {frozenset({"a", "b"}): 1, frozenset({"a"}): 1, frozenset({"b"}): 1}


def test_two_jobs_over_the_same_data_are_unlinkable() -> None:
    sets = _random_sets(3, seed=11)
    _, first = _run_ring(sets, "job-1")
    _, second = _run_ring(sets, "job-2")
    _, same_id_again = _run_ring(sets, "job-1")
    tokens_first = {t for tokens in first.values() for t in tokens}
    assert tokens_first.isdisjoint(t for tokens in second.values() for t in tokens)
    # Fresh keys alone already separate two runs that reuse a job id.
    assert tokens_first.isdisjoint(t for tokens in same_id_again.values() for t in tokens)
    # H(x) itself is the same in every job; it never leaves its owner.
    assert hash_to_group(["x"]) == hash_to_group(["x"])


def test_coordinator_sees_no_identifier_hash_or_singly_blinded_token() -> None:
    sets = _random_sets(4, seed=21)
    job_id = "job-leak"
    parties, final_sets = _run_ring(sets, job_id)
    received = [t for tokens in final_sets.values() for t in tokens]
    blob = b"".join(received)
    everything = sorted(set().union(*map(set, sets.values())))

    for item in everything:
        assert item.encode() not in blob
        for digest in (
            hashlib.sha512(item.encode()).digest(),
            hashlib.sha512(DOMAIN + item.encode()).digest(),
        ):
            assert digest[:32] not in blob and digest[32:] not in blob

    points = hash_to_group(everything)
    forbidden = set(points)
    for party in parties.values():
        # reblind of the plain group elements is exactly H(x)^k_p for this party's key.
        forbidden.update(party.reblind(points))
    assert forbidden.isdisjoint(received)
    # The check is not vacuous: the same parties do produce the fully blinded tokens.
    full = points
    for party in parties.values():
        full = party.reblind(full)
    assert set(full) == set(received)


def test_outputs_are_shuffled() -> None:
    party = PsiParty("douane", "job-shuffle")
    items = [f"{i:08d}" for i in range(40)]
    points = hash_to_group(items)
    in_order = [party.reblind([p])[0] for p in points]
    reblinded = party.reblind(points)
    assert sorted(reblinded) == sorted(in_order)
    assert reblinded != in_order
    own = party.blind_own(items)
    assert sorted(own) == sorted(in_order)
    assert own != in_order


def test_malformed_identifiers_are_counted_not_matched() -> None:
    raw = {
        "douane": ["1234 5678", "8765.4321", "bad", None, "11112222"],
        "belastingdienst": ["12345678", "1234567", "87654321", "x"],
    }
    normalised = {}
    malformed = {}
    for party, values in raw.items():
        normalised[party], malformed[party] = normalise_many("kvk", values)
    assert malformed == {"douane": 2, "belastingdienst": 2}
    result = run_in_memory(normalised, "job-malformed")
    assert result.patterns[frozenset({"douane", "belastingdienst"})] == 2
    assert result.set_sizes == {"douane": 3, "belastingdienst": 2}


def test_montgomery_map_matches_libsodium() -> None:
    rng = random.Random(5)
    points = [sodium.crypto_core_ed25519_from_uniform(rng.randbytes(32)) for _ in range(64)]
    assert _edwards_to_montgomery(points) == [sodium.crypto_sign_ed25519_pk_to_curve25519(p) for p in points]


def test_sealed_hops_round_trip() -> None:
    receiver = PrivateKey.generate()
    tokens = hash_to_group(["a", "b", "c"])
    sealed = seal_tokens(tokens, receiver.public_key)
    assert pack_tokens(tokens) not in sealed
    assert open_tokens(sealed, receiver) == tokens
    with pytest.raises(PsiError) as info:
        open_tokens(sealed, PrivateKey.generate())
    assert info.value.rule == "hop_integrity"
    with pytest.raises(PsiError):
        unpack_tokens(b"x" * 33)


def test_protocol_rules_are_enforced() -> None:
    party = PsiParty("om", "job-rules")
    party.blind_own(["a"])
    with pytest.raises(PsiError, match="already blinded") as info:
        party.blind_own(["b"])
    assert info.value.rule == "protocol_order"
    token = hash_to_group(["a"])
    with pytest.raises(PsiError, match="own set"):
        party.reblind(token, owner="om")
    party.reblind(token, owner="fiod")
    with pytest.raises(PsiError, match="already re-blinded"):
        party.reblind(token, owner="fiod")
    party.finish()
    with pytest.raises(PsiError, match="finished"):
        party.reblind(token)


def test_bad_input_gets_a_named_rule() -> None:
    party = PsiParty("om", "job-bad")
    cases = [
        (lambda: party.reblind([b"short"]), "token_format"),
        (lambda: party.reblind(b"\x01" * 32), "token_format"),
        # u = 0 has small order; libsodium refuses it.
        (lambda: party.reblind([bytes(32)]), "token_group"),
        (lambda: party.blind_own([1234]), "identifier"),
        (lambda: PsiParty("om", ""), "job_id"),
        (lambda: PsiParty("", "job"), "party_id"),
        (lambda: run_in_memory({"a": ["x"]}, "job"), "parties"),
        (lambda: run_in_memory({"a": ["x"], "b": ["y"]}, "job", order=["a", "a"]), "ring"),
        (lambda: ring_route(["a", "b"], "c"), "ring"),
        (lambda: pattern_counts({"a": [b"\x09" * 32, b"\x09" * 32]}), "duplicate_token"),
        (lambda: at_least({}, 0), "threshold"),
    ]
    for call, rule in cases:
        with pytest.raises(PsiError) as info:
            call()
        assert info.value.rule == rule


def test_result_from_final_sets_reports_sizes() -> None:
    sets = {"a": ["1", "2", "3"], "b": ["3", "4"]}
    _, final_sets = _run_ring(sets, "job-sizes")
    result = result_from_final_sets("job-sizes", final_sets)
    assert result.set_sizes == {"a": 3, "b": 2}
    assert result.pairwise() == {("a", "b"): 1}
    with pytest.raises(PsiError):
        result.held_by_all(["a", "zz"])


def test_shuffled_is_a_permutation_and_uniform_enough() -> None:
    items = list(range(1000))
    out = shuffled(items)
    assert sorted(out) == items and out != items
    assert shuffled([]) == [] and shuffled([7]) == [7]
    # Each of the 6 orders of three items turns up; 6000 draws, each order near 1000.
    seen: dict[tuple[int, ...], int] = {}
    for _ in range(6000):
        order = tuple(shuffled([0, 1, 2]))
        seen[order] = seen.get(order, 0) + 1
    assert len(seen) == 6
    assert all(800 < count < 1200 for count in seen.values())


def test_preblinded_party_gives_the_same_overlap_as_an_online_one() -> None:
    sets = _random_sets(4, seed=31)
    online = run_in_memory(sets, "job-online")
    ring = list(sets)
    # Two parties did their offline phase on a superset of what the job selects, one on a subset.
    prepared = {
        "politie": preblind(sets["politie"] + ["99999999"]),
        "om": preblind(sets["om"][:5]),
    }
    parties = {pid: PsiParty(pid, "job-offline", prepared=prepared.get(pid)) for pid in ring}
    in_flight = {pid: parties[pid].blind_own(items) for pid, items in sets.items()}
    for owner in ring:
        for holder in ring_route(ring, owner):
            in_flight[owner] = parties[holder].reblind(in_flight[owner], owner=owner)
    assert result_from_final_sets("job-offline", in_flight).patterns == online.patterns
    assert parties["politie"].prepared_hits == len(set(sets["politie"]))
    assert parties["om"].prepared_hits == 5
    assert parties["fiod"].prepared_hits == 0


def test_preblinded_key_serves_one_job_and_is_fresh() -> None:
    first, second = preblind(["a", "b"]), preblind(["a", "b"])
    assert isinstance(first, PreBlinded) and len(first) == 2
    assert set(first.tokens.values()).isdisjoint(second.tokens.values())
    party = PsiParty("om", "job-a", prepared=first)
    # The party's own step is exactly the pre-blinded tokens, shuffled.
    assert sorted(party.blind_own(["b", "a"])) == sorted(first.tokens.values())
    with pytest.raises(PsiError, match="one job") as info:
        PsiParty("om", "job-b", prepared=first)
    assert info.value.rule == "protocol_order"
    party.finish()
    with pytest.raises(PsiError, match="finished"):
        party.reblind(list(second.tokens.values()))
