"""Prometheus exposition over HTTP on loopback: ``/metrics`` and ``/healthz``.

Each process (node or coordinator) serves its own ``CollectorRegistry`` (never the library's global
one), so several instances in one process or test never share a counter. ``/healthz`` answers 200
when every readiness check passes and 503 otherwise, naming the failed checks only (never a path,
count or local name). Text format: the Prometheus exposition format, as written by prometheus-client.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from protocols.errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

Readiness = Callable[[], Mapping[str, bool]]


def loopback_address(listen: str, where: str) -> tuple[str, int]:
    """(host, port) of a ``metrics_listen`` value; only loopback hosts are accepted (docs/security.md)."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        number = int(port)
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ConfigError(f"{where} metrics_listen must be host:port, not {listen!r}") from None
    if not sep or not 0 < number < 65536:
        raise ConfigError(f"{where} metrics_listen must be host:port, not {listen!r}")
    if not loopback:
        raise ConfigError(
            f"{where} metrics_listen must be a loopback address (127.0.0.1 or ::1), not {host!r}: "
            "scrape through a local agent or proxy"
        )
    return host, number


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # scrapes every few seconds would drown the operator's log


class MetricsServer:
    """Serves ``registry`` at /metrics and ``readiness`` at /healthz on ``listen`` until ``close()``."""

    def __init__(self, listen: str, registry: CollectorRegistry, readiness: Readiness, where: str) -> None:
        # Loaded here: a process that serves no metrics does not hold the library resident.
        from prometheus_client import make_wsgi_app

        host, port = loopback_address(listen, where)
        metrics = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/healthz":
                failed = sorted(name for name, ok in readiness().items() if not ok)
                status = "503 Service Unavailable" if failed else "200 OK"
                body = ("not ready: " + ", ".join(failed) if failed else "ready").encode() + b"\n"
                start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
                return [body]
            return metrics(environ, start_response)  # type: ignore[no-any-return]

        self.server = make_server(
            host, port, app, server_class=_Server6 if ":" in host else _Server, handler_class=_QuietHandler
        )
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="metrics")
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
