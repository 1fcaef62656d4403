"""``Console``: the app factory both consoles share.

A console is a Starlette app of pages (GET, need a session) and actions (POST, need a session and
the session's CSRF token, and are audited with the signed-in person and the outcome). Sign-in is by
the one-time token or by a federation certificate (protocols/web/signin.py). Pages are Jinja2
templates that extend ``base.html``; errors show a page with a reference, never a stack trace (the
trace goes to the process's log under the same reference).

Defences beside the session and CSRF token (OWASP CSRF Prevention and Session Management cheat
sheets): the Host header must name the console (no DNS rebinding), a cross-origin POST is refused
by its Origin header, and every answer says ``Cache-Control: no-store`` and a strict
Content-Security-Policy (no script at all).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocols.errors import FederationError
from protocols.web.signin import COOKIE, OneTimeToken, Session, Sessions

log = logging.getLogger("federation.console")

HERE = Path(__file__).parent
# (person, action, fields, outcome): the process writes it to its audit log; raising refuses the answer.
AuditHook = Callable[[str, str, Mapping[str, str], str], None]
# The person a verified client certificate names (mutual TLS), or None without one.
CertificatePerson = Callable[[Scope], str | None]
MAX_NAME = 80
MAX_FIELD = 4000  # longest form value an action accepts (a note, a name)
FAILED_SIGNINS_PER_MINUTE = 10

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self' data:; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
]


@dataclass
class Visit:
    """What a page or action handler sees: the request, the signed-in session and the form."""

    request: Request
    session: Session
    form: dict[str, str]

    @property
    def person(self) -> str:
        return self.session.person

    def query(self, key: str, default: str = "") -> str:
        return str(self.request.query_params.get(key, default))

    def field(self, key: str, default: str = "") -> str:
        return self.form.get(key, default).strip()


Handler = Callable[[Visit], Response]
# An action returns the message to show on the page it goes back to, or its own response.
ActionHandler = Callable[[Visit], "str | Response"]


class Refused(Exception):
    """A console refusal that is not a FederationError: a status and a plain reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def person_name(raw: str) -> str:
    """A name as typed at sign-in: printable, at most MAX_NAME characters, else a FederationError."""
    name = " ".join(raw.split())
    if not name or len(name) > MAX_NAME or any(unicodedata.category(c).startswith("C") for c in name):
        raise FederationError(
            "console_signin", f"give your name (1 to {MAX_NAME} printable characters) with the token"
        )
    return name


