"""Union COUNT(DISTINCT) per group over the PSI ring (protocols/psi_union.py), in one process."""

from __future__ import annotations

import pytest
from nacl.bindings import crypto_box_keypair

from federation.query import parse_query
from privacy.distinct import groups_per_unit, union_cost, union_noise
from protocols import federation_pb2 as pb
from protocols.psi import PsiError, PsiParty
from protocols.psi_union import (
    ITEM_BYTES,
    LABEL_BYTES,
    WRAPPED_BYTES,
    group_item,
    group_label,
    parse_label,
    run_union_in_memory,
    seal_label,
    union_counts,
    wrap_items,
)


def test_union_counts_each_entity_once_per_group() -> None:
    sets = {
        "douane": {("Noord",): ["1", "2", "3"], ("Zuid",): ["1"]},
        "kmar": {("Noord",): ["2", "4"], ("Zuid",): ["5", "1"]},
        "fiod": {("Noord",): ["3", "9"]},
    }
    counts, items = run_union_in_memory(sets, "job-u1")
    assert counts == {("Noord",): 5, ("Zuid",): 2}  # {1,2,3,4,9} and {1,5}
    assert items == 3 + 1 + 2 + 2 + 2  # the merged list holds every item: the per-party sum


def test_an_entity_in_two_groups_counts_in_both_and_tokens_never_match_across_groups() -> None:
    party = PsiParty("a", "job-u2")
    tokens = party.blind_own([group_item(group_label(("x",)), "1"), group_item(group_label(("y",)), "1")])
    assert len(set(tokens)) == 2
    counts, _ = run_union_in_memory({"a": {("x",): ["1"], ("y",): ["1"]}, "b": {("y",): ["1"]}}, "job-u3")
    assert counts == {("x",): 1, ("y",): 1}


def test_labels_have_one_width_and_round_trip() -> None:
    short, long = group_label(("a",)), group_label(("Zeeland-West-Brabant", 2023, "drugs"))
    assert len(short) == len(long) == LABEL_BYTES
    assert parse_label(long) == ("Zeeland-West-Brabant", 2023, "drugs")
    with pytest.raises(PsiError) as info:
        group_label(("x" * LABEL_BYTES,))
    assert info.value.rule == "group_label"


def test_sealed_items_have_one_length_whatever_the_group() -> None:
    public, _ = crypto_box_keypair()
    boxes = {len(seal_label(group_label(key), public)) for key in [("a",), ("Zeeland-West-Brabant", 2023)]}
    assert boxes == {ITEM_BYTES - 32}
    wrapped = wrap_items([(b"\x09" * 32, seal_label(group_label(("a",)), public))], public)
    assert [len(w) for w in wrapped] == [WRAPPED_BYTES]


def test_a_token_under_two_labels_is_refused() -> None:
    public, private = crypto_box_keypair()
    token = b"\x09" * 32
    items = wrap_items(
        [(token, seal_label(group_label(("a",)), public)), (token, seal_label(group_label(("b",)), public))],
        public,
    )
    with pytest.raises(PsiError) as info:
        union_counts(items, public, private)
    assert info.value.rule == "label_integrity"


def test_items_sealed_to_another_key_do_not_open() -> None:
    public, private = crypto_box_keypair()
    other, _ = crypto_box_keypair()
    items = wrap_items([(b"\x09" * 32, seal_label(group_label(("a",)), other))], other)
    with pytest.raises(PsiError) as info:
        union_counts(items, public, private)
    assert info.value.rule == "hop_integrity"


def test_union_sensitivity_is_the_groups_one_unit_can_touch() -> None:
    assert groups_per_unit(20, 10) == 10
    assert groups_per_unit(3, 10) == 3
    assert groups_per_unit(5, 1) == 1
    spec = union_noise(1.0, 10)
    assert spec.l1 == 10 and spec.scale == pytest.approx(10.0)
    assert union_cost(1.0, 20, 10).epsilon == pytest.approx(1.0)


def test_per_node_sum_has_its_own_name() -> None:
    spec = parse_query(
        "SELECT region, COUNT(DISTINCT company) AS u, COUNT_DISTINCT_PER_NODE(company) AS s FROM signals "
        "GROUP BY region"
    )
    union, per_node = spec.aggregates
    assert union.function == per_node.function == pb.COUNT_DISTINCT
    assert not union.per_node and per_node.per_node
    assert per_node.alias == "s"
