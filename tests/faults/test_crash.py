"""Faults on a real DP federation (coordinator and nodes as OS processes over mutual TLS): the
coordinator killed mid-job, a budget race, an edited audit log, and a full disk under a node's
audit log (a real tmpfs).

Invariants checked against the nodes' own files: no job id is charged twice, and every ledger
charge has a "released" audit entry for the same job ("no release without an audit entry").
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from protocols.errors import FederationError
from tests.integration.conftest import RunningFederation, _drop_schema, parallel_jobs, start_federation

NODES = ["douane", "kmar"]
DISK_BYTES = 8 * 1024 * 1024  # room for the converted CSV source (DuckDB blocks are 256 KiB) and the log


def _mount_tmpfs(target: Path) -> str:
    """Mount a small tmpfs at ``target``; returns '' on success or the reason it is not possible."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(target)],
        capture_output=True,
        text=True,
    )
    return "" if done.returncode == 0 else f"mount -t tmpfs is not permitted here: {done.stderr.strip()}"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    disk = tmp_path_factory.mktemp("kmar-disk")
    problem = _mount_tmpfs(disk)

    def state_on_tmpfs(paths: dict[str, Path]) -> None:
        parallel_jobs(paths)  # eight submissions race for the last of a budget
        if not problem:
            text = paths["kmar"].read_text()
            lines = [
                f'state_dir = "{disk}"' if ln.startswith("state_dir") else ln for ln in text.splitlines()
            ]
            paths["kmar"].write_text("\n".join(lines) + "\n")

    try:
        running, schema = start_federation(
            tmp_path_factory.mktemp("crash"),
            postgres_dsn,
            nodes=NODES,
            dp_required=True,
            edit=state_on_tmpfs,
            projects=("crash", "race", "disk"),
        )
    except BaseException:
        if not problem:
            subprocess.run(["umount", "-l", str(disk)], check=False)
        raise
    running.disk = disk if not problem else None  # type: ignore[attr-defined]
    running.disk_problem = problem  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)
        if not problem:
            subprocess.run(["umount", "-l", str(disk)], check=False)


def _state(fed: RunningFederation, node: str) -> Path:
    if node == "kmar" and fed.disk is not None:  # type: ignore[attr-defined]
        return fed.disk  # type: ignore[attr-defined]
    return fed.root / "state" / node


