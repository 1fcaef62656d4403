"""The coordinator: node links, the analyst service, fan-out, collection and combination.

fan out -> collect (per-node timeout, dropouts) -> combine -> return result plus metadata.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import sqlite3
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from coordinator.bounding import clip_rows, combine_diagnostics
from coordinator.combine import combine
from coordinator.config import CoordinatorConfig
from coordinator.distinct import UnionAnswer, check_union_parties, run_union, union_aggregates
from coordinator.jobstore import MAX_SQL_CHARS, JobStore, Viewer
from coordinator.limits import JobRefused, JobSlots, RateLimited, RateLimiter, job_timeout
from coordinator.metrics import CoordinatorMetrics
from coordinator.model_service import ModelJobs
from coordinator.overlap import OverlapFailed, progress_steps, run_overlap
from coordinator.progress import ProgressBoard, ProgressIdInvalid
from coordinator.projects import (
    DEFAULT_PROJECT,
    ProjectRefused,
    ProjectRegistry,
    Projects,
    bound,
    check_quorum,
    resolve_overlap_nodes,
    stamp,
)
from coordinator.registry import NodeGone, NodeSession, Registry, clean_version, listed, name_absent
from coordinator.secure_query import requires_secure, run_secure_query
from protocols import federation_pb2 as pb
from protocols import federation_pb2_grpc as pb_grpc
from protocols.channels import server_options
from protocols.errors import ConfigError, FederationError
from protocols.identity import Identity, PkiError, TlsFiles, check_grpc_peer
from protocols.metrics_http import MetricsServer
from protocols.privacy_request import check_query
from protocols.safe_decode import add_analyst_service
from protocols.spec_limits import SpecTooLarge, check_name, check_spec
from protocols.values import from_value, to_value

if TYPE_CHECKING:
    from coordinator.dashboard import Dashboard

log = logging.getLogger("federation.coordinator")


ANALYST_ROLES = frozenset({"analyst", "privacy_officer", "admin"})
# The shortest wait for one step of a union COUNT(DISTINCT) across nodes (docs/distinct.md).
UNION_STEP_SECONDS = 120.0


class Gate:
    """Who may call what: the peer's certificate is checked against the root and CRL on every call."""

    def __init__(self, tls: TlsFiles | None) -> None:
        self.tls = tls

    def identity(self, context: grpc.ServicerContext, roles: frozenset[str]) -> Identity | None:
        """The verified caller, or ``None`` on a development (plaintext) coordinator; aborts if refused."""
        if self.tls is None:
            return None
        try:
            return check_grpc_peer(context, self.tls.ca, self.tls.crl_bytes(), expected_roles=set(roles))
        except PkiError as exc:
            log.warning("refused %s: %s", context.peer(), exc)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{exc.message} [rule: {exc.rule}]")
            raise  # abort raises; this line is never reached

    def caller(self, context: grpc.ServicerContext) -> Caller:
        """Who calls the analyst service, with the role and organisation its certificate names.

        A development (plaintext) coordinator has no identities: the caller names itself and counts
        as an analyst.
        """
        who = self.identity(context, ANALYST_ROLES)
        if who is not None:
            return Caller(who.subject, who.role, who.org or "")
        return Caller(dict(context.invocation_metadata()).get("x-federation-user", "analyst"), "analyst", "")

    def user(self, context: grpc.ServicerContext) -> str:
        return self.caller(context).subject


@dataclass(frozen=True)
class Caller:
    subject: str
    role: str
    org: str


