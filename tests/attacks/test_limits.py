"""Availability attacks on a real TLS federation (coordinator and nodes as OS processes): specs nested
past the protobuf decoder's depth limit, huge IN lists, and jobs a node cannot decode, sent by a
hostile coordinator; none may drop a node's link, each is refused by a rule."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.internal.encoder import _VarintBytes

from federation import pki
from federation.client import Client
from federation.processes import LocalFederation, free_port
from federation.query import parse_query
from federation.scenario import write_scenario
from protocols import federation_pb2 as pb
from protocols import federation_pb2_grpc as pb_grpc
from protocols.errors import FederationError
from protocols.identity import grpc_channel_credentials, grpc_server_credentials
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

NODES = ["douane", "kmar"]
NOTS = 96  # stacked NOTs that used to pass the SDK and the coordinator and drop every serving node


PER_ANALYST = 2  # max_concurrent_jobs_per_analyst
MAX_TIMEOUT = 60.0  # max_timeout_seconds


def _limits(paths: dict[str, Path]) -> None:
    text = paths["coordinator"].read_text()
    settings = (
        f"max_concurrent_jobs_per_analyst = {PER_ANALYST}\nmax_timeout_seconds = {MAX_TIMEOUT}\n"
        "max_queries_per_minute = 0\n"
    )
    paths["coordinator"].write_text(text.replace("[coordinator]\n", "[coordinator]\n" + settings, 1))


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    running, schema = start_federation(
        tmp_path_factory.mktemp("limits"), postgres_dsn, nodes=NODES, edit=_limits
    )
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


# --------------------------------------------------------------------------- wire helpers


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field, written by hand: the runtime cannot build these depths."""
    return _VarintBytes(number << 3 | 2) + _VarintBytes(len(payload)) + payload


def _deep_filter(depth: int) -> bytes:
    """A ``Filter`` of ``depth`` NOTs around ``port = 'Rotterdam'``, as bytes."""
    compare = pb.Comparison(column="port", op=pb.EQ, value=pb.Value(text="Rotterdam"))
    data = pb.Filter(compare=compare).SerializeToString()
    for _ in range(depth):
        data = _field(6, data)  # Filter.negate
    return data


def _spec_bytes(filter_bytes: bytes, dataset: str = "declarations") -> bytes:
    head = pb.QuerySpec(dataset=dataset, aggregates=[pb.Aggregate(function=pb.COUNT, alias="n")])
    return head.SerializeToString() + _field(5, filter_bytes)  # QuerySpec.filter


def _big_in_list(values: int) -> pb.QuerySpec:
    spec = pb.QuerySpec(dataset="declarations", aggregates=[pb.Aggregate(function=pb.COUNT, alias="n")])
    spec.filter.in_list.column = "year"
    spec.filter.in_list.values.extend(pb.Value(integer=2020) for _ in range(values))
    return spec


def _analyst_channel(fed: RunningFederation) -> grpc.Channel:
    kit = fed.root / "pki" / "kits" / "analyst"
    creds = grpc_channel_credentials(kit / "cert.pem", kit / "key.pem", kit / "ca.pem")
    return grpc.secure_channel(fed.address, creds, options=[("grpc.max_send_message_length", 8 << 20)])


def _raw_query(channel: grpc.Channel) -> Any:
    return channel.unary_unary(
        "/federation.v1.Analyst/Query", response_deserializer=pb.QueryResponse.FromString
    )


def _links(fed: RunningFederation) -> dict[str, int]:
    with fed.client() as client:
        stub = client._stub
        nodes = stub.Nodes(pb.NodesRequest(), timeout=10).nodes
    return {n.node_id: n.connected_since_unix_ms for n in nodes if n.connected}


def _audit(root: Path, node: str) -> list[dict[str, Any]]:
    log = root / "state" / node / "audit.log"
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- depth