class Console:
    """A console app: register pages and actions, then serve ``app``. See the module docstring."""

    def __init__(
        self,
        *,
        title: str,
        subject: str,
        token: OneTimeToken,
        sessions: Sessions,
        audit: AuditHook,
        templates: Path | None = None,
        nav: list[tuple[str, str]] | None = None,
        https: bool = False,
        hosts: list[str] | None = None,
        certificate_person: CertificatePerson | None = None,
    ) -> None:
        self.title, self.subject = title, subject
        self.token, self.sessions, self.audit = token, sessions, audit
        self.nav = nav or []
        self.https = https
        self.hosts = hosts or ["127.0.0.1", "localhost", "::1", "[::1]"]
        self.certificate_person = certificate_person
        loaders = [FileSystemLoader(str(templates))] if templates else []
        self.env = Environment(
            loader=ChoiceLoader([*loaders, FileSystemLoader(str(HERE / "templates"))]),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._routes: list[Route] = []
        self._failed: deque[float] = deque()
        self._failed_lock = threading.Lock()
        self._flashes: dict[str, list[tuple[str, str]]] = {}

    # ------------------------------------------------------------------ registering pages

    def page(self, path: str) -> Callable[[Handler], Handler]:
        """Register a GET page; it needs a session (otherwise: the sign-in page)."""

        def register(handler: Handler) -> Handler:
            self._routes.append(Route(path, self._page_endpoint(handler), methods=["GET"]))
            return handler

        return register

    def action(self, path: str, back: str) -> Callable[[ActionHandler], ActionHandler]:
        """Register a POST action: session and CSRF token checked, audited, then back to ``back``
        with the handler's message (or its FederationError's reason)."""

        def register(handler: ActionHandler) -> ActionHandler:
            self._routes.append(Route(path, self._action_endpoint(path, back, handler), methods=["POST"]))
            return handler

        return register

    # ------------------------------------------------------------------ rendering

    def render(self, visit: Visit | None, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = visit.session if visit else None
        csrf = session.csrf if session else ""
        html = self.env.get_template(template).render(
            title=self.title,
            subject=self.subject,
            nav=self.nav if session else [],
            active=visit.request.url.path if visit else "",
            person=session.person if session else "",
            csrf=csrf,
            csrf_field=Markup('<input type="hidden" name="csrf" value="{}">').format(csrf),
            flashes=self._flashes.pop(session.id, []) if session else [],
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def flash(self, session: Session, level: str, text: str) -> None:
        self._flashes.setdefault(session.id, []).append((level, text))
        if len(self._flashes) > 256:  # sessions that never came back
            self._flashes.pop(next(iter(self._flashes)))

    def error_page(self, status: int, reason: str, session: Session | None = None) -> HTMLResponse:
        html = self.env.get_template("error.html").render(
            title=self.title,
            subject=self.subject,
            nav=[],
            person=session.person if session else "",
            csrf="",
            flashes=[],
            page_title={400: "Not done", 403: "Not allowed", 404: "Not found", 429: "Too many attempts"}.get(
                status, "Something went wrong"
            ),
            status=status,
            reason=reason,
        )
        return HTMLResponse(html, status_code=status)

    def _crash(self, exc: BaseException, session: Session | None = None) -> HTMLResponse:
        reference = secrets.token_hex(4)
        log.error("console error %s", reference, exc_info=(type(exc), exc, exc.__traceback__))
        return self.error_page(
            500,
            f"The console could not answer. The operator's log has the details under reference {reference}.",
            session,
        )

    # ------------------------------------------------------------------ endpoints

    def _session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def _page_endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = self._session(request)
            if session is None:
                return RedirectResponse("/signin", status_code=303)
            try:
                return await run_in_threadpool(handler, Visit(request, session, {}))
            except Refused as exc:
                return self.error_page(exc.status, exc.reason, session)
            except FederationError as exc:
                return self.error_page(400, f"{exc.message} [rule: {exc.rule}]", session)
            except Exception as exc:  # noqa: BLE001 - shown as a reference, logged with its trace
                return self._crash(exc, session)

        return endpoint

    def _action_endpoint(
        self, path: str, back: str, handler: ActionHandler
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = self._session(request)
            if session is None:
                return self.error_page(403, "Sign in first: this request carries no valid session.")
            form = await _form(request)
            if form is None:
                return self.error_page(400, "The form is too large or malformed.", session)
            if not session.csrf_ok(form.pop("csrf", None)):
                await run_in_threadpool(self._record, session.person, path, form, "refused: CSRF token")
                return self.error_page(
                    403,
                    "This form is not from your signed-in console page (CSRF token missing or wrong).",
                    session,
                )
            visit = Visit(request, session, form)
            result: str | Response | Exception
            try:
                result = await run_in_threadpool(handler, visit)
                outcome = "done"
            except Refused as exc:
                result, outcome = exc, f"refused: {exc.reason}"
            except FederationError as exc:
                result, outcome = exc, f"refused [rule: {exc.rule}]: {exc.message}"
            except Exception as exc:  # noqa: BLE001 - shown as a reference, logged with its trace
                await run_in_threadpool(self._record, session.person, path, form, "failed")
                return self._crash(exc, session)
            try:
                await run_in_threadpool(self.audit, session.person, path, form, outcome)
            except Exception as exc:  # noqa: BLE001 - the change happened but has no record: say so
                return self._crash(exc, session)
            if isinstance(result, Response):
                return result
            if isinstance(result, Refused):
                self.flash(session, "error", result.reason)
            elif isinstance(result, FederationError):
                self.flash(session, "error", f"{result.message} [rule: {result.rule}]")
            elif isinstance(result, str):
                self.flash(session, "ok", result)
            target = form.get("back", "")
            return RedirectResponse(target if _local(target) else back, status_code=303)

        return endpoint

    def _record(self, person: str, action: str, form: Mapping[str, str], outcome: str) -> None:
        try:
            self.audit(person, action, form, outcome)
        except Exception:  # noqa: BLE001 - a refusal is answered even when its record fails
            log.exception("console: could not record %s by %s (%s)", action, person, outcome)

    async def _signin_page(self, request: Request) -> Response:
        if self._session(request) is not None:
            return RedirectResponse("/", status_code=303)
        try:
            person = self.certificate_person(request.scope) if self.certificate_person else None
        except FederationError as exc:
            # A certificate that does not fit: say why, record it, and offer the token instead.
            await run_in_threadpool(
                self._record,
                "(certificate)",
                "/signin",
                {"method": "certificate"},
                f"refused [rule: {exc.rule}]: {exc.message}",
            )
            return self._signin_form(
                403, f"Your certificate cannot sign in here: {exc.message} [rule: {exc.rule}]"
            )
        if person:
            return await run_in_threadpool(self._start, person, "certificate")
        self.token.current  # noqa: B018 - renews an expired token, so the file holds a live one to read
        return self._signin_form()

    def _signin_form(self, status: int = 200, error: str = "", name: str = "") -> HTMLResponse:
        html = self.env.get_template("signin.html").render(
            title=self.title,
            subject=self.subject,
            nav=[],
            person="",
            csrf="",
            flashes=[],
            page_title="Sign in",
            error=error,
            name=name,
            token_file=self.token.path.name,  # its folder is the process's state_dir; no local path is shown
            certificates=self.certificate_person is not None,
        )
        return HTMLResponse(html, status_code=status)

    async def _signin(self, request: Request) -> Response:
        if not self._allow_attempt():
            return self.error_page(429, "Too many failed sign-ins; wait a minute and try again.")
        form = await _form(request) or {}
        try:
            name = person_name(form.get("name", ""))
        except FederationError as exc:
            return self._signin_form(400, exc.message)
        if not self.token.redeem(form.get("token", "")):
            self._note_failure()
            await run_in_threadpool(
                self._record, name, "/signin", {"method": "token"}, "refused: wrong, used or expired token"
            )
            return self._signin_form(
                403,
                f"That token is wrong, used or expired. Read the current one from {self.token.path.name} "
                "in the state folder.",
                name,
            )
        return await run_in_threadpool(self._start, f"{name} (token)", "token")

    def _start(self, person: str, method: str) -> Response:
        self.audit(person, "/signin", {"method": method}, "done")
        session = self.sessions.start(person, method)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            session.id,
            httponly=True,
            samesite="strict",
            secure=self.https,
            path="/",
            max_age=int(self.sessions.lifetime),
        )
        return response

    async def _signout(self, request: Request) -> Response:
        session = self._session(request)
        form = await _form(request) or {}
        if session is None or not session.csrf_ok(form.get("csrf")):
            return self.error_page(403, "Sign out from your own console page.")
        self.sessions.end(session.id)
        await run_in_threadpool(self._record, session.person, "/signout", {}, "done")
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=self.https)
        return response

    def _allow_attempt(self) -> bool:
        with self._failed_lock:
            now = time.monotonic()
            while self._failed and now - self._failed[0] > 60:
                self._failed.popleft()
            return len(self._failed) < FAILED_SIGNINS_PER_MINUTE

    def _note_failure(self) -> None:
        with self._failed_lock:
            self._failed.append(time.monotonic())

    # ------------------------------------------------------------------ the app

    @property
    def app(self) -> ASGIApp:
        async def css(request: Request) -> Response:
            return FileResponse(HERE / "static" / "console.css", media_type="text/css")

        async def not_found(request: Request, exc: Exception) -> Response:
            status = exc.status_code if isinstance(exc, HTTPException) else 500
            if status >= 500:
                return self._crash(exc)
            reason = {404: "No such page.", 405: "This page does not take that kind of request."}.get(
                status, "The request was refused."
            )
            return self.error_page(status if status in (400, 403, 404, 405) else 400, reason)

        async def crashed(request: Request, exc: Exception) -> Response:
            return self._crash(exc)

        routes = [
            Route("/signin", self._signin_page, methods=["GET"]),
            Route("/signin", self._signin, methods=["POST"]),
            Route("/signout", self._signout, methods=["POST"]),
            Route("/static/console.css", css, methods=["GET"]),
            *self._routes,
        ]
        app = Starlette(
            routes=routes,
            middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=self.hosts)],
            exception_handlers={HTTPException: not_found, Exception: crashed},
        )
        return _Guard(app, self)


