"""The node's job router: every job ends in an answer and an audit outcome, whatever fails."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.query import parse_query
from nodes.audit import export
from nodes.config import load_node_config
from nodes.context import NodeContext
from nodes.daemon import node_router
from nodes.router import JobRouter
from protocols import federation_pb2 as pb

OVERLAP_POLICY = 'overlap_columns = ["company"]\noverlap_min_set = 1'


@pytest.fixture
def ctx(tmp_path: Path, customs, declarations) -> Iterator[NodeContext]:  # type: ignore[no-untyped-def]
    path = customs.write_csv_node(tmp_path, declarations, dataset_policy=OVERLAP_POLICY)
    context = NodeContext.open(load_node_config(path))
    context.ledger.set_budget("declarations", "default", 10.0, 1e-6, by="officer")  # the officer's grant
    yield context
    context.close()


def _outcomes(ctx: NodeContext) -> dict[str, list[str]]:
    """Audit entry kinds per job id, in log order."""
    out: dict[str, list[str]] = {}
    for entry in export(ctx.audit.path):
        if entry.get("job_id"):
            out.setdefault(entry["job_id"], []).append(entry["kind"])
    return out


def _overlap_prepare(job_id: str, node: str) -> pb.JobRequest:
    spec = pb.OverlapSpec(on="company", privacy=pb.PrivacyRequest(epsilon=1.0))
    spec.datasets.add(node=node, dataset="declarations")
    spec.datasets.add(node="other", dataset="cases")
    step = pb.OverlapStep(
        job_id=job_id, phase=pb.OVERLAP_PREPARE, party=f"{node}.declarations", spec=spec, parties=2
    )
    return pb.JobRequest(job_id=job_id, overlap=step, requested_by="analyst")


def _break_ledger(ctx: NodeContext) -> None:
    """A failing disk under the ledger: its file is no longer a database."""
    ledger = Path(ctx.config.state_dir) / "ledger.sqlite"
    for extra in ("-wal", "-shm"):
        Path(f"{ledger}{extra}").unlink(missing_ok=True)
    if ledger.is_dir():
        shutil.rmtree(ledger)
    ledger.write_bytes(b"this is not an SQLite database" * 100)


def test_overlap_ledger_failure_is_a_refusal_with_an_audit_outcome(ctx: NodeContext) -> None:
    router = node_router(ctx)
    ok = router.handle(_overlap_prepare("ov-ok", ctx.node_id))
    assert ok.WhichOneof("outcome") == "overlap", ok.refusal.reason
    _break_ledger(ctx)
    with pytest.raises(sqlite3.DatabaseError):
        ctx.ledger.status("declarations", "default")
    broken = router.handle(_overlap_prepare("ov-broken", ctx.node_id))
    assert broken.WhichOneof("outcome") == "refusal"
    assert broken.refusal.rule == "ledger_unavailable"
    assert broken.refusal.node == ctx.node_id
    assert "ledger.sqlite" not in broken.refusal.reason
    assert _outcomes(ctx)["ov-broken"] == ["received", "refused"]


def test_query_ledger_failure_is_a_refusal_with_an_audit_outcome(ctx: NodeContext) -> None:
    router = node_router(ctx)
    _break_ledger(ctx)
    spec = parse_query("SELECT port, COUNT(*) FROM declarations GROUP BY port")
    spec.privacy.epsilon = 1.0
    answer = router.handle(pb.JobRequest(job_id="q-broken", query=spec, requested_by="analyst"))
    assert answer.refusal.rule == "ledger_unavailable"
    assert _outcomes(ctx)["q-broken"] == ["received", "refused"]


class _Exploding:
    """A handler whose job fails in a way no rule foresaw."""

    def __init__(self) -> None:
        self.abandoned: list[str] = []

    def handle(self, job: pb.JobRequest) -> pb.JobResponse:
        raise ZeroDivisionError("float division by zero")

    def abandon(self, job: pb.JobRequest) -> None:
        self.abandoned.append(job.job_id)


class _Open:
    def check(self, job: pb.JobRequest) -> None:
        return None


def test_unexpected_exception_becomes_a_named_refusal(ctx: NodeContext) -> None:
    handler = _Exploding()
    router = JobRouter(ctx, _Open(), {"query": handler})
    answer = router.handle(pb.JobRequest(job_id="boom", query=pb.QuerySpec(dataset="declarations")))
    assert answer.refusal.rule == "internal_error"
    assert answer.refusal.node == ctx.node_id
    assert "ZeroDivisionError" in answer.refusal.reason
    assert "float division by zero" not in answer.refusal.reason
    assert handler.abandoned == ["boom"]
    assert _outcomes(ctx)["boom"] == ["refused"]


def test_unknown_job_kind_is_refused(ctx: NodeContext) -> None:
    router = node_router(ctx)
    answer = router.handle(pb.JobRequest(job_id="nothing"))
    assert answer.refusal.rule == "unsupported_job"
    assert _outcomes(ctx)["nothing"] == ["refused"]


def test_every_received_job_ends_in_an_outcome(ctx: NodeContext) -> None:
    router = node_router(ctx)
    sqls = [
        "SELECT port, COUNT(*) FROM declarations GROUP BY port",
        "SELECT nope, COUNT(*) FROM declarations GROUP BY nope",
        "SELECT port, SUM(value) FROM declarations GROUP BY port",
    ]
    for i, sql in enumerate(sqls):
        spec = parse_query(sql)
        spec.privacy.epsilon = 0.5
        router.handle(pb.JobRequest(job_id=f"q{i}", query=spec, requested_by="analyst"))
    router.handle(pb.JobRequest(job_id="b", budget=pb.BudgetQuery(project="default")))
    for job_id, kinds in _outcomes(ctx).items():
        if "received" in kinds:
            assert kinds[-1] in ("released", "refused"), (job_id, kinds)
