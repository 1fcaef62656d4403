"""Purpose binding, officers' approvals and quorum on a real TLS federation (docs/projects.md).

Three nodes run as processes over mutual TLS: Douane asks its officer's approval for project
'sensitive' on declarations; KMar lets its signals be used only by some projects; Politie only for
one purpose. The coordinator lists projects that are unknown, expired, closed or need a quorum.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from federation import pki
from federation.query import parse_query
from nodes.approvals import ApprovalStore, approvals_path
from nodes.audit import export, verify
from nodes.config import load_node_config
from nodes.context import open_ledger
from protocols import federation_pb2 as pb
from protocols import federation_pb2_grpc as pb_grpc
from protocols.canonical import canonical_job_hash, template_hash
from protocols.errors import FederationError
from protocols.identity import grpc_channel_credentials
from tests.integration.conftest import RunningFederation, _drop_schema, start_federation

NODES = ["douane", "kmar", "politie"]
STRATEGIC = "strategic picture of undermining crime"
PROJECTS = f"""
[[projects]]
name = "default"
purpose = "{STRATEGIC}"
legal_basis = "MIT covenant, joint strategic analysis"
members = ["analyst"]
expires = "2099-12-31"

[[projects]]
name = "mit-rotterdam"
purpose = "cocaine import through the port of Rotterdam"
legal_basis = "MIT covenant, phenomenon case approved by the MIO"
members = ["analyst"]
expires = "2099-12-31"

[[projects]]
name = "old-case"
purpose = "{STRATEGIC}"
legal_basis = "MIT covenant"
members = ["analyst"]
expires = "2020-06-30"

[[projects]]
name = "closed-circle"
purpose = "{STRATEGIC}"
legal_basis = "MIT covenant"
members = ["someone-else"]
expires = "2099-12-31"

[[projects]]
name = "sensitive"
purpose = "{STRATEGIC}"
legal_basis = "MIT covenant"
members = ["analyst"]
expires = "2099-12-31"