def test_deep_filter_is_refused_by_rule_and_no_link_drops(fed: RunningFederation) -> None:
    links = _links(fed)
    assert set(links) == set(NODES)
    sql = "SELECT COUNT(*) AS n FROM declarations WHERE " + "NOT " * NOTS + "port = 'Rotterdam'"
    with fed.client() as client:
        with pytest.raises(FederationError) as info:
            client.query(sql)
        assert info.value.rule == "expression_too_deep"
        with pytest.raises(FederationError) as info:
            client.query(sql.replace("NOT " * NOTS, "NOT " * 98))  # used to be a raw DecodeError
        assert info.value.rule == "expression_too_deep"

    with _analyst_channel(fed) as channel:
        query = _raw_query(channel)
        # Past the SDK: decodable at the coordinator, so it is checked and refused before fan-out.
        for depth in (17, 40, NOTS):
            answer = query(_field(1, _spec_bytes(_deep_filter(depth))), timeout=30)
            assert not answer.ok and answer.error_rule == "expression_too_deep", (depth, answer.error)
            assert "Rotterdam" not in answer.error
        # Past the decoder: refused as such, by rule, instead of INTERNAL "Exception deserializing".
        for depth in (97, 99, 150):
            with pytest.raises(grpc.RpcError) as failure:
                query(_field(1, _spec_bytes(_deep_filter(depth))), timeout=30)
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failure.value.details()
            assert "[rule: expression_too_deep]" in failure.value.details()
        ok = query(
            _field(1, _spec_bytes(_deep_filter(3))),
            timeout=30,
        )
        assert ok.ok, ok.error

    # Every node link is still the one from before: nothing dropped, nothing reconnected.
    assert _links(fed) == links
    with fed.client() as client:
        assert int(client.query("SELECT COUNT(*) AS n FROM declarations")["n"].iloc[0]) > 0


def test_deep_filter_via_the_sdk_error_is_readable(fed: RunningFederation) -> None:
    sql = "SELECT COUNT(*) AS n FROM declarations WHERE " + "NOT " * 97 + "port = 'Rotterdam'"
    with fed.client() as client, pytest.raises(FederationError) as info:
        client.query(sql)
    assert info.value.rule == "expression_too_deep"
    assert "Exception" not in str(info.value) and "DecodeError" not in str(info.value)


# --------------------------------------------------------------------------- IN lists


def test_huge_in_list_is_refused_by_rule_before_any_node_is_asked(fed: RunningFederation) -> None:
    values = ", ".join("2020" for _ in range(1001))
    with fed.client() as client, pytest.raises(FederationError) as info:
        client.query(f"SELECT COUNT(*) AS n FROM declarations WHERE year IN ({values})")
    assert info.value.rule == "in_list_too_long"

    received_before = sum(1 for e in _audit(fed.root, "douane") if e["kind"] == "received")
    with _analyst_channel(fed) as channel:
        answer = _raw_query(channel)(
            pb.QueryRequest(spec=_big_in_list(200_000)).SerializeToString(), timeout=60
        )
    assert not answer.ok and answer.error_rule == "in_list_too_long", answer.error
    assert "audit" not in answer.error
    received_after = sum(1 for e in _audit(fed.root, "douane") if e["kind"] == "received")
    assert received_after == received_before, "no node is asked"


def _overlap_spec(parties: int) -> pb.OverlapSpec:
    """An overlap on ``company`` over Douane's declarations and ``parties - 1`` other datasets."""
    spec = pb.OverlapSpec(on="company")
    spec.datasets.add(node="douane", dataset="declarations")
    for i in range(1, parties):
        spec.datasets.add(node=f"partner{i:02d}", dataset="signals")
    return spec


def _received(root: Path) -> int:
    """Jobs Douane logged as received (its log is created with its first entry)."""
    if not (root / "state" / "douane" / "audit.log").exists():
        return 0
    return sum(1 for e in _audit(root, "douane") if e["kind"] == "received")


