"""The analyst's model calls at the coordinator: a whole GLM fit, or one round for the analyst to drive.

Both run like any job: rate limit, spec bounds, project admission and quorum, the job record;
then secure-aggregated rounds (coordinator/model_round.py) over the nodes serving the dataset.
"""

from __future__ import annotations

import uuid
from typing import Any

from coordinator.glm import FitTimes, fit
from coordinator.jobstore import JobStore
from coordinator.limits import JobRefused, JobSlots, RateLimited, RateLimiter, job_timeout
from coordinator.model_round import ModelRound, RoundFailed, RoundResult
from coordinator.projects import ProjectRefused, Projects, bound, check_quorum
from coordinator.registry import NodeSession, Registry, name_absent
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.spec_limits import SpecTooLarge, check_spec

MAX_FORMULA_CHARS = 2000


def same_schema(spec: pb.ModelSpec, infos: list[pb.DatasetInfo]) -> None:
    """Every node must declare the model's columns alike: the statistics are summed entry by entry."""
    used = {spec.outcome, *(c.column for c in spec.covariates)}

    def shape(info: pb.DatasetInfo) -> list[bytes]:
        # What the statistics depend on: kind, domain and bounds (not the description).
        return [
            pb.ColumnInfo(
                name=c.name, kind=c.kind, domain=c.domain, lower=c.lower, upper=c.upper
            ).SerializeToString(deterministic=True)
            for c in info.columns
            if c.name in used
        ]

    if len({tuple(shape(i)) for i in infos}) > 1:
        raise FederationError(
            "model_schema_differs",
            f"the nodes serving '{spec.dataset}' declare the model's columns differently (bounds or domains)",
        )


