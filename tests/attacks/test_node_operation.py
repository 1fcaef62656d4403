"""A node tells its operator what is wrong, and its analysts nothing local (real processes).

Douane serves CSV files through DuckDB, Belastingdienst a PostgreSQL table. Douane's config maps one
port code and one year to nothing, so its load and each query count the rows that fall out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from federation import pki
from protocols.errors import FederationError
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

NODES = ["belastingdienst", "douane"]
NO_GROUP = "fall in no group"


def _unmap(paths: dict[str, Path]) -> None:
    """Douane's Moerdijk code and its 2019 rows map to nothing in the declared domains."""
    config = tomllib.loads(paths["douane"].read_text())
    columns = {
        c["name"]: c for ds in config["datasets"] if ds["name"] == "declarations" for c in ds["columns"]
    }
    del columns["port"]["codes"]["MOE"]
    columns["year"]["domain"].remove(2019)
    paths["douane"].write_text(tomli_w.dumps(config))


@pytest.fixture(scope="module")
def fed_op(
    tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str
) -> Iterator[tuple[RunningFederation, str]]:
    running, schema = start_federation(
        tmp_path_factory.mktemp("operator"), postgres_dsn, nodes=NODES, edit=_unmap
    )
    try:
        yield running, schema
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _cli(
    *args: str, timeout: float = 90, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _copy(fed: RunningFederation, node: str, tmp_path: Path, *edits: tuple[str, str]) -> Path:
    """``node``'s config with its own state folder (and ``edits``), beside the original."""
    text = fed.paths[node].read_text()
    text = text.replace('state_dir = "', f'state_dir = "{tmp_path}/', 1)
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path = fed.paths[node].parent / f"{node}-{tmp_path.name}.toml"
    path.write_text(text)
    return path


def _log(fed: RunningFederation, node: str) -> str:
    return (fed.procs.log_dir / f"{node}.log").read_text(errors="replace")


def _wait_for(predicate: object, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_unmapped_rows_are_counted_at_load_and_per_query(fed_op: tuple[RunningFederation, str]) -> None:
    fed, _ = fed_op
    assert "dataset declarations column port" in _log(fed, "douane") and NO_GROUP in _log(fed, "douane")
    with fed.client() as client:
        client.query("SELECT port, COUNT(*) AS n FROM declarations GROUP BY port")
    assert _wait_for(lambda: "query on dataset declarations" in _log(fed, "douane"), 10)
    line = next(x for x in _log(fed, "douane").splitlines() if "query on dataset declarations" in x)
    assert "column port value outside the domain" in line
    # The operator's check says the same, without a coordinator.
    checked = _cli("node", "check", "--config", str(fed.paths["douane"]))
    assert checked.returncode == 0 and "unmapped_values" in checked.stdout, checked.stdout + checked.stderr


def test_second_process_on_the_same_state_folder_is_refused(fed_op: tuple[RunningFederation, str]) -> None:
    fed, _ = fed_op
    second = _cli("node", "start", "--config", str(fed.paths["douane"]))
    assert second.returncode == 1
    assert "already running on this state folder" in second.stderr and "state_locked" in second.stderr
    assert "Traceback" not in second.stderr
    with fed.client() as client:
        nodes = client.nodes()
    assert set(nodes[nodes["connected"]]["node"]) == set(NODES)


def test_a_missing_postgres_table_reaches_the_analyst_as_the_dataset_only(
    fed_op: tuple[RunningFederation, str], postgres_dsn: str
) -> None:
    import psycopg

    fed, schema = fed_op
    table = "belastingdienst_vat_returns"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'ALTER TABLE "{schema}"."{table}" RENAME TO "{table}_away"')
    try:
        with fed.client() as client, pytest.raises(FederationError) as info:
            client.query("SELECT COUNT(*) AS n FROM vat_returns")
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'ALTER TABLE "{schema}"."{table}_away" RENAME TO "{table}"')
    text = str(info.value)
    assert "vat_returns" in text and "source_unavailable" in text, text
    for local in (schema, table, "does not exist", "relation", "omzet", str(fed.root)):
        assert local not in text, (local, text)


