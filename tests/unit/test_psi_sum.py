"""Intersection-sum with cardinality: correct totals, masked values, one decryption only."""

from __future__ import annotations

import random

import pytest

from protocols.psi import PsiError, PsiParty, ring_route
from protocols.psi_sum import (
    SumBase,
    SumLayout,
    masked_intersection_sum,
    public_key_from_bytes,
    rerandomiser,
    run_sum_in_memory,
    unmask,
)

KEY_BITS = 1024  # small keys keep the test quick; the default is 2048


def _scenario(seed: int) -> tuple[dict[str, int], dict[str, int], dict[str, list[str]]]:
    rng = random.Random(seed)
    universe = [f"{rng.randrange(10**8):08d}" for _ in range(40)]
    base_items = rng.sample(universe, 14)
    values = {item: rng.randrange(0, 1000) for item in base_items}
    categories = {item: rng.randrange(4) for item in base_items}
    others = {"belastingdienst": rng.sample(universe, 25), "politie": rng.sample(universe, 25)}
    return values, categories, others


def test_sum_and_category_counts_match_plain_python() -> None:
    values, categories, others = _scenario(7)
    result, overlap = run_sum_in_memory(
        "douane",
        values,
        others,
        "job-sum",
        max_value=1000,
        categories=categories,
        n_categories=4,
        key_bits=KEY_BITS,
    )
    inside = [item for item in values if all(item in set(s) for s in others.values())]
    assert inside, "scenario should have a non-empty intersection"
    assert result.matched == len(inside)
    assert result.total == sum(values[item] for item in inside)
    assert result.per_category == {c: sum(1 for item in inside if categories[item] == c) for c in range(4)}
    assert overlap.held_by_all(["douane", *others]) == len(inside)


def _ring_up_to_coordinator(seed: int):
    values, _, others = _scenario(seed)
    ring = ["douane", *others]
    parties = {pid: PsiParty(pid, "job-view") for pid in ring}
    base = SumBase(parties["douane"], max_value=1000, key_bits=KEY_BITS)
    public_key = public_key_from_bytes(base.public_key_bytes)
    first = base.blind_own(values)
    pairs = first
    for holder in ring_route(ring, "douane"):
        pairs = parties[holder].reblind_pairs(pairs, owner="douane", refresh=rerandomiser(public_key))
    final_sets = {}
    for pid in others:
        tokens = parties[pid].blind_own(others[pid])
        for holder in ring_route(ring, pid):
            tokens = parties[holder].reblind(tokens, owner=pid)
        final_sets[pid] = tokens
    return values, others, base, public_key, first, pairs, final_sets


def test_coordinator_sees_only_fresh_ciphertexts_and_base_only_a_masked_sum() -> None:
    values, others, base, public_key, first, final_pairs, final_sets = _ring_up_to_coordinator(8)
    # Every hop re-randomised: no ciphertext the base party produced reaches the coordinator.
    assert {blob for _, blob in first}.isdisjoint(blob for _, blob in final_pairs)
    assert {token for token, _ in first}.isdisjoint(token for token, _ in final_pairs)
    # The ciphertexts still hold the base party's values (multiset equality through decryption).
    private = base._private_key
    decrypted = sorted(private.raw_decrypt(int.from_bytes(blob, "big")) for _, blob in final_pairs)
    assert decrypted == sorted(values.values())

    masked = masked_intersection_sum(final_pairs, final_sets, public_key)
    seen_by_base = base.decrypt_masked(masked.ciphertext)
    inside = [item for item in values if all(item in set(s) for s in others.values())]
    truth = sum(values[item] for item in inside)
    assert seen_by_base == (truth + masked.mask) % public_key.n
    assert seen_by_base != truth
    assert base.layout is not None
    assert unmask(masked, seen_by_base, base.layout, public_key).total == truth
    # One decryption per job: the coordinator cannot have single items opened afterwards.
    with pytest.raises(PsiError) as info:
        base.decrypt_masked(final_pairs[0][1])
    assert info.value.rule == "protocol_order"


def test_masks_differ_between_runs() -> None:
    _, _, _, public_key, _, pairs, final_sets = _ring_up_to_coordinator(9)
    one = masked_intersection_sum(pairs, final_sets, public_key)
    two = masked_intersection_sum(pairs, final_sets, public_key)
    assert one.mask != two.mask and one.ciphertext != two.ciphertext
    assert one.matched == two.matched


def test_layout_slots_do_not_overflow() -> None:
    layout = SumLayout.for_set(max_value=255, categories=3, set_size=1000)
    plain = sum(layout.encode(255, 2) for _ in range(1000))
    assert layout.decode(plain) == (255 * 1000, {0: 0, 1: 0, 2: 1000})


def test_bad_input_gets_a_named_rule() -> None:
    layout = SumLayout.for_set(max_value=10, categories=2, set_size=5)
    base = SumBase(PsiParty("douane", "job-bad"), max_value=10, categories=2, key_bits=KEY_BITS)
    cases = [
        (lambda: layout.encode(11, 0), "value_bounds"),
        (lambda: layout.encode(-1, 0), "value_bounds"),
        (lambda: layout.encode(3, 2), "category_domain"),
        (lambda: SumLayout.for_set(10, 0, 5).encode(3, 1), "category_domain"),
        (lambda: base.blind_own({"a": 1}, {}), "category_domain"),
        (lambda: SumBase(PsiParty("om", "job"), 10, key_bits=512), "key_size"),
        (lambda: public_key_from_bytes(b"\x01" * 16), "key_size"),
        (lambda: base.decrypt_masked(b"\x00" * 7), "ciphertext_format"),
        (lambda: run_sum_in_memory("a", {"x": 1}, {}, "job", max_value=1, key_bits=KEY_BITS), "parties"),
        (
            lambda: run_sum_in_memory("a", {"x": 1}, {"a": []}, "job", max_value=1, key_bits=KEY_BITS),
            "parties",
        ),
        (lambda: PsiParty("x", "job").blind_own_pairs([("a", 1), ("a", 2)]), "duplicate_identifier"),
    ]
    for call, rule in cases:
        with pytest.raises(PsiError) as info:
            call()
        assert info.value.rule == rule
    too_big = SumBase(PsiParty("kmar", "job-cap"), max_value=10**40, categories=40, key_bits=KEY_BITS)
    with pytest.raises(PsiError) as info:
        too_big.blind_own({f"{i}": 1 for i in range(3)}, {f"{i}": 0 for i in range(3)})
    assert info.value.rule == "sum_capacity"