class NodeLinkService(pb_grpc.NodeLinkServicer):
    def __init__(
        self,
        registry: Registry,
        heartbeat_seconds: float,
        gate: Gate,
        jobs: JobStore | None = None,
        max_links: int = 256,
    ) -> None:
        self.registry = registry
        self.heartbeat_seconds = heartbeat_seconds
        self.gate = gate
        self.jobs = jobs
        # A link holds a server thread for its whole life; past max_links a node is told to retry,
        # so links never take the threads that jobs and short analyst calls are sized for.
        self.max_links = max_links
        self._links = 0
        self._links_lock = threading.Lock()

    def _keep_head(self, session: NodeSession, response: pb.JobResponse) -> None:
        """Keep the audit head a node sent with an answer to a job it was asked (docs/audit.md).

        Kept before the answer is handed on, so the head is stored once the job returns; answers to no
        pending job are ignored, so a node cannot fill the store.
        """
        if (
            self.jobs is None
            or not response.HasField("audit_head")
            or not session.waiting_for(response.job_id)
        ):
            return
        try:
            if not self.jobs.record_head(session.node_id, response.audit_head, response.job_id):
                log.warning("node %s sent a malformed audit head; not kept", session.node_id)
        except sqlite3.Error as exc:
            log.warning("audit head of node %s not kept: %s", session.node_id, exc)

    def Connect(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            first = next(request_iterator)
        except (StopIteration, grpc.RpcError):
            return
        if first.WhichOneof("kind") != "hello" or not first.hello.node_id:
            yield pb.CoordinatorMessage(
                reject=pb.Refusal(rule="protocol", reason="the first message must be Hello")
            )
            return
        who = self.gate.identity(context, frozenset({"node"}))
        if who is not None and who.subject != first.hello.node_id:
            reason = f"certificate of '{who.subject}' cannot connect as node '{first.hello.node_id}'"
            log.warning("refused node link: %s", reason)
            yield pb.CoordinatorMessage(
                reject=pb.Refusal(node=first.hello.node_id, rule="wrong_identity", reason=reason)
            )
            return
        with self._links_lock:
            full = self._links >= self.max_links
            if not full:
                self._links += 1
        if full:
            log.warning(
                "refused node link of %s: %d links held (max_nodes)", first.hello.node_id, self.max_links
            )
            yield pb.CoordinatorMessage(
                reject=pb.Refusal(
                    node=first.hello.node_id,
                    rule="too_many_nodes",
                    reason=f"the coordinator holds its maximum of {self.max_links} node links (max_nodes)",
                )
            )
            return
        try:
            yield from self._serve_link(first, request_iterator, context)
        finally:
            with self._links_lock:
                self._links -= 1

    def _serve_link(self, first: pb.NodeMessage, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        session = NodeSession(
            node_id=first.hello.node_id,
            datasets=list(first.hello.datasets),
            version=clean_version(first.hello.version),
        )
        self.registry.register(session)
        log.info("node %s connected with %d dataset(s)", session.node_id, len(session.datasets))

        def read() -> None:
            try:
                for msg in request_iterator:
                    session.last_seen = time.time()
                    if msg.WhichOneof("kind") == "response":
                        self._keep_head(session, msg.response)
                        session.resolve(msg.response)
            except grpc.RpcError:
                pass
            finally:
                self.registry.unregister(session)
                log.info("node %s disconnected", session.node_id)

        threading.Thread(target=read, daemon=True, name=f"link-{session.node_id}").start()
        context.add_callback(lambda: self.registry.unregister(session))
        yield pb.CoordinatorMessage(
            welcome=pb.Welcome(coordinator_id="coordinator", heartbeat_seconds=int(self.heartbeat_seconds))
        )
        while True:
            msg = session.outbox.get()
            if msg is None or session.closed.is_set():
                return
            yield msg


def _result_digest(rows: list[pb.CombinedRow]) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(row.SerializeToString(deterministic=True))
    return h.hexdigest()


def _infos(spec: pb.QuerySpec, targets: list[NodeSession], nodes: set[str]) -> list[pb.DatasetInfo]:
    """The public metadata of ``spec``'s dataset at each of ``nodes``."""
    return [d for s in targets if s.node_id in nodes for d in s.datasets if d.name == spec.dataset]


def fan_out(
    targets: list[NodeSession], job: pb.JobRequest, timeout: float
) -> tuple[dict[str, pb.JobResponse], list[pb.NodeOutcome]]:
    """Send ``job`` to every target, wait up to ``timeout``, and say what became of each node."""
    pending = {s.node_id: s.send_job(job) for s in targets}
    futures.wait(list(pending.values()), timeout=timeout)
    responses: dict[str, pb.JobResponse] = {}
    outcomes: list[pb.NodeOutcome] = []
    for session in targets:
        node, future = session.node_id, pending[session.node_id]
        outcome = pb.NodeOutcome(node=node)
        if not future.done():
            session.forget(job.job_id)
            outcome.status = "timeout"
            outcome.reason = f"node {node} did not answer within {timeout:g}s"
        elif isinstance(future.exception(), NodeGone):
            outcome.status = "disconnected"
            outcome.reason = f"node {node} disconnected before answering"
        else:
            response = future.result()
            if response.WhichOneof("outcome") == "refusal":
                outcome.status = "refused"
                outcome.reason = response.refusal.reason
                outcome.rule = response.refusal.rule
            else:
                outcome.status = "answered"
                responses[node] = response
        outcomes.append(outcome)
    return responses, outcomes


class AnalystService(pb_grpc.AnalystServicer):
    def __init__(self, registry: Registry, jobs: JobStore, config: CoordinatorConfig, gate: Gate) -> None:
        self.registry = registry
        self.jobs = jobs
        self.config = config
        self.gate = gate
        self.projects = Projects(dict(config.projects))
        self.limits = RateLimiter(config.max_queries_per_minute)  # per analyst: coordinator/limits.py
        self.slots = JobSlots(config.max_concurrent_jobs_per_analyst, config.max_concurrent_jobs)
        self.progress = ProgressBoard()  # long jobs' progress, per analyst: coordinator/progress.py
        self.models = ModelJobs(
            registry,
            jobs,
            self.projects,
            self.limits,
            self.slots,
            config.node_timeout_seconds,
            config.max_timeout_seconds,
        )

    def Model(self, request: pb.ModelRequest, context: grpc.ServicerContext) -> pb.ModelResponse:  # noqa: N802
        """A GLM fitted by Fisher scoring over secure-aggregated rounds (docs/modelling.md)."""
        return self.models.model(request, self.gate.user(context))

    def ModelRound(  # noqa: N802
        self, request: pb.ModelRoundRequest, context: grpc.ServicerContext
    ) -> pb.ModelRoundResponse:
        """One secure-aggregated round of a model job with the analyst's parameters."""
        return self.models.round(request, self.gate.user(context))

    def Projects(self, request: pb.ProjectsRequest, context: grpc.ServicerContext) -> pb.ProjectsResponse:  # noqa: N802
        """The projects jobs may run for: purpose, legal basis, members, expiry, quorum (docs/projects.md)."""
        return pb.ProjectsResponse(projects=self.projects.infos(self.gate.user(context)))

    def Nodes(self, request: pb.NodesRequest, context: grpc.ServicerContext) -> pb.NodesResponse:  # noqa: N802
        caller = self.gate.caller(context)
        if request.forget:
            self._forget(request.forget, caller, context)
        return pb.NodesResponse(nodes=self.registry.status())

    def _forget(self, node: str, caller: Caller, context: grpc.ServicerContext) -> None:
        """An admin drops a disconnected node's entry (a test node, a partner that left)."""
        if caller.role != "admin":
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"only an admin may forget a node; '{caller.subject}' has role {caller.role} [rule: wrong_role]",
            )
        try:
            self.registry.forget_node(node)
        except FederationError as exc:
            code = (
                grpc.StatusCode.FAILED_PRECONDITION
                if exc.rule == "node_connected"
                else grpc.StatusCode.NOT_FOUND
            )
            context.abort(code, f"{exc.message} [rule: {exc.rule}]")
        log.info("node %s forgotten by %s", node, caller.subject)

    def Datasets(self, request: pb.DatasetsRequest, context: grpc.ServicerContext) -> pb.DatasetsResponse:  # noqa: N802
        self.gate.user(context)
        out = pb.DatasetsResponse()
        for session in sorted(self.registry.sessions(), key=lambda s: s.node_id):
            out.datasets.extend(session.datasets)
        return out

    def Jobs(self, request: pb.JobsRequest, context: grpc.ServicerContext) -> pb.JobsResponse:  # noqa: N802
        """One page of the job history, of the jobs the caller may read (docs/security.md)."""
        viewer = self._viewer(self.gate.caller(context))
        try:
            check_name(request.project, "the project name")
            # An unlisted name reads the jobs of the catch-all it ran as.
            project = self.projects.runs_as(request.project) if request.project.strip() else ""
            records, token = self.jobs.page(viewer, request.limit, project, request.page_token)
        except FederationError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{exc.message} [rule: {exc.rule}]")
        return pb.JobsResponse(jobs=records, next_page_token=token)

    def _viewer(self, caller: Caller) -> Viewer:
        if caller.role == "admin":
            return Viewer(caller.subject, everything=True)
        mine = self.projects.member_of(caller.subject)
        if caller.role == "privacy_officer":
            return Viewer(caller.subject, mine, node=caller.org)
        return Viewer(caller.subject, mine)

    def AuditHeads(
        self, request: pb.AuditHeadsRequest, context: grpc.ServicerContext
    ) -> pb.AuditHeadsResponse:  # noqa: N802
        """The audit chain heads nodes published with their answers: entry number and hash only."""
        self.gate.user(context)
        return self.jobs.heads(request.node, request.all)

    def Progress(self, request: pb.ProgressRequest, context: grpc.ServicerContext) -> pb.ProgressResponse:  # noqa: N802
        """How far the caller's own job with this ``progress_id`` has come."""
        return self.progress.read(self.gate.user(context), request.progress_id)

    def Overlap(self, request: pb.OverlapRequest, context: grpc.ServicerContext) -> pb.OverlapResponse:  # noqa: N802
        """Entity counts per membership pattern across datasets (multi-party PSI): coordinator/overlap.py."""
        return self._overlap(request, self.gate.user(context), aggregate=False)

    def OverlapAggregate(  # noqa: N802
        self, request: pb.OverlapRequest, context: grpc.ServicerContext
    ) -> pb.OverlapResponse:
        """Count and sum per group over the intersection (Ion et al. 2020): coordinator/overlap.py."""
        return self._overlap(request, self.gate.user(context), aggregate=True)

    def _overlap(self, request: pb.OverlapRequest, user: str, aggregate: bool) -> pb.OverlapResponse:
        try:
            self.limits.admit(user)
        except RateLimited as exc:
            return pb.OverlapResponse(
                job_id=uuid.uuid4().hex, ok=False, error=exc.message, error_rule=exc.rule
            )
        try:
            check_spec(request.spec)
            timeout = job_timeout(
                request.timeout_seconds, self.config.node_timeout_seconds, self.config.max_timeout_seconds
            )
            with self.slots.hold(user):
                return self._run_overlap(request, user, aggregate, timeout)
        except (SpecTooLarge, JobRefused) as exc:
            return pb.OverlapResponse(
                job_id=uuid.uuid4().hex, ok=False, error=exc.message, error_rule=exc.rule
            )

    def _run_overlap(
        self, request: pb.OverlapRequest, user: str, aggregate: bool, timeout: float
    ) -> pb.OverlapResponse:
        try:
            report = self.progress.start(
                user, request.progress_id, progress_steps(len(request.spec.datasets))
            )
        except ProgressIdInvalid as exc:
            return pb.OverlapResponse(job_id=uuid.uuid4().hex, ok=False, error=str(exc), error_rule=exc.rule)
        # Project rules first; the overlap run then stamps the project's purpose on every step.
        try:
            project = self.projects.admit(request.spec.project, user)
            request.spec.project = project.name
            resolve_overlap_nodes(request.spec, self.registry.sessions())
            request.timeout_seconds = timeout
            nodes = [d.node for d in request.spec.datasets if d.node]
            check_quorum(project, "overlap", request.spec, nodes, self.registry, user, timeout)
        except ProjectRefused as exc:
            job_id = uuid.uuid4().hex
            self.jobs.refused(job_id, user, request.spec, "", exc.rule, exc.message)  # type: ignore[arg-type]
            report("failed", 0, exc.message)
            return pb.OverlapResponse(job_id=job_id, ok=False, error=exc.message, error_rule=exc.rule)
        view = ProjectRegistry(self.registry, project)
        response = run_overlap(
            view, self.jobs, self.config, request, user, aggregate=aggregate, report=report
        )  # type: ignore[arg-type]
        self.jobs.annotate(response.job_id, project.name, project.purpose, project.legal_basis)
        return response

    def Budget(self, request: pb.BudgetRequest, context: grpc.ServicerContext) -> pb.BudgetResponse:  # noqa: N802
        """Read-only view of what remains per node and dataset for a project; nodes answer for themselves."""
        caller = self.gate.caller(context)
        user = caller.subject
        try:
            check_name(request.project, "the project name")
        except FederationError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{exc.message} [rule: {exc.rule}]")
        sessions = self._budget_nodes(caller, request.project.strip() or DEFAULT_PROJECT, context)
        job = pb.JobRequest(
            job_id=uuid.uuid4().hex,
            budget=pb.BudgetQuery(project=self.projects.runs_as(request.project)),
            requested_by=user,
        )
        try:
            with self.slots.hold(user):  # a budget read waits for the nodes like a job does
                responses, outcomes = fan_out(sessions, job, self.config.node_timeout_seconds)
        except JobRefused as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{exc.message} [rule: {exc.rule}]")
        out = pb.BudgetResponse(nodes=outcomes)
        for node in sorted(responses):
            out.lines.extend(responses[node].budget.lines)
        return out

    def _budget_nodes(self, caller: Caller, name: str, context: grpc.ServicerContext) -> list[NodeSession]:
        """The nodes whose budget lines for project ``name`` the caller may read (docs/security.md).

        Admins and the project's members: every node. A privacy officer of another project: its own
        organisation's node only. Anyone else is refused.
        """
        sessions = self.registry.sessions()
        project = self.projects.lookup(name)
        if caller.role == "admin" or (project is not None and project.is_member(caller.subject)):
            return sessions
        if caller.role == "privacy_officer" and caller.org:
            return [s for s in sessions if s.node_id == caller.org]
        rule = "not_a_member" if project is not None else "unknown_project"
        context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"'{caller.subject}' may not read the budget of project '{name}': "
            f"only its members, privacy officers (for their own node) and admins may [rule: {rule}]",
        )
        raise AssertionError("abort raises")  # pragma: no cover

    def _targets(self, spec: pb.QuerySpec) -> tuple[list[NodeSession], str]:
        sessions = self.registry.sessions()
        serving = [s for s in sessions if any(d.name == spec.dataset for d in s.datasets)]
        if spec.node:
            chosen = [s for s in serving if s.node_id == spec.node]
            if not chosen:
                if any(s.node_id == spec.node for s in sessions):
                    return [], f"node {spec.node} does not serve dataset '{spec.dataset}'"
                return [], f"node {spec.node} is not connected"
            return chosen, ""
        if not serving:
            served = sorted({d.name for s in sessions for d in s.datasets})
            return (
                [],
                f"no connected node serves dataset '{spec.dataset}' (served: {', '.join(served) or 'none'})",
            )
        return serving, ""

    def Query(self, request: pb.QueryRequest, context: grpc.ServicerContext) -> pb.QueryResponse:  # noqa: N802
        spec = request.spec
        job_id = uuid.uuid4().hex
        columns = list(spec.group_by) + [a.alias for a in spec.aggregates]
        try:
            self.limits.admit(self.gate.user(context))
        except RateLimited as exc:
            return pb.QueryResponse(
                job_id=job_id, ok=False, error=exc.message, error_rule=exc.rule, columns=columns
            )
        try:
            check_query(spec)  # the SDK checked; nodes check again
        except FederationError as exc:
            return pb.QueryResponse(
                job_id=job_id, ok=False, error=exc.message, error_rule=exc.rule, columns=columns
            )
        requested_by = self.gate.user(context)
        try:
            # The same bounds the SDK applies, for callers that bypass it (protocols/spec_limits.py).
            check_spec(spec)
            if len(request.sql) > MAX_SQL_CHARS:
                raise SpecTooLarge(
                    "oversized_request", f"the query text is longer than {MAX_SQL_CHARS} characters"
                )
            timeout = job_timeout(
                request.timeout_seconds, self.config.node_timeout_seconds, self.config.max_timeout_seconds
            )
            with self.slots.hold(requested_by):
                return self._run_query(request, job_id, columns, requested_by, timeout)
        except (SpecTooLarge, JobRefused) as exc:
            return pb.QueryResponse(job_id=job_id, ok=False, error=exc.message, error_rule=exc.rule)

    def _run_query(
        self, request: pb.QueryRequest, job_id: str, columns: list[str], requested_by: str, timeout: float
    ) -> pb.QueryResponse:
        spec = request.spec
        targets, problem = self._targets(spec)
        if problem:
            rule = "node_unreachable" if "not connected" in problem else "unknown_dataset"
            return pb.QueryResponse(job_id=job_id, ok=False, error=problem, error_rule=rule, columns=columns)
        statistics = any(a.function in (pb.VARIANCE, pb.STDDEV, pb.PERCENTILE) for a in spec.aggregates)
        if statistics and requires_secure(spec, targets):
            return pb.QueryResponse(
                job_id=job_id,
                ok=False,
                error="VARIANCE, STDDEV, MEDIAN and PERCENTILE_CONT are not released under secure aggregation",
                error_rule="unsupported_under_secure",
                columns=columns,
            )
        if any(a.bound_quantile for a in spec.aggregates) and requires_secure(spec, targets):
            return pb.QueryResponse(
                job_id=job_id,
                ok=False,
                error="bounds chosen by a DP quantile are not available under secure aggregation; give bounds",
                error_rule="bound_quantile",
                columns=columns,
            )
        if spec.derived and (requires_secure(spec, targets) or union_aggregates(spec, len(targets))):
            # Their domains are derived by each node; the secure and union paths size their
            # vectors from the declared category domains alone.
            return pb.QueryResponse(
                job_id=job_id,
                ok=False,
                error="histogram and date-part group keys are not available under secure aggregation "
                "or with COUNT(DISTINCT unit) across several nodes (use COUNT_DISTINCT_PER_NODE)",
                error_rule="derived_key_unsupported",
                columns=columns,
            )
        # Project rules before any node is asked (docs/projects.md): member, not expired, quorum.
        try:
            project = self.projects.admit(spec.project, requested_by)
            spec.project = project.name
            kind = "secure" if requires_secure(spec, targets) else "query"
            check_quorum(
                project, kind, spec, [s.node_id for s in targets], self.registry, requested_by, timeout
            )
        except ProjectRefused as exc:
            self.jobs.refused(job_id, requested_by, spec, request.sql, exc.rule, exc.message)
            return pb.QueryResponse(
                job_id=job_id, ok=False, error=exc.message, error_rule=exc.rule, columns=columns
            )
        self.jobs.start(job_id, requested_by, spec, request.sql, project.purpose, project.legal_basis)
        union = union_aggregates(spec, len(targets))
        if union:
            response, status = self._with_union(spec, union, job_id, requested_by, targets, project, timeout)
        else:
            response, status = self._answer(spec, job_id, requested_by, targets, project, timeout)
        response.job_id = job_id
        del response.columns[:]
        response.columns.extend(columns)
        if not spec.node:
            name_absent(response, self.registry.absent(spec.dataset))
        for i, agg in enumerate(spec.aggregates):
            if agg.function == pb.COUNT_DISTINCT:
                response.distinct[agg.alias] = "union" if i in union or len(targets) == 1 else "per_node_sum"
        digest = _result_digest(list(response.rows)) if response.ok else ""
        # The job record keeps why a job failed (a budget refusal, too few nodes), with its rule.
        error = "" if response.ok else f"{response.error} [rule: {response.error_rule or 'refused'}]"
        self.jobs.finish(job_id, status, digest, list(response.nodes), error=error)
        return response

    def _answer(
        self,
        spec: pb.QuerySpec,
        job_id: str,
        requested_by: str,
        targets: list[NodeSession],
        project: Any,
        timeout: float,
    ) -> tuple[pb.QueryResponse, str]:
        """Fan the query out (plain or secure), combine, and say how the job ended."""
        columns = list(spec.group_by) + [a.alias for a in spec.aggregates]
        job = stamp(pb.JobRequest(job_id=job_id, query=spec, requested_by=requested_by), project)
        if requires_secure(spec, targets):
            # Secure aggregation with distributed DP: coordinator/secure_query.py.
            secure, status = run_secure_query(bound(targets, project), spec, job_id, requested_by, timeout)
            if secure.ok:
                answered = {o.node for o in secure.nodes if o.status == "answered"}
                clip_rows(spec, list(secure.rows), _infos(spec, targets, answered))
            return secure, status
        responses, outcomes = fan_out(targets, job, timeout)
        answers: dict[str, pb.QueryResult] = {}
        for outcome in outcomes:
            if outcome.status == "answered":
                result = responses[outcome.node].result
                outcome.cost.CopyFrom(result.cost)
                outcome.audit_digest = result.audit_digest
                answers[outcome.node] = result

        response = pb.QueryResponse(job_id=job_id, columns=columns, nodes=outcomes)
        missing = [o for o in outcomes if o.status != "answered"]
        needed = max(1, spec.min_nodes)
        if len(answers) < needed:
            response.ok = False
            if not answers and missing and all(o.status == "refused" for o in missing):
                response.error_rule = missing[0].rule
                mixed = len({o.rule for o in missing}) > 1
                response.error = "; ".join(
                    f"node {o.node} refused: {o.reason}" + (f" [rule: {o.rule}]" if mixed else "")
                    for o in missing
                )
            else:
                response.error_rule = "min_nodes"
                response.error = f"only {len(answers)} of the required {needed} node(s) answered; " + listed(
                    missing
                )
            return response, "failed"
        sizes = {s.node_id: d.min_group_size for s in targets for d in s.datasets if d.name == spec.dataset}
        try:
            rows = combine(spec, answers, sizes)
        except FederationError as exc:  # the answers cannot be combined (e.g. different histogram bins)
            response.ok, response.error, response.error_rule = False, exc.message, exc.rule
            return response, "failed"
        response.ok = True
        response.rows.extend(rows)
        clip_rows(spec, list(response.rows), _infos(spec, targets, set(answers)))
        response.diagnostics.extend(combine_diagnostics(answers))
        for node in sorted(answers):
            for chosen in answers[node].chosen_bounds:
                response.chosen_bounds.add().CopyFrom(chosen)
                response.chosen_bounds[-1].node = node
        return response, "partial" if missing else "complete"

    def _with_union(
        self,
        spec: pb.QuerySpec,
        union: list[int],
        job_id: str,
        requested_by: str,
        targets: list[NodeSession],
        project: Any,
        timeout: float,
    ) -> tuple[pb.QueryResponse, str]:
        """COUNT(DISTINCT unit) across nodes as the union (coordinator/distinct.py), the other
        aggregates as usual; the union runs first, so a node refusing it costs no node anything."""
        infos = [d for s in targets for d in s.datasets if d.name == spec.dataset]
        keys = _domain_keys(spec, infos)
        column = spec.aggregates[union[0]].column
        # Each union step is cryptographic work over every (group, unit) item, not one SQL query:
        # it waits at least UNION_STEP_SECONDS, within the coordinator's cap.
        step_timeout = min(max(timeout, UNION_STEP_SECONDS), self.config.max_timeout_seconds)
        try:
            check_union_parties(column, len(targets))
        except FederationError as exc:
            return pb.QueryResponse(ok=False, error=exc.message, error_rule=exc.rule), "failed"
        try:
            answer = run_union(
                ProjectRegistry(self.registry, project),
                self.jobs,
                self.config,
                spec,
                column,
                [s.node_id for s in targets],
                keys,
                max([1, *(d.min_group_size for d in infos)]),
                requested_by,
                step_timeout,
            )
        except OverlapFailed as exc:
            outcomes = [_node_outcome(o) for o in getattr(exc, "outcomes", [])]
            failed = pb.QueryResponse(ok=False, error=exc.message, error_rule=exc.rule, nodes=outcomes)
            return failed, "failed"
        rest = pb.QuerySpec()
        rest.CopyFrom(spec)
        del rest.aggregates[:]
        rest.aggregates.extend(a for i, a in enumerate(spec.aggregates) if i not in union)
        if not rest.aggregates:
            return _union_only(spec, union, answer), "complete"
        response, status = self._answer(rest, job_id, requested_by, targets, project, timeout)
        if not response.ok:
            return response, status
        return _merge_union(spec, union, response, answer), status


