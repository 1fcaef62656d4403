"""Approvals, canonical job hashes, node purpose checks and coordinator project rules (docs/projects.md)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
import tomllib
from pathlib import Path

import pytest

from coordinator.projects import ProjectRefused, Projects, parse_projects
from federation.query import parse_query
from nodes.approvals import ApprovalError, ApprovalStore, answer_approval_query, approvals_path
from nodes.audit import AuditLog, export, verify
from nodes.config import parse_node_config
from nodes.projects import ProjectRefused as NodeRefused
from nodes.projects import check_purpose, needs_approval, scope_of
from protocols import federation_pb2 as pb
from protocols.canonical import canonical_job_hash, template_hash
from protocols.errors import ConfigError

SQL = "SELECT port, COUNT(*) AS n FROM declarations WHERE port = 'Rotterdam' AND value > 100 GROUP BY port"


def _spec(sql: str = SQL, project: str = "mit-7") -> pb.QuerySpec:
    spec = parse_query(sql)
    spec.project = project
    return spec


@pytest.fixture
def store(tmp_path: Path) -> ApprovalStore:
    audit = AuditLog(tmp_path / "audit.log", "douane")
    return ApprovalStore(approvals_path(tmp_path), "douane", audit)


# ---------------------------------------------------------------------- canonical hashes


def test_same_spec_is_the_same_job_whatever_its_id() -> None:
    a = pb.JobRequest(job_id="one", query=_spec(), requested_by="x")
    b = pb.JobRequest(job_id="two", query=_spec(), requested_by="y")
    assert canonical_job_hash(a) == canonical_job_hash(b) == canonical_job_hash(_spec())
    assert len(canonical_job_hash(a)) == 64


@pytest.mark.parametrize(
    "change",
    [
        lambda s: setattr(s.privacy, "epsilon", 2.0),
        lambda s: setattr(s, "project", "other"),
        lambda s: setattr(s, "min_nodes", 3),
        lambda s: s.group_by.append("year"),
        lambda s: setattr(s.filter.all_of.items[0].compare.value, "text", "Amsterdam"),
    ],
)
def test_any_change_gives_another_hash(change) -> None:  # noqa: ANN001 - a mutation of the spec
    spec = _spec()
    change(spec)
    assert canonical_job_hash(spec) != canonical_job_hash(_spec())


def test_template_hash_ignores_filter_values_only() -> None:
    other_values = _spec(SQL.replace("Rotterdam", "Vlissingen").replace("100", "5"))
    assert template_hash(other_values) == template_hash(_spec())
    assert canonical_job_hash(other_values) != canonical_job_hash(_spec())
    other_column = _spec(SQL.replace("value > 100", "value < 100"))
    assert template_hash(other_column) != template_hash(_spec())


def test_secure_and_overlap_starts_hash_their_spec() -> None:
    secure = pb.JobRequest(job_id="j", secure=pb.SecureStep(round=0, query=_spec()))
    assert canonical_job_hash(secure) == canonical_job_hash(_spec())
    overlap = pb.OverlapSpec(on="company", project="p")
    overlap.datasets.add(node="douane", dataset="declarations")
    step = pb.JobRequest(job_id="j", overlap=pb.OverlapStep(phase=pb.OVERLAP_PREPARE, spec=overlap))
    assert canonical_job_hash(step) == canonical_job_hash(overlap) != canonical_job_hash(_spec())
    with pytest.raises(ValueError, match="no job spec"):
        canonical_job_hash(pb.JobRequest(job_id="j", secure=pb.SecureStep(round=2)))


# ---------------------------------------------------------------------- the approval store


def test_approve_find_and_revoke_are_audited(store: ApprovalStore, tmp_path: Path) -> None:
    digest = canonical_job_hash(_spec())
    assert store.find(digest) is None
    approval = store.approve(digest, "officer-douane", note="lawful: MIO decision 12")
    assert approval.active and approval.scope == "job"
    assert store.find(digest) == approval
    revoked = store.revoke(digest, "officer-douane", note="case closed")
    assert not revoked.active and store.find(digest) is None
    entries = [e for e in export(tmp_path / "audit.log") if e["kind"] == "approval"]
    assert [(e["payload"]["decision"], e["payload"]["hash"]) for e in entries] == [
        ("approved", digest),
        ("revoked", digest),
    ]
    assert verify(tmp_path / "audit.log").ok
    # Approving again after a revocation is a new approval.
    assert store.approve(digest, "officer-douane").id != approval.id


def test_template_approval_covers_other_values(store: ApprovalStore) -> None:
    store.approve(template_hash(_spec()), "officer", scope="template")
    other = _spec(SQL.replace("Rotterdam", "Moerdijk"))
    found = store.find(canonical_job_hash(other), template_hash(other))
    assert found is not None and found.scope == "template"
    # A template hash given as a job hash does not match as a job.
    assert store.find(template_hash(_spec())) is None


@pytest.mark.parametrize(
    ("call", "rule"),
    [
        (lambda s: s.approve("not-a-hash", "officer"), "bad_hash"),
        (lambda s: s.approve("a" * 64, ""), "bad_input"),
        (lambda s: s.approve("a" * 64, "officer", note="two\nlines"), "bad_input"),
        (lambda s: s.approve("a" * 64, "officer", scope="project"), "bad_scope"),
        (lambda s: s.revoke("b" * 64, "officer"), "not_approved"),
    ],
)
def test_bad_changes_name_their_rule(store: ApprovalStore, call, rule: str) -> None:  # noqa: ANN001
    with pytest.raises(ApprovalError) as info:
        call(store)
    assert info.value.rule == rule
    assert store.approvals() == []


def test_double_approval_is_refused(store: ApprovalStore) -> None:
    store.approve("c" * 64, "officer")
    with pytest.raises(ApprovalError) as info:
        store.approve("C" * 64, "officer")
    assert info.value.rule == "already_approved" and len(store.approvals()) == 1


def test_no_change_without_its_audit_record(tmp_path: Path) -> None:
    unaudited = ApprovalStore(approvals_path(tmp_path), "douane")
    with pytest.raises(ApprovalError) as info:
        unaudited.approve("d" * 64, "officer")
    assert info.value.rule == "audit_unavailable"
    # An audit log that cannot be written: the transaction rolls back, nothing is approved.
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "audit.log").mkdir()  # a directory where the log file should be
    store = ApprovalStore(approvals_path(tmp_path), "douane", AuditLog(blocked / "audit.log", "douane"))
    with pytest.raises(ApprovalError) as info:
        store.approve("d" * 64, "officer")
    assert info.value.rule == "audit_unavailable"
    with sqlite3.connect(approvals_path(tmp_path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM approvals").fetchone() == (0,)


def test_approval_query_changes_no_approval_and_hashes_the_spec_itself(store: ApprovalStore) -> None:
    spec = _spec()
    job = pb.JobRequest(
        job_id="q1", approval=pb.ApprovalQuery(kind="query", query=spec), requested_by="analyst"
    )
    answer = answer_approval_query(store, job)
    assert not answer.approval.approved and answer.approval.job_hash == canonical_job_hash(spec)
    assert store.approvals() == []
    assert [r.job_hash for r in store.requests()] == [canonical_job_hash(spec)]
    store.approve(canonical_job_hash(spec), "officer")
    again = answer_approval_query(store, job)
    assert again.approval.approved and again.approval.approved_by == "officer"
    assert store.requests() == []
    with pytest.raises(ApprovalError) as info:
        answer_approval_query(store, pb.JobRequest(job_id="q2", approval=pb.ApprovalQuery(kind="drop")))
    assert info.value.rule == "malformed_request"


def test_reject_takes_a_request_off_the_list_until_asked_again_and_keeps_its_legal_basis(
    store: ApprovalStore, tmp_path: Path
) -> None:
    spec = _spec()
    job = pb.JobRequest(
        job_id="q1",
        approval=pb.ApprovalQuery(kind="query", query=spec),
        requested_by="analyst",
        purpose="port study",
        legal_basis="MIT covenant",
    )
    answer_approval_query(store, job)
    (request,) = store.requests()
    assert (request.purpose, request.legal_basis, request.requested_by) == (
        "port study",
        "MIT covenant",
        "analyst",
    )
    with pytest.raises(ApprovalError) as info:
        store.reject("0" * 64, "officer")
    assert info.value.rule == "not_pending"
    store.reject(request.job_hash, "officer", "outside the covenant")
    assert store.requests() == [] and store.approvals() == []
    entry = [e for e in export(tmp_path / "audit.log") if e["kind"] == "approval"][-1]["payload"]
    assert (entry["decision"], entry["by"], entry["note"]) == ("rejected", "officer", "outside the covenant")
    # Still not approved: asked again (a later second), it waits again.
    time.sleep(1.1)
    assert not answer_approval_query(store, job).approval.approved
    assert [r.job_hash for r in store.requests()] == [request.job_hash]


# ---------------------------------------------------------------------- purpose checks at the node


NODE = """
[node]
id = "douane"
insecure = true
[policy]
min_group_size = 5
[[datasets]]
name = "declarations"
privacy_unit = "company"
[datasets.source]
kind = "csv"
path = "d.csv"
[datasets.policy]
projects = ["mit-7", "default"]
purposes = ["Cocaine  import through Rotterdam"]
approval_projects = ["mit-7"]
approval_required = ["overlap"]
[[datasets.columns]]
name = "company"
kind = "identifier"
[[datasets.columns]]
name = "port"
kind = "category"
domain = ["Rotterdam", "Amsterdam"]
"""


def _node(text: str = NODE):  # noqa: ANN202 - NodeConfig
    return parse_node_config(tomllib.loads(text), Path("/tmp"))


def _job(project: str, purpose: str) -> pb.JobRequest:
    return pb.JobRequest(
        job_id="j", query=_spec("SELECT COUNT(*) AS n FROM declarations", project), purpose=purpose
    )


def test_node_checks_project_and_purpose() -> None:
    config = _node()
    scope = scope_of(config, _job("mit-7", "cocaine import through  rotterdam"))
    assert scope is not None
    check_purpose(config, scope)  # whitespace and case do not matter
    assert needs_approval(scope)
    for project, purpose, rule in [
        ("mit-8", "cocaine import through Rotterdam", "project_not_allowed"),
        ("mit-7", "tax fraud", "purpose_not_allowed"),
        ("mit-7", "", "purpose_not_allowed"),
    ]:
        with pytest.raises(NodeRefused) as info:
            check_purpose(config, scope_of(config, _job(project, purpose)))  # type: ignore[arg-type]
        assert info.value.rule == rule and info.value.node == "douane"


def test_absent_lists_allow_any_project_and_purpose() -> None:
    config = _node(
        NODE.replace('projects = ["mit-7", "default"]\n', "").replace(
            'purposes = ["Cocaine  import through Rotterdam"]\n', ""
        )
    )
    scope = scope_of(config, _job("anything", "anything"))
    assert scope is not None
    check_purpose(config, scope)
    assert not needs_approval(scope)
    overlap = pb.OverlapStep(
        phase=pb.OVERLAP_PREPARE, party="douane.declarations", spec=pb.OverlapSpec(on="company")
    )
    overlap_scope = scope_of(config, pb.JobRequest(job_id="o", overlap=overlap))
    assert overlap_scope is not None and overlap_scope.kind == "overlap" and needs_approval(overlap_scope)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('approval_required = ["delete"]', "unknown job kind"),
        ("projects = 3", "must be a list"),
        ('purposes = [""]', "non-empty names"),
    ],
)
def test_bad_policy_keys_are_config_errors(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _node(NODE.replace("[policy]\n", f"[policy]\n{line}\n", 1))


# ---------------------------------------------------------------------- projects at the coordinator

PROJECTS = """
[[projects]]
name = "mit-7"
purpose = "cocaine import through Rotterdam"
legal_basis = "MIT covenant"
members = ["analyst-1"]
expires = "2030-01-31"
quorum = 2
approvers = ["douane", "fiod", "om"]
"""


def test_coordinator_admits_members_of_live_projects() -> None:
    projects = Projects(parse_projects(tomllib.loads(PROJECTS)["projects"]))
    on = dt.date(2030, 1, 31)
    assert projects.admit("mit-7", "analyst-1", on).quorum == 2
    for name, who, when, rule in [
        ("mit-8", "analyst-1", on, "unknown_project"),
        ("", "analyst-1", on, "unknown_project"),  # the default project is not listed here
        ("mit-7", "analyst-1", dt.date(2030, 2, 1), "project_expired"),
        ("mit-7", "analyst-2", on, "not_a_member"),
    ]:
        with pytest.raises(ProjectRefused) as info:
            projects.admit(name, who, when)
        assert info.value.rule == rule
    info_row = projects.infos("analyst-2", on)[0]
    assert (
        not info_row.member
        and info_row.expires == "2030-01-31"
        and list(info_row.approvers)
        == [
            "douane",
            "fiod",
            "om",
        ]
    )


def test_catch_all_project_runs_every_invented_name_as_one_project() -> None:
    """Invented names share the catch-all's one budget at the nodes: they all run as project '*'."""
    raw = PROJECTS.replace('name = "mit-7"', 'name = "*"').replace(
        'members = ["analyst-1"]', 'members = ["*"]'
    )
    projects = Projects(parse_projects(tomllib.loads(raw + PROJECTS)["projects"]))
    admitted = [projects.admit(name, "anyone", dt.date(2029, 1, 1)) for name in ("bench-3", "a", "b", "c")]
    assert {p.name for p in admitted} == {"*"}
    assert admitted[0].purpose == "cocaine import through Rotterdam"
    assert [projects.runs_as(n) for n in ("bench-3", "*")] == ["*", "*"]
    assert projects.admit("mit-7", "analyst-1", dt.date(2029, 1, 1)).name == "mit-7"
    assert projects.runs_as("mit-7") == "mit-7"
    without = Projects(parse_projects(tomllib.loads(PROJECTS)["projects"]))
    assert without.runs_as("invented") == "invented"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('expires = "2030-01-31"', 'expires = "next year"'), "expires must be a date"),
        (("quorum = 2", "quorum = 4"), "exceeds the 3 approver"),
        (('members = ["analyst-1"]', "members = []"), "at least one analyst"),
        (('purpose = "cocaine import through Rotterdam"', 'purpose = ""'), "purpose must be non-empty"),
        (("quorum = 2", 'quorum = 2\nowner = "x"'), "unknown key"),
    ],
)
def test_bad_project_entries_are_config_errors(edit: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_projects(tomllib.loads(PROJECTS.replace(*edit))["projects"])
    with pytest.raises(ConfigError, match="listed twice"):
        parse_projects(tomllib.loads(PROJECTS + PROJECTS)["projects"])


def test_every_message_of_a_project_job_carries_its_purpose() -> None:
    """Secure rounds and overlap steps go through a project-bound registry view (coordinator/projects.py)."""
    from coordinator.projects import ProjectRegistry, bound
    from coordinator.registry import NodeSession, Registry

    project = Projects(parse_projects(tomllib.loads(PROJECTS)["projects"])).admit(
        "mit-7", "analyst-1", dt.date(2029, 1, 1)
    )
    registry = Registry(heartbeat_seconds=5)
    registry.register(NodeSession(node_id="douane", datasets=[]))
    view = ProjectRegistry(registry, project)
    sent = [
        pb.JobRequest(job_id="s2", secure=pb.SecureStep(round=2)),
        pb.JobRequest(job_id="o1", overlap=pb.OverlapStep(phase=pb.OVERLAP_BLIND)),
    ]
    view.get("douane").send_job(sent[0])  # type: ignore[union-attr]
    bound(registry.sessions(), project)[0].send_job(sent[1])
    session = registry.get("douane")
    assert session is not None and [s.node_id for s in view.sessions()] == ["douane"]
    for _ in sent:
        job = session.outbox.get_nowait().job  # type: ignore[union-attr]
        assert (job.purpose, job.legal_basis) == ("cocaine import through Rotterdam", "MIT covenant")
