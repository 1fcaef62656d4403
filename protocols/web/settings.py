"""The ``[console]`` config table: where a console listens and how long sign-ins last.

A console listens on loopback unless the operator writes ``remote = true``, and then only with a
TLS certificate and key, so a sign-in token or session cookie never crosses a network in clear
(docs/security.md, "Consoles").
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.config_tables import check_table, table_model
from protocols.errors import ConfigError

DEFAULT_NODE_PORT = 8470
DEFAULT_COORDINATOR_PORT = 8480


@dataclass(frozen=True)
class ConsoleSettings:
    """A console's settings; times in minutes."""

    listen: str = f"127.0.0.1:{DEFAULT_NODE_PORT}"
    # Listening beyond loopback needs this and TLS (tls_cert, tls_key).
    remote: bool = False
    # An unused sign-in token is replaced after this long; a used one at once.
    token_minutes: float = 15.0
    # A session ends this long after sign-in, or after idle_minutes without a request.
    session_minutes: float = 480.0
    idle_minutes: float = 30.0
    # HTTPS: the console's certificate and key. With tls_ca, browsers may sign in with a federation
    # certificate (mutual TLS) issued by that root (protocols/web/signin.py, certificate_signin).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_crl: Path | None = None  # with tls_ca: revoked certificates cannot sign in

    @property
    def https(self) -> bool:
        return self.tls_cert is not None

    def address(self, where: str = "[console]") -> tuple[str, int]:
        return listen_address(self.listen, self.remote, where)


ConsoleTable = table_model("ConsoleTable", ConsoleSettings)


def listen_address(listen: str, remote: bool, where: str) -> tuple[str, int]:
    """(host, port) of a ``listen`` value; port 0 picks a free port. Non-loopback hosts need ``remote``."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        number = int(port)
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ConfigError(
            f"{where} listen must be host:port, not {listen!r}", rule="console_listen"
        ) from None
    if not sep or not 0 <= number < 65536:
        raise ConfigError(f"{where} listen must be host:port, not {listen!r}", rule="console_listen")
    if not loopback and not remote:
        raise ConfigError(
            f"{where} listen must be a loopback address (127.0.0.1 or ::1), not {host!r}; "
            "set remote = true with tls_cert and tls_key to serve other machines",
            rule="console_listen",
        )
    return host, number


def parse_console(
    raw: object, base: Path, where: str = "[console]", default_port: int = DEFAULT_NODE_PORT
) -> ConsoleSettings:
    """The checked settings of a ``[console]`` table; relative paths are read from ``base``."""
    table = check_table(raw, ConsoleTable, where)
    values: dict[str, Any] = {k: v for k, v in table.model_dump().items() if v is not None}
    values.setdefault("listen", f"127.0.0.1:{default_port}")
    for key in ("token_minutes", "session_minutes", "idle_minutes"):
        if key in values and not (math.isfinite(values[key]) and values[key] > 0):
            raise ConfigError(f"{where} {key} must be a positive number of minutes, not {values[key]!r}")
        if key in values:
            values[key] = float(values[key])
    for key in ("tls_cert", "tls_key", "tls_ca", "tls_crl"):
        if key in values:
            path = Path(values[key]).expanduser()
            values[key] = path if path.is_absolute() else (base / path).resolve()
    settings = ConsoleSettings(**values)
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError(f"{where} tls_cert and tls_key go together")
    if settings.tls_ca is not None and settings.tls_cert is None:
        raise ConfigError(
            f"{where} tls_ca (certificate sign-in) needs tls_cert and tls_key: it is HTTPS only"
        )
    host, _ = settings.address(where)
    loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    if not loopback and not settings.https:
        raise ConfigError(
            f"{where} remote = true needs tls_cert and tls_key: a sign-in token must not cross a network in clear",
            rule="console_listen",
        )
    return settings