def test_overlap_past_the_party_cap_is_refused_by_rule_before_any_node_is_asked(
    fed: RunningFederation,
) -> None:
    with fed.client() as client, pytest.raises(FederationError) as info:
        client.overlap("company", [f"{d.node}.{d.dataset}" for d in _overlap_spec(13).datasets])
    assert info.value.rule == "too_many_parties" and "at most 12" in info.value.message

    received_before = _received(fed.root)
    with fed.client() as client:
        # Past the SDK: the coordinator checks the spec before it resolves or asks any node.
        answer = client._stub.Overlap(pb.OverlapRequest(spec=_overlap_spec(13)), timeout=30)
        assert not answer.ok and answer.error_rule == "too_many_parties", answer.error
        assert "at most 12 datasets" in answer.error and "names 13" in answer.error
        # At the cap the count passes; this one fails on its absent partners instead.
        answer = client._stub.Overlap(pb.OverlapRequest(spec=_overlap_spec(12)), timeout=30)
        assert not answer.ok and answer.error_rule != "too_many_parties", answer.error
    assert _received(fed.root) == received_before, "no node is asked"


# --------------------------------------------------------------------------- timeouts and workers


class _SilentNode:
    """A partner node that connects with its own certificate, keeps its heartbeat, and never answers."""

    def __init__(self, fed: RunningFederation, node_id: str) -> None:
        kit = _kit(fed, node_id, "node")
        creds = grpc_channel_credentials(kit / "cert.pem", kit / "key.pem", kit / "ca.pem")
        self.channel = grpc.secure_channel(fed.address, creds)
        self.jobs: list[str] = []
        self.stopped = threading.Event()
        info = pb.DatasetInfo(node=node_id, name="declarations", privacy_unit="company")
        self.hello = pb.NodeMessage(hello=pb.Hello(node_id=node_id, datasets=[info], version="0"))
        self.call = pb_grpc.NodeLinkStub(self.channel).Connect(self._outgoing())
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _outgoing(self) -> Iterator[pb.NodeMessage]:
        yield self.hello
        while not self.stopped.wait(0.3):
            yield pb.NodeMessage(heartbeat=pb.Heartbeat(sent_unix_ms=int(time.time() * 1000)))

    def _read(self) -> None:
        try:
            for message in self.call:
                if message.WhichOneof("kind") == "job":
                    self.jobs.append(message.job.job_id)
        except grpc.RpcError:
            pass

    def close(self) -> None:
        self.stopped.set()
        self.call.cancel()
        self.channel.close()


def _kit(fed: RunningFederation, subject: str, role: str) -> Path:
    pki_dir = fed.root / "pki"
    folder = pki_dir / "kits" / subject
    if not (folder / "cert.pem").exists():
        pki.issue(pki_dir, subject, role, org=subject, out=pki_dir / "kits")  # type: ignore[arg-type]
    return folder


def _stub_for(fed: RunningFederation, subject: str) -> tuple[grpc.Channel, pb_grpc.AnalystStub]:
    kit = _kit(fed, subject, "analyst")
    creds = grpc_channel_credentials(kit / "cert.pem", kit / "key.pem", kit / "ca.pem")
    channel = grpc.secure_channel(fed.address, creds)
    return channel, pb_grpc.AnalystStub(channel)


def _wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_timeouts_outside_the_cap_are_refused_before_anything_is_sent(fed: RunningFederation) -> None:
    silent = _SilentNode(fed, "stalling")
    try:
        _wait_for(lambda: "stalling" in _links(fed))
        spec = parse_query("SELECT COUNT(*) AS n FROM stalling.declarations")
        channel, stub = _stub_for(fed, "analyst")
        with channel:
            for timeout in (math.inf, -math.inf, math.nan, -1.0, 1e12, 1e6, MAX_TIMEOUT + 1):
                answer = stub.Query(pb.QueryRequest(spec=spec, timeout_seconds=timeout), timeout=10)
                assert not answer.ok and answer.error_rule == "invalid_timeout", (timeout, answer.error)
                overlap = pb.OverlapRequest(timeout_seconds=timeout)
                overlap.spec.on = "company"
                overlap.spec.datasets.add(node="douane", dataset="declarations")
                overlap.spec.datasets.add(node="kmar", dataset="crossings")
                answer = stub.Overlap(overlap, timeout=10)
                assert not answer.ok and answer.error_rule == "invalid_timeout", (timeout, answer.error)
        assert silent.jobs == [], "no node was sent a job with a timeout outside the cap"
        with fed.client() as client:
            for timeout in (math.inf, math.nan, -5.0):
                with pytest.raises(FederationError) as info:
                    client.query("SELECT COUNT(*) AS n FROM declarations", timeout=timeout)
                assert info.value.rule == "invalid_timeout"
    finally:
        silent.close()


