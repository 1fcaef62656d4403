"""Coordinator configuration (see docs/config.md)."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.projects import Project, parse_projects
from protocols.config_tables import Table, check_table, table_model
from protocols.errors import ConfigError
from protocols.identity import PkiError, TlsFiles, tls_files
from protocols.metrics_http import loopback_address
from protocols.web.settings import DEFAULT_COORDINATOR_PORT, ConsoleSettings, parse_console


@dataclass(frozen=True)
class CoordinatorConfig:
    listen: str = "127.0.0.1:7100"
    state_dir: Path = Path("state/coordinator")
    node_timeout_seconds: float = 10.0
    heartbeat_seconds: float = 5.0
    max_message_bytes: int = 4 * 1024 * 1024
    tls: TlsFiles | None = None
    insecure: bool = False  # development only: plaintext gRPC, no peer identities
    projects: dict[str, Project] = field(default_factory=dict)  # [[projects]]: docs/projects.md
    max_queries_per_minute: int = 60  # per analyst (certificate subject); 0: no limit
    max_timeout_seconds: float = 300.0  # the longest per-node (per-step) timeout a job may ask for
    max_concurrent_jobs_per_analyst: int = 4  # jobs one analyst may run at once
    max_concurrent_jobs: int = 32  # jobs running at once in all; the server keeps 16 more threads
    # Node links held at once; each holds one server thread for its life, apart from the job threads.
    max_nodes: int = 256
    # Prometheus metrics and /healthz over HTTP on this loopback host:port; "" serves none.
    metrics_listen: str = ""
    # The operator's dashboard ([console] table, docs/dashboard.md); None serves none.
    console: ConsoleSettings | None = None


# Strict shapes of the TOML tables (protocols/config_tables.py): the [coordinator] table follows
# the dataclass above, so a new setting is declared once.
CoordinatorTable = table_model(
    "CoordinatorTable",
    CoordinatorConfig,
    skip=("tls", "projects", "console"),
    extra={key: str for key in ("tls_dir", "tls_cert", "tls_key", "tls_ca", "tls_crl")},
)


class CoordinatorFile(Table):
    coordinator: dict[str, Any] = {}
    projects: list[Any] | None = None
    console: dict[str, Any] | None = None


def load_coordinator_config(path: str | Path) -> CoordinatorConfig:
    p = Path(path).resolve()
    try:
        document = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}", rule="config_missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    check_table(document, CoordinatorFile, "config")
    raw = document.get("coordinator", {})
    check_table(raw, CoordinatorTable, "[coordinator]")
    for key in ("node_timeout_seconds", "heartbeat_seconds", "max_message_bytes"):
        if key in raw and not raw[key] > 0:
            raise ConfigError(f"[coordinator] {key} must be greater than 0, not {raw[key]!r}")
    state = Path(str(raw.get("state_dir", "state/coordinator")))
    return CoordinatorConfig(
        listen=str(raw.get("listen", "127.0.0.1:7100")),
        state_dir=state if state.is_absolute() else (p.parent / state).resolve(),
        node_timeout_seconds=float(raw.get("node_timeout_seconds", 10)),
        heartbeat_seconds=float(raw.get("heartbeat_seconds", 5)),
        max_message_bytes=int(raw.get("max_message_bytes", 4 * 1024 * 1024)),
        tls=_tls(raw, p.parent),
        insecure=bool(raw.get("insecure", False)),
        max_queries_per_minute=_per_minute(raw.get("max_queries_per_minute", 60)),
        max_timeout_seconds=_seconds(raw, "max_timeout_seconds", 300.0),
        max_concurrent_jobs_per_analyst=_count(raw, "max_concurrent_jobs_per_analyst", 4),
        max_concurrent_jobs=_count(raw, "max_concurrent_jobs", 32),
        max_nodes=_count(raw, "max_nodes", 256),
        projects=parse_projects(document.get("projects")),
        metrics_listen=_metrics_listen(raw),
        console=_console(document.get("console"), p.parent),
    )


def _console(raw: object, base: Path) -> ConsoleSettings | None:
    if raw is None:
        return None
    return parse_console(raw, base, "[console]", default_port=DEFAULT_COORDINATOR_PORT)


def _metrics_listen(raw: dict) -> str:
    listen = str(raw.get("metrics_listen", ""))
    if listen:
        loopback_address(listen, "[coordinator]")
    return listen


def _per_minute(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"[coordinator] max_queries_per_minute must be a whole number >= 0, not {value!r}")
    return value


def _seconds(raw: dict, key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigError(f"[coordinator] {key} must be a number of seconds above 0, not {value!r}")
    return float(value)


def _count(raw: dict, key: str, default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"[coordinator] {key} must be a whole number >= 1, not {value!r}")
    return value


def _tls(raw: dict, base: Path) -> TlsFiles | None:
    try:
        return tls_files(raw, base, "[coordinator]")
    except PkiError as exc:
        raise ConfigError(exc.message, rule=exc.rule) from None