async def _form(request: Request) -> dict[str, str] | None:
    """The posted form as text fields (files and oversized values refused)."""
    try:
        form = await request.form(max_files=0, max_fields=64)
    except Exception:  # noqa: BLE001 - any malformed body is one answer: 400
        return None
    fields: dict[str, str] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str) or len(value) > MAX_FIELD:
            return None
        fields[key] = value
    return fields


def _local(target: str | None) -> bool:
    """Only a path on this console may be a redirect target (no open redirect)."""
    return (
        bool(target)
        and str(target).startswith("/")
        and not str(target).startswith("//")
        and "\\" not in str(target)
    )


class _Guard:
    """Refuses cross-origin POSTs by their Origin header and adds the security headers to every answer."""

    def __init__(self, app: ASGIApp, console: Console) -> None:
        self.app = app
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        origin = headers.get(b"origin", b"").decode("latin-1")
        host = headers.get(b"host", b"").decode("latin-1")
        # A form posted from another site, or from a sandboxed frame ("null"), names it in Origin.
        if scope.get("method") == "POST" and origin and urlsplit(origin).netloc != host:
            response: Response = self.console.error_page(403, "Cross-site requests are refused.")
            await _secure(response)(scope, receive, send)
            return

        async def send_secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_secure)


def _secure(response: Response) -> Response:
    response.raw_headers.extend(SECURITY_HEADERS)
    return response
