"""Purpose binding and approvals at the node: the first check of every job that starts here.

Doelbinding: data may be used only for the purpose it was shared for (AVG/GDPR art. 5(1)(b)). Each
dataset's policy names the projects and purposes that may use it; the coordinator attaches the
project's purpose and legal basis to every job, and this node checks them itself, whatever the
coordinator accepted. Where the policy asks for it, a job also needs the approval of this node's
privacy officer, bound to the job's canonical hash (``protocols/canonical.py``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from nodes.approvals import ApprovalStore, answer_approval_query
from nodes.config import Dataset, NodeConfig
from nodes.context import NodeContext
from protocols import federation_pb2 as pb
from protocols.canonical import canonical_job_hash, job_kind, job_spec, template_hash
from protocols.errors import FederationError

DEFAULT_PROJECT = "default"


class ProjectRefused(FederationError):
    """This node refuses the job for its project, purpose or a missing approval; ``rule`` names which."""


@dataclass(frozen=True)
class JobScope:
    """What a starting job asks of this node: which datasets, for which project and purpose."""

    kind: str  # query, secure, overlap or model
    datasets: tuple[Dataset, ...]
    project: str
    purpose: str
    spec: pb.QuerySpec | pb.OverlapSpec | pb.ModelSpec


def scope_of(config: NodeConfig, job: pb.JobRequest) -> JobScope | None:
    """The scope of a job that starts here; ``None`` for later protocol steps, budgets and approvals."""
    kind = job_kind(job)
    if job.WhichOneof("kind") == "approval":
        return None
    spec = job_spec(job)
    if spec is None or not kind:
        return None
    if isinstance(spec, pb.QuerySpec | pb.ModelSpec):
        names = [spec.dataset]
    else:
        # An overlap step acts for one party, "node.dataset"; only that dataset is used here.
        owner, _, name = job.overlap.party.partition(".")
        names = [name] if owner == config.node_id else []
    datasets = tuple(config.datasets[n] for n in names if n in config.datasets)
    project = spec.project or DEFAULT_PROJECT
    return JobScope(kind=kind, datasets=datasets, project=project, purpose=job.purpose.strip(), spec=spec)


def check_purpose(config: NodeConfig, scope: JobScope) -> None:
    """Refuse a project or purpose the dataset's policy does not list (absent lists allow any)."""
    node = config.node_id
    for dataset in scope.datasets:
        allowed = dataset.policy.projects
        if allowed is not None and scope.project not in allowed:
            raise ProjectRefused(
                "project_not_allowed",
                f"dataset {dataset.name} may not be used for project '{scope.project}' "
                f"(allowed: {', '.join(allowed) or 'none'})",
                node,
            )
        purposes = dataset.policy.purposes
        if purposes is not None and _norm(scope.purpose) not in {_norm(p) for p in purposes}:
            shown = f"'{scope.purpose}'" if scope.purpose else "no purpose"
            raise ProjectRefused(
                "purpose_not_allowed",
                f"dataset {dataset.name} may not be used for {shown} of project '{scope.project}' "
                f"(allowed purposes: {'; '.join(purposes) or 'none'})",
                node,
            )


def needs_approval(scope: JobScope) -> bool:
    return any(
        scope.kind in d.policy.approval_required or scope.project in d.policy.approval_projects
        for d in scope.datasets
    )


def check_approval(config: NodeConfig, store: ApprovalStore, scope: JobScope, job: pb.JobRequest) -> None:
    """Refuse a job that needs this node's approval and has none, naming its hash and the command."""
    if not needs_approval(scope):
        return
    digest, template = canonical_job_hash(scope.spec), template_hash(scope.spec)
    if store.find(digest, template) is not None:
        return
    store.note_request(job, scope.kind, job.requested_by, scope.purpose, job.legal_basis)
    # The analyst reads this refusal: it names the command, never the node's local config path.
    raise ProjectRefused(
        "approval_required",
        f"this {scope.kind} job for project '{scope.project}' needs the approval of {config.node_id}'s "
        f"privacy officer: job hash {digest} (template {template}); "
        f"approve with: federation approve --config <node config> --job {digest}",
        config.node_id,
    )


class ProjectGate:
    """The check before every job that starts here: project, purpose and the officer's approval."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def check(self, job: pb.JobRequest) -> None:
        """Raise ``ProjectRefused`` for a job its dataset's policy does not allow (yet)."""
        config = self.ctx.config
        scope = scope_of(config, job)
        if scope is None:
            return
        check_purpose(config, scope)
        if needs_approval(scope):
            try:
                check_approval(config, self.ctx.approvals, scope, job)
            except (OSError, ValueError, sqlite3.Error) as exc:
                # The approval store cannot be read: fail closed rather than run an unchecked job.
                raise ProjectRefused(
                    "approvals_unavailable",
                    f"node {config.node_id}: approvals cannot be read ({type(exc).__name__})",
                    config.node_id,
                ) from None


class ApprovalHandler:
    """The "approval" job: the coordinator's quorum question for one job hash (read-only)."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def abandon(self, job: pb.JobRequest) -> None:
        """An approval query holds nothing."""

    def handle(self, job: pb.JobRequest) -> pb.JobResponse:
        try:
            return answer_approval_query(self.ctx.approvals, job)
        except (OSError, sqlite3.Error) as exc:
            raise ProjectRefused(
                "approvals_unavailable",
                f"node {self.ctx.node_id}: approvals cannot be read ({type(exc).__name__})",
                self.ctx.node_id,
            ) from None


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()