[[projects]]
name = "quorum-2"
purpose = "{STRATEGIC}"
legal_basis = "MIT covenant, lawfulness committee"
members = ["analyst"]
expires = "2099-12-31"
quorum = 2
approvers = ["douane", "kmar", "politie"]
"""
DATASET_POLICY = {
    "douane": ("declarations", 'approval_projects = ["sensitive"]'),
    "kmar": ("signals", 'projects = ["default", "sensitive", "quorum-2"]'),
    "politie": ("signals", f'purposes = ["{STRATEGIC}"]'),
}


def _dataset_policy(text: str, dataset: str, line: str) -> str:
    """Give one dataset of a node config its own [datasets.policy] table."""
    start = text.index(f'name = "{dataset}"')
    at = text.index("[datasets.source]", start)
    return text[:at] + f"[datasets.policy]\n{line}\n\n" + text[at:]


def _edit(paths: dict[str, Path]) -> None:
    coordinator = paths["coordinator"].read_text()
    paths["coordinator"].write_text(coordinator[: coordinator.index("[[projects]]")] + PROJECTS)
    for node, (dataset, line) in DATASET_POLICY.items():
        paths[node].write_text(_dataset_policy(paths[node].read_text(), dataset, line))


@pytest.fixture(scope="module")
def fed_projects(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[RunningFederation]:
    running, schema = start_federation(
        tmp_path_factory.mktemp("projects"), postgres_dsn, nodes=NODES, edit=_edit
    )
    try:
        yield running
    finally:
        running.procs.stop_all()
        _drop_schema(postgres_dsn, schema)


def _spec(sql: str, project: str, epsilon: float | None = None) -> pb.QuerySpec:
    """The spec exactly as the SDK sends it, so the test can hash it itself."""
    spec = parse_query(sql)
    spec.project = project
    if epsilon is not None:
        spec.privacy.epsilon = epsilon
    return spec


def _cli(fed: RunningFederation, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FEDERATION_TLS_DIR": str(fed.root / "pki" / "kits" / "analyst")}
    return subprocess.run(
        [sys.executable, "-m", "federation.cli", *args], capture_output=True, text=True, timeout=60, env=env
    )


def _officer(fed: RunningFederation, node: str, *args: str) -> str:
    by = ("--by", f"officer-{node}") if args[0] == "approve" else ()
    done = _cli(fed, *args, "--config", str(fed.paths[node]), *by)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _refusal(fed: RunningFederation, sql: str, project: str) -> FederationError:
    with fed.client() as client, pytest.raises(FederationError) as info:
        client.query(sql, project=project)
    return info.value


def _audit(fed: RunningFederation, node: str) -> list[dict]:
    return export(load_node_config(fed.paths[node]).state_dir / "audit.log")


# ---------------------------------------------------------------------- purpose binding at the node


def test_node_refuses_a_project_or_purpose_it_does_not_allow(fed_projects: RunningFederation) -> None:
    with fed_projects.client() as client:
        df = client.query("SELECT COUNT(*) AS n FROM signals", project="mit-rotterdam", epsilon=0.5)
    outcomes = {n["node"]: n for n in df.attrs["nodes"]}
    assert outcomes["douane"]["status"] == "answered" and int(df["n"].iloc[0]) > 0
    assert outcomes["kmar"]["status"] == "refused" and outcomes["kmar"]["rule"] == "project_not_allowed"
    assert "project 'mit-rotterdam'" in outcomes["kmar"]["reason"]
    assert outcomes["politie"]["rule"] == "purpose_not_allowed"
    assert "cocaine import through the port of Rotterdam" in outcomes["politie"]["reason"]
    # The refusal is the node's own decision, in its own audit log.
    refused = [e for e in _audit(fed_projects, "kmar") if e["kind"] == "refused"]
    assert any(e["payload"]["rule"] == "project_not_allowed" for e in refused)


def test_coordinator_refuses_unknown_expired_and_non_member(fed_projects: RunningFederation) -> None:
    sql = "SELECT COUNT(*) AS n FROM signals"
    before = len(_audit(fed_projects, "douane"))
    assert _refusal(fed_projects, sql, "no-such-project").rule == "unknown_project"
    expired = _refusal(fed_projects, sql, "old-case")
    assert expired.rule == "project_expired" and "2020-06-30" in str(expired)
    member = _refusal(fed_projects, sql, "closed-circle")
    assert member.rule == "not_a_member" and "'analyst'" in str(member)
    with fed_projects.client() as client, pytest.raises(FederationError) as info:
        client.overlap(on="company", datasets=["douane.signals", "kmar.signals"], project="closed-circle")
    assert info.value.rule == "not_a_member"
    # No node was asked: nothing new in Douane's audit log.
    assert len(_audit(fed_projects, "douane")) == before
    with fed_projects.client() as client:
        record = client.jobs(project="closed-circle")
    assert set(record["status"]) == {"refused"} and record["error"].str.contains("not_a_member").all()


# ---------------------------------------------------------------------- approvals bound to the job hash


def test_approval_required_then_approved_then_void_after_a_change(fed_projects: RunningFederation) -> None:
    rotterdam = "SELECT COUNT(*) AS n FROM declarations WHERE port = 'Rotterdam'"
    amsterdam = rotterdam.replace("Rotterdam", "Amsterdam")
    digest = canonical_job_hash(_spec(rotterdam, "sensitive"))

    refused = _refusal(fed_projects, rotterdam, "sensitive")
    assert refused.rule == "approval_required"
    assert f"job hash {digest}" in str(refused)
    assert f"federation approve --config <node config> --job {digest}" in str(refused)
    # The node's local config path never reaches the analyst.
    assert str(fed_projects.paths["douane"].parent) not in str(refused)

    _officer(
        fed_projects, "douane", "approve", "--job", digest, "--note", "checked by the lawfulness committee"
    )
    with fed_projects.client() as client:
        df = client.query(rotterdam, project="sensitive")
    assert int(df["n"].iloc[0]) > 0 and df.attrs["answered"] == ["douane"]

    # Any change to the job is another job: the approval does not carry over.
    changed = _refusal(fed_projects, amsterdam, "sensitive")
    changed_digest = canonical_job_hash(_spec(amsterdam, "sensitive"))
    assert changed.rule == "approval_required" and changed_digest in str(changed) and changed_digest != digest

    pending = json.loads(_officer(fed_projects, "douane", "approvals", "--pending", "--format", "json"))
    assert [r["job_hash"] for r in pending["rows"]] == [changed_digest]
    assert "Amsterdam" in pending["rows"][0]["job"]

    # A template approval covers the query with any filter value.
    template = template_hash(_spec(amsterdam, "sensitive"))
    assert template == template_hash(_spec(rotterdam, "sensitive"))
    _officer(fed_projects, "douane", "approve", "--template", template)
    with fed_projects.client() as client:
        assert int(client.query(amsterdam, project="sensitive")["n"].iloc[0]) > 0

    # Revoked: refused again.
    _officer(fed_projects, "douane", "approve", "--template", template, "--revoke")
    _officer(fed_projects, "douane", "approve", "--job", digest, "--revoke", "--note", "case closed")
    assert _refusal(fed_projects, rotterdam, "sensitive").rule == "approval_required"

    listed = json.loads(_officer(fed_projects, "douane", "approvals", "--format", "json"))["rows"]
    assert [(a["hash"], a["status"]) for a in listed] == [(digest, "revoked"), (template, "revoked")]
    decisions = [e["payload"]["decision"] for e in _audit(fed_projects, "douane") if e["kind"] == "approval"]
    assert decisions == ["approved", "approved", "revoked", "revoked"]
    state = load_node_config(fed_projects.paths["douane"]).state_dir
    assert verify(state / "audit.log").ok


def test_quorum_of_officers_before_any_node_runs(fed_projects: RunningFederation) -> None:
    sql = "SELECT COUNT(*) AS n FROM signals WHERE year = 2023"
    digest = canonical_job_hash(_spec(sql, "quorum-2"))

    first = _refusal(fed_projects, sql, "quorum-2")
    assert first.rule == "quorum_not_met" and digest in str(first)
    assert "approved: none" in str(first) and "not approved: douane, kmar, politie" in str(first)

    _officer(fed_projects, "douane", "approve", "--job", digest)
    second = _refusal(fed_projects, sql, "quorum-2")
    assert second.rule == "quorum_not_met"
    assert "approved: douane;" in str(second) and "not approved: kmar, politie" in str(second)

    _officer(fed_projects, "kmar", "approve", "--job", digest)
    with fed_projects.client() as client:
        df = client.query(sql, project="quorum-2")
        record = client.jobs(project="quorum-2")
    assert sorted(df.attrs["answered"]) == NODES
    assert list(record["status"]) == ["complete", "refused", "refused"]


# ---------------------------------------------------------------------- role escalation


def _kit(fed: RunningFederation, subject: str, role: str, org: str) -> Path:
    pki_dir = fed.root / "pki"
    folder = pki_dir / "kits" / subject
    if not (folder / "cert.pem").exists():
        pki.issue(pki_dir, subject, role, org=org, out=pki_dir / "kits")
    return folder


def _channel(fed: RunningFederation, kit: Path) -> grpc.Channel:
    creds = grpc_channel_credentials(kit / "cert.pem", kit / "key.pem", kit / "ca.pem")
    return grpc.secure_channel(fed.address, creds)


def test_analyst_service_has_no_call_that_changes_approvals_or_budgets() -> None:
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["Analyst"].methods}
    writers = [m for m in methods if re.match(r"(Set|Approv|Grant|Revoke|Charge|Update|Delete)", m)]
    assert not writers and not [m for m in methods if "pprov" in m]
    # The budget call only reads: it names a project and nothing to set.
    assert set(pb.BudgetRequest.DESCRIPTOR.fields_by_name) == {"project"}
    # The only approval message on the wire is a question, carried on the node link.
    assert set(pb.ApprovalQuery.DESCRIPTOR.fields_by_name) == {"kind", "query", "overlap", "model"}


@pytest.mark.parametrize("who", ["analyst", "officer-douane"])
def test_analyst_or_officer_certificate_cannot_act_as_a_node(
    fed_projects: RunningFederation, who: str
) -> None:
    kit = _kit(fed_projects, "officer-douane", "privacy_officer", "douane") if who != "analyst" else None
    kit = kit or fed_projects.root / "pki" / "kits" / "analyst"
    hello = pb.NodeMessage(hello=pb.Hello(node_id="douane"))
    forged = pb.NodeMessage(
        response=pb.JobResponse(job_id="x", approval=pb.ApprovalStatus(node="douane", approved=True))
    )
    with _channel(fed_projects, kit) as channel, pytest.raises(grpc.RpcError) as info:
        for _ in pb_grpc.NodeLinkStub(channel).Connect(iter([hello, forged]), timeout=10):
            pass
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "wrong_role" in info.value.details()


def test_officer_certificate_over_the_network_changes_no_approval_or_budget(
    fed_projects: RunningFederation,
) -> None:
    config = load_node_config(fed_projects.paths["douane"])
    store = ApprovalStore(approvals_path(config.state_dir), config.node_id)
    ledger = open_ledger(config)
    approvals_before, budgets_before = store.approvals(), ledger.show()
    kit = _kit(fed_projects, "officer-douane", "privacy_officer", "douane")
    with _channel(fed_projects, kit) as channel:
        stub = pb_grpc.AnalystStub(channel)
        spec = _spec("SELECT COUNT(*) AS n FROM declarations", "sensitive", epsilon=5.0)
        answer = stub.Query(pb.QueryRequest(spec=spec), timeout=30)
        assert not answer.ok and answer.error_rule == "not_a_member"
        stub.Budget(pb.BudgetRequest(project="sensitive"), timeout=30)
        stub.Jobs(pb.JobsRequest(project="sensitive"), timeout=30)
        projects = stub.Projects(pb.ProjectsRequest(), timeout=30).projects
        assert {p.name: p.member for p in projects}["sensitive"] is False
    assert store.approvals() == approvals_before
    assert ledger.show() == budgets_before


# ---------------------------------------------------------------------- accountability


def test_jobs_by_project_show_the_accountability_record(fed_projects: RunningFederation) -> None:
    with fed_projects.client() as client:
        client.query("SELECT COUNT(*) AS n FROM signals", project="mit-rotterdam", epsilon=0.25)
    done = _cli(
        fed_projects,
        "jobs",
        "--coordinator",
        fed_projects.address,
        "--project",
        "mit-rotterdam",
        "-f",
        "json",
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["rows"]
    assert rows and {r["project"] for r in rows} == {"mit-rotterdam"}
    latest = rows[0]
    assert latest["purpose"] == "cocaine import through the port of Rotterdam"
    assert latest["legal_basis"] == "MIT covenant, phenomenon case approved by the MIO"
    assert latest["by"] == "analyst" and latest["when"]
    assert "douane:answered eps 0.25" in latest["nodes"] and "kmar:refused" in latest["nodes"]
    assert latest["epsilon"] == pytest.approx(0.25)
    listed = _cli(fed_projects, "projects", "--coordinator", fed_projects.address, "-f", "json")
    names = {p["project"]: p for p in json.loads(listed.stdout)["rows"]}
    assert names["old-case"]["expired"] and names["quorum-2"]["quorum"].startswith("2 of douane")