def _domain_keys(spec: pb.QuerySpec, infos: list[pb.DatasetInfo]) -> list[tuple]:
    """Every group key of the public domain, over the nodes' declared domains, in domain order."""
    keys: dict[tuple, None] = {}
    for info in infos:
        domains = []
        for name in spec.group_by:
            column = next((c for c in info.columns if c.name == name), None)
            domains.append([from_value(v) for v in column.domain] if column is not None else [])
        for key in itertools.product(*domains):
            keys.setdefault(tuple(key), None)
    return list(keys)


def _node_outcome(outcome: pb.NodeOutcome) -> pb.NodeOutcome:
    """A union party's outcome ("node.dataset") under the node's name, as query outcomes are."""
    out = pb.NodeOutcome()
    out.CopyFrom(outcome)
    out.node = outcome.node.partition(".")[0]
    return out


def _union_only(spec: pb.QuerySpec, union: list[int], answer: UnionAnswer) -> pb.QueryResponse:
    response = pb.QueryResponse(ok=True, nodes=[_node_outcome(o) for o in answer.outcomes])
    for index, key in enumerate(answer.keys):
        row = response.rows.add(key=[to_value(v) for v in key])
        if answer.suppressed[index]:
            row.suppressed = True
            row.suppressed_by.append(f"combined: min_group_size: noisy union count below {answer.threshold}")
        for _ in union:
            row.cells.append(answer.cell(index))
    return response


