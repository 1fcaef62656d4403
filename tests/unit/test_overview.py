"""The operator dashboard's rows: nodes, jobs per project with refusal reasons, projects."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator import overview
from coordinator.jobstore import JobStore
from coordinator.projects import parse_projects
from coordinator.registry import NodeSession, Registry, clean_version
from federation.query import parse_query
from protocols import federation_pb2 as pb
from protocols.errors import FederationError

SQL = "SELECT COUNT(*) AS n FROM declarations"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    jobs = JobStore(tmp_path / "jobs.sqlite")
    yield jobs
    jobs.close()


def _session(node: str, version: str = "0.1.0", datasets: tuple[str, ...] = ("declarations",)) -> NodeSession:
    return NodeSession(node, [pb.DatasetInfo(name=d) for d in datasets], version=version)


def _spec(project: str) -> pb.QuerySpec:
    spec = parse_query(SQL)
    spec.project = project
    return spec


def test_nodes_show_link_state_heartbeat_version_and_datasets() -> None:
    registry = Registry(heartbeat_seconds=1.0)
    live, gone, silent = _session("douane"), _session("om", "0.0.9", ("cases",)), _session("fiod")
    for s in (live, gone, silent):
        registry.register(s)
    registry.unregister(gone)
    silent.last_seen -= 10  # ten missed heartbeats, link still open
    rows = {r.node_id: r for r in overview.nodes(registry)}
    assert [r.state for r in (rows["douane"], rows["om"], rows["fiod"])] == [
        "connected",
        "disconnected",
        "silent",
    ]
    assert rows["om"].version == "0.0.9" and rows["om"].datasets == ("cases",)
    assert rows["fiod"].seconds_since_heartbeat >= 10
    assert rows["douane"].last_heartbeat.tzinfo is dt.UTC
    assert not rows["douane"].forgettable and rows["om"].forgettable


def test_forgetting_a_node_follows_the_admin_rules() -> None:
    registry = Registry(heartbeat_seconds=1.0)
    live, gone = _session("douane"), _session("om")
    registry.register(live)
    registry.register(gone)
    registry.unregister(gone)
    with pytest.raises(FederationError) as connected:
        registry.forget_node("douane")
    assert connected.value.rule == "node_connected"
    registry.forget_node("om")
    assert [r.node_id for r in overview.nodes(registry)] == ["douane"]
    with pytest.raises(FederationError) as unknown:
        registry.forget_node("om")
    assert unknown.value.rule == "unknown_node"


def test_a_node_cannot_smuggle_markup_or_length_through_its_version() -> None:
    assert clean_version("1.0\x1b[2J\n" + "x" * 500) == ("1.0\ufffd[2J\ufffd" + "x" * 500)[:64]


def test_jobs_keep_refusal_rules_and_reasons_per_node(store: JobStore) -> None:
    store.start("a" * 32, "ann", _spec("p"), SQL)
    refusal = pb.NodeOutcome(node="douane", status="refused", rule="budget", reason="budget exhausted")
    answered = pb.NodeOutcome(node="om", status="answered", cost=pb.NodeCost(epsilon=0.5))
    store.finish(
        "a" * 32,
        "failed",
        "",
        [refusal, answered],
        error="node douane refused: budget exhausted [rule: budget]",
    )
    store.refused("b" * 32, "bob", _spec("q"), SQL, "not_a_member", "'bob' is not a member of project 'q'")
    store.start("c" * 32, "ann", _spec("p"), SQL)
    store.finish("c" * 32, "complete", "d" * 64, [answered])
    late = pb.NodeOutcome(node="kmar", status="timeout", reason="node kmar did not answer within 10s")
    store.start("d" * 32, "ann", _spec("p"), SQL)
    store.finish("d" * 32, "partial", "e" * 64, [answered, late])

    page = overview.jobs(store)
    by_id = {j.job_id: j for j in page.rows}
    failed, refused, done = by_id["a" * 32], by_id["b" * 32], by_id["c" * 32]
    assert (
        failed.refused
        and failed.rule == "budget"
        and failed.reason == "node douane refused: budget exhausted"
    )
    assert {o.node: (o.status, o.rule, o.reason) for o in failed.nodes} == {
        "douane": ("refused", "budget", "budget exhausted"),
        "om": ("answered", "", ""),
    }
    assert refused.refused and refused.status == "refused" and refused.rule == "not_a_member"
    assert "not a member" in refused.reason and "[rule:" not in refused.reason
    assert not done.refused and done.rule == "" and done.epsilon == 0.5 and done.query == SQL
    assert done.kind == "query" and not done.needs_attention
    partial = by_id["d" * 32]
    assert partial.needs_attention and not partial.refused and partial.rule == ""
    assert [(o.node, o.status) for o in partial.nodes if o.status != "answered"] == [("kmar", "timeout")]


def test_jobs_page_per_project_without_repeats(store: JobStore) -> None:
    for i in range(7):
        store.start(f"{i:032x}", "ann", _spec("p" if i % 2 else "q"), SQL)
        store.finish(f"{i:032x}", "complete", "", [])
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = overview.jobs(store, project="p", token=token, limit=2)
        assert all(j.project == "p" for j in page.rows)
        seen.extend(j.job_id for j in page.rows)
        token = page.next_token
        if not token:
            break
    assert sorted(seen) == [f"{i:032x}" for i in (1, 3, 5)]
    with pytest.raises(FederationError) as bad:
        overview.jobs(store, token="'; DROP TABLE jobs; --")
    assert bad.value.rule == "invalid_page_token"


def test_projects_show_purpose_members_expiry_and_their_jobs(store: JobStore) -> None:
    listed = parse_projects(
        [
            {
                "name": "rotterdam",
                "purpose": "drug import routes",
                "legal_basis": "Wpg art. 20",
                "members": ["ann", "bob"],
                "expires": dt.date(2027, 1, 31),
                "quorum": 1,
                "approvers": ["douane"],
            },
            {"name": "old", "purpose": "done", "legal_basis": "x", "members": ["*"], "expires": "2026-01-01"},
        ]
    )
    store.refused("a" * 32, "eve", _spec("rotterdam"), SQL, "not_a_member", "no")
    store.start("b" * 32, "ann", _spec("rotterdam"), SQL)
    store.finish("b" * 32, "complete", "", [])
    rows = overview.projects(listed, store, today=dt.date(2027, 1, 1))
    assert [r.name for r in rows] == ["old", "rotterdam"]
    old, rotterdam = rows
    assert old.expired and old.days_left < 0 and old.total_jobs == 0
    assert not rotterdam.expired and rotterdam.days_left == 30
    assert (
        rotterdam.members == ("ann", "bob") and rotterdam.quorum == 1 and rotterdam.approvers == ("douane",)
    )
    assert rotterdam.jobs == {"complete": 1, "refused": 1}

    summary = overview.summary([], rows, overview.jobs(store))
    assert summary.projects_active == 1 and summary.projects_expired == 1
    assert [j.job_id for j in summary.troubled] == ["a" * 32] and summary.looked_at == 2


def test_split_rule_reads_only_a_trailing_rule() -> None:
    assert overview.split_rule("too few [rule: min_nodes]") == ("too few", "min_nodes")
    assert overview.split_rule("[rule: x] in the middle of text") == ("[rule: x] in the middle of text", "")
