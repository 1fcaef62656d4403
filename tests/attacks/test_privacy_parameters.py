"""Privacy parameters sent raw past the SDK, over a real federation (coordinator and nodes as OS
processes): a tiny, NaN, infinite or negative epsilon or rho is refused with rule
``privacy_request``, never read as "use the default" (an exact answer on a node without mandatory
DP) and never left unanswered; every job a node received ends in an audit outcome."""

from __future__ import annotations

import math
from collections.abc import Iterator

import grpc
import pytest

from federation.query import parse_query
from nodes.audit import export
from nodes.config import load_node_config
from protocols import federation_pb2 as pb
from protocols import federation_pb2_grpc as pb_grpc
from protocols.identity import grpc_channel_credentials
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

NODES = ["douane", "kmar"]
SQL = "SELECT port, COUNT(*) AS n FROM declarations GROUP BY port"
BAD = [3e-15, 1e-300, math.nan, math.inf, -math.inf, -1.0, -0.5]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    # Exact mode: a NaN read as "not given" would be answered exactly.
    running, schema = start_federation(tmp_path_factory.mktemp("privacy-params"), postgres_dsn, nodes=NODES)
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


@pytest.fixture(scope="module")
def stub(fed: RunningFederation) -> Iterator[pb_grpc.AnalystStub]:
    kit = fed.root / "pki" / "kits" / "analyst"
    creds = grpc_channel_credentials(kit / "cert.pem", kit / "key.pem", kit / "ca.pem")
    with grpc.secure_channel(fed.address, creds) as channel:
        yield pb_grpc.AnalystStub(channel)


def _audit_outcomes(fed: RunningFederation) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for node in NODES:
        log = load_node_config(fed.paths[node]).state_dir / "audit.log"
        kinds: dict[str, list[str]] = {}
        for entry in export(log) if log.exists() else []:
            if entry.get("job_id"):
                kinds.setdefault(entry["job_id"], []).append(entry["kind"])
        out[node] = kinds
    return out


@pytest.mark.parametrize("field", ["epsilon", "rho"])
@pytest.mark.parametrize("secure", [False, True])
def test_raw_bad_parameters_are_refused_naming_the_rule(
    fed: RunningFederation, stub: pb_grpc.AnalystStub, field: str, secure: bool
) -> None:
    for value in BAD:
        spec = parse_query(SQL)
        spec.secure = secure
        setattr(spec.privacy, field, value)
        response = stub.Query(pb.QueryRequest(spec=spec, sql=SQL, timeout_seconds=10), timeout=60)
        assert not response.ok, (field, value, "answered")
        assert response.error_rule == "privacy_request", (field, value, response.error_rule, response.error)
        assert not response.rows


def test_raw_bad_clamping_bounds_are_refused(fed: RunningFederation, stub: pb_grpc.AnalystStub) -> None:
    sql = "SELECT port, SUM(value) AS total FROM declarations GROUP BY port"
    for lower, upper in ((math.nan, 10.0), (0.0, math.inf), (-math.inf, 5.0), (10.0, 1.0)):
        spec = parse_query(sql)
        spec.privacy.epsilon = 1.0
        spec.aggregates[0].bounds.lower, spec.aggregates[0].bounds.upper = lower, upper
        response = stub.Query(pb.QueryRequest(spec=spec, sql=sql, timeout_seconds=10), timeout=60)
        assert not response.ok, (lower, upper)
        assert response.error_rule == "bounds", (lower, upper, response.error_rule, response.error)


def test_raw_bad_overlap_epsilon_is_refused(fed: RunningFederation, stub: pb_grpc.AnalystStub) -> None:
    for value in [*BAD, 0.0]:
        spec = pb.OverlapSpec(on="company")
        spec.datasets.add(node="douane", dataset="declarations")
        spec.datasets.add(node="kmar", dataset="crossings")
        if value != 0.0:
            spec.privacy.epsilon = value
        else:
            spec.privacy.rho = 0.5  # an overlap is pure DP
        response = stub.Overlap(pb.OverlapRequest(spec=spec, timeout_seconds=10), timeout=60)
        assert not response.ok, value
        assert response.error_rule == "privacy_request", (value, response.error_rule, response.error)


def test_every_job_a_node_received_has_an_outcome(fed: RunningFederation, stub: pb_grpc.AnalystStub) -> None:
    # A good query still runs after the attacks, and every node logged an outcome for it.
    spec = parse_query(SQL)
    spec.privacy.epsilon = 0.5
    response = stub.Query(pb.QueryRequest(spec=spec, sql=SQL, timeout_seconds=30), timeout=90)
    assert response.ok, response.error
    outcomes = _audit_outcomes(fed)
    assert outcomes["douane"].get(response.job_id) == ["received", "released"]
    for node, jobs in outcomes.items():
        for job_id, kinds in jobs.items():
            if "received" in kinds:
                assert kinds[-1] in ("released", "refused"), (node, job_id, kinds)
