"""The coordinator's job store: bounded rows, keyset pages, and who reads which rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.jobstore import MAX_FREE_TEXT_CHARS, JobStore, Viewer
from federation.query import parse_query
from protocols import federation_pb2 as pb
from protocols.errors import FederationError


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    jobs = JobStore(tmp_path / "jobs.sqlite")
    yield jobs
    jobs.close()


def _job(store: JobStore, job_id: str, by: str, project: str, node: str = "douane") -> None:
    spec = parse_query("SELECT COUNT(*) AS n FROM declarations")
    spec.project = project
    store.start(job_id, by, spec, "SELECT COUNT(*) AS n FROM declarations")
    store.finish(job_id, "complete", "", [pb.NodeOutcome(node=node, status="answered")])


def test_free_text_from_nodes_is_cut_and_cleaned(store: JobStore) -> None:
    spec = parse_query("SELECT COUNT(*) AS n FROM declarations")
    store.start("a1", "ann", spec, "SELECT 1\x00\x1b[2J")
    reason = "refused \x1b[31m" + "x" * 50_000
    store.finish(
        "a1", "failed", "", [pb.NodeOutcome(node="douane", status="refused", reason=reason)], error=reason
    )
    (record,) = store.recent()
    assert len(record.error) <= MAX_FREE_TEXT_CHARS and record.error.isprintable()
    assert len(record.nodes[0].reason) <= MAX_FREE_TEXT_CHARS and record.nodes[0].reason.isprintable()
    assert "\x00" not in record.sql and "\x1b" not in record.sql


def test_pages_follow_each_other_without_repeats(store: JobStore) -> None:
    for i in range(7):
        _job(store, f"{i:032x}", "ann", "p")
    everyone = Viewer("", everything=True)
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page, token = store.page(everyone, limit=3, token=token)
        seen.extend(r.job_id for r in page)
        if not token:
            break
    assert sorted(seen) == sorted(f"{i:032x}" for i in range(7)) and len(seen) == 7
    with pytest.raises(FederationError) as info:
        store.page(everyone, token="1 OR 1=1")
    assert info.value.rule == "invalid_page_token"


def test_viewers_see_their_own_their_projects_and_their_nodes_jobs(store: JobStore) -> None:
    _job(store, "a" * 32, "ann", "closed", node="douane")
    _job(store, "b" * 32, "bob", "scratch", node="kmar")
    _job(store, "c" * 32, "cas", "open", node="kmar")

    def ids(viewer: Viewer, project: str = "") -> set[str]:
        return {r.job_id[0] for r in store.page(viewer, limit=50, project=project)[0]}

    assert ids(Viewer("ann")) == {"a"}
    assert ids(Viewer("bob", ("open",))) == {"b", "c"}
    assert ids(Viewer("bob", ("open",)), project="closed") == set()
    assert ids(Viewer("po", (), node="douane")) == {"a"}
    assert ids(Viewer("root", everything=True)) == {"a", "b", "c"}
