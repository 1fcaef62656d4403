"""The node's release path, readable top to bottom (DESIGN.md, "The release path").

    validate -> compute -> protect -> account -> audit -> release

Nothing leaves the node unless every step succeeded; the audit entry is durable before the
result is handed to the link.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from nodes.audit import AuditError, AuditLog
from nodes.config import NodeConfig
from nodes.sources import DataSources
from nodes.validate import Plan, Refused, validate
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.values import to_value


@dataclass
class Exact:
    """Exact per-group aggregates as computed inside the engine (never released as such)."""

    rows: dict[tuple[Any, ...], tuple[Any, ...]]


def compute(plan: Plan, sources: DataSources) -> Exact:
    width = len(plan.group_columns)
    rows: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in sources.run(plan):
        rows[tuple(row[:width])] = tuple(row[width:])
    return Exact(rows=rows)


def protect(plan: Plan, exact: Exact) -> pb.QueryResult:
    """Disclosure control: every key of the public domain is reported; small cells are suppressed.

    A group with fewer distinct privacy units than the minimum group size is suppressed as a whole
    row, so a suppressed value cannot be recovered from the other columns of the same row.
    """
    min_size = plan.dataset.policy.min_group_size
    result = pb.QueryResult()
    numeric_index = _numeric_slots(plan)
    for key in plan.keys:
        group = result.groups.add()
        group.key.extend(to_value(k) for k in key)
        found = exact.rows.get(tuple(key))
        n_rows, n_units = (int(found[0]), int(found[1])) if found else (0, 0)
        if n_units < min_size:
            group.suppressed = True
            group.suppression_rule = f"min_group_size: fewer than {min_size} units"
            for _ in plan.aggregates:
                group.cells.add()
            continue
        for i, agg in enumerate(plan.aggregates):
            cell = group.cells.add()
            if agg.function == pb.COUNT:
                cell.sum = cell.count = float(n_rows)
            elif agg.function == pb.COUNT_DISTINCT:
                cell.sum = cell.count = float(n_units)
            else:
                slot = numeric_index[i]
                total, count = found[2 + 2 * slot], found[3 + 2 * slot]  # type: ignore[index]
                cell.sum = float(total or 0.0)
                cell.count = float(count or 0)
    return result


def _numeric_slots(plan: Plan) -> dict[int, int]:
    """Map aggregate position -> position of its (sum, count) pair in the engine's output."""
    slots: dict[int, int] = {}
    n = 0
    for i, agg in enumerate(plan.aggregates):
        if agg.function in (pb.SUM, pb.AVG):
            slots[i] = n
            n += 1
    return slots


def digest(result: pb.QueryResult) -> str:
    return hashlib.sha256(result.SerializeToString(deterministic=True)).hexdigest()


class ReleasePath:
    """Runs one job through the whole path; always returns a response, never raises."""

    def __init__(self, config: NodeConfig, sources: DataSources, audit: AuditLog) -> None:
        self.config = config
        self.sources = sources
        self.audit = audit

    def refuse(self, job: pb.JobRequest, rule: str, reason: str) -> pb.JobResponse:
        try:
            self.audit.append("refused", job.job_id, {"rule": rule, "reason": reason})
        except AuditError:
            pass  # the refusal itself releases nothing; the node still answers with the reason
        return pb.JobResponse(
            job_id=job.job_id, refusal=pb.Refusal(node=self.config.node_id, rule=rule, reason=reason)
        )

    def handle(self, job: pb.JobRequest) -> pb.JobResponse:
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
            exact = compute(plan, self.sources)
            result = protect(plan, exact)
            result.audit_digest = digest(result)
            self.audit.append(
                "released",
                job.job_id,
                {
                    "dataset": plan.dataset.name,
                    "digest": result.audit_digest,
                    "groups": len(result.groups),
                    "suppressed": sum(1 for g in result.groups if g.suppressed),
                },
            )
        except AuditError:
            return self.refuse(
                job, "audit_unavailable", f"node {node}: the audit log cannot be written; nothing is released"
            )
        except Refused as exc:
            return self.refuse(job, exc.rule, str(exc.message))
        except FederationError as exc:
            return self.refuse(job, exc.rule, exc.message)
        return pb.JobResponse(job_id=job.job_id, result=result)


def _spec_summary(spec: pb.QuerySpec) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(spec, preserving_proto_field_name=True)
