"""Certificate sign-in to the coordinator's operator dashboard over HTTPS (mutual TLS; docs/dashboard.md).

The dashboard serves HTTPS with a certificate from a development PKI and asks browsers for a client
certificate from the same root; a request presents a kit as a browser with an imported kit would.
Only a federation admin signs in; officers, analysts and revoked admins are refused by rule.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.config import CoordinatorConfig
from coordinator.service import Coordinator
from federation import pki
from federation.processes import free_port
from protocols.web.settings import parse_console


class Dashboard:
    def __init__(self, root: Path) -> None:
        self.pki = root / "pki"
        pki.init_root(self.pki)
        self.kits = self.pki / "kits"
        for subject, role, org in (
            ("coordinator", "coordinator", None),
            ("admin-mdc", "admin", "mdc"),
            ("officer-douane", "privacy_officer", "douane"),
            ("analyst-mdc", "analyst", "mdc"),
            ("former-admin", "admin", "mdc"),
        ):
            pki.issue(self.pki, subject, role, org=org, out=self.kits)  # type: ignore[arg-type]
        pki.revoke(self.pki, "former-admin", "cessation_of_operation")
        state = root / "state"
        console = {
            "listen": "127.0.0.1:0",
            # The development PKI issues serverAuth to the coordinator: its kit serves HTTPS here.
            "tls_cert": str(self.kits / "coordinator" / "cert.pem"),
            "tls_key": str(self.kits / "coordinator" / "key.pem"),
            "tls_ca": str(self.pki / "ca.pem"),
            "tls_crl": str(self.pki / "crl.pem"),
        }
        config = CoordinatorConfig(
            listen=f"127.0.0.1:{free_port()}",
            state_dir=state,
            insecure=True,
            console=parse_console(console, root, default_port=0),
        )
        self.coordinator = Coordinator(config)
        self.coordinator.start()
        assert self.coordinator.dashboard is not None
        self.dashboard = self.coordinator.dashboard
        assert self.dashboard.url.startswith("https://")

    def get(self, path: str, kit: str | None) -> tuple[int, str, str]:
        """GET over HTTPS presenting ``kit``'s certificate (or none): (status, location, body)."""
        context = ssl.create_default_context(cafile=str(self.pki / "ca.pem"))
        if kit is not None:
            context.load_cert_chain(self.kits / kit / "cert.pem", self.kits / kit / "key.pem")
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.dashboard.server.port, context=context, timeout=15
        )
        try:
            conn.request("GET", path)
            answer = conn.getresponse()
            return answer.status, answer.getheader("location") or "", answer.read().decode()
        finally:
            conn.close()

    def log(self) -> list[dict]:
        return [json.loads(line) for line in self.dashboard.log.path.read_text().splitlines()]


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    d = Dashboard(tmp_path_factory.mktemp("dashboard-certificate"))
    yield d
    d.coordinator.stop()


def test_an_admin_signs_in_with_a_certificate(dashboard: Dashboard) -> None:
    status, location, _ = dashboard.get("/signin", "admin-mdc")
    assert (status, location) == (303, "/")
    last = dashboard.log()[-1]
    assert last["person"] == "admin-mdc (certificate)" and last["action"] == "/signin"
    assert last["fields"] == {"method": "certificate"} and last["outcome"] == "done"


@pytest.mark.parametrize(
    ("kit", "rule"),
    [
        ("officer-douane", "wrong_role"),  # a partner's officer: the node's console is theirs
        ("analyst-mdc", "wrong_role"),
        ("former-admin", "revoked"),
    ],
)
def test_other_certificates_are_refused_by_rule(dashboard: Dashboard, kit: str, rule: str) -> None:
    status, _, body = dashboard.get("/signin", kit)
    assert status == 403 and f"[rule: {rule}]" in body and "Traceback" not in body
    assert dashboard.get("/nodes", kit)[:2] == (303, "/signin")  # no page without a session
    assert dashboard.log()[-1]["outcome"].startswith("refused")


def test_without_a_certificate_the_token_still_signs_in(dashboard: Dashboard) -> None:
    status, _, body = dashboard.get("/signin", None)
    assert status == 200 and 'name="token"' in body
    assert dashboard.get("/", None)[:2] == (303, "/signin")
