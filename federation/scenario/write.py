"""Writing the whole scenario to disk: data files, node and coordinator configs, a development PKI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from federation.scenario.configs import (
    COORDINATOR_COMMENT,
    DEFAULT_FORMATS,
    check_coordinator,
    check_formats,
    check_schema,
    dumps,
    node_comment,
    node_documents,
)
from federation.scenario.datasets import SPECS
from federation.scenario.errors import ScenarioError
from federation.scenario.generate import generate
from federation.scenario.postgres import load_postgres, postgres_available


def write_scenario(
    out: Path,
    seed: int = 7,
    rows: int = 5000,
    coordinator: str = "127.0.0.1:7100",
    postgres_dsn: str | None = None,
    pg_schema: str = "mit_demo",
    formats: dict[str, str] | None = None,
    tls: bool = True,
) -> dict[str, Path]:
    """Write data, six node configs and the coordinator config under ``out``.

    With ``tls`` (the default) a development PKI is issued under ``out/pki`` and every config
    points at its kit; without it the configs say ``insecure = true`` (development only).

    Layout: ``out/data/<node>/<dataset>.csv|.parquet``, ``out/nodes/<node>.toml``,
    ``out/coordinator.toml``. Belastingdienst reads from PostgreSQL when ``postgres_dsn`` is given
    and reachable, else from Parquet; ``formats`` overrides the source kind per node, and an
    explicit ``"postgres"`` fails if the server cannot be reached. Returns
    ``{"coordinator": path, "politie": path, ...}``.
    """
    out = Path(out)
    check_coordinator(coordinator)
    check_schema(pg_schema)
    overrides = check_formats(formats)
    kinds = dict(DEFAULT_FORMATS)
    kinds.update(overrides)
    wants_pg = [node for node, fmt in kinds.items() if fmt == "postgres"]
    pg_ok = bool(wants_pg) and postgres_dsn is not None and postgres_available(postgres_dsn)
    for node in wants_pg:
        if pg_ok:
            continue
        if node in overrides:
            reason = "no postgres_dsn was given" if not postgres_dsn else "the server is not reachable"
            raise ScenarioError("postgres_reachable", f"node {node!r} asks for PostgreSQL but {reason}")
        kinds[node] = "parquet"

    scenario = generate(seed, rows)
    for key, frame in scenario.local_frames.items():
        spec = SPECS[key]
        kind = kinds[spec.node]
        if kind == "postgres":
            load_postgres(frame, spec, postgres_dsn or "", pg_schema)
            continue
        path = out / "data" / spec.node / f"{spec.name}.{kind}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)

    documents = node_documents(scenario, coordinator, kinds, postgres_dsn, pg_schema)
    (out / "nodes").mkdir(parents=True, exist_ok=True)
    nodes = [name for name in documents if name != "coordinator"]
    kits = _issue_kits(out, nodes, coordinator) if tls else None
    paths: dict[str, Path] = {}
    for name, document in documents.items():
        path = out / "coordinator.toml" if name == "coordinator" else out / "nodes" / f"{name}.toml"
        table = "coordinator" if name == "coordinator" else "node"
        # Transport settings go first in their table, where an operator looks for them.
        transport: dict[str, Any] = (
            {"tls_dir": os.path.relpath(kits / name, path.parent)}
            if kits is not None
            else {"insecure": True}  # development only: plaintext gRPC
        )
        document = {**document, table: {**transport, **document[table]}}
        comment = COORDINATOR_COMMENT if name == "coordinator" else node_comment(name, scenario.seed)
        path.write_text(dumps(document, comment), encoding="utf-8")
        paths[name] = path
    return paths


def _issue_kits(out: Path, nodes: list[str], coordinator: str) -> Path:
    """A development PKI for the scenario: a root, the coordinator, each node and one analyst."""
    from federation import pki

    pki_dir = out / "pki"
    kits = pki_dir / "kits"
    if not (pki_dir / pki.CA_CERT).exists():
        pki.init_root(pki_dir, name="MIT Federation Demo Root")
    host = coordinator.rsplit(":", 1)[0]
    wanted: list[tuple[str, pki.Role, str | None]] = [
        ("coordinator", "coordinator", None),
        ("analyst", "analyst", "mdc"),
    ]
    wanted += [(node, "node", node) for node in nodes]
    for subject, role, org in wanted:
        if not (kits / subject / "cert.pem").exists():
            hosts = tuple(dict.fromkeys([host, "127.0.0.1", "localhost"]))
            pki.issue(pki_dir, subject, role, org=org, hosts=hosts, out=kits)
    return kits
