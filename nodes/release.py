"""The node's release path, readable top to bottom (DESIGN.md, "The release path").

    validate -> compute -> protect -> account -> audit -> release

Nothing leaves the node unless every step succeeded; the audit entry is durable before the
result is handed to the link.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

from nodes.audit import AuditError, AuditLog
from nodes.config import NodeConfig
from nodes.differencing import DifferencingGuard
from nodes.protect import Exact, needs_units, protect, resolve_budget
from nodes.sources import DataSources
from nodes.validate import Plan, Refused, validate
from privacy.accounting import epsilon_at_delta
from privacy.ledger import Ledger
from protocols import federation_pb2 as pb
from protocols.errors import FederationError


def compute(plan: Plan, sources: DataSources, exact_release: bool = False, units: bool = True) -> Exact:
    """Exact per-group aggregates from the engine.

    Without ``units`` (a DP release whose threshold reuses COUNT(*), see
    ``nodes.protect.needs_units``) the distinct-unit count is not computed at all.

    For an exact release that does not ask for COUNT(DISTINCT unit), the distinct-unit count only
    serves suppression. A unit contributes at most ``max_rows_per_unit`` rows, so a group with at
    least ``min_group_size * max_rows_per_unit`` rows has at least ``min_group_size`` units: when
    every present group is that large, the costly distinct count is skipped and a lower bound on it
    is used instead.
    """
    width = len(plan.group_columns)
    ds = plan.dataset
    if not units:
        return Exact(
            rows={tuple(row[:width]): tuple(row[width:]) for row in sources.run(plan, units=False)},
            units=False,
        )
    asks_units = any(a.function == pb.COUNT_DISTINCT for a in plan.aggregates)
    if exact_release and not asks_units:
        fast = sources.run(plan, units=False)
        big = ds.policy.min_group_size * ds.max_rows_per_unit
        if all(int(row[width]) >= big for row in fast):
            rows = {}
            for row in fast:
                lower = -(-int(row[width]) // ds.max_rows_per_unit)  # ceil(n_rows / max_rows_per_unit)
                rows[tuple(row[:width])] = (row[width], lower, *row[width + 2 :])
            return Exact(rows=rows)
    return Exact(rows={tuple(row[:width]): tuple(row[width:]) for row in sources.run(plan)})


def digest(result: pb.QueryResult) -> str:
    return hashlib.sha256(result.SerializeToString(deterministic=True)).hexdigest()


DEFAULT_PROJECT = "default"


class ReleasePath:
    """Runs one job through the whole path; always returns a response, never raises."""

    def __init__(self, config: NodeConfig, sources: DataSources, audit: AuditLog, ledger: Ledger) -> None:
        self.config = config
        self.sources = sources
        self.audit = audit
        self.ledger = ledger
        self.differencing = DifferencingGuard(config)  # exact releases only: nodes/differencing.py
        # Set by the daemon: runs "secure" jobs (nodes/secure_release.py).
        self.secure: Any = None

    def refuse(self, job: pb.JobRequest, rule: str, reason: str) -> pb.JobResponse:
        try:
            self.audit.append("refused", job.job_id, {"rule": rule, "reason": reason})
        except AuditError:
            pass  # the refusal itself releases nothing; the node still answers with the reason
        return pb.JobResponse(
            job_id=job.job_id, refusal=pb.Refusal(node=self.config.node_id, rule=rule, reason=reason)
        )

    def handle(self, job: pb.JobRequest) -> pb.JobResponse:
        # Purpose binding and officers' approvals come first for every job kind (docs/projects.md).
        from nodes.projects import project_gate

        gated = project_gate(self, job)
        if gated is not None:
            return gated
        kind = job.WhichOneof("kind")
        if kind == "query":
            return self.query(job)
        if kind == "budget":
            return self.budget(job)
        if kind == "overlap":  # entity overlap phases (docs/overlap.md)
            from nodes.overlap import overlap_step

            return overlap_step(self, job)
        if kind == "secure" and self.secure is not None:
            return self.secure.handle(job)
        return self.refuse(job, "unsupported_job", f"node {self.config.node_id} does not run '{kind}' jobs")

    def budget(self, job: pb.JobRequest) -> pb.JobResponse:
        """Read-only budget report for a project, over the exposed datasets."""
        project = job.budget.project or DEFAULT_PROJECT
        report = pb.BudgetReport()
        for name, dataset in sorted(self.config.datasets.items()):
            if not dataset.exposed:
                continue
            try:
                status = self.ledger.status(name, project)
            except FederationError:
                continue  # no budget for this project: nothing to report, nothing can be spent
            report.lines.add(
                node=self.config.node_id,
                dataset=name,
                project=project,
                total_epsilon=status.total_epsilon,
                spent_epsilon=status.spent_epsilon,
                remaining_epsilon=status.remaining_epsilon,
                delta=status.delta,
                releases=status.charges,
            )
        return pb.JobResponse(job_id=job.job_id, budget=report)

    def query(self, job: pb.JobRequest) -> pb.JobResponse:
        node = self.config.node_id
        spec = job.query
        try:
            self.audit.append(
                "received",
                job.job_id,
                {"requested_by": job.requested_by, "spec": _spec_summary(spec)},
            )
        except AuditError as exc:
            return self.refuse(
                job, exc.rule, f"node {node}: the audit log cannot be written; nothing is released"
            )
        try:
            plan = validate(spec, self.config)
            if plan.dataset.policy.release == "secure":
                raise Refused(
                    "secure_required",
                    f"dataset {plan.dataset.name} is released only under secure aggregation; ask with secure=True",
                    node=node,
                )
            budget = resolve_budget(spec.privacy, plan.dataset, node)
            exact = compute(plan, self.sources, exact_release=not budget.dp, units=needs_units(plan, budget))
            # Differencing defence (exact releases): refuse, or reserve this release on record.
            reserved = self.differencing.check(
                job.job_id, plan, spec.project or DEFAULT_PROJECT, budget.dp, self.sources
            )
            result, cost = protect(plan, exact, budget)
            project = spec.project or DEFAULT_PROJECT
            if budget.dp:
                # Charged before anything leaves; the same job id is never charged twice.
                self.ledger.charge(job.job_id, plan.dataset.name, project, cost, note=job.requested_by)
                delta = self.ledger.status(plan.dataset.name, project).delta
                result.cost.delta = delta
                if not cost.pure:
                    result.cost.epsilon = epsilon_at_delta(cost.rho, delta)
            result.audit_digest = digest(result)
            self.audit.append(
                "released",
                job.job_id,
                {
                    "dataset": plan.dataset.name,
                    "project": project,
                    "digest": result.audit_digest,
                    "groups": len(result.groups),
                    "suppressed": sum(1 for g in result.groups if g.suppressed),
                    "epsilon": cost.epsilon,
                    "rho": cost.rho,
                },
            )
            self.differencing.record(reserved)  # on record as released once the audit entry is durable
        except AuditError:
            return self.refuse(
                job, "audit_unavailable", f"node {node}: the audit log cannot be written; nothing is released"
            )
        except Refused as exc:
            return self.refuse(job, exc.rule, str(exc.message))
        except FederationError as exc:
            return self.refuse(job, exc.rule, exc.message)
        except (sqlite3.Error, OSError) as exc:
            # A full or failing disk under the ledger: refuse with the reason instead of going silent.
            return self.refuse(
                job,
                "ledger_unavailable",
                f"node {node}: the budget ledger cannot be written ({type(exc).__name__}); nothing is released",
            )
        return pb.JobResponse(job_id=job.job_id, result=result)


def open_ledger(config: NodeConfig) -> Ledger:
    """The node's budget ledger; the node-wide policy gives the default budget per (dataset, project)."""
    return Ledger(
        config.state_dir / "ledger.sqlite",
        node_id=config.node_id,
        default_epsilon=config.policy.budget_epsilon,
        default_delta=config.policy.budget_delta,
    )


def _spec_summary(spec: pb.QuerySpec) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(spec, preserving_proto_field_name=True)