class ModelJobs:
    def __init__(
        self,
        registry: Registry,
        jobs: JobStore,
        projects: Projects,
        limits: RateLimiter,
        slots: JobSlots,
        node_timeout: float,
        max_timeout: float,
    ) -> None:
        self.registry = registry
        self.jobs = jobs
        self.projects = projects
        self.limits = limits
        self.slots = slots
        self.node_timeout = node_timeout
        self.max_timeout = max_timeout

    def _targets(self, spec: pb.ModelSpec) -> list[NodeSession]:
        sessions = self.registry.sessions()
        serving = [s for s in sessions if any(d.name == spec.dataset for d in s.datasets)]
        if spec.node:
            serving = [s for s in serving if s.node_id == spec.node]
        if not serving:
            raise FederationError("unknown_dataset", f"no connected node serves dataset '{spec.dataset}'")
        return serving

    def _prepare(
        self, spec: pb.ModelSpec, user: str, timeout_seconds: float
    ) -> tuple[list[NodeSession], Any, float]:
        self.limits.admit(user)
        check_spec(spec)
        timeout = job_timeout(timeout_seconds, self.node_timeout, self.max_timeout)
        targets = self._targets(spec)
        same_schema(spec, [d for s in targets for d in s.datasets if d.name == spec.dataset])
        project = self.projects.admit(spec.project, user)
        spec.project = project.name
        check_quorum(project, "model", spec, [s.node_id for s in targets], self.registry, user, timeout)
        return targets, project, timeout

    def model(self, request: pb.ModelRequest, user: str) -> pb.ModelResponse:
        """A whole fit (glm: Fisher scoring), round by round."""
        spec = request.spec
        job_id = uuid.uuid4().hex
        response = pb.ModelResponse(job_id=job_id)
        if (spec.trainer or "glm") != "glm":
            response.error_rule = "model_trainer"
            response.error = (
                f"the coordinator fits only glm models; run '{spec.trainer}' round by round (ModelRound)"
            )
            return response
        try:
            if len(request.formula) > MAX_FORMULA_CHARS:
                raise SpecTooLarge(
                    "oversized_request", f"the formula is longer than {MAX_FORMULA_CHARS} characters"
                )
            targets, project, timeout = self._prepare(spec, user, request.timeout_seconds)
        except (RateLimited, SpecTooLarge, JobRefused, ProjectRefused, FederationError) as exc:
            response.error, response.error_rule = exc.message, exc.rule
            return response
        info = next(d for d in targets[0].datasets if d.name == spec.dataset)
        self.jobs.start(job_id, user, spec, request.formula, project.purpose, project.legal_basis)
        sessions = bound(targets, project)
        costs: dict[str, pb.NodeOutcome] = {}
        times = FitTimes()

        def run_round(iteration: int, parameters: list[float]) -> RoundResult:
            result = ModelRound(sessions, spec, job_id, iteration, parameters, user, timeout).run()
            for outcome in result.nodes:
                total = costs.setdefault(outcome.node, pb.NodeOutcome(node=outcome.node))
                total.status, total.reason, total.rule = outcome.status, outcome.reason, outcome.rule
                total.audit_digest = outcome.audit_digest
                total.cost.epsilon += outcome.cost.epsilon
                total.cost.rho += outcome.cost.rho
                total.cost.delta = outcome.cost.delta or total.cost.delta
            return result

        try:
            with self.slots.hold(user):
                fit(spec, info, run_round, response, times)
        except RoundFailed as exc:
            response.ok = False
            response.error, response.error_rule = exc.message, exc.rule
            for outcome in exc.nodes:
                total = costs.setdefault(outcome.node, pb.NodeOutcome(node=outcome.node))
                total.status, total.reason, total.rule = outcome.status, outcome.reason, outcome.rule
                total.cost.rho += outcome.cost.rho
                total.cost.epsilon += outcome.cost.epsilon
        except JobRefused as exc:
            response.ok, response.error, response.error_rule = False, exc.message, exc.rule
        else:
            response.ok = True
        response.nodes.extend(costs.values())
        if not spec.node:
            name_absent(response, self.registry.absent(spec.dataset))
        response.rho = max((o.cost.rho for o in costs.values()), default=0.0)
        response.seconds_nodes, response.seconds_secagg, response.seconds_solve = (
            times.nodes,
            times.secagg,
            times.solve,
        )
        error = "" if response.ok else f"{response.error} [rule: {response.error_rule or 'refused'}]"
        self.jobs.finish(
            job_id, "complete" if response.ok else "failed", "", list(response.nodes), error=error
        )
        return response

    def round(self, request: pb.ModelRoundRequest, user: str) -> pb.ModelRoundResponse:
        """One round with the analyst's parameters; the summed statistics come back."""
        spec = request.spec
        model_id = request.model_id or uuid.uuid4().hex
        iteration = int(request.iteration) or 1
        response = pb.ModelRoundResponse(
            model_id=model_id, iteration=iteration, job_id=f"{model_id}-r{iteration}"
        )
        try:
            targets, project, timeout = self._prepare(spec, user, request.timeout_seconds)
        except (RateLimited, SpecTooLarge, JobRefused, ProjectRefused, FederationError) as exc:
            response.error, response.error_rule = exc.message, exc.rule
            return response
        self.jobs.start(response.job_id, user, spec, "", project.purpose, project.legal_basis)
        try:
            with self.slots.hold(user):
                result = ModelRound(
                    bound(targets, project),
                    spec,
                    model_id,
                    iteration,
                    list(request.parameters),
                    user,
                    timeout,
                ).run()
        except RoundFailed as exc:
            response.error, response.error_rule = exc.message, exc.rule
            response.nodes.extend(exc.nodes)
        except JobRefused as exc:
            response.error, response.error_rule = exc.message, exc.rule
        else:
            response.ok = True
            response.sums.extend(result.sums.tolist())
            response.blocks.extend(result.blocks)
            response.terms.extend(result.terms)
            response.nodes.extend(result.nodes)
        if not spec.node:
            name_absent(response, self.registry.absent(spec.dataset))
        error = "" if response.ok else f"{response.error} [rule: {response.error_rule or 'refused'}]"
        self.jobs.finish(
            response.job_id, "complete" if response.ok else "failed", "", list(response.nodes), error=error
        )
        return response


__all__ = ["ModelJobs", "same_schema"]
