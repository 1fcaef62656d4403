"""The job history and budgets on a real TLS federation: bounded rows, pages that always fit one
message, and who may read which jobs and budgets (docs/security.md, "Who reads what")."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from federation import pki
from federation.client import Client
from federation.query import parse_query
from protocols import federation_pb2 as pb
from protocols import federation_pb2_grpc as pb_grpc
from protocols.errors import FederationError
from protocols.identity import grpc_channel_credentials
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

NODES = ["douane", "kmar"]
CLOSED = """
[[projects]]
name = "closed"
purpose = "a case only its members may see"
legal_basis = "test"
members = ["alice"]
expires = "2099-12-31"
"""


def _setup(paths: dict[str, Path]) -> None:
    text = paths["coordinator"].read_text()
    text = text.replace("[coordinator]\n", "[coordinator]\nmax_queries_per_minute = 0\n", 1)
    paths["coordinator"].write_text(text + CLOSED)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    running, schema = start_federation(
        tmp_path_factory.mktemp("history"), postgres_dsn, nodes=NODES, edit=_setup
    )
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _kit(fed: RunningFederation, subject: str, role: str, org: str | None = None) -> Path:
    pki_dir = fed.root / "pki"
    folder = pki_dir / "kits" / subject
    if not (folder / "cert.pem").exists():
        pki.issue(pki_dir, subject, role, org=org, out=pki_dir / "kits")  # type: ignore[arg-type]
    return folder


def _stub(fed: RunningFederation, subject: str, role: str = "analyst", org: str | None = None) -> Any:
    kit = _kit(fed, subject, role, org)
    creds = grpc_channel_credentials(kit / "cert.pem", kit / "key.pem", kit / "ca.pem")
    channel = grpc.secure_channel(fed.address, creds, options=[("grpc.max_receive_message_length", 64 << 20)])
    return channel, pb_grpc.AnalystStub(channel)


def _client(fed: RunningFederation, subject: str, role: str = "analyst", org: str | None = None) -> Client:
    return Client(fed.address, tls_dir=_kit(fed, subject, role, org))


def _all_pages(stub: pb_grpc.AnalystStub, **request: Any) -> list[pb.JobRecord]:
    records: list[pb.JobRecord] = []
    token = ""
    for _ in range(100):
        page = stub.Jobs(pb.JobsRequest(page_token=token, **request), timeout=30)
        records.extend(page.jobs)
        token = page.next_page_token
        if not token:
            return records
    raise AssertionError("more than 100 pages")


# --------------------------------------------------------------------------- bounded rows and pages


def test_oversized_and_control_character_project_names_are_refused_not_stored(fed: RunningFederation) -> None:
    long_name = "p" * 100_000
    channel, stub = _stub(fed, "carol")
    with channel:
        for name, rule in ((long_name, "oversized_request"), ("case\x00\x1b[2J", "malformed_request")):
            spec = parse_query("SELECT COUNT(*) AS n FROM declarations")
            spec.project = name
            answer = stub.Query(pb.QueryRequest(spec=spec), timeout=30)
            assert not answer.ok and answer.error_rule == rule, answer.error
            overlap = pb.OverlapRequest()
            overlap.spec.on = "company"
            overlap.spec.project = name
            overlap.spec.datasets.add(node="douane", dataset="declarations")
            overlap.spec.datasets.add(node="kmar", dataset="crossings")
            answer = stub.Overlap(overlap, timeout=30)
            assert not answer.ok and answer.error_rule == rule, answer.error
            with pytest.raises(grpc.RpcError) as info:
                stub.Budget(pb.BudgetRequest(project=name), timeout=30)
            assert f"[rule: {rule}]" in info.value.details()
        answer = stub.Query(
            pb.QueryRequest(spec=parse_query("SELECT COUNT(*) AS n FROM declarations"), sql="x" * 20_001),
            timeout=30,
        )
        assert not answer.ok and answer.error_rule == "oversized_request"
        stored = _all_pages(stub)
    assert all(len(j.project) <= 128 and j.project.isprintable() for j in stored)
    with _client(fed, "carol") as client, pytest.raises(FederationError) as info:
        client.query("SELECT COUNT(*) AS n FROM declarations", project=long_name)
    assert info.value.rule == "oversized_request"


def test_history_pages_always_fit_one_message(fed: RunningFederation) -> None:
    # Each job is refused for its project (dave is not a member) and stored with ~270 kB of spec
    # and query text, all within the spec bounds: 20 of them are far more than one message holds.
    spec = parse_query("SELECT COUNT(*) AS n FROM declarations")
    spec.project = "closed"
    spec.filter.in_list.column = "port"
    spec.filter.in_list.values.extend(pb.Value(text=f"{i:04d}" + "x" * 250) for i in range(1000))
    sql = "SELECT COUNT(*) AS n FROM declarations /*" + "y" * 19_900 + "*/"
    channel, stub = _stub(fed, "dave")
    with channel:
        for _ in range(20):
            answer = stub.Query(pb.QueryRequest(spec=spec, sql=sql), timeout=30)
            assert answer.error_rule == "not_a_member", answer.error
        first = stub.Jobs(pb.JobsRequest(limit=200), timeout=30)
        assert 0 < len(first.jobs) < 20 and first.next_page_token, "a page stops before the message limit"
        assert first.ByteSize() < 4 * 1024 * 1024
        records = _all_pages(stub, limit=200)
        with pytest.raises(grpc.RpcError) as info:
            stub.Jobs(pb.JobsRequest(page_token="'; DROP TABLE jobs; --"), timeout=30)
        assert "[rule: invalid_page_token]" in info.value.details()
    ids = [r.job_id for r in records]
    assert len(ids) == len(set(ids)) == 20, "every job once, newest first"
    assert [r.created_unix_ms for r in records] == sorted((r.created_unix_ms for r in records), reverse=True)
    with _client(fed, "dave") as client:
        frame = client.jobs(limit=100)
        assert len(frame) == 20 and not frame.attrs["next_page_token"]
        three = client.jobs(limit=3)
        rest = client.jobs(limit=100, page_token=three.attrs["next_page_token"])
    assert list(three["job_id"]) + list(rest["job_id"]) == ids

    env = {**os.environ, "FEDERATION_TLS_DIR": str(_kit(fed, "dave", "analyst"))}
    cli = [sys.executable, "-m", "federation.cli", "jobs", "--coordinator", fed.address, "-f", "json"]
    done = subprocess.run([*cli, "--limit", "2"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "--page" in done.stderr
    token = done.stderr.split("--page", 1)[1].split()[0]
    done = subprocess.run(
        [*cli, "--limit", "2", "--page", token], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert ids[2] in done.stdout and ids[0] not in done.stdout


# --------------------------------------------------------------------------- who reads what


def _query(fed: RunningFederation, subject: str, sql: str, project: str) -> str:
    """Run a query as ``subject`` and return its job id, answered or not."""
    spec = parse_query(sql)
    spec.project = project
    channel, stub = _stub(fed, subject)
    with channel:
        return str(stub.Query(pb.QueryRequest(spec=spec, sql=sql), timeout=60).job_id)


def _budget_nodes(fed: RunningFederation, subject: str, role: str, org: str | None, project: str) -> set[str]:
    """The nodes asked for ``project``'s budget on behalf of ``subject``."""
    channel, stub = _stub(fed, subject, role, org)
    with channel:
        return {n.node for n in stub.Budget(pb.BudgetRequest(project=project), timeout=60).nodes}


