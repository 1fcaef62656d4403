"""``ConsoleServer``: a console app served by uvicorn in a thread of the node or coordinator process.

The socket is bound before the thread starts, so a taken port or a refused address is an error at
start with the config's words, not a thread that dies. The server stops with ``close()``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from protocols.errors import ConfigError
from protocols.web.settings import ConsoleSettings


class PeerCertificateProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol that also hands the app the client certificate of the connection
    (DER, as the TLS handshake verified it against ``tls_ca``) in ``scope["extensions"]["tls"]``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        inner = self.app

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            scope.setdefault("extensions", {})["tls"] = {"client_cert_der": der}
            await inner(scope, receive, send)

        self.app = app  # type: ignore[assignment]


class ConsoleServer:
    """Serves ``app`` on ``settings.listen`` (HTTPS with the settings' certificate) until ``close()``."""

    def __init__(self, app: ASGIApp, settings: ConsoleSettings, where: str = "[console]") -> None:
        host, port = settings.address(where)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"{where} cannot listen on {settings.listen}: {exc.strerror}", rule="console_listen"
            ) from None
        self.host, self.port = host, int(sock.getsockname()[1])
        self.scheme = "https" if settings.https else "http"
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",  # no websockets: pages and forms only
            http=PeerCertificateProtocol if settings.tls_ca else "h11",
            ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
            ssl_ca_certs=str(settings.tls_ca) if settings.tls_ca else None,
            # With a federation root: browsers may present a certificate (certificate sign-in);
            # without one the token still signs in.
            ssl_cert_reqs=ssl.CERT_OPTIONAL if settings.tls_ca else ssl.CERT_NONE,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True, name="console"
        )
        self._sock = sock
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            self.close()
            raise ConfigError(
                f"{where} the console did not start on {settings.listen}", rule="console_listen"
            )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/"

    def close(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()
