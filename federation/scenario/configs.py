"""Node and coordinator configs of the scenario (docs/config.md), written as TOML with tomli-w."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import tomli_w

from federation.scenario.datasets import DATASETS, ColumnSpec, DatasetSpec, Scenario
from federation.scenario.errors import ScenarioError
from federation.scenario.vocabulary import CONTROLLERS, NODES

FORMATS = ("csv", "parquet", "postgres")
DEFAULT_FORMATS = {
    "politie": "csv",
    "douane": "csv",
    "kmar": "csv",
    "om": "parquet",
    "fiod": "parquet",
    "belastingdienst": "postgres",
}
OPERATIONS = ("count", "count_distinct", "sum", "avg", "variance", "percentile")
MIN_GROUP_SIZE = 10

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_coordinator(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ScenarioError("coordinator_address", f"coordinator must be host:port, got {address!r}")


def check_schema(pg_schema: str) -> None:
    if not isinstance(pg_schema, str) or not _SCHEMA_NAME.fullmatch(pg_schema):
        raise ScenarioError(
            "pg_schema_identifier",
            f"pg_schema must be a lower-case SQL identifier (letters, digits, _), got {pg_schema!r}",
        )


def check_formats(formats: Mapping[str, str] | None) -> dict[str, str]:
    for node, fmt in (formats or {}).items():
        if node not in NODES:
            raise ScenarioError("node_known", f"unknown node {node!r} in formats; known: {', '.join(NODES)}")
        if fmt not in FORMATS:
            raise ScenarioError(
                "format_known", f"format for {node!r} must be one of {', '.join(FORMATS)}, got {fmt!r}"
            )
    return dict(formats or {})


def pg_table(pg_schema: str, spec: DatasetSpec) -> str:
    return f"{pg_schema}.{spec.node}_{spec.name}"


# Projects of the scenario (docs/projects.md). Any holder of a federation analyst certificate is a
# member; "*" as a name admits ad-hoc project names (tests, benchmarks) under a development purpose
# that a node's policy can refuse; they all run as project "*" and so share one budget per dataset.
DEMO_PROJECTS: tuple[dict[str, Any], ...] = (
    {
        "name": "default",
        "purpose": "strategic picture of undermining crime: nature and extent by phenomenon, region and year",
        "legal_basis": "MIT covenant, joint strategic analysis (synthetic scenario)",
    },
    {
        "name": "mit-rotterdam",
        "purpose": "cocaine import and its facilitators through the port of Rotterdam",
        "legal_basis": "MIT covenant, phenomenon case approved by the MIO (synthetic scenario)",
    },
    {
        "name": "*",
        "purpose": "development and testing on synthetic data",
        "legal_basis": "none needed: synthetic data only",
    },
)


def dumps(document: Mapping[str, Any], comment: str) -> str:
    """TOML text of ``document`` under a one-line ``comment``."""
    return f"# {comment}\n\n" + tomli_w.dumps(document)


def coordinator_document(coordinator: str = "127.0.0.1:7100") -> dict[str, Any]:
    """The coordinator config (docs/config.md) with the scenario's projects, as a TOML document."""
    check_coordinator(coordinator)
    expires = (dt.date.today() + dt.timedelta(days=365)).isoformat()
    return {
        "coordinator": {
            "listen": coordinator,
            "state_dir": "state/coordinator",
            "node_timeout_seconds": 10,
            "heartbeat_seconds": 5,
            "max_message_bytes": 4_194_304,
        },
        "projects": [{**project, "members": ["*"], "expires": expires} for project in DEMO_PROJECTS],
    }


COORDINATOR_COMMENT = "Coordinator of the synthetic MIT scenario."


def coordinator_config(coordinator: str = "127.0.0.1:7100") -> str:
    """TOML text of the coordinator config (docs/config.md), with the scenario's projects."""
    return dumps(coordinator_document(coordinator), COORDINATOR_COMMENT)


