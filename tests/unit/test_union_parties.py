"""A COUNT(DISTINCT) union over more nodes than the overlap's party cap is refused in the query's
terms, naming the per-node sum the analyst can ask for instead."""

from __future__ import annotations

import pytest

from coordinator.distinct import check_union_parties
from protocols.errors import FederationError
from protocols.spec_limits import MAX_OVERLAP_PARTIES


def test_a_union_at_the_cap_passes() -> None:
    check_union_parties("company", MAX_OVERLAP_PARTIES)


def test_a_union_past_the_cap_names_the_rule_and_the_alternative() -> None:
    with pytest.raises(FederationError) as info:
        check_union_parties("company", MAX_OVERLAP_PARTIES + 1)
    assert info.value.rule == "too_many_parties"
    message = info.value.message
    assert f"COUNT(DISTINCT company) over {MAX_OVERLAP_PARTIES + 1} nodes" in message
    assert f"at most {MAX_OVERLAP_PARTIES} nodes" in message
    assert "COUNT_DISTINCT_PER_NODE(company)" in message
