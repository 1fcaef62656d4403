"""Attacks on the officer's console of a real node (docs/security.md, "Officer's console").

The node is built as ``federation node start`` builds it (``NodeDaemon``: state lock, ledger,
approvals, signed audit log) with a ``[console]`` table, and its console served by uvicorn on
loopback; it does not dial a coordinator, which the console does not need. Requests go over real
HTTP, as a browser or a hostile local program would send them.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from federation.scenario import write_scenario
from nodes.audit import export, verify
from nodes.config import load_node_config
from nodes.daemon import NodeDaemon
from protocols.errors import ConfigError
from protocols.web.settings import parse_console
from tests.web_client import WebClient


class Node:
    def __init__(self, root: Path) -> None:
        paths = write_scenario(root, rows=1000, tls=False, formats={"belastingdienst": "parquet"})
        raw = tomllib.loads(paths["douane"].read_text())
        raw["console"] = {"listen": "127.0.0.1:0"}  # any free loopback port
        paths["douane"].write_text(tomli_w.dumps(raw))
        self.config = load_node_config(paths["douane"])
        self.daemon = NodeDaemon(self.config)
        assert self.daemon.console_server is not None and self.daemon.console is not None
        self.url = self.daemon.console_server.url
        self.token = self.daemon.console.token

    def signed_in(self, name: str = "Officer Douane") -> WebClient:
        client = WebClient(self.url)
        assert client.sign_in(self.token.current, name).status == 303
        return client

    def budgets(self) -> list[tuple[str, str, float]]:
        return [(s.dataset, s.project, s.total_epsilon) for s in self.daemon.ctx.ledger.show()]

    def console_entries(self) -> list[dict]:
        return [e["payload"] for e in export(self.config.state_dir / "audit.log") if e["kind"] == "console"]

    def close(self) -> None:
        self.daemon.stop()
        runner = threading.Thread(target=self.daemon.run)  # stopped at once: it only cleans up
        runner.start()
        runner.join(timeout=15)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("console-attacks"))
    yield n
    n.close()


BUDGET = {"dataset": "declarations", "project": "intruder", "epsilon": "50", "delta": "1e-6"}


def test_no_session_no_page_and_no_change(node: Node) -> None:
    stranger = WebClient(node.url)
    for path in (
        "/",
        "/budgets",
        "/approvals",
        "/releases",
        "/audit",
        "/audit/export.json",
        "/audit/export.csv",
    ):
        answer = stranger.get(path)
        assert answer.status == 303 and answer.headers["location"] == "/signin", path
    refused = stranger.post("/budgets/set", BUDGET)
    assert refused.status == 403
    forged = WebClient(node.url)
    forged.jar.set_cookie(_cookie("console_session", "guessed-session-id"))
    assert forged.post("/budgets/set", {**BUDGET, "csrf": "guessed"}).status == 403
    assert ("declarations", "intruder", 50.0) not in node.budgets()


def test_changing_request_without_or_with_a_wrong_csrf_token_is_refused_and_audited(node: Node) -> None:
    officer = node.signed_in()
    other = node.signed_in("Second Officer")
    assert officer.post("/budgets/set", BUDGET).status == 403  # none
    assert officer.post("/budgets/set", {**BUDGET, "csrf": "x" * 43}).status == 403  # wrong
    # Another session's token (say, leaked from another tab or person) does not fit this session.
    assert officer.post("/budgets/set", {**BUDGET, "csrf": other.get("/").csrf()}).status == 403
    assert ("declarations", "intruder", 50.0) not in node.budgets()
    refusals = [p for p in node.console_entries() if p["outcome"] == "refused: CSRF token"]
    assert len(refusals) >= 3 and all(p["person"] == "Officer Douane (token)" for p in refusals[-3:])
    # With its own token the same request goes through, recorded with the person, not the OS login.
    done = officer.post("/budgets/set", {**BUDGET, "csrf": officer.get("/budgets").csrf()})
    assert done.status == 303
    assert ("declarations", "intruder", 50.0) in node.budgets()
    history = node.daemon.ctx.ledger.history("declarations", "intruder")
    assert history[-1].by == "Officer Douane (token)"


def test_sign_in_token_is_private_one_time_and_expires(node: Node) -> None:
    assert stat.S_IMODE(os.stat(node.token.path).st_mode) == 0o600
    token = node.token.path.read_text().strip()
    assert WebClient(node.url).sign_in(token).status == 303
    reused = WebClient(node.url).sign_in(token)
    assert reused.status == 403 and reused.headers.get("set-cookie") is None
    assert node.token.path.read_text().strip() != token
    # An unused token stops working after token_minutes.
    lifetime, node.token.lifetime = node.token.lifetime, 0.2
    try:
        stale = node.token.current
        time.sleep(0.3)
        assert WebClient(node.url).sign_in(stale).status == 403
    finally:
        node.token.lifetime = lifetime
    # Whoever reaches the sign-in page learns no local path.
    assert str(node.config.state_dir) not in WebClient(node.url).get("/signin").text + reused.text
    failed = [p for p in node.console_entries() if p["action"] == "/signin" and p["outcome"] != "done"]
    assert failed and all("token" not in p["fields"] for p in failed)  # no token value is written down


def test_guessing_tokens_is_throttled(node: Node) -> None:
    guesser = WebClient(node.url)
    statuses = [guesser.sign_in(f"guess-{i}").status for i in range(12)]
    assert statuses.count(429) >= 2 and set(statuses) <= {403, 429}
    # Throttled attempts are not checked at all, so even the right token is turned away for now.
    assert guesser.sign_in(node.token.current).status == 429
    node.daemon.console._failed.clear()  # noqa: SLF001 - the minute has "passed" for later tests


def test_cross_site_form_and_foreign_host_are_refused(node: Node) -> None:
    officer = node.signed_in()
    csrf = officer.get("/budgets").csrf()
    bad = {**BUDGET, "project": "cross-site", "csrf": csrf}
    assert officer.post("/budgets/set", bad, headers={"Origin": "http://evil.example"}).status == 403
    assert officer.post("/budgets/set", bad, headers={"Origin": "null"}).status == 403
    assert officer.get("/", headers={"Host": "evil.example:80"}).status == 400  # DNS rebinding
    assert all(project != "cross-site" for _, project, _ in node.budgets())


def test_session_cookie_and_headers(node: Node) -> None:
    answer = WebClient(node.url).sign_in(node.token.current)
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = node.signed_in().get("/")
    assert page.headers["cache-control"] == "no-store"
    assert "script-src" not in page.headers["content-security-policy"]  # no script at all
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_errors_name_the_rule_and_never_show_a_trace(node: Node) -> None:
    officer = node.signed_in()
    csrf = officer.get("/approvals").csrf()
    answer = officer.post(
        "/approvals/decide", {"job_hash": "0" * 64, "decision": "reject", "note": "x", "csrf": csrf}
    )
    assert answer.status == 303
    flash = officer.get("/approvals").text
    assert "[rule: not_pending]" in flash and "Traceback" not in flash
    assert str(node.config.state_dir) not in flash
    assert verify(node.config.state_dir / "audit.log", verify_key=None).ok


def test_console_listens_on_loopback_only_unless_configured(node: Node, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_console({"listen": "0.0.0.0:8470"}, tmp_path)
    assert exc.value.rule == "console_listen" and "remote = true" in exc.value.message
    with pytest.raises(ConfigError) as exc:
        parse_console({"listen": "0.0.0.0:8470", "remote": True}, tmp_path)
    assert "tls_cert" in exc.value.message
    assert node.daemon.console_server is not None and node.daemon.console_server.host == "127.0.0.1"
    outside = _non_loopback_address()
    if outside is None:
        pytest.skip("this machine has no non-loopback address to try")
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(2)
        s.connect((outside, node.daemon.console_server.port))


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
            address = str(s.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("127.") else address


def _cookie(name: str, value: str):  # noqa: ANN202 - http.cookiejar.Cookie
    import http.cookiejar

    return http.cookiejar.Cookie(
        0, name, value, None, False, "127.0.0.1", False, False, "/", True, False, None, False, None, None, {}
    )


def test_every_page_answers_a_signed_in_officer_whatever_its_query(node: Node) -> None:
    officer = node.signed_in()
    for path in (
        "/",
        "/budgets",
        "/approvals",
        "/releases",
        "/releases?page=abc",
        "/releases?page=-5",
        "/audit?kind=<script>&page=999",
        "/audit/report.html",
    ):
        answer = officer.get(path)
        assert answer.status == 200, path
        assert "<script>" not in answer.text and "Traceback" not in answer.text, path
    assert officer.get("/audit/export.csv").headers["content-disposition"].startswith("attachment")
