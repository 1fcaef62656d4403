"""The node's job router: one handler per job kind, one place that turns failures into refusals.

Every job the coordinator sends passes the project gate (purpose binding and officers' approvals,
nodes/projects.py), then goes to the handler of its kind. Whatever a handler raises ends here as a
refusal naming its rule and this node, with a "refused" entry in the audit log, so every job the
node receives ends in an audit outcome and an answer on the link, never in silence.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Mapping
from typing import Protocol

from nodes.audit import AuditError, AuditInputError
from nodes.context import NodeContext
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.refusals import ChargedRefusal
from protocols.spec_limits import check_job

log = logging.getLogger("federation.node")


class JobHandler(Protocol):
    """Runs the jobs of one kind (``pb.JobRequest.kind``) over the node context."""

    def handle(self, job: pb.JobRequest) -> pb.JobResponse:
        """Answer the job, or raise; the router turns any exception into a refusal."""
        ...

    def abandon(self, job: pb.JobRequest) -> None:
        """Forget whatever the job holds after it failed (fail closed); never raises."""
        ...


class Gate(Protocol):
    def check(self, job: pb.JobRequest) -> None:
        """Raise a ``FederationError`` when the job may not run here at all."""
        ...


def refusal(ctx: NodeContext, job: pb.JobRequest, rule: str, reason: str) -> pb.JobResponse:
    """The refusal answer, after a best-effort "refused" audit entry (a refusal releases nothing)."""
    try:
        ctx.audit.append("refused", job.job_id, {"rule": rule, "reason": reason})
    except AuditError:
        pass  # the node still answers with the reason; the log's own failure is reported by it
    return pb.JobResponse(job_id=job.job_id, refusal=pb.Refusal(node=ctx.node_id, rule=rule, reason=reason))


def explain(node: str, exc: BaseException) -> tuple[str, str]:
    """(rule, reason) for a failed job. Reasons never carry paths, counts or local names beyond
    what the raising rule chose to say."""
    if isinstance(exc, AuditError) and not isinstance(exc, AuditInputError):
        # The log's own message may name its path: the analyst learns only that it failed.
        return exc.rule, f"node {node}: the audit log cannot be written; nothing is released"
    if isinstance(exc, FederationError):
        return exc.rule, exc.message
    if isinstance(exc, sqlite3.Error | OSError):
        # A full or failing disk under the node's state (ledger, stores): say so instead of going silent.
        return (
            "ledger_unavailable",
            f"node {node}: the budget ledger cannot be written ({type(exc).__name__}); nothing is released",
        )
    return (
        "internal_error",
        f"node {node}: the job failed inside the node ({type(exc).__name__}); nothing is released",
    )


class JobObserver(Protocol):
    def observe(self, job: pb.JobRequest, response: pb.JobResponse, seconds: float) -> None:
        """Count one job by how it ended (nodes/metrics.py)."""
        ...


class JobRouter:
    """Hands each job to the handler of its kind; always answers, never raises."""

    def __init__(
        self,
        ctx: NodeContext,
        gate: Gate,
        handlers: Mapping[str, JobHandler],
        observer: JobObserver | None = None,
    ) -> None:
        self.ctx = ctx
        self.gate = gate
        self.handlers = dict(handlers)
        self.observer = observer

    def handle(self, job: pb.JobRequest) -> pb.JobResponse:
        started = time.monotonic()
        response = self._handle(job)
        if self.observer is not None:
            self.observer.observe(job, response, time.monotonic() - started)
        return response

    def _handle(self, job: pb.JobRequest) -> pb.JobResponse:
        kind = job.WhichOneof("kind") or ""
        handler = self.handlers.get(kind)
        try:
            # Size and depth bounds first, so a spec past them is never logged as received.
            check_job(job, self.ctx.node_id)
            self.gate.check(job)
            if handler is None:
                raise FederationError(
                    "unsupported_job", f"node {self.ctx.node_id} does not run '{kind}' jobs", self.ctx.node_id
                )
            # A job reads each file source at one version from start to end, even when a newer
            # one is swapped in meanwhile (nodes/sources.py).
            with self.ctx.sources.pinned():
                return handler.handle(job)
        except Exception as exc:  # noqa: BLE001 - the one place every failure becomes a refusal
            if handler is not None:
                handler.abandon(job)
            rule, reason = explain(self.ctx.node_id, exc)
            if rule == "internal_error":
                log.exception("job %s (%s) failed", job.job_id, kind)
            response = refusal(self.ctx, job, rule, reason)
            if isinstance(exc, ChargedRefusal):
                response.refusal.cost.CopyFrom(exc.charged)  # what the decision was charged
            return response