def test_one_analyst_cannot_take_every_worker(fed: RunningFederation) -> None:
    silent = _SilentNode(fed, "sleepy")
    try:
        _wait_for(lambda: "sleepy" in _links(fed))
        hold = pb.QueryRequest(
            spec=parse_query("SELECT COUNT(*) AS n FROM sleepy.declarations"), timeout_seconds=8.0
        )
        channel, stub = _stub_for(fed, "analyst")
        with channel, futures.ThreadPoolExecutor(max_workers=12) as pool:
            # One analyst fires 12 long queries at once at a node that never answers.
            held = [pool.submit(stub.Query, hold, timeout=60) for _ in range(12)]
            _wait_for(lambda: len(silent.jobs) >= PER_ANALYST)
            refused = [f.result(timeout=30) for f in held if f.done()]
            assert len(refused) >= 12 - PER_ANALYST
            assert all(r.error_rule == "too_many_concurrent_jobs" for r in refused), refused
            assert len(silent.jobs) == PER_ANALYST
            # While that analyst holds its share, another analyst is answered at once.
            other_channel, other = _stub_for(fed, "bea")
            with other_channel:
                answer = other.Query(
                    pb.QueryRequest(spec=parse_query("SELECT COUNT(*) AS n FROM douane.declarations")),
                    timeout=30,
                )
                assert answer.ok, answer.error
                assert other.Nodes(pb.NodesRequest(), timeout=10).nodes
            assert not all(f.done() for f in held), "the held queries are still waiting for the node"
            finished = [f.result(timeout=60) for f in held]
        timed_out = [r for r in finished if r.error_rule != "too_many_concurrent_jobs"]
        assert len(timed_out) == PER_ANALYST
        assert all("did not answer" in r.error for r in timed_out), timed_out
        # The slots are free again once the held jobs ended.
        with fed.client() as client:
            assert int(client.query("SELECT COUNT(*) AS n FROM douane.declarations")["n"].iloc[0]) > 0
    finally:
        silent.close()


# --------------------------------------------------------------------------- a hostile coordinator