def _audit(fed: RunningFederation, node: str) -> list[dict[str, Any]]:
    text = (_state(fed, node) / "audit.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _charges(fed: RunningFederation, node: str) -> list[tuple[str, str, float]]:
    with sqlite3.connect(_state(fed, node) / "ledger.sqlite") as conn:
        return [
            (str(j), str(p), float(e))
            for j, p, e in conn.execute("SELECT job_id, project, cost_epsilon FROM charges")
        ]


def _check_invariants(fed: RunningFederation) -> None:
    for node in NODES:
        charged = [job for job, _, _ in _charges(fed, node)]
        assert len(charged) == len(set(charged)), f"{node} charged a job twice"
        released = {e["job_id"] for e in _audit(fed, node) if e["kind"] == "released"}
        unlogged = set(charged) - released
        assert not unlogged, f"{node} charged without a released audit entry: {unlogged}"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_coordinator_killed_mid_job(fed: RunningFederation) -> None:
    project = "crash"
    kmar = fed.procs.procs["kmar"]
    failure: dict[str, Any] = {}
    # Connected before kmar stops, so the query starts within kmar's heartbeat window and kmar is asked.
    asking = fed.client(timeout=30)
    asking.nodes()

    def ask() -> None:
        with asking as client:
            try:
                client.query("SELECT COUNT(*) AS n FROM signals", epsilon=0.5, project=project, timeout=20)
            except FederationError as exc:
                failure["error"] = exc

    asker = threading.Thread(target=ask)
    os.kill(kmar.pid, signal.SIGSTOP)  # kmar holds the job: the coordinator waits for it
    try:
        asker.start()
        deadline = time.monotonic() + 20
        while not any(p == project for _, p, _ in _charges(fed, "douane")):
            assert time.monotonic() < deadline, "douane never answered"
            time.sleep(0.1)
        fed.procs.kill("coordinator")  # SIGKILL while kmar still has the job
    finally:
        os.kill(kmar.pid, signal.SIGCONT)
    asker.join(timeout=40)
    assert failure["error"].rule in ("coordinator_unreachable", "coordinator_error")
    job = next(j for j, p, _ in _charges(fed, "douane") if p == project)

    fed.procs.start_coordinator()
    fed.procs.wait_for_nodes(set(NODES), timeout=60)
    with fed.client() as client:
        again = client.query("SELECT COUNT(*) AS n FROM signals", epsilon=0.5, project=project)
        budget = client.budget(project)
    assert again.attrs["job_id"] != job and set(again.attrs["answered"]) == set(NODES)
    douane = [(j, e) for j, p, e in _charges(fed, "douane") if p == project]
    assert len(douane) == 2 and sum(e for _, e in douane) == pytest.approx(1.0)
    # kmar charged the interrupted job at most once, and only with its audit entry.
    assert len([j for j, p, _ in _charges(fed, "kmar") if j == job]) <= 1
    spent = budget[budget["dataset"] == "signals"].set_index("node")["spent_epsilon"]
    assert spent["douane"] == pytest.approx(1.0)
    _check_invariants(fed)


def test_budget_race_never_overspends(fed: RunningFederation) -> None:
    done = _cli(
        "budget", "set", "--config", str(fed.paths["douane"]), "--dataset", "declarations",
        "--project", "race", "--epsilon", "3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    def submit(_: int) -> str:
        with fed.client() as client:
            try:
                client.query(
                    "SELECT COUNT(*) AS n FROM declarations", epsilon=1.0, project="race", timeout=60
                )
                return "ok"
            except FederationError as exc:
                return exc.rule

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(submit, range(8)))
    assert sorted(outcomes) == ["budget"] * 5 + ["ok"] * 3
    race = [e for _, p, e in _charges(fed, "douane") if p == "race"]
    assert len(race) == 3 and sum(race) == pytest.approx(3.0)
    _check_invariants(fed)


def test_edited_audit_log_is_detected(fed: RunningFederation, tmp_path: Path) -> None:
    config = fed.paths["douane"]
    intact = _cli("audit", "verify", "--config", str(config))
    assert intact.returncode == 0 and "intact" in intact.stdout, intact.stderr
    copy = tmp_path / "copy"
    shutil.copytree(config.parent.parent, copy, ignore=shutil.ignore_patterns("data", "logs", "kmar*"))
    log = copy / "state" / "douane" / "audit.log"
    lines = log.read_text().splitlines()
    # An officer's copy where a release's cost was made to look smaller.
    at = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "released")
    entry = json.loads(lines[at])
    entry["payload"]["epsilon"] = 0.0
    lines[at] = json.dumps(entry)
    log.write_text("\n".join(lines) + "\n")
    edited = _cli("audit", "verify", "--config", str(copy / "nodes" / "douane.toml"))
    assert edited.returncode == 1 and f"line {at + 1}" in edited.stderr, edited.stderr
    del lines[at]  # and the same entry dropped altogether
    log.write_text("\n".join(lines) + "\n")
    dropped = _cli("audit", "verify", "--config", str(copy / "nodes" / "douane.toml"))
    assert dropped.returncode == 1 and "Traceback" not in dropped.stderr


def test_full_disk_under_the_audit_log(fed: RunningFederation) -> None:
    disk = fed.disk  # type: ignore[attr-defined]
    if disk is None:
        pytest.skip(f"no tmpfs for the node's state folder: {fed.disk_problem}")  # type: ignore[attr-defined]
    sql = "SELECT COUNT(*) AS n FROM kmar.crossings"
    with fed.client() as client:
        client.query(sql, epsilon=0.5, project="disk")  # the log works before the disk fills
    before = len(_audit(fed, "kmar"))
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for chunk in (4096, 512, 64, 8, 1):  # down to the last byte the tmpfs will take
            try:
                while True:
                    fh.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    rules: list[str] = []
    try:
        # The log's last page may still hold a few entries; once it is full, nothing goes out.
        with fed.client() as client:
            for _ in range(20):
                try:
                    client.query(sql, epsilon=0.5, project="disk")
                    rules.append("answered")
                except FederationError as exc:
                    assert "kmar" in str(exc) and "nothing is released" in str(exc), str(exc)
                    rules.append(exc.rule)
                    if exc.rule == "audit_unavailable":
                        break
    finally:
        filler.unlink()
    assert rules[-1] == "audit_unavailable", rules
    assert set(rules) <= {"answered", "ledger_unavailable", "audit_unavailable"}, rules
    released = [e for e in _audit(fed, "kmar")[before:] if e["kind"] == "released"]
    assert len(released) == rules.count("answered")
    charged = [1 for _, p, _ in _charges(fed, "kmar") if p == "disk"]
    assert len(charged) == 1 + rules.count("answered")
    verified = _cli("audit", "verify", "--config", str(fed.paths["kmar"]))
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stderr
    with fed.client() as client:  # space is back: the node releases again
        assert int(client.query(sql, epsilon=0.5, project="disk")["n"].iloc[0]) != 0
    _check_invariants(fed)