def _merge_union(
    spec: pb.QuerySpec, union: list[int], rest: pb.QueryResponse, answer: UnionAnswer
) -> pb.QueryResponse:
    """The other aggregates' rows with the union cells put in their columns; a group either part
    suppresses is suppressed whole, and each node's cost is the sum of both releases."""
    position = {key: i for i, key in enumerate(answer.keys)}
    out = pb.QueryResponse(ok=True, diagnostics=rest.diagnostics)
    for row in rest.rows:
        key = tuple(from_value(v) for v in row.key)
        index = position.get(key)
        merged = out.rows.add(key=row.key, suppressed=row.suppressed, suppressed_by=row.suppressed_by)
        if index is not None and answer.suppressed[index] and not row.suppressed:
            merged.suppressed = True
            merged.suppressed_by.append(
                f"combined: min_group_size: noisy union count below {answer.threshold}"
            )
        others = list(row.cells)
        for i in range(len(spec.aggregates)):
            if i in union:
                cell = answer.cell(index) if index is not None else pb.CombinedCell(suppressed=True)
            else:
                cell = others.pop(0)
            merged.cells.append(pb.CombinedCell(suppressed=True) if merged.suppressed else cell)
    union_cost = {o.node.partition(".")[0]: o.cost for o in answer.outcomes}
    for outcome in rest.nodes:
        node = pb.NodeOutcome()
        node.CopyFrom(outcome)
        extra = union_cost.get(outcome.node)
        if extra is not None:
            node.cost.epsilon += extra.epsilon
        out.nodes.append(node)
    return out


