"""The node's copy of each released query result, checked against the digest its audit entry holds."""

from __future__ import annotations

import hashlib
from pathlib import Path

from nodes.release_copies import ReleaseCopies, result_digest
from protocols import federation_pb2 as pb
from protocols.values import to_value


def _result() -> pb.QueryResult:
    result = pb.QueryResult()
    group = result.groups.add()
    group.key.append(to_value("Rotterdam"))
    group.cells.add(sum=2407.3, count=2407.3, noise_sd=74.4)
    return result


def test_copy_round_trips_and_matches_the_audit_digest(tmp_path: Path) -> None:
    result = _result()
    before = hashlib.sha256(result.SerializeToString(deterministic=True)).hexdigest()
    result.audit_digest = result_digest(result)
    assert result.audit_digest == before  # the digest of the result before the field was set
    copies = ReleaseCopies(tmp_path / "releases.sqlite")
    copies.keep("job-1", "declarations", "p", result)
    kept = copies.get("job-1")
    assert kept == result and result_digest(kept) == result.audit_digest
    assert copies.get("job-2") is None


def test_a_changed_copy_no_longer_matches(tmp_path: Path) -> None:
    result = _result()
    result.audit_digest = result_digest(result)
    result.groups[0].cells[0].sum = 9999.0
    assert result_digest(result) != result.audit_digest
