"""A real federation for integration tests: coordinator and six nodes as OS processes over gRPC.

Sources: Douane, Politie and KMar from CSV, OM and FIOD from Parquet, Belastingdienst from
PostgreSQL (required under CI; elsewhere the suite skips when no server is reachable).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from federation.client import Client
from federation.processes import LocalFederation, free_port
from federation.scenario import Scenario, generate, write_scenario

SEED = 11
ROWS = 4000


@dataclass
class RunningFederation:
    procs: LocalFederation
    paths: dict[str, Path]
    scenario: Scenario
    address: str
    root: Path

    def client(self, **kwargs: object) -> Client:
        kwargs.setdefault("tls_dir", self.root / "pki" / "kits" / "analyst")
        return Client(self.address, **kwargs)  # type: ignore[arg-type]


def wait_disconnected(client: Client, node: str, timeout: float = 30.0) -> None:
    """Wait until the coordinator lists ``node`` as not connected (tests use 1 s heartbeats, so
    three missed ones take about 3 s)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = client.nodes()
        if not listed.loc[listed["node"] == node, "connected"].item():
            return
        assert time.monotonic() < deadline, f"{node} still listed as connected after {timeout:.0f}s"
        time.sleep(0.5)


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def start_federation(
    root: Path,
    dsn: str,
    nodes: list[str] | None = None,
    dp_required: bool = False,
    edit: Callable[[dict[str, Path]], None] | None = None,
    rows: int = ROWS,
    projects: Sequence[str] = (),
    timeout: float = 90,
) -> tuple[RunningFederation, str]:
    """``edit`` may change the written configs (by name) before any process starts; ``rows`` is
    the number of rows per dataset.

    ``timeout`` bounds the start of every process (a node on Spark starts a JVM first).

    ``projects`` are listed in the coordinator config, each with its own budget at the nodes;
    any other name runs as the development catch-all '*', whose jobs all share one budget.
    """
    address = f"127.0.0.1:{free_port()}"
    schema = f"it_{uuid.uuid4().hex[:10]}"
    paths = write_scenario(
        root,
        seed=SEED,
        rows=rows,
        coordinator=address,
        postgres_dsn=dsn,
        pg_schema=schema,
        formats={"belastingdienst": "postgres", "douane": "csv", "om": "parquet"},
    )
    # Short heartbeats and timeouts keep fault tests fast.
    coordinator_toml = paths["coordinator"].read_text()
    coordinator_toml = coordinator_toml.replace("heartbeat_seconds = 5", "heartbeat_seconds = 1")
    coordinator_toml += "".join(project_entry(name) for name in projects)
    paths["coordinator"].write_text(coordinator_toml)
    chosen = nodes or [k for k in paths if k != "coordinator"]
    if not dp_required:
        # Exact mode, so answers can be compared with pooled pandas to the cent.
        for node in chosen:
            text = paths[node].read_text()
            paths[node].write_text(text.replace("[policy]\n", "[policy]\ndp_required = false\n", 1))
    if edit is not None:
        edit(paths)
    procs = LocalFederation(
        coordinator_config=paths["coordinator"],
        node_configs={k: paths[k] for k in chosen},
        address=address,
        log_dir=root / "logs",
        tls_dir=root / "pki" / "kits" / "analyst",
    )
    procs.start(timeout=timeout)
    return RunningFederation(procs, paths, generate(SEED, rows), address, root), schema


def parallel_jobs(paths: dict[str, Path], per_analyst: int = 16) -> None:
    """Let one analyst run ``per_analyst`` jobs at once, for tests that race submissions."""
    text = paths["coordinator"].read_text()
    assert "[coordinator]\n" in text and "max_concurrent_jobs_per_analyst" not in text
    paths["coordinator"].write_text(
        text.replace(
            "[coordinator]\n", f"[coordinator]\nmax_concurrent_jobs_per_analyst = {per_analyst}\n", 1
        )
    )


def project_entry(name: str, purpose: str = "development and testing on synthetic data") -> str:
    """A ``[[projects]]`` entry of a coordinator config that any analyst may use."""
    return (
        f'\n[[projects]]\nname = "{name}"\npurpose = "{purpose}"\n'
        'legal_basis = "none needed: synthetic data only"\nmembers = ["*"]\nexpires = "2099-12-31"\n'
    )


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    running, schema = start_federation(tmp_path_factory.mktemp("federation"), postgres_dsn)
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


@pytest.fixture
def fed(federation: RunningFederation) -> Iterator[Client]:
    with federation.client() as client:
        yield client
