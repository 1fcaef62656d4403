"""The node's release path, readable top to bottom (DESIGN.md, "The release path").

    validate -> compute -> protect -> account -> audit -> release

Nothing leaves the node unless every step succeeded; the audit entry is durable before the
result is handed to the link. A step that refuses raises; the job router (nodes/router.py) turns
that into the refusal and its audit entry.
"""

from __future__ import annotations

from typing import Any

from nodes.auto_bounds import choose_bounds
from nodes.context import NodeContext
from nodes.protect import Exact, bounding_summary, needs_units, protect, resolve_budget
from nodes.release_copies import result_digest
from nodes.sources import DataSources
from nodes.validate import Plan, Refused, validate
from privacy.accounting import Cost, epsilon_at_delta
from protocols import federation_pb2 as pb

SMALL_SOURCE_ROWS = 100_000


def compute(plan: Plan, sources: DataSources, exact_release: bool = False, units: bool = True) -> Exact:
    """Exact per-group aggregates from the engine.

    Without ``units`` (a DP release whose threshold reuses COUNT(*), see
    ``nodes.protect.needs_units``) the distinct-unit count is not computed at all.

    For an exact release that does not ask for COUNT(DISTINCT unit), the distinct-unit count only
    serves suppression. A unit contributes at most ``max_rows_per_unit`` rows, so a group with at
    least ``min_group_size * max_rows_per_unit`` rows has at least ``min_group_size`` units: when
    every present group is that large, the costly distinct count is skipped and a lower bound on it
    is used instead. A file source of at most ``SMALL_SOURCE_ROWS`` rows skips that attempt and
    counts distinct units at once: the same answer in one query instead of two.
    """
    width = len(plan.group_columns)
    ds = plan.dataset
    # Under DP the release also says how much truncation and clamping changed (nodes/protect.py).
    bounding = sources.diagnostics(plan) if plan.diagnostics and not exact_release else None
    if not units:
        return Exact(
            rows={tuple(row[:width]): tuple(row[width:]) for row in sources.run(plan, units=False)},
            units=False,
            bounding=bounding,
        )
    asks_units = any(a.function == pb.COUNT_DISTINCT for a in plan.aggregates)
    known = sources.known_rows(ds)
    # A small file source counts distinct units at little cost, and its groups are seldom all
    # large enough: the first query would mostly be thrown away, so only the second one runs.
    small = known is not None and known <= SMALL_SOURCE_ROWS
    if exact_release and not asks_units and not small:
        fast = sources.run(plan, units=False)
        big = ds.policy.min_group_size * ds.max_rows_per_unit
        if all(int(row[width]) >= big for row in fast):
            rows = {}
            for row in fast:
                lower = -(-int(row[width]) // ds.max_rows_per_unit)  # ceil(n_rows / max_rows_per_unit)
                rows[tuple(row[:width])] = (row[width], lower, *row[width + 2 :])
            return Exact(rows=rows)
    return Exact(
        rows={tuple(row[:width]): tuple(row[width:]) for row in sources.run(plan)}, bounding=bounding
    )


DEFAULT_PROJECT = "default"


class QueryHandler:
    """The release path of a "query" job. Raises on refusal; the router answers (nodes/router.py)."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def abandon(self, job: pb.JobRequest) -> None:
        """A failed query holds nothing; a differencing reservation stays on record (fail closed)."""

    def handle(self, job: pb.JobRequest) -> pb.JobResponse:
        ctx = self.ctx
        node = ctx.node_id
        spec = job.query
        ctx.audit.append(
            "received", job.job_id, {"requested_by": job.requested_by, "spec": spec_summary(spec)}
        )

        # validate
        plan = validate(spec, ctx.config)
        if plan.dataset.policy.release == "secure":
            raise Refused(
                "secure_required",
                f"dataset {plan.dataset.name} is released only under secure aggregation; ask with secure=True",
                node=node,
            )
        budget = resolve_budget(spec.privacy, plan.dataset, node)
        project = spec.project or DEFAULT_PROJECT
        # Clamps chosen by a DP quantile at a share of epsilon; the answer runs with the rest.
        plan, budget, bounds_cost, chosen = choose_bounds(
            plan, budget, spec.privacy.bound_share, ctx.sources, node
        )

        # compute
        exact = compute(plan, ctx.sources, exact_release=not budget.dp, units=needs_units(plan, budget))

        # protect
        result, cost = protect(plan, exact, budget)
        if bounds_cost is not None:
            # The choice is a release too: charged in the same ledger entry, released beside it.
            cost = Cost(epsilon=cost.epsilon + bounds_cost.epsilon, rho=cost.rho + bounds_cost.rho)
            result.cost.epsilon, result.cost.rho = cost.epsilon, cost.rho
            result.chosen_bounds.extend(chosen)
        # Differencing defence (exact releases): suppress further cells or refuse; on record as pending.
        reserved = ctx.differencing.check(job.job_id, plan, project, budget.dp, ctx.sources, result)

        # account: charged before anything leaves; the same job id is never charged twice.
        if budget.dp:
            ctx.ledger.charge(job.job_id, plan.dataset.name, project, cost, note=job.requested_by)
            delta = ctx.ledger.delta(plan.dataset.name, project)
            result.cost.delta = delta
            if not cost.pure:
                result.cost.epsilon = epsilon_at_delta(cost.rho, delta)

        # audit: durable before the result is handed to the link; the officer's copy kept first
        result.audit_digest = result_digest(result)
        ctx.releases.keep(job.job_id, plan.dataset.name, project, result)
        ctx.audit.append(
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
                **bounding_summary(plan),
            },
        )
        ctx.differencing.record(reserved)  # on record as released once the audit entry is durable

        # release
        return pb.JobResponse(job_id=job.job_id, result=result)


def spec_summary(spec: pb.QuerySpec) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(spec, preserving_proto_field_name=True)
