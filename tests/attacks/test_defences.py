"""Attacks on a real TLS federation (coordinator and nodes as OS processes): differencing without
DP, injection through every string field of a spec, limits, raw and oversized bytes on both
services, and replayed node responses."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from federation import pki
from federation.mock import MAX_MOCK_ROWS
from federation.query import parse_query
from protocols import federation_pb2 as pb
from protocols import federation_pb2_grpc as pb_grpc
from protocols.errors import FederationError
from protocols.identity import grpc_channel_credentials
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

NODES = ["douane", "kmar", "belastingdienst"]
PER_MINUTE = 40
MAX_GROUPS = 100
BIG = 5 * 1024 * 1024  # above the coordinator's max_message_bytes (4 MiB)


def _limits(paths: dict[str, Path]) -> None:
    coordinator = paths["coordinator"].read_text()
    paths["coordinator"].write_text(
        coordinator.replace("[coordinator]\n", f"[coordinator]\nmax_queries_per_minute = {PER_MINUTE}\n", 1)
    )
    douane = paths["douane"].read_text()
    assert "max_groups = 2000\n" in douane
    paths["douane"].write_text(douane.replace("max_groups = 2000\n", f"max_groups = {MAX_GROUPS}\n", 1))


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    running, schema = start_federation(
        tmp_path_factory.mktemp("defences"), postgres_dsn, nodes=NODES, edit=_limits
    )
    running.schema = schema  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _kit(fed: RunningFederation, subject: str, role: str) -> Path:
    pki_dir = fed.root / "pki"
    folder = pki_dir / "kits" / subject
    if not folder.exists():
        pki.issue(pki_dir, subject, role, out=pki_dir / "kits")  # type: ignore[arg-type]
    return folder


def _channel(fed: RunningFederation, kit: Path) -> grpc.Channel:
    creds = grpc_channel_credentials(kit / "cert.pem", kit / "key.pem", kit / "ca.pem")
    return grpc.secure_channel(fed.address, creds)


def _analyst(fed: RunningFederation, subject: str = "analyst") -> tuple[grpc.Channel, pb_grpc.AnalystStub]:
    channel = _channel(fed, _kit(fed, subject, "analyst"))
    return channel, pb_grpc.AnalystStub(channel)


def _audit(fed: RunningFederation, node: str) -> list[dict[str, Any]]:
    log = fed.root / "state" / node / "audit.log"
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- differencing


def test_differencing_sequence_is_refused_without_dp(fed: RunningFederation) -> None:
    base = "SELECT COUNT(*) AS n FROM declarations WHERE year >= 2020"
    narrowed = base + " AND seizure = 0"
    frame = fed.scenario.frames["douane.declarations"]
    frame = frame[frame["company"].notna() & (frame["year"] >= 2020)]
    only_seized = frame.groupby("company")["seizure"].apply(lambda s: bool((s == 1).all()))
    isolated = int(only_seized.sum())
    assert 0 < isolated < 10, "the scenario must hold a few companies with seizures only"
    with fed.client() as client:
        total = client.query(base, project="differencing")
        assert int(total["n"].iloc[0]) > 0
        with pytest.raises(FederationError) as info:
            client.query(narrowed, project="differencing")
        # With DP the noise and the budget cover the same pair of queries.
        noisy = client.query(narrowed, project="differencing", epsilon=1.0)
    assert info.value.rule == "differencing"
    message = str(info.value)
    assert "douane" in message and "differencing check" in message, message
    assert str(isolated) not in message, "a refusal names the rule, never the difference"
    assert noisy.attrs["noise"], "the DP answer carries noise"
    refused = [e for e in _audit(fed, "douane") if e["kind"] == "refused"]
    assert any(e["payload"].get("rule") == "differencing" for e in refused)


# --------------------------------------------------------------------------- injection


def _spec(sql: str, **fields: Any) -> pb.QuerySpec:
    spec = parse_query(sql)
    for key, value in fields.items():
        setattr(spec, key, value)
    return spec


def _pg_rows(dsn: str, table: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def test_injection_in_every_string_field_is_refused_or_harmless(
    fed: RunningFederation, postgres_dsn: str
) -> None:
    table = f"{fed.schema}.belastingdienst_vat_returns"  # type: ignore[attr-defined]
    rows_before = _pg_rows(postgres_dsn, table)
    drop = "'; DROP TABLE declarations; --"
    probe = "SELECT port, COUNT(*) AS n FROM declarations GROUP BY port"
    refused: list[tuple[pb.QuerySpec, set[str]]] = []

    spec = _spec("SELECT COUNT(*) AS n FROM declarations", dataset='declarations"; DROP TABLE x; --')
    refused.append((spec, {"unknown_dataset"}))
    spec = _spec("SELECT COUNT(*) AS n FROM declarations", node="douane' OR '1'='1")
    refused.append((spec, {"node_unreachable"}))
    spec = _spec(probe)
    spec.group_by[0] = 'port" FROM ds_declarations; --'
    refused.append((spec, {"unknown_column"}))
    spec = _spec("SELECT SUM(value) AS s FROM declarations")
    spec.aggregates[0].column = "value) FROM ds_declarations; --"
    refused.append((spec, {"unknown_column"}))
    spec = _spec("SELECT COUNT(*) AS n FROM declarations WHERE port = 'Rotterdam'")
    spec.filter.compare.value.text = "Rotterdam' OR '1'='1"
    refused.append((spec, {"value_outside_domain"}))
    spec = _spec("SELECT COUNT(*) AS n FROM declarations WHERE port = 'Rotterdam'")
    spec.filter.compare.column = "haven = haven OR 1=1 --"
    refused.append((spec, {"unknown_column"}))
    spec = _spec("SELECT COUNT(*) AS n FROM declarations WHERE date >= '2021-01-01'")
    spec.filter.compare.value.text = "2021-01-01' OR 1=1 --"
    refused.append((spec, {"type_mismatch"}))
    spec = _spec("SELECT COUNT(*) AS n FROM vat_returns WHERE sector = 'x'")  # PostgreSQL source
    spec.filter.compare.value.text = drop
    refused.append((spec, {"value_outside_domain"}))

    channel, stub = _analyst(fed)
    with channel:
        before = stub.Query(pb.QueryRequest(spec=_spec(probe, project="inject")), timeout=30)
        assert before.ok
        for spec, rules in refused:
            response = stub.Query(pb.QueryRequest(spec=spec), timeout=30)
            assert not response.ok and response.error_rule in rules, (spec, response.error)
        # Alias and project are labels, never SQL: they come back verbatim and run nothing.
        spec = _spec(probe, project=drop)
        spec.aggregates[0].alias = '"; DROP TABLE ds_declarations; --'
        labelled = stub.Query(pb.QueryRequest(spec=spec), timeout=30)
        assert labelled.ok, labelled.error
        assert list(labelled.columns) == ["port", '"; DROP TABLE ds_declarations; --']
        after = stub.Query(pb.QueryRequest(spec=_spec(probe, project="inject")), timeout=30)
        jobs = stub.Jobs(pb.JobsRequest(limit=50, project=drop), timeout=10)
    assert after.ok and [r.SerializeToString() for r in after.rows] == [
        r.SerializeToString() for r in before.rows
    ]
    assert [r.cells[0].value for r in labelled.rows] == [r.cells[0].value for r in before.rows]
    # The coordinator lists no such project: it runs as the development catch-all '*'.
    assert any(j.project == "*" for j in jobs.jobs)
    assert _pg_rows(postgres_dsn, table) == rows_before


# --------------------------------------------------------------------------- limits


def test_too_many_groups_is_refused(fed: RunningFederation) -> None:
    spec = _spec(
        "SELECT region, phenomenon, year, COUNT(*) AS n FROM signals GROUP BY region, phenomenon, year",
        node="douane",
    )
    channel, stub = _analyst(fed)
    with channel:
        response = stub.Query(pb.QueryRequest(spec=spec), timeout=30)
        del spec.group_by[2]
        del spec.group_by[1]
        small = stub.Query(pb.QueryRequest(spec=spec), timeout=30)
    assert not response.ok and response.error_rule == "too_many_groups"
    assert "douane" in response.error and f"at most {MAX_GROUPS}" in response.error
    assert small.ok, small.error


def test_mock_rows_are_capped(fed: RunningFederation) -> None:
    with fed.client() as client:
        for n in (0, MAX_MOCK_ROWS + 1):
            with pytest.raises(FederationError) as info:
                client.mock("douane.declarations", n=n)
            assert info.value.rule == "mock_rows_limit" and str(MAX_MOCK_ROWS) in str(info.value)
        rows = client.mock("douane.declarations", n=25, seed=1)
    assert len(rows) == 25 and rows.attrs["mock"]
    assert set(rows["port"]) <= {"Rotterdam", "Amsterdam", "Vlissingen", "Moerdijk"}


def test_rate_limit_per_analyst(fed: RunningFederation) -> None:
    spec = _spec("SELECT COUNT(*) AS n FROM crossings", project="flood")
    flood_channel, flood = _analyst(fed, "analyst-flood")
    with flood_channel:
        answers = [flood.Query(pb.QueryRequest(spec=spec), timeout=30) for _ in range(PER_MINUTE)]
        assert all(a.ok for a in answers), [a.error for a in answers if not a.ok][:1]
        limited = flood.Query(pb.QueryRequest(spec=spec), timeout=30)
        overlap = flood.Overlap(pb.OverlapRequest(), timeout=30)
    assert not limited.ok and limited.error_rule == "rate_limited"
    assert "analyst-flood" in limited.error and "max_queries_per_minute" in limited.error
    assert not overlap.ok and overlap.error_rule == "rate_limited"
    with fed.client() as client:  # another analyst is not held back
        assert int(client.query("SELECT COUNT(*) AS n FROM crossings", project="flood")["n"].iloc[0]) > 0


# --------------------------------------------------------------------------- raw and oversized bytes


def test_raw_and_oversized_bytes_on_the_analyst_service(fed: RunningFederation) -> None:
    channel, stub = _analyst(fed)
    with channel:
        raw = channel.unary_unary("/federation.v1.Analyst/Query")
        with pytest.raises(grpc.RpcError) as garbled:
            raw(b"\xff" * 64, timeout=10)
        with pytest.raises(grpc.RpcError) as oversized:
            raw(b"\x0a" + b"\xff\xff\xff\x02" + b"\x00" * BIG, timeout=20)
        still = stub.Query(pb.QueryRequest(spec=_spec("SELECT COUNT(*) AS n FROM crossings")), timeout=30)
    assert garbled.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    assert oversized.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert still.ok, still.error


class RogueLink:
    """A node link opened by the test with a node certificate, sending whatever it is told to."""

    def __init__(self, fed: RunningFederation, kit: Path) -> None:
        self.outbox: queue.Queue[Any] = queue.Queue()
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.channel = _channel(fed, kit)
        self.call = pb_grpc.NodeLinkStub(self.channel).Connect(iter(self.outbox.get, None))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for msg in self.call:
                self.inbox.put(msg)
        except grpc.RpcError as exc:
            self.inbox.put(exc)
        self.inbox.put(None)

    def send(self, msg: pb.NodeMessage) -> None:
        self.outbox.put(msg)

    def receive(self, timeout: float = 10) -> Any:
        return self.inbox.get(timeout=timeout)

    def close(self) -> None:
        self.outbox.put(None)
        self.call.cancel()
        self.channel.close()


def _connected(fed: RunningFederation, node: str) -> bool:
    with fed.client() as client:
        nodes = client.nodes()
    return bool(((nodes["node"] == node) & nodes["connected"]).any())


def _wait_gone(fed: RunningFederation, node: str) -> None:
    deadline = time.monotonic() + 10
    while _connected(fed, node) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _connected(fed, node)


def test_oversized_and_garbled_messages_on_the_node_link(fed: RunningFederation) -> None:
    kit = _kit(fed, "rogue", "node")
    rogue = RogueLink(fed, kit)
    try:
        rogue.send(pb.NodeMessage(hello=pb.Hello(node_id="rogue")))
        assert rogue.receive().WhichOneof("kind") == "welcome"
        assert _connected(fed, "rogue")
        huge = pb.JobResponse(job_id="x", result=pb.QueryResult(audit_digest="f" * BIG))
        rogue.send(pb.NodeMessage(response=huge))
        ended = rogue.receive(timeout=20)
        assert isinstance(ended, grpc.RpcError) and ended.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        rogue.close()
    _wait_gone(fed, "rogue")

    with _channel(fed, kit) as channel:
        raw = channel.stream_stream("/federation.v1.NodeLink/Connect")
        with pytest.raises(grpc.RpcError) as garbled:
            list(raw(iter([b"\xff" * 64]), timeout=10))
    assert garbled.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    assert not _connected(fed, "rogue")
    with fed.client() as client:
        df = client.query("SELECT COUNT(*) AS n FROM signals")
    assert set(df.attrs["answered"]) == set(NODES)


# --------------------------------------------------------------------------- replay


def _crossings_info(fed: RunningFederation) -> pb.DatasetInfo:
    with fed.client() as client:
        info = next(d for d in client.dataset_infos() if d.node == "kmar" and d.name == "crossings")
    copy = pb.DatasetInfo()
    copy.CopyFrom(info)
    copy.node = "rogue"
    return copy


def _ask_in_background(fed: RunningFederation, sql: str, out: dict[str, Any]) -> threading.Thread:
    def ask() -> None:
        with fed.client() as client:
            out["df"] = client.query(sql, timeout=4, project="replay")

    thread = threading.Thread(target=ask)
    thread.start()
    return thread


def _next_job(rogue: RogueLink) -> pb.JobRequest:
    while True:
        msg = rogue.receive(timeout=20)
        assert isinstance(msg, pb.CoordinatorMessage), msg
        if msg.WhichOneof("kind") == "job" and msg.job.WhichOneof("kind") == "query":
            return msg.job


def test_replayed_response_on_a_new_link_is_ignored(fed: RunningFederation) -> None:
    kit = _kit(fed, "rogue", "node")
    info = _crossings_info(fed)
    sql = "SELECT COUNT(*) AS n FROM crossings"
    frame = fed.scenario.frames["kmar.crossings"]
    honest = int(frame["person"].notna().sum())

    first = RogueLink(fed, kit)
    out: dict[str, Any] = {}
    try:
        first.send(pb.NodeMessage(hello=pb.Hello(node_id="rogue", datasets=[info])))
        assert first.receive().WhichOneof("kind") == "welcome"
        asker = _ask_in_background(fed, sql, out)
        old = _next_job(first)
        result = pb.QueryResult()
        result.groups.add().cells.add(sum=1000.0, count=1000.0)
        recorded = pb.NodeMessage(response=pb.JobResponse(job_id=old.job_id, result=result))
        first.send(recorded)
        asker.join(timeout=30)
    finally:
        first.close()
    assert int(out["df"]["n"].iloc[0]) == honest + 1000  # the answer on its own link counts
    _wait_gone(fed, "rogue")

    second = RogueLink(fed, kit)
    try:
        second.send(pb.NodeMessage(hello=pb.Hello(node_id="rogue", datasets=[info])))
        assert second.receive().WhichOneof("kind") == "welcome"
        asker = _ask_in_background(fed, sql, out)
        new = _next_job(second)
        assert new.job_id != old.job_id
        second.send(recorded)  # the old answer, replayed on the new link
        forged = pb.NodeMessage(response=pb.JobResponse(job_id="not-sent-to-rogue", result=result))
        second.send(forged)
        asker.join(timeout=30)
    finally:
        second.close()
    df = out["df"]
    outcomes = {n["node"]: n for n in df.attrs["nodes"]}
    assert outcomes["rogue"]["status"] == "timeout"
    assert int(df["n"].iloc[0]) == honest