class Coordinator:
    """Owns the gRPC server, the registry and the job store."""

    def __init__(self, config: CoordinatorConfig) -> None:
        if config.tls is None and not config.insecure:
            raise ConfigError(
                "no TLS configured: set tls_cert, tls_key and tls_ca (or tls_dir) in [coordinator], "
                "or insecure = true for development only",
                rule="tls_required",
            )
        self.config = config
        self.registry = Registry(config.heartbeat_seconds)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = CoordinatorMetrics(self.registry)
        self.metrics_server: MetricsServer | None = None
        self.dashboard: Dashboard | None = None
        self._stopping = threading.Event()
        self.jobs = JobStore(config.state_dir / "jobs.sqlite", on_finish=self.metrics.finished)
        self.server = grpc.server(
            # Jobs take at most max_concurrent_jobs threads (JobSlots); the rest answer short calls.
            # Node links hold one thread each for their whole life, on top of those (max_nodes).
            futures.ThreadPoolExecutor(
                max_workers=config.max_concurrent_jobs + 16 + config.max_nodes,
                thread_name_prefix="coordinator",
            ),
            options=server_options(config.max_message_bytes),
        )
        gate = Gate(config.tls)
        pb_grpc.add_NodeLinkServicer_to_server(
            NodeLinkService(self.registry, config.heartbeat_seconds, gate, self.jobs, config.max_nodes),
            self.server,
        )
        # Requests that do not decode are refused by rule, not failed as INTERNAL (protocols/safe_decode.py).
        add_analyst_service(AnalystService(self.registry, self.jobs, config, gate), self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if config.tls is not None:
            try:
                config.tls.check("coordinator")
            except PkiError as exc:
                raise ConfigError(exc.message, rule=exc.rule) from None
            self.port = self.server.add_secure_port(config.listen, config.tls.server_credentials())
        else:
            log.warning("coordinator runs WITHOUT TLS (insecure = true): for development only")
            self.port = self.server.add_insecure_port(config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {config.listen}")

    def start(self) -> None:
        if self.config.console is not None:
            # First, so a console that cannot listen stops the start before any port is served.
            # Imported here: a coordinator without a [console] table never loads the web stack.
            from coordinator.dashboard import Dashboard

            self.dashboard = Dashboard(
                self.registry, self.jobs, self.config.projects, self.config.console, self.config.state_dir
            )
            log.info(
                "operator dashboard on %s (sign-in token in %s)",
                self.dashboard.url,
                self.dashboard.token_file,
            )
        self.server.start()
        self._set_health(True)
        log.info("coordinator listening on %s", self.config.listen)
        if self.config.metrics_listen:
            self.metrics_server = MetricsServer(
                self.config.metrics_listen, self.metrics.registry, self._readiness, "[coordinator]"
            )
            log.info("metrics on http://%s/metrics", self.config.metrics_listen)
        threading.Thread(target=self._watch_health, daemon=True, name="health").start()

    def _set_health(self, ready: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", "federation.v1.Analyst", "federation.v1.NodeLink"):
            self.health.set(service, status)

    def _watch_health(self) -> None:
        """The gRPC health service follows readiness, re-checked every heartbeat until ``stop()``."""
        was = True
        while not self._stopping.wait(self.config.heartbeat_seconds):
            ready = all(self._readiness().values())
            if ready != was and not self._stopping.is_set():
                log.warning("coordinator %s", "ready again" if ready else "not ready: the job store fails")
                self._set_health(ready)
                was = ready

    def _readiness(self) -> dict[str, bool]:
        """The job store answers a read (what /healthz and the gRPC health service report)."""
        try:
            self.jobs.recent(1)
        except Exception:  # noqa: BLE001 - any failure of the store means not ready
            return {"jobs": False}
        return {"jobs": True}

    def stop(self, grace: float = 1.0) -> None:
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.dashboard is not None:
            self.dashboard.close()
        for session in self.registry.sessions():
            session.close()
        self.server.stop(grace).wait()
        self.jobs.close()
