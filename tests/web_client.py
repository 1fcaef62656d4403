"""A small HTTP client for console tests: a cookie jar, no redirects followed, forms posted as a browser does."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert found, "no CSRF field on the page"
        return found.group(1)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class WebClient:
    """One browser: its own cookies; every request bounded by ``timeout`` seconds."""

    def __init__(self, base: str, timeout: float = 15.0) -> None:
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)
        self.timeout = timeout

    def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        return self._send(urllib.request.Request(self.base + path, headers=headers or {}))

    def post(self, path: str, fields: dict[str, str], headers: dict[str, str] | None = None) -> Answer:
        body = urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(
            self.base + path,
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
            method="POST",
        )
        return self._send(request)

    def sign_in(self, token: str, name: str = "Officer Test") -> Answer:
        return self.post("/signin", {"name": name, "token": token})

    def _send(self, request: urllib.request.Request) -> Answer:
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return Answer(response.status, dict(response.headers), response.read().decode())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, dict(exc.headers), exc.read().decode())
