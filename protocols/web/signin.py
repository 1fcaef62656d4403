"""Sign-in to a console: a one-time token or a federation certificate, then a session.

The token is 32 random bytes (``secrets``), written to ``<state_dir>/console-token`` with mode 0600
and printed once at start. Whoever can read that file, or the terminal that started the process,
may sign in, once: the token is replaced the moment it is used, and after ``token_minutes`` if
unused. A session is a random id in an HttpOnly, SameSite=Strict cookie, held only in memory (a
restart signs everyone out), with its own CSRF token (OWASP CSRF Prevention Cheat Sheet,
"synchronizer token pattern") that every changing request must carry.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.identity import PkiError, check_peer

TOKEN_FILE = "console-token"
COOKIE = "console_session"
MAX_SESSIONS = 64  # signed-in browsers at once; the oldest is signed out past this


@dataclass
class Session:
    """One signed-in browser."""

    person: str
    method: str  # "token" or "certificate"
    csrf: str
    started: float
    seen: float
    id: str = field(repr=False, default="")

    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), self.csrf.encode())


class OneTimeToken:
    """The current sign-in token: used once, replaced when used or when ``minutes`` pass."""

    def __init__(self, state_dir: Path, minutes: float) -> None:
        self.path = Path(state_dir) / TOKEN_FILE
        self.lifetime = minutes * 60
        self._lock = threading.Lock()
        self._token = ""
        self._issued = 0.0
        self.rotate()

    @property
    def current(self) -> str:
        """The token now valid (renewed first if it expired); printed at start, never logged."""
        with self._lock:
            if time.monotonic() - self._issued > self.lifetime:
                self._rotate_locked()
            return self._token

    def rotate(self) -> None:
        with self._lock:
            self._rotate_locked()

    def _rotate_locked(self) -> None:
        token = secrets.token_urlsafe(32)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(self.path.name + ".new")
        # Created 0600 (never world-readable, not even for a moment), then renamed over the old one.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(token + "\n")
        os.chmod(temp, 0o600)
        os.replace(temp, self.path)
        self._token, self._issued = token, time.monotonic()

    def redeem(self, given: str) -> bool:
        """True once for the current token; the token is replaced whether or not it matched when it
        has expired, and always after a match, so no token signs in twice."""
        with self._lock:
            if time.monotonic() - self._issued > self.lifetime:
                self._rotate_locked()
                return False
            ok = bool(given) and hmac.compare_digest(given.strip().encode(), self._token.encode())
            if ok:
                self._rotate_locked()
            return ok

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class Sessions:
    """Signed-in sessions, in memory, ending after ``session_minutes`` or ``idle_minutes`` idle."""

    def __init__(self, session_minutes: float, idle_minutes: float) -> None:
        self.lifetime = session_minutes * 60
        self.idle = idle_minutes * 60
        self._lock = threading.Lock()
        self._by_id: dict[str, Session] = {}

    def start(self, person: str, method: str) -> Session:
        now = time.monotonic()
        session = Session(person, method, secrets.token_urlsafe(32), now, now, secrets.token_urlsafe(32))
        with self._lock:
            if len(self._by_id) >= MAX_SESSIONS:
                oldest = min(self._by_id.values(), key=lambda s: s.seen)
                del self._by_id[oldest.id]
            self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of ``session_id``; an expired one is dropped."""
        if not session_id:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._by_id.get(session_id)
            if session is None:
                return None
            if now - session.started > self.lifetime or now - session.seen > self.idle:
                del self._by_id[session_id]
                return None
            session.seen = now
            return session

    def end(self, session_id: str) -> None:
        with self._lock:
            self._by_id.pop(session_id, None)


def certificate_signin(
    ca: Path, crl: Path | None, roles: frozenset[str], org: str | None = None
) -> Callable[[Any], str | None]:
    """Certificate sign-in (mutual TLS): the person a browser's client certificate names, or None
    without one. The certificate must chain to the federation root ``ca``, be valid now, not be on
    ``crl`` (re-read at every sign-in), carry one of ``roles``, and where ``org`` is given belong to
    that organisation (a node's officer signs in to that node only); otherwise a ``PkiError`` names
    the rule (unknown_ca, expired, revoked, wrong_role, ...)."""

    def person(scope: Any) -> str | None:
        der = ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_der")
        if not der:
            return None
        identity = check_peer(der, ca.read_bytes(), crl.read_bytes() if crl else None, expected_roles=roles)
        if org is not None and identity.org != org:
            raise PkiError(
                "wrong_role",
                f"the certificate of {identity.subject!r} is of organisation {identity.org or 'none'}, "
                f"not {org}: it signs in to its own organisation's console only",
            )
        return f"{identity.subject} (certificate)"

    return person
