"""Privacy parameters: one check at the SDK, the coordinator and the node (rule privacy_request)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from federation.overlap import build_request
from federation.query import parse_query
from nodes.audit import export
from nodes.config import load_node_config
from nodes.context import NodeContext
from nodes.daemon import node_router
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.privacy_request import EPSILON_FLOOR, check_privacy, check_wire

BAD = [math.nan, math.inf, -math.inf, -1.0, 3e-15, 2e-15, 1e-300, 5e-324, 1e9]


@pytest.mark.parametrize("value", BAD)
def test_bad_epsilon_and_rho_are_refused(value: float) -> None:
    for kwargs in ({"epsilon": value}, {"rho": value}):
        with pytest.raises(FederationError) as info:
            check_privacy(**kwargs)  # type: ignore[arg-type]
        assert info.value.rule == "privacy_request"
        with pytest.raises(FederationError):
            check_wire(kwargs.get("epsilon", 0.0), kwargs.get("rho", 0.0))


def test_good_values_and_defaults_pass() -> None:
    assert check_wire(0.0, 0.0).epsilon is None
    assert check_wire(-0.0, 0.0).rho is None
    assert check_privacy(epsilon=1).epsilon == 1.0
    assert check_privacy(rho=0.5).rho == 0.5
    assert check_privacy(epsilon=EPSILON_FLOOR).epsilon == EPSILON_FLOOR
    for bad in (True, "1"):
        with pytest.raises(FederationError):
            check_privacy(epsilon=bad)  # type: ignore[arg-type]
    with pytest.raises(FederationError):
        check_privacy(epsilon=1.0, rho=1.0)
    with pytest.raises(FederationError):
        check_wire(0.0, 0.5, pure_only=True)


def test_sdk_builds_no_spec_with_a_bad_epsilon() -> None:
    for value in BAD:
        with pytest.raises(FederationError) as info:
            build_request("company", ["a.x", "b.y"], epsilon=value)
        assert info.value.rule == "privacy_request"


@pytest.mark.parametrize("exact", [True, False])
def test_node_refuses_raw_bad_parameters_with_an_outcome(
    tmp_path: Path, customs, declarations, exact: bool
) -> None:  # type: ignore[no-untyped-def]
    policy = "dp_required = false" if exact else ""
    ctx = NodeContext.open(load_node_config(customs.write_csv_node(tmp_path, declarations, policy=policy)))
    router = node_router(ctx)
    try:
        for i, value in enumerate(BAD):
            for field in ("epsilon", "rho"):
                spec = parse_query("SELECT port, COUNT(*) FROM declarations GROUP BY port")
                setattr(spec.privacy, field, value)
                job_id = f"{field}-{i}"
                answer = router.handle(pb.JobRequest(job_id=job_id, query=spec, requested_by="analyst"))
                assert answer.WhichOneof("outcome") == "refusal", (field, value)
                assert answer.refusal.rule == "privacy_request", (field, value, answer.refusal.reason)
        kinds: dict[str, list[str]] = {}
        for entry in export(ctx.audit.path):
            if entry.get("job_id"):
                kinds.setdefault(entry["job_id"], []).append(entry["kind"])
        assert len(kinds) == 2 * len(BAD)
        assert all(k == ["received", "refused"] for k in kinds.values()), kinds
    finally:
        ctx.close()


def test_query_bounds_and_quantile_are_checked_on_the_wire() -> None:
    from protocols.privacy_request import check_query

    spec = parse_query("SELECT port, SUM(value) FROM declarations GROUP BY port")
    assert check_query(spec).epsilon is None
    for lower, upper in ((math.nan, 1.0), (0.0, math.inf), (5.0, 1.0)):
        spec.aggregates[0].bounds.lower, spec.aggregates[0].bounds.upper = lower, upper
        with pytest.raises(FederationError) as info:
            check_query(spec)
        assert info.value.rule == "bounds"
    spec.aggregates[0].ClearField("bounds")
    for quantile in (math.nan, -0.1, 1.5):
        spec.aggregates[0].quantile = quantile
        with pytest.raises(FederationError) as info:
            check_query(spec)
        assert info.value.rule == "malformed_request"
