"""Certificate sign-in to the officer's console over HTTPS (mutual TLS; docs/console.md).

The node's console serves HTTPS with a certificate from the federation's development PKI and asks
browsers for a client certificate from the same root. A request carries a client certificate as a
browser with an imported kit would; the console takes only the node's own officer or operator.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from federation import pki
from federation.scenario import write_scenario
from nodes.audit import export
from nodes.config import load_node_config
from nodes.daemon import NodeDaemon


class Node:
    def __init__(self, root: Path) -> None:
        paths = write_scenario(root, rows=1000, formats={"belastingdienst": "parquet"})
        self.pki = root / "pki"
        kits = self.pki / "kits"
        for subject, role, org in (
            ("officer-douane", "privacy_officer", "douane"),
            ("officer-kmar", "privacy_officer", "kmar"),
            ("analyst-douane", "analyst", "douane"),
            ("revoked-officer", "privacy_officer", "douane"),
        ):
            pki.issue(self.pki, subject, role, org=org, out=kits)
        pki.revoke(self.pki, "revoked-officer", "key_compromise")
        self.kits = kits
        raw = tomllib.loads(paths["douane"].read_text())
        raw["console"] = {
            "listen": "127.0.0.1:0",
            # Any server certificate for 127.0.0.1 will do; the development PKI issues serverAuth to the
            # coordinator only, so its kit stands in for the partner's own web certificate here.
            "tls_cert": str(kits / "coordinator" / "cert.pem"),
            "tls_key": str(kits / "coordinator" / "key.pem"),
            "tls_ca": str(self.pki / "ca.pem"),
            "tls_crl": str(self.pki / "crl.pem"),
        }
        paths["douane"].write_text(tomli_w.dumps(raw))
        self.config = load_node_config(paths["douane"])
        self.daemon = NodeDaemon(self.config)
        assert self.daemon.console_server is not None
        self.port = self.daemon.console_server.port
        assert self.daemon.console_server.url.startswith("https://")

    def get(self, path: str, kit: str | None) -> tuple[int, str, str]:
        """GET over HTTPS, presenting ``kit``'s certificate (or none); (status, location, body)."""
        context = ssl.create_default_context(cafile=str(self.pki / "ca.pem"))
        if kit is not None:
            context.load_cert_chain(self.kits / kit / "cert.pem", self.kits / kit / "key.pem")
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=15)
        try:
            conn.request("GET", path)
            answer = conn.getresponse()
            return answer.status, answer.getheader("location") or "", answer.read().decode()
        finally:
            conn.close()

    def close(self) -> None:
        self.daemon.stop()
        runner = threading.Thread(target=self.daemon.run)
        runner.start()
        runner.join(timeout=15)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("console-certificate"))
    yield n
    n.close()


def test_the_nodes_own_officer_signs_in_with_a_certificate(node: Node) -> None:
    status, location, _ = node.get("/signin", "officer-douane")
    assert (status, location) == (303, "/")
    entries = [e["payload"] for e in export(node.config.state_dir / "audit.log") if e["kind"] == "console"]
    assert entries[-1]["person"] == "officer-douane (certificate)" and entries[-1]["outcome"] == "done"


@pytest.mark.parametrize(
    ("kit", "rule"),
    [
        ("officer-kmar", "wrong_role"),  # another organisation's officer
        ("analyst-douane", "wrong_role"),  # not an officer or operator
        ("revoked-officer", "revoked"),
    ],
)
def test_other_certificates_are_refused_by_rule(node: Node, kit: str, rule: str) -> None:
    status, _, body = node.get("/signin", kit)
    assert status == 403 and f"[rule: {rule}]" in body and "Traceback" not in body
    assert "Sign-in token" in body  # the token still works for whoever holds it


def test_without_a_certificate_the_token_form_is_shown(node: Node) -> None:
    status, _, body = node.get("/signin", None)
    assert status == 200 and "signs in with your federation certificate" in body
    assert node.get("/", None)[:2] == (303, "/signin")
