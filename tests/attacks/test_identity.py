"""Identity attacks on a real TLS federation: foreign, revoked and mis-roled certificates."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from federation import pki
from protocols import federation_pb2 as pb
from protocols import federation_pb2_grpc as pb_grpc
from protocols.errors import FederationError
from protocols.identity import grpc_channel_credentials
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

NODES = ["douane", "kmar"]


@pytest.fixture(scope="module")
def fed_tls(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    running, schema = start_federation(tmp_path_factory.mktemp("attacks"), postgres_dsn, nodes=NODES)
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _stub(address: str, kit: Path) -> pb_grpc.AnalystStub:
    creds = grpc_channel_credentials(kit / "cert.pem", kit / "key.pem", kit / "ca.pem")
    return pb_grpc.AnalystStub(grpc.secure_channel(address, creds))


def test_certificate_from_another_root_fails_the_handshake(
    fed_tls: RunningFederation, tmp_path: Path
) -> None:
    pki.init_root(tmp_path / "rogue")
    rogue = pki.issue(tmp_path / "rogue", "analyst", "analyst", out=tmp_path / "rogue-kits")
    # The rogue kit trusts its own root, so also the server is unknown to it; give it the real root
    # so the failure is the coordinator refusing the client, not the client refusing the server.
    (rogue.folder / "ca.pem").write_bytes((fed_tls.root / "pki" / "ca.pem").read_bytes())
    with pytest.raises(grpc.RpcError) as info:
        _stub(fed_tls.address, rogue.folder).Nodes(pb.NodesRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_is_refused(fed_tls: RunningFederation) -> None:
    with grpc.insecure_channel(fed_tls.address) as channel, pytest.raises(grpc.RpcError) as info:
        pb_grpc.AnalystStub(channel).Nodes(pb.NodesRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_revoked_analyst_is_refused_with_reason(fed_tls: RunningFederation) -> None:
    pki_dir = fed_tls.root / "pki"
    kit = pki.issue(pki_dir, "analyst-leaver", "analyst", org="mdc", out=pki_dir / "kits")
    assert _stub(fed_tls.address, kit.folder).Nodes(pb.NodesRequest(), timeout=5).nodes
    pki.revoke(pki_dir, "analyst-leaver", "affiliation_changed")
    # The coordinator reads its CRL on every call: install the new one where its config points.
    crl_target = fed_tls.root / "pki" / "kits" / "coordinator" / "crl.pem"
    crl_target.write_bytes((pki_dir / "crl.pem").read_bytes())
    with pytest.raises(grpc.RpcError) as info:
        _stub(fed_tls.address, kit.folder).Nodes(pb.NodesRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "revoked" in info.value.details()


def test_node_certificate_cannot_call_the_analyst_service(fed_tls: RunningFederation) -> None:
    with pytest.raises(FederationError) as info:
        with fed_tls.client(tls_dir=fed_tls.root / "pki" / "kits" / "douane") as fed:
            fed.query("SELECT COUNT(*) AS n FROM signals")
    assert info.value.rule == "wrong_role" and "role 'node'" in str(info.value)


def _node_with_kit(
    fed_tls: RunningFederation, node: str, kit: str, tmp_path: Path, expect: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    """Start ``node``'s config with another party's kit; it must not get in.

    The node's output is read until one of ``expect`` shows (at most 60 s: a loaded machine starts
    a node slowly), then the node is stopped.
    """
    config = fed_tls.paths[node].read_text()
    real_kit = fed_tls.root / "pki" / "kits"
    lines = [
        f'tls_dir = "{real_kit / kit}"' if line.startswith("tls_dir") else line
        for line in config.splitlines()
    ]
    lines = [
        line.replace('state_dir = "', f'state_dir = "{tmp_path}/') if line.startswith("state_dir") else line
        for line in lines
    ]
    path = fed_tls.paths[node].parent / f"{node}-as-{kit}.toml"
    path.write_text("\n".join(lines) + "\n")
    log = tmp_path / f"{node}-as-{kit}.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "federation.cli", "node", "start", "--config", str(path)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if any(marker in log.read_text() for marker in expect):
                break
            time.sleep(0.2)
        proc.terminate()
        proc.wait(timeout=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, log.read_text(), "")


def test_analyst_certificate_used_as_a_node_is_refused(fed_tls: RunningFederation, tmp_path: Path) -> None:
    result = _node_with_kit(fed_tls, "kmar", "analyst", tmp_path, ("PERMISSION_DENIED", "wrong_role"))
    assert "PERMISSION_DENIED" in result.stdout or "wrong_role" in result.stdout, result.stdout
    with fed_tls.client() as fed:
        nodes = fed.nodes()
    assert set(nodes[nodes["connected"]]["node"]) == set(NODES)


def test_node_cannot_impersonate_another_node(fed_tls: RunningFederation, tmp_path: Path) -> None:
    # kmar's config (node id kmar) presenting douane's certificate: the node's own check refuses.
    result = _node_with_kit(fed_tls, "kmar", "douane", tmp_path, ("wrong_identity",))
    assert "the certificate names 'douane', but this node is 'kmar'" in result.stdout, result.stdout


def test_coordinator_refuses_a_hello_naming_another_node(fed_tls: RunningFederation) -> None:
    # A node that skips its own check: the coordinator refuses the link, naming the rule.
    kit = fed_tls.root / "pki" / "kits" / "douane"
    creds = grpc_channel_credentials(kit / "cert.pem", kit / "key.pem", kit / "ca.pem")
    with grpc.secure_channel(fed_tls.address, creds) as channel:
        hello = pb.NodeMessage(hello=pb.Hello(node_id="kmar", version="0"))
        answers = pb_grpc.NodeLinkStub(channel).Connect(iter([hello]), timeout=10)
        first = next(iter(answers))
    assert first.WhichOneof("kind") == "reject" and first.reject.rule == "wrong_identity"
    assert "cannot connect as node 'kmar'" in first.reject.reason


def test_node_without_tls_refuses_to_start(fed_tls: RunningFederation, tmp_path: Path) -> None:
    config = fed_tls.paths["kmar"].read_text()
    plain = "\n".join(line for line in config.splitlines() if not line.startswith("tls_dir"))
    path = tmp_path / "kmar-plain.toml"
    path.write_text(plain.replace('path = "../', f'path = "{fed_tls.paths["kmar"].parent}/../') + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "federation.cli", "node", "start", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "no TLS configured" in done.stderr and "Traceback" not in done.stderr
