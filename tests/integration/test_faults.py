"""Faults with real processes: slow, killed and restarted parties; oversized messages; the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protocols import federation_pb2 as pb
from protocols import federation_pb2_grpc as pb_grpc
from protocols.errors import FederationError
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation, wait_disconnected

NODES = ["douane", "kmar", "belastingdienst", "politie"]


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    """A federation of its own: these tests stop, kill and restart its processes."""
    running, schema = start_federation(tmp_path_factory.mktemp("faults"), postgres_dsn, nodes=NODES)
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def _channel(faulty: RunningFederation) -> grpc.Channel:
    from protocols.identity import grpc_channel_credentials

    kit = faulty.root / "pki" / "kits" / "analyst"
    creds = grpc_channel_credentials(kit / "cert.pem", kit / "key.pem", kit / "ca.pem")
    return grpc.secure_channel(faulty.address, creds)


def test_health_service_reports_serving(faulty: RunningFederation) -> None:
    with _channel(faulty) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "federation.v1.Analyst"):
            status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING


def test_slow_node_times_out_and_is_named(faulty: RunningFederation) -> None:
    proc = faulty.procs.procs["kmar"]
    try:
        with faulty.client() as fed:  # connected first, so the query starts within kmar's heartbeat window
            fed.nodes()
            os.kill(proc.pid, signal.SIGSTOP)  # a real hang: the process is alive but does not answer
            df = fed.query("SELECT COUNT(*) AS n FROM signals", timeout=2)
        assert "kmar" in df.attrs["missing"]
        assert "did not answer within 2s" in df.attrs["missing"]["kmar"]
        assert set(df.attrs["answered"]) == set(NODES) - {"kmar"}
        with faulty.client() as fed, pytest.raises(FederationError) as info:
            fed.query("SELECT COUNT(*) AS n FROM signals", timeout=2, min_nodes=4)
        assert info.value.rule == "min_nodes"
        # Within three missed heartbeats kmar is still asked and times out; after that the
        # coordinator no longer asks it but still names it as not connected.
        message = str(info.value)
        assert "kmar: timeout" in message or "kmar: disconnected (not connected" in message, message
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    faulty.procs.wait_for_nodes(set(NODES), timeout=30)


def test_node_silent_past_its_heartbeats_is_named_as_not_connected(faulty: RunningFederation) -> None:
    proc = faulty.procs.procs["kmar"]
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        with faulty.client() as fed:
            wait_disconnected(fed, "kmar")  # after three missed heartbeats kmar is no longer asked
            df = fed.query("SELECT COUNT(*) AS n FROM signals", timeout=5)
            assert "not connected: last heard" in df.attrs["missing"]["kmar"]
            assert "kmar" not in df.attrs["answered"]
            with pytest.raises(FederationError) as info:
                fed.query("SELECT COUNT(*) AS n FROM signals", timeout=5, min_nodes=4)
        assert info.value.rule == "min_nodes"
        assert "kmar: disconnected (not connected" in str(info.value)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    faulty.procs.wait_for_nodes(set(NODES), timeout=30)


def test_node_killed_mid_query_is_named(faulty: RunningFederation) -> None:
    proc = faulty.procs.procs["politie"]
    os.kill(proc.pid, signal.SIGSTOP)  # hold the node inside the query, then kill it
    result: dict[str, object] = {}

    def ask() -> None:
        with faulty.client() as fed:
            try:
                result["df"] = fed.query(
                    "SELECT region, COUNT(*) AS n FROM signals GROUP BY region", timeout=20
                )
            except FederationError as exc:
                result["error"] = exc

    asker = threading.Thread(target=ask)
    started = time.monotonic()
    asker.start()
    time.sleep(1.0)
    faulty.procs.kill("politie")
    asker.join(timeout=30)
    assert not asker.is_alive()
    df = result["df"]
    assert "politie" in df.attrs["missing"]  # type: ignore[attr-defined]
    assert (
        "disconnected" in df.attrs["missing"]["politie"] or "did not answer" in df.attrs["missing"]["politie"]
    )  # type: ignore[index]
    assert (
        time.monotonic() - started < 20
    )  # the coordinator noticed the dead link, it did not wait out the timeout
    faulty.procs.start_node("politie")
    faulty.procs.wait_for_nodes(set(NODES), timeout=60)


def test_nodes_reconnect_after_coordinator_restart(faulty: RunningFederation) -> None:
    faulty.procs.stop("coordinator")
    with faulty.client(timeout=2) as fed, pytest.raises(FederationError) as info:
        fed.nodes()
    assert info.value.rule == "coordinator_unreachable"
    faulty.procs.start_coordinator()
    faulty.procs.wait_for_nodes(set(NODES), timeout=60)  # nodes dial back in with backoff
    with faulty.client() as fed:
        assert fed.query("SELECT COUNT(*) AS n FROM signals").attrs["answered"]


def test_oversized_request_is_refused_cleanly(faulty: RunningFederation) -> None:
    spec = pb.QuerySpec(dataset="declarations")
    spec.aggregates.add(function=pb.COUNT, alias="n")
    spec.filter.in_list.column = "port"
    spec.filter.in_list.values.extend(pb.Value(text="x" * 1000) for _ in range(5000))  # ~5 MB
    with _channel(faulty) as channel, pytest.raises(grpc.RpcError) as info:
        pb_grpc.AnalystStub(channel).Query(pb.QueryRequest(spec=spec), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    from federation.client import _rpc_error

    assert _rpc_error(info.value, faulty.address).rule == "oversized_request"
    with faulty.client() as fed, pytest.raises(FederationError) as sdk:
        fed.query(
            "SELECT COUNT(*) FROM declarations WHERE port IN (" + ",".join(["'Rotterdam'"] * 5000) + ")"
        )
    assert sdk.value.rule == "oversized_request"


def test_cli_formats_and_clean_errors(faulty: RunningFederation) -> None:
    env = {
        "FEDERATION_COORDINATOR": faulty.address,
        "FEDERATION_TLS_DIR": str(faulty.root / "pki" / "kits" / "analyst"),
    }
    ok = _cli(
        "query", "--format", "csv", "SELECT port, COUNT(*) AS n FROM declarations GROUP BY port", env=env
    )
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.strip().splitlines()
    assert lines[0] == "port,n" and len(lines) == 5
    js = _cli("query", "-f", "json", "SELECT COUNT(*) AS n FROM crossings", env=env)
    assert js.returncode == 0 and '"answered"' in js.stdout
    for sql in (
        "SELECT weight, COUNT(*) FROM declarations GROUP BY weight",
        "DROP TABLE x",
        "SELECT * FROM declarations",
    ):
        bad = _cli("query", sql, env=env)
        assert bad.returncode != 0
        assert "Traceback" not in bad.stderr + bad.stdout
        assert "rule:" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    down = _cli("nodes", "--coordinator", "127.0.0.1:1", env=env)
    assert (
        down.returncode != 0
        and "cannot reach the coordinator" in down.stderr
        and "Traceback" not in down.stderr
    )


def test_audit_verify_cli_detects_tampering(faulty: RunningFederation, tmp_path) -> None:
    config = faulty.paths["douane"]
    good = _cli("audit", "verify", "--config", str(config))
    assert good.returncode == 0, good.stderr
    assert "intact" in good.stdout and "signatures checked" in good.stdout

    # A privacy officer's copy of the node folder with one entry edited.
    copy = tmp_path / "copy"
    shutil.copytree(config.parent.parent, copy, ignore=shutil.ignore_patterns("data", "logs"))
    log = copy / "state" / "douane" / "audit.log"
    lines = log.read_text().splitlines()
    assert len(lines) >= 3
    entry = json.loads(lines[1])
    entry["payload"]["edited"] = True
    lines[1] = json.dumps(entry)
    log.write_text("\n".join(lines) + "\n")
    bad = _cli("audit", "verify", "--config", str(copy / "nodes" / "douane.toml"))
    assert bad.returncode == 1
    assert "line 2" in bad.stderr