class _HostileCoordinator:
    """A coordinator under the attacker's control: real gRPC and TLS, it sends any bytes it likes."""

    def __init__(self, kit: Path) -> None:
        self.outbox: queue.Queue[bytes | None] = queue.Queue()
        self.inbox: queue.Queue[pb.NodeMessage] = queue.Queue()
        self.streams = 0
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[("grpc.max_send_message_length", 8 << 20)],
        )
        handler = grpc.stream_stream_rpc_method_handler(
            self._connect,
            request_deserializer=pb.NodeMessage.FromString,
            response_serializer=lambda data: data,
        )
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("federation.v1.NodeLink", {"Connect": handler}),)
        )
        creds = grpc_server_credentials(kit / "cert.pem", kit / "key.pem", kit / "ca.pem")
        self.address = f"127.0.0.1:{free_port()}"
        self.server.add_secure_port(self.address, creds)
        self.server.start()

    def _connect(self, requests: Iterator[pb.NodeMessage], context: grpc.ServicerContext) -> Iterator[bytes]:
        self.streams += 1

        def read() -> None:
            try:
                for message in requests:
                    self.inbox.put(message)
            except grpc.RpcError:
                pass

        threading.Thread(target=read, daemon=True).start()
        yield pb.CoordinatorMessage(
            welcome=pb.Welcome(coordinator_id="c", heartbeat_seconds=1)
        ).SerializeToString()
        while context.is_active():
            try:
                data = self.outbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if data is None:
                return
            yield data

    def send_job(self, job_bytes: bytes) -> None:
        self.outbox.put(_field(2, job_bytes))  # CoordinatorMessage.job

    def answer(self, job_id: str, timeout: float = 30.0) -> pb.JobResponse:
        """The node's response to ``job_id``; heartbeats and other answers are skipped."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.inbox.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if message.WhichOneof("kind") == "response" and message.response.job_id == job_id:
                return message.response
        raise AssertionError(f"no answer to job {job_id} within {timeout:g}s")

    def hello(self, timeout: float = 60.0) -> pb.Hello:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if message.WhichOneof("kind") == "hello":
                return message.hello
        raise AssertionError("the node never said hello")

    def stop(self) -> None:
        self.outbox.put(None)
        self.server.stop(1).wait()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_HostileCoordinator, Path]]:
    root = tmp_path_factory.mktemp("hostile")
    # The kit is issued first, for the address the fake coordinator will listen on.
    probe = write_scenario(root, seed=11, rows=2000, coordinator="127.0.0.1:1", formats={"douane": "csv"})
    coordinator = _HostileCoordinator(root / "pki" / "kits" / "coordinator")
    config = probe["douane"]
    config.write_text(config.read_text().replace("127.0.0.1:1", coordinator.address))
    procs = LocalFederation(
        coordinator_config=probe["coordinator"],
        node_configs={"douane": config},
        address=coordinator.address,
        log_dir=root / "logs",
    )
    procs.start_node("douane")
    try:
        assert coordinator.hello().node_id == "douane"
        yield coordinator, root
    finally:
        procs.stop_all()
        coordinator.stop()


def test_node_refuses_an_overlap_past_the_party_cap_before_it_is_received(
    hostile: tuple[_HostileCoordinator, Path],
) -> None:
    coordinator, root = hostile
    for parties, job_id in ((13, "overlap-13"), (12, "overlap-12")):
        step = pb.OverlapStep(
            job_id=job_id,
            phase=pb.OVERLAP_PREPARE,
            party="douane.declarations",
            spec=_overlap_spec(parties),
            parties=parties,
        )
        coordinator.send_job(
            pb.JobRequest(job_id=job_id, requested_by="mallory", overlap=step).SerializeToString()
        )
    refused = coordinator.answer("overlap-13")
    assert refused.WhichOneof("outcome") == "refusal"
    assert (refused.refusal.rule, refused.refusal.node) == ("too_many_parties", "douane"), refused.refusal
    assert "at most 12 datasets" in refused.refusal.reason
    # Twelve datasets: within the cap, the node prepares its set and answers its hop key.
    accepted = coordinator.answer("overlap-12")
    assert accepted.WhichOneof("outcome") == "overlap" and len(accepted.overlap.hop_key) == 32, accepted
    finish = pb.OverlapStep(job_id="overlap-12", phase=pb.OVERLAP_FINISH, party="douane.declarations")
    coordinator.send_job(pb.JobRequest(job_id="finish-12", overlap=finish).SerializeToString())
    assert coordinator.answer("finish-12").WhichOneof("outcome") == "overlap"
    audit = _audit(root, "douane")
    assert any(e["job_id"] == "overlap-13" and e["kind"] == "refused" for e in audit)
    assert not any(e["job_id"] == "overlap-13" and e["kind"] == "received" for e in audit)


def test_node_refuses_jobs_it_cannot_decode_or_that_cross_the_bounds_and_keeps_its_link(
    hostile: tuple[_HostileCoordinator, Path],
) -> None:
    coordinator, root = hostile
    cases = {
        # Past the decoder's depth limit: the node reads only the envelope and refuses by id.
        "too-deep-to-decode": (_spec_bytes(_deep_filter(150)), "expression_too_deep"),
        # Decodable, past the spec bounds.
        "too-deep": (_spec_bytes(_deep_filter(40)), "expression_too_deep"),
        "long-in-list": (_big_in_list(200_000).SerializeToString(), "in_list_too_long"),
    }
    for job_id, (spec, rule) in cases.items():
        job = pb.JobRequest(job_id=job_id, requested_by="mallory").SerializeToString() + _field(2, spec)
        coordinator.send_job(job)
        answer = coordinator.answer(job_id)
        assert answer.WhichOneof("outcome") == "refusal", job_id
        assert answer.refusal.rule == rule and answer.refusal.node == "douane", answer.refusal
    # Garbage where a job should be: refused too (its id is unreadable, so it is refused as "").
    coordinator.outbox.put(_field(2, b"\x0a\x03bad\x12\xff\xff"))
    garbled = coordinator.answer("")
    assert garbled.refusal.rule == "malformed_request"

    # The same link still serves: a well-formed job is answered on it.
    coordinator.send_job(pb.JobRequest(job_id="after", budget=pb.BudgetQuery()).SerializeToString())
    assert coordinator.answer("after").job_id == "after"
    assert coordinator.streams == 1, "the node never reconnected: its link was not dropped"
    refused = {e["job_id"]: e["payload"]["rule"] for e in _audit(root, "douane") if e["kind"] == "refused"}
    for job_id, (_, rule) in cases.items():
        assert refused.get(job_id) == rule, refused
    received = {e["job_id"] for e in _audit(root, "douane") if e["kind"] == "received"}
    assert not received & set(cases), "a job past the bounds is refused before it is logged as received"


# --------------------------------------------------------------------------- certificate kits


def _kit_copy(source: Path, dest: Path, ca: Path | None = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (dest / name).write_bytes((source / name).read_bytes())
    if ca is not None:
        (dest / "ca.pem").write_bytes(ca.read_bytes())
    return dest


def _cli_nodes(fed: RunningFederation, kit: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FEDERATION_TLS_DIR": str(kit)}
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", "nodes", "--coordinator", fed.address],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_bad_certificate_kits_fail_with_the_rule_not_socket_closed(
    fed: RunningFederation, tmp_path: Path
) -> None:
    pki_dir = fed.root / "pki"
    now = dt.datetime.now(dt.UTC)
    out = tmp_path / "kits"
    expired = pki.issue(pki_dir, "ex-analyst", "analyst", days=30, now=now - dt.timedelta(days=400), out=out)
    early = pki.issue(pki_dir, "new-analyst", "analyst", now=now + dt.timedelta(days=2), out=out)
    other = tmp_path / "other-root"
    pki.init_root(other, name="Another Federation Root")
    foreign = pki.issue(other, "stranger", "analyst", out=tmp_path / "foreign")
    # A foreign kit with this federation's ca.pem put in: its certificate does not chain to it.
    mixed = _kit_copy(foreign.folder, tmp_path / "mixed", ca=pki_dir / "ca.pem")
    # A foreign kit trusting both roots: the kit checks out, the coordinator refuses it.
    both = _kit_copy(foreign.folder, tmp_path / "both")
    (both / "ca.pem").write_bytes((pki_dir / "ca.pem").read_bytes() + (other / "ca.pem").read_bytes())

    cases = {
        expired.folder: "certificate_expired",
        early.folder: "certificate_not_yet_valid",
        mixed: "certificate_untrusted",
        foreign.folder: "certificate_untrusted",  # the coordinator's certificate is foreign to this kit
        both: "certificate_untrusted",  # the coordinator does not trust this kit's certificate
    }
    for kit, rule in cases.items():
        with pytest.raises(FederationError) as info:
            with Client(fed.address, tls_dir=kit, timeout=10) as client:
                client.nodes()
        assert info.value.rule == rule, (kit, str(info.value))
        assert "Socket closed" not in str(info.value)
        done = _cli_nodes(fed, kit)
        assert done.returncode != 0 and f"[rule: {rule}]" in done.stderr, (kit, done.stderr)
        assert "Traceback" not in done.stderr and "Socket closed" not in done.stderr
    # A coordinator that is down is still reported as unreachable, not as a certificate problem.
    with pytest.raises(FederationError) as info:
        with Client(
            f"127.0.0.1:{free_port()}", tls_dir=fed.root / "pki" / "kits" / "analyst", timeout=5
        ) as c:
            c.nodes()
    assert info.value.rule == "coordinator_unreachable"