def _column_table(col: ColumnSpec) -> dict[str, Any]:
    items: dict[str, Any] = {"name": col.name, "local": col.local, "kind": col.kind}
    if col.domain is not None:
        items["domain"] = list(col.domain)
    if col.bounds is not None:
        items["bounds"] = list(col.bounds)
    if col.date_range is not None:
        items["range"] = list(col.date_range)
    if col.id_type is not None:
        items["id_type"] = col.id_type
    if col.codes:
        items["codes"] = dict(col.codes)
    return items


def node_documents(
    scenario: Scenario,
    coordinator: str = "127.0.0.1:7100",
    formats: Mapping[str, str] | None = None,
    postgres_dsn: str | None = None,
    pg_schema: str = "mit_demo",
) -> dict[str, dict[str, Any]]:
    """Every node config plus the coordinator config as TOML documents; see :func:`node_configs`."""
    check_coordinator(coordinator)
    check_schema(pg_schema)
    kinds = {node: ("parquet" if fmt == "postgres" else fmt) for node, fmt in DEFAULT_FORMATS.items()}
    kinds.update(check_formats(formats))
    out = {"coordinator": coordinator_document(coordinator)}
    for node in NODES:
        specs = [spec for spec in DATASETS if spec.node == node and spec.key in scenario.frames]
        if not specs:
            continue
        if kinds[node] == "postgres" and not postgres_dsn:
            raise ScenarioError(
                "postgres_dsn_required", f"node {node!r} reads from PostgreSQL but no DSN was given"
            )
        policy = {
            "min_group_size": MIN_GROUP_SIZE,
            "operations": list(OPERATIONS),
            "max_groups": 2000,
            # Identifier columns that may take part in entity overlap (docs/overlap.md).
            "overlap_columns": ["company", "person"],
            # Synthetic data: a project without an officer's grant gets budget_epsilon (10) on
            # a dataset, and all projects together get at most 30 (docs/privacy.md). A real
            # node keeps require_budget = true and grants each project with `federation budget set`.
            "require_budget": False,
            "dataset_budget_epsilon": 30.0,
        }
        datasets = []
        for spec in specs:
            kind = kinds[node]
            if kind == "postgres":
                source = {"kind": "postgres", "dsn": postgres_dsn, "table": pg_table(pg_schema, spec)}
            else:
                source = {"kind": kind, "path": f"../data/{node}/{spec.name}.{kind}"}
            datasets.append(
                {
                    "name": spec.name,
                    "description": spec.description,
                    "controller": CONTROLLERS[node],
                    "exposed": True,
                    "privacy_unit": spec.privacy_unit,
                    "max_rows_per_unit": scenario.max_rows_per_unit(spec.key),
                    "source": source,
                    "columns": [_column_table(col) for col in spec.columns],
                }
            )
        out[node] = {
            "node": {
                "id": node,
                "coordinator": coordinator,
                "state_dir": f"../state/{node}",
                "heartbeat_seconds": 5,
            },
            "policy": policy,
            "datasets": datasets,
        }
    return out


def node_comment(node: str, seed: int) -> str:
    """The first line of a node config of the scenario."""
    return f"{CONTROLLERS[node]} node of the synthetic MIT scenario (seed {seed})."


def node_configs(
    scenario: Scenario,
    coordinator: str = "127.0.0.1:7100",
    formats: Mapping[str, str] | None = None,
    postgres_dsn: str | None = None,
    pg_schema: str = "mit_demo",
) -> dict[str, str]:
    """TOML text of every node config plus the coordinator config (docs/config.md).

    Returns ``{"coordinator": text, "politie": text, ...}`` for the nodes that have datasets in
    ``scenario``. Configs are meant for ``<out>/nodes/<node>.toml``; file sources point to
    ``<out>/data/<node>/<dataset>.<ext>``. ``formats`` gives the source kind per node (the
    defaults, with Parquet in place of PostgreSQL); it is taken as is, without checking that
    the database is reachable. ``max_rows_per_unit`` is the largest count in the data.
    """
    documents = node_documents(scenario, coordinator, formats, postgres_dsn, pg_schema)
    return {
        name: dumps(doc, COORDINATOR_COMMENT if name == "coordinator" else node_comment(name, scenario.seed))
        for name, doc in documents.items()
    }