def test_analysts_read_only_their_own_and_their_projects_jobs_and_budgets(fed: RunningFederation) -> None:
    alice_job = _query(fed, "alice", "SELECT COUNT(*) AS n FROM declarations", "closed")
    bob_job = _query(fed, "bob", "SELECT COUNT(*) AS n FROM crossings", "bob-scratch")

    seen: dict[str, set[str]] = {}
    for subject, role, org in (
        ("alice", "analyst", None),
        ("bob", "analyst", None),
        ("po-douane", "privacy_officer", "douane"),
        ("root-admin", "admin", None),
    ):
        channel, stub = _stub(fed, subject, role, org)
        with channel:
            seen[subject] = {j.job_id for j in _all_pages(stub, limit=500)}
            assert {j.job_id for j in _all_pages(stub, project="closed")} <= seen[subject]
    # An analyst: its own jobs and its projects' jobs, not another analyst's.
    assert alice_job in seen["alice"] and bob_job not in seen["alice"]
    assert bob_job in seen["bob"] and alice_job not in seen["bob"]
    # A privacy officer: also every job sent to its organisation's node (Douane), not Kmar's.
    assert alice_job in seen["po-douane"] and bob_job not in seen["po-douane"]
    # An admin: everything.
    assert {alice_job, bob_job} <= seen["root-admin"]
    with _client(fed, "bob") as bob:
        assert bob.jobs(limit=500, project="closed").empty

    # Budgets: members and admins read a project's budget at every node; a privacy officer reads
    # its own node's lines of any project; anyone else is refused before any node is asked.
    assert _budget_nodes(fed, "alice", "analyst", None, "closed") == set(NODES)
    assert _budget_nodes(fed, "root-admin", "admin", None, "closed") == set(NODES)
    assert _budget_nodes(fed, "po-douane", "privacy_officer", "douane", "closed") == {"douane"}
    assert _budget_nodes(fed, "bob", "analyst", None, "bob-scratch") == set(NODES)
    with _client(fed, "bob") as bob, pytest.raises(FederationError) as info:
        bob.budget("closed")
    assert info.value.rule == "not_a_member" and "closed" in str(info.value)
