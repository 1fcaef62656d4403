"""Attacks on a node's audit log over a real federation (coordinator and nodes as OS processes, mutual
TLS): entries cut from the end of the log at a line boundary, the log cut and re-grown by the running
node, and a verify key taken away. The heads the nodes published with their answers, as the coordinator
kept them, are what `federation audit verify` checks the log against (docs/audit.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

NODES = ["douane", "kmar"]
QUERY = "SELECT COUNT(*) AS n FROM signals"


def _key_elsewhere(paths: dict[str, Path]) -> None:
    # douane keeps its signing key outside its state folder, as docs/audit.md asks of production nodes.
    text = paths["douane"].read_text()
    paths["douane"].write_text(
        text.replace("[node]\n", '[node]\naudit_signing_key = "../keys/douane/audit_signing.key"\n', 1)
    )


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    running, schema = start_federation(
        tmp_path_factory.mktemp("audit-tail"),
        postgres_dsn,
        nodes=NODES,
        dp_required=True,
        edit=_key_elsewhere,
    )
    try:
        with running.client() as client:
            for _ in range(3):
                client.query(QUERY, epsilon=0.2, project="audit-tail")
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _cli(fed: RunningFederation, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FEDERATION_TLS_DIR": str(fed.root / "pki" / "kits" / "analyst")}
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", *args], capture_output=True, text=True, timeout=60, env=env
    )


def _heads(fed: RunningFederation, path: Path, *extra: str) -> list[dict]:
    """Export the coordinator's heads as an analyst would, into ``path``."""
    done = _cli(fed, "audit", "heads", "-c", fed.address, "--format", "json", *extra)
    assert done.returncode == 0, done.stderr
    path.write_text(done.stdout)
    return json.loads(done.stdout)["rows"]


def _officer_copy(fed: RunningFederation, where: Path) -> Path:
    """The node folders as a privacy officer receives them; returns douane's config in the copy."""
    shutil.copytree(fed.root, where, ignore=shutil.ignore_patterns("data", "logs", "pki"))
    return where / "nodes" / "douane.toml"


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines()


def test_analyst_reads_the_heads_the_coordinator_kept(fed: RunningFederation, tmp_path: Path) -> None:
    rows = _heads(fed, tmp_path / "heads.json")
    assert {r["node"] for r in rows} == set(NODES)
    for row in rows:
        # Each head is an entry of that node's log: its number and hash, nothing else of it.
        entry = json.loads(_lines(fed.root / "state" / row["node"] / "audit.log")[row["seq"] - 1])
        assert (entry["seq"], entry["hash"]) == (row["seq"], row["hash"])
        assert set(row) == {"node", "seq", "hash", "job_id", "seen"}


def test_intact_log_passes_and_prints_counts(fed: RunningFederation, tmp_path: Path) -> None:
    _heads(fed, tmp_path / "heads.json")
    config = _officer_copy(fed, tmp_path / "copy")
    entries = len(_lines(tmp_path / "copy" / "state" / "douane" / "audit.log"))
    done = _cli(fed, "audit", "verify", "--config", str(config), "--heads-from", str(tmp_path / "heads.json"))
    assert done.returncode == 0, done.stderr
    assert f"{entries} entries, {entries} signatures checked, head {entries}:" in done.stdout
    assert "1 published head(s) found" in done.stdout
    # The key does not sit beside the log: the node was told to keep it elsewhere.
    assert not list((tmp_path / "copy" / "state" / "douane").glob("audit_*.key"))


def test_tail_cut_at_a_line_boundary_fails_against_the_published_head(
    fed: RunningFederation, tmp_path: Path
) -> None:
    rows = _heads(fed, tmp_path / "heads.json", "--node", "douane")
    config = _officer_copy(fed, tmp_path / "copy")
    log = tmp_path / "copy" / "state" / "douane" / "audit.log"
    kept = _lines(log)[: rows[0]["seq"] - 3]
    log.write_text("".join(line + "\n" for line in kept))
    # What is left is a whole, signed chain: without a head nothing shows the cut.
    alone = _cli(fed, "audit", "verify", "--config", str(config))
    assert alone.returncode == 0 and "no published head given" in alone.stderr, alone.stderr
    for anchor in (
        ["--heads-from", str(tmp_path / "heads.json")],
        ["--head", f"{rows[0]['seq']}:{rows[0]['hash']}"],
    ):
        cut = _cli(fed, "audit", "verify", "--config", str(config), *anchor)
        assert cut.returncode != 0
        assert "audit_truncated" in cut.stderr and f"ends at entry {len(kept)}" in cut.stderr, cut.stderr
        assert "Traceback" not in cut.stderr


@pytest.mark.parametrize(
    ("node", "verify_key"),
    [("kmar", "state/kmar/audit_verify.key"), ("douane", "keys/douane/audit_verify.key")],
)
def test_missing_verify_key_fails(fed: RunningFederation, tmp_path: Path, node: str, verify_key: str) -> None:
    # kmar keeps the default key location (its state folder), douane a separate one.
    _officer_copy(fed, tmp_path / "copy")
    config = tmp_path / "copy" / "nodes" / f"{node}.toml"
    (tmp_path / "copy" / verify_key).unlink()
    done = _cli(fed, "audit", "verify", "--config", str(config))
    assert done.returncode != 0 and "audit_key_missing" in done.stderr, done.stdout + done.stderr
    assert "intact" not in done.stdout and "Traceback" not in done.stderr
    elsewhere = _cli(
        fed, "audit", "verify", "--config", str(config), "--verify-key", str(tmp_path / "none.key")
    )
    assert elsewhere.returncode != 0 and "audit_key_missing" in elsewhere.stderr


def test_live_log_cut_and_regrown_is_caught(fed: RunningFederation, tmp_path: Path) -> None:
    # Someone with write access cuts kmar's live log; kmar chains on after the cut and keeps answering.
    before = _heads(fed, tmp_path / "before.json", "--node", "kmar")[0]
    log = fed.root / "state" / "kmar" / "audit.log"
    log.write_text("".join(line + "\n" for line in _lines(log)[: before["seq"] - 4]))
    with fed.client() as client:
        for _ in range(3):
            client.query(QUERY, epsilon=0.2, project="audit-tail")
    assert len(_lines(log)) >= before["seq"]
    assert _cli(fed, "audit", "verify", "--config", str(fed.paths["kmar"])).returncode == 0
    regrown = _cli(
        fed,
        "audit",
        "verify",
        "--config",
        str(fed.paths["kmar"]),
        "--heads-from",
        str(tmp_path / "before.json"),
    )
    assert regrown.returncode != 0 and "audit_head_mismatch" in regrown.stderr, regrown.stderr
    # The coordinator saw two different entries under one number and says so.
    listed = _cli(fed, "audit", "heads", "-c", fed.address, "--all", "--node", "kmar")
    assert listed.returncode == 0 and "node kmar published two different entries" in listed.stderr
