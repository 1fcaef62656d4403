"""The shared console base over a real uvicorn server on loopback: sign-in, sessions, CSRF, audit, errors."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.responses import HTMLResponse

from protocols.errors import ConfigError, FederationError
from protocols.web.app import Console, Visit
from protocols.web.charts import step_chart
from protocols.web.server import ConsoleServer
from protocols.web.settings import parse_console
from protocols.web.signin import COOKIE, OneTimeToken, Sessions
from tests.web_client import WebClient


class Base:
    def __init__(self, state: Path) -> None:
        self.records: list[tuple[str, str, dict[str, str], str]] = []
        self.token = OneTimeToken(state, minutes=5)
        self.value = "unset"
        console = Console(
            title="Test console",
            subject="node-x",
            token=self.token,
            sessions=Sessions(60, 30),
            audit=lambda person, action, fields, outcome: self.records.append(
                (person, action, dict(fields), outcome)
            ),
            nav=[("/", "Overview")],
        )

        @console.page("/")
        def overview(visit: Visit) -> HTMLResponse:
            return console.render(visit, "error.html", page_title="Overview", reason=f"value {self.value}")

        @console.page("/crash")
        def crash(visit: Visit) -> HTMLResponse:
            raise RuntimeError("secret internal detail /etc/node.toml")

        @console.action("/set", back="/")
        def set_value(visit: Visit) -> str:
            if visit.field("value") == "bad":
                raise FederationError("console_form", "value must not be bad")
            self.value = visit.field("value")
            return f"value set to {self.value}"

        self.server = ConsoleServer(console.app, parse_console({"listen": "127.0.0.1:0"}, state))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Base]:
    b = Base(tmp_path_factory.mktemp("console"))
    yield b
    b.server.close()


def signed_in(base: Base) -> WebClient:
    client = WebClient(base.server.url)
    answer = client.sign_in(base.token.current)
    assert answer.status == 303, answer.text
    return client


def test_token_file_is_private_and_one_time(base: Base) -> None:
    assert stat.S_IMODE(os.stat(base.token.path).st_mode) == 0o600
    token = base.token.path.read_text().strip()
    first = WebClient(base.server.url)
    assert first.sign_in(token).status == 303
    again = WebClient(base.server.url)
    refused = again.sign_in(token)
    assert refused.status == 403 and "wrong, used or expired" in refused.text
    assert base.token.path.read_text().strip() != token  # replaced at once
    assert again.get("/").status == 303  # still signed out: back to the sign-in page


def test_session_cookie_flags(base: Base) -> None:
    answer = WebClient(base.server.url).sign_in(base.token.current)
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(COOKIE + "=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "no-store" in answer.headers["cache-control"]
    assert "default-src 'none'" in answer.headers["content-security-policy"]


def test_action_needs_csrf_and_is_audited(base: Base) -> None:
    client = signed_in(base)
    page = client.get("/")
    assert page.status == 200 and "Officer Test (token)" in page.text
    refused = client.post("/set", {"value": "x"})
    assert refused.status == 403 and base.value != "x"
    wrong = client.post("/set", {"value": "x", "csrf": "0" * 43})
    assert wrong.status == 403 and base.value != "x"
    done = client.post("/set", {"value": "x", "csrf": page.csrf()})
    assert done.status == 303 and base.value == "x"
    assert "value set to x" in client.get("/").text
    assert base.records[-1] == ("Officer Test (token)", "/set", {"value": "x"}, "done")
    assert ("Officer Test (token)", "/set", {"value": "x"}, "refused: CSRF token") in base.records


def test_refusal_is_shown_with_its_rule_and_audited(base: Base) -> None:
    client = signed_in(base)
    csrf = client.get("/").csrf()
    assert client.post("/set", {"value": "bad", "csrf": csrf}).status == 303
    assert "value must not be bad [rule: console_form]" in client.get("/").text
    assert base.records[-1][3].startswith("refused [rule: console_form]")


def test_errors_show_no_trace(base: Base) -> None:
    client = signed_in(base)
    crash = client.get("/crash")
    assert crash.status == 500 and "reference" in crash.text
    assert "secret internal detail" not in crash.text and "Traceback" not in crash.text
    assert client.get("/no/such/page").status == 404


def test_cross_origin_post_and_foreign_host_refused(base: Base) -> None:
    client = signed_in(base)
    csrf = client.get("/").csrf()
    cross = client.post("/set", {"value": "y", "csrf": csrf}, headers={"Origin": "http://evil.example"})
    assert cross.status == 403 and base.value != "y"
    assert client.get("/", headers={"Host": "evil.example"}).status == 400  # DNS rebinding


def test_config_refuses_non_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_console({"listen": "0.0.0.0:8470"}, tmp_path)
    assert exc.value.rule == "console_listen"
    with pytest.raises(ConfigError) as exc:
        parse_console({"listen": "0.0.0.0:8470", "remote": True}, tmp_path)
    assert "tls_cert" in exc.value.message
    with pytest.raises(ConfigError, match="unknown key 'listn'"):
        parse_console({"listn": "127.0.0.1:1"}, tmp_path)
    assert parse_console({}, tmp_path).listen == "127.0.0.1:8470"


def test_chart_is_svg_with_escaped_labels() -> None:
    svg = step_chart({"<p>": [(0.0, 1.0), (3600.0, 2.5)]}, title="Spent", y_label="epsilon", limit=5.0)
    assert svg.startswith("<svg") and "&lt;p&gt;" in svg and "budget 5" in svg
    assert "nothing spent yet" in step_chart({}, title="Spent", y_label="epsilon")