@pytest.mark.parametrize(
    ("node", "edit", "rule"),
    [
        ("douane", ('local = "haven"', 'local = "haven_typo"'), "unknown_local_column"),
        (
            "belastingdienst",
            ("belastingdienst_vat_returns", "belastingdienst_vat_retruns"),
            "unknown_local_table",
        ),
    ],
)
def test_node_start_refuses_a_typo_in_a_local_name(
    fed_op: tuple[RunningFederation, str], tmp_path: Path, node: str, edit: tuple[str, str], rule: str
) -> None:
    fed, _ = fed_op
    started = _cli("node", "start", "--config", str(_copy(fed, node, tmp_path, edit)))
    assert started.returncode == 1
    assert f"rule: {rule}" in started.stderr and "not started" in started.stderr
    assert "Traceback" not in started.stderr


def test_revoked_node_stops_with_the_reason(fed_op: tuple[RunningFederation, str], tmp_path: Path) -> None:
    fed, _ = fed_op
    pki_dir = fed.root / "pki"
    kit = pki.issue(pki_dir, "leaver", "node", org="leaver", out=tmp_path / "kits")
    config = _copy(
        fed,
        "douane",
        tmp_path,
        ('id = "douane"', 'id = "leaver"'),
        ('tls_dir = "../pki/kits/douane"', f'tls_dir = "{kit.folder}"'),
    )
    pki.revoke(pki_dir, "leaver", "cessation_of_operation")
    # The coordinator gets the new CRL; the node's kit still holds the one it was issued with.
    (pki_dir / "kits" / "coordinator" / "crl.pem").write_bytes((pki_dir / "crl.pem").read_bytes())
    started = _cli("node", "start", "--config", str(config), timeout=120)
    assert started.returncode == 1, started.stderr
    assert "refused this node for good" in started.stderr and "rule: revoked" in started.stderr
    assert started.stderr.count("retrying in") <= 1


def test_job_history_keeps_the_refusal_reason(fed_op: tuple[RunningFederation, str]) -> None:
    fed, _ = fed_op
    with fed.client() as client:
        with pytest.raises(FederationError) as refused:
            client.query("SELECT COUNT(*) AS n FROM declarations", epsilon=50)
        record = client.jobs(limit=1).iloc[0]
    assert record["status"] == "failed" and refused.value.rule in record["error"]
    assert f"[rule: {refused.value.rule}]" in record["error"]
    kit = {"FEDERATION_TLS_DIR": str(fed.root / "pki" / "kits" / "analyst"), "COLUMNS": "80"}
    shown = _cli("jobs", "--limit", "3", "-c", fed.address, env=kit)
    assert shown.returncode == 0, shown.stderr
    assert f"rule: {refused.value.rule}" in shown.stdout
    assert all(len(line) <= 80 for line in shown.stdout.splitlines()), shown.stdout


def test_admin_forgets_a_disconnected_node_and_no_one_else_may(fed_op: tuple[RunningFederation, str]) -> None:
    # Last in this module: it stops Douane.
    fed, _ = fed_op
    pki_dir = fed.root / "pki"
    admin = pki.issue(pki_dir, "admin-mdc", "admin", org="mdc", out=pki_dir / "kits")
    with fed.client(tls_dir=admin.folder) as client, pytest.raises(FederationError) as busy:
        client.nodes(forget="douane")
    assert busy.value.rule == "node_connected"
    fed.procs.stop("douane")
    with fed.client() as analyst:
        assert _wait_for(lambda: not analyst.nodes().set_index("node").loc["douane", "connected"], 30)
        with pytest.raises(FederationError) as refused:
            analyst.nodes(forget="douane")
        assert refused.value.rule == "wrong_role"
        assert "douane" in set(analyst.nodes()["node"])
    with fed.client(tls_dir=admin.folder) as client:
        left = client.nodes(forget="douane")
        assert set(left["node"]) == {"belastingdienst"}
        with pytest.raises(FederationError) as unknown:
            client.nodes(forget="douane")
        assert unknown.value.rule == "unknown_node"
    done = _cli(
        "nodes", "--forget", "douane", "-c", fed.address, env={"FEDERATION_TLS_DIR": str(admin.folder)}
    )
    assert done.returncode == 1 and "unknown_node" in done.stderr
