"""Attacks on the operator dashboard of a real coordinator (gRPC and the dashboard on loopback):
pages and changes without a session, a forged or missing CSRF token, a reused sign-in token, a
cross-site form, a foreign Host header, and markup smuggled in through a node's name and version."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from coordinator.config import CoordinatorConfig
from coordinator.projects import parse_projects
from coordinator.service import Coordinator
from federation.processes import free_port
from federation.query import parse_query
from protocols import federation_pb2 as pb
from protocols import federation_pb2_grpc as pb_grpc
from protocols.web.settings import parse_console
from protocols.web.signin import COOKIE
from tests.web_client import WebClient

HOSTILE = '<script>alert(1)</script>"><img src=x>'


class Link:
    """A node's link over real gRPC: a Hello, heartbeats, then closed by ``close``."""

    def __init__(self, address: str, node_id: str, version: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stopped = threading.Event()
        info = pb.DatasetInfo(node=node_id, name="declarations", privacy_unit="company")
        self.hello = pb.NodeMessage(hello=pb.Hello(node_id=node_id, datasets=[info], version=version))
        self.call = pb_grpc.NodeLinkStub(self.channel).Connect(self._outgoing())
        self.welcome = next(self.call)

    def _outgoing(self) -> Iterator[pb.NodeMessage]:
        yield self.hello
        while not self.stopped.wait(0.2):
            yield pb.NodeMessage(heartbeat=pb.Heartbeat(sent_unix_ms=int(time.time() * 1000)))

    def close(self) -> None:
        self.stopped.set()
        self.call.cancel()
        self.channel.close()


def _wait(predicate: object, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    state = tmp_path_factory.mktemp("dashboard")
    projects = parse_projects(
        [
            {
                "name": "rotterdam",
                "purpose": "drug import routes",
                "legal_basis": "test",
                "members": ["ann"],
                "expires": "2099-12-31",
            }
        ]
    )
    config = CoordinatorConfig(
        listen=f"127.0.0.1:{free_port()}",
        state_dir=state,
        heartbeat_seconds=1.0,
        insecure=True,
        projects=projects,
        console=parse_console({"listen": "127.0.0.1:0"}, state, default_port=0),
    )
    coordinator = Coordinator(config)
    coordinator.start()
    spec = parse_query("SELECT COUNT(*) AS n FROM declarations")
    spec.project = "rotterdam"
    coordinator.jobs.refused(
        "f" * 32, "eve", spec, "SELECT COUNT(*) AS n FROM declarations", "not_a_member", "no"
    )
    yield coordinator
    coordinator.stop()


def _token(coordinator: Coordinator) -> str:
    assert coordinator.dashboard is not None
    return coordinator.dashboard.token_file.read_text().strip()


def _signed_in(coordinator: Coordinator, name: str = "Olga Operator") -> WebClient:
    assert coordinator.dashboard is not None
    client = WebClient(coordinator.dashboard.url)
    assert client.sign_in(_token(coordinator), name).status == 303
    return client


def _log(coordinator: Coordinator) -> list[dict]:
    assert coordinator.dashboard is not None
    path = coordinator.dashboard.log.path
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_token_file_is_private_and_signs_in_once(running: Coordinator) -> None:
    assert running.dashboard is not None
    assert stat.S_IMODE(os.stat(running.dashboard.token_file).st_mode) == 0o600
    token = _token(running)
    first = WebClient(running.dashboard.url)
    assert first.sign_in(token, "Olga Operator").status == 303
    assert first.get("/").status == 200
    replay = WebClient(running.dashboard.url)
    reused = replay.sign_in(token, "Mallory")
    assert reused.status == 403 and "wrong, used or expired" in reused.text
    assert replay.get("/nodes").status == 303  # back to the sign-in page, nothing shown
    entries = _log(running)
    assert any(e["person"] == "Mallory" and e["outcome"].startswith("refused") for e in entries)
    assert all(token not in json.dumps(e) for e in entries)  # the token is never written


def test_no_session_sees_no_page_and_changes_nothing(running: Coordinator) -> None:
    assert running.dashboard is not None
    link = Link(running.config.listen, "leaver", "1.0")
    link.close()
    assert _wait(lambda: not running.registry.get("leaver"))
    stranger = WebClient(running.dashboard.url)
    for path in ("/", "/nodes", "/jobs", "/projects", "/log"):
        answer = stranger.get(path)
        assert answer.status == 303 and answer.headers["location"] == "/signin", path
    forged = stranger.post("/nodes/forget", {"node": "leaver", "csrf": "x"})
    assert forged.status == 403 and "leaver" not in forged.text
    assert "leaver" in {s.node_id for s in running.registry.states()}


def test_bad_or_missing_csrf_token_is_refused_and_recorded(running: Coordinator) -> None:
    link = Link(running.config.listen, "gone", "1.0")
    link.close()
    assert _wait(lambda: not running.registry.get("gone"))
    operator = _signed_in(running, "Olga Operator")
    other = _signed_in(running, "Otto Other")
    their_csrf = other.get("/nodes").csrf()
    for fields in ({"node": "gone"}, {"node": "gone", "csrf": "guess"}, {"node": "gone", "csrf": their_csrf}):
        refused = operator.post("/nodes/forget", fields)
        assert refused.status == 403 and "CSRF" in refused.text
    assert "gone" in {s.node_id for s in running.registry.states()}
    outcomes = [
        e for e in _log(running) if e["action"] == "/nodes/forget" and e["person"] == "Olga Operator (token)"
    ]
    assert len(outcomes) == 3 and all(e["outcome"] == "refused: CSRF token" for e in outcomes)
    # A cross-site page posting the operator's own form is refused by its Origin, even with the token.
    mine = operator.get("/nodes").csrf()
    cross = operator.post("/nodes/forget", {"node": "gone", "csrf": mine}, {"Origin": "http://evil.example"})
    assert cross.status == 403 and "gone" in {s.node_id for s in running.registry.states()}
    # With the session's own token the change is made and recorded with the person.
    done = operator.post("/nodes/forget", {"node": "gone", "csrf": mine})
    assert done.status == 303
    assert "gone" not in {s.node_id for s in running.registry.states()}
    assert _log(running)[-1] == {
        **_log(running)[-1],
        "person": "Olga Operator (token)",
        "action": "/nodes/forget",
        "fields": {"node": "gone"},
        "outcome": "done",
    }


def test_a_connected_node_cannot_be_forgotten_from_the_dashboard(running: Coordinator) -> None:
    link = Link(running.config.listen, "douane", "1.0")
    try:
        operator = _signed_in(running)
        csrf = operator.get("/nodes").csrf()
        answer = operator.post("/nodes/forget", {"node": "douane", "csrf": csrf})
        assert answer.status == 303
        page = operator.get("/nodes")
        assert "node_connected" in page.text and running.registry.get("douane") is not None
        assert _log(running)[-1]["outcome"].startswith("refused [rule: node_connected]")
    finally:
        link.close()


def test_markup_from_a_node_is_shown_as_text(running: Coordinator) -> None:
    link = Link(running.config.listen, "node-x", HOSTILE)
    try:
        page = _signed_in(running).get("/nodes")
        assert page.status == 200
        assert "<script>" not in page.text and "&lt;script&gt;" in page.text
    finally:
        link.close()


def test_foreign_host_header_and_bad_page_token_get_plain_refusals(running: Coordinator) -> None:
    operator = _signed_in(running)
    rebinding = operator.get("/", {"Host": "attacker.example"})
    assert rebinding.status == 400
    bad = operator.get("/jobs?after=1%20OR%201%3D1")
    assert bad.status == 400 and "invalid_page_token" in bad.text and "Traceback" not in bad.text
    refused = operator.get("/jobs?project=rotterdam")
    assert refused.status == 200 and "not_a_member" in refused.text


def test_a_session_cookie_is_dead_after_sign_out(running: Coordinator) -> None:
    assert running.dashboard is not None
    operator = _signed_in(running)
    (cookie,) = [c for c in operator.jar if c.name == COOKIE]
    csrf = operator.get("/").csrf()
    assert operator.post("/signout", {"csrf": csrf}).status == 303
    replay = WebClient(running.dashboard.url)
    stale = {"Cookie": f"{COOKIE}={cookie.value}"}
    assert replay.get("/nodes", stale).status == 303
    assert replay.post("/nodes/forget", {"node": "x", "csrf": csrf}, stale).status == 403
