"""Projects at the coordinator: purpose, legal basis, members, expiry and the officers' quorum.

Doelbinding (AVG/GDPR art. 5(1)(b)): every job runs for one project, and a project carries the
purpose and legal basis its data may be used for. Before any node is asked, the coordinator refuses
a job for an unknown or expired project or from an analyst who is not a member, attaches the
project's purpose and legal basis to every message it sends for the job, and, where the project
needs a quorum, asks the approving partners' nodes whether their officers approved the job's
canonical hash (``protocols/canonical.py``). Each node still checks purpose and approvals itself.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

from coordinator.registry import NodeGone, NodeSession, Registry
from protocols import federation_pb2 as pb
from protocols.canonical import canonical_job_hash
from protocols.errors import ConfigError, FederationError

DEFAULT_PROJECT = "default"
ANY = "*"  # as a member: any caller the coordinator admits; as a name: any project not listed


class ProjectRefused(FederationError):
    """The coordinator refuses a job for its project; ``rule`` names which project rule fired."""


@dataclass(frozen=True)
class Project:
    name: str
    purpose: str
    legal_basis: str
    members: tuple[str, ...]
    expires: dt.date
    quorum: int = 0
    approvers: tuple[str, ...] = ()

    def is_member(self, subject: str) -> bool:
        return ANY in self.members or subject in self.members

    def expired(self, today: dt.date) -> bool:
        return today > self.expires


def _text(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} must be non-empty text")
    return value.strip()


def _names(raw: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or any(not isinstance(v, str) or not v.strip() for v in value):
        raise ConfigError(f"{where}: {key} must be a list of names")
    return tuple(v.strip() for v in value)


def parse_project(raw: Any, index: int) -> Project:
    """One ``[[projects]]`` entry, or a ConfigError naming the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"[[projects]] entry {index + 1} must be a table")
    name = raw.get("name")
    where = f"[[projects]] {name!r}" if isinstance(name, str) else f"[[projects]] entry {index + 1}"
    known = {"name", "purpose", "legal_basis", "members", "expires", "quorum", "approvers"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}")
    name = _text(raw, "name", where)
    members = _names(raw, "members", where)
    if not members:
        raise ConfigError(f"{where}: members must name at least one analyst (certificate subject) or '*'")
    expires_raw = raw.get("expires")
    try:
        expires = expires_raw if isinstance(expires_raw, dt.date) else dt.date.fromisoformat(str(expires_raw))
    except ValueError:
        raise ConfigError(f"{where}: expires must be a date YYYY-MM-DD, not {expires_raw!r}") from None
    if isinstance(expires, dt.datetime):
        raise ConfigError(f"{where}: expires must be a date YYYY-MM-DD without a time")
    quorum = raw.get("quorum", 0)
    if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 0:
        raise ConfigError(f"{where}: quorum must be a whole number of approvals, 0 or more")
    approvers = _names(raw, "approvers", where)
    if approvers and quorum > len(approvers):
        raise ConfigError(f"{where}: quorum {quorum} exceeds the {len(approvers)} approver(s) listed")
    if approvers and not quorum:
        raise ConfigError(f"{where}: approvers are listed but no quorum is set")
    return Project(
        name=name,
        purpose=_text(raw, "purpose", where),
        legal_basis=_text(raw, "legal_basis", where),
        members=members,
        expires=expires,
        quorum=quorum,
        approvers=approvers,
    )


def parse_projects(raw: Any) -> dict[str, Project]:
    """The ``[[projects]]`` array of a coordinator config, by name."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ConfigError("projects must be an array of tables: [[projects]]")
    projects: dict[str, Project] = {}
    for i, entry in enumerate(raw):
        project = parse_project(entry, i)
        if project.name in projects:
            raise ConfigError(f"[[projects]] {project.name!r} is listed twice")
        projects[project.name] = project
    return projects


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@dataclass
class Projects:
    """The coordinator's projects; ``admit`` is the check every job passes before fan-out."""

    by_name: dict[str, Project] = field(default_factory=dict)

    def lookup(self, name: str) -> Project | None:
        """The listed project ``name``, else the development catch-all (named ``*``), else None.

        Every unlisted name runs as the catch-all itself: its jobs reach the nodes as project
        ``*`` and so share one budget per dataset, however many names an analyst invents.
        """
        if name in self.by_name:
            return self.by_name[name]
        return self.by_name.get(ANY)

    def runs_as(self, name: str) -> str:
        """The project name a job asked for as ``name`` runs under at the nodes (budgets, history)."""
        name = name.strip() or DEFAULT_PROJECT
        project = self.lookup(name)
        return name if project is None else project.name

    def member_of(self, subject: str) -> tuple[str, ...]:
        """The listed projects ``subject`` is a member of (the catch-all ``*`` is not one of them)."""
        return tuple(sorted(n for n, p in self.by_name.items() if n != ANY and p.is_member(subject)))

    def admit(self, name: str, subject: str, today: dt.date | None = None) -> Project:
        """The project a job may run for, or ProjectRefused (unknown_project, project_expired, not_a_member)."""
        name = name.strip() or DEFAULT_PROJECT
        project = self.lookup(name)
        if project is None:
            listed = ", ".join(sorted(self.by_name)) or "none: the coordinator config lists no [[projects]]"
            raise ProjectRefused(
                "unknown_project", f"project '{name}' is not known to the coordinator (known: {listed})"
            )
        when = today or _today()
        if project.expired(when):
            raise ProjectRefused(
                "project_expired",
                f"project '{name}' expired on {project.expires.isoformat()}; no jobs run for it",
            )
        if not project.is_member(subject):
            raise ProjectRefused("not_a_member", f"'{subject}' is not a member of project '{name}'")
        return project

    def infos(self, subject: str, today: dt.date | None = None) -> list[pb.ProjectInfo]:
        when = today or _today()
        return [
            pb.ProjectInfo(
                name=p.name,
                purpose=p.purpose,
                legal_basis=p.legal_basis,
                members=list(p.members),
                expires=p.expires.isoformat(),
                quorum=p.quorum,
                approvers=list(p.approvers),
                member=p.is_member(subject),
                expired=p.expired(when),
            )
            for p in sorted(self.by_name.values(), key=lambda p: p.name)
        ]


# ---------------------------------------------------------------------- attaching the project to jobs


def stamp(job: pb.JobRequest, project: Project) -> pb.JobRequest:
    job.purpose = project.purpose
    job.legal_basis = project.legal_basis
    return job


class ProjectSession:
    """A node session through which every job carries the project's purpose and legal basis."""

    def __init__(self, session: NodeSession, project: Project) -> None:
        self._session = session
        self._project = project

    def send_job(self, job: pb.JobRequest) -> futures.Future[pb.JobResponse]:
        return self._session.send_job(stamp(job, self._project))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class ProjectRegistry:
    """A view of the registry whose sessions stamp the project on every job (secure and overlap runs)."""

    def __init__(self, registry: Registry, project: Project) -> None:
        self._registry = registry
        self._project = project

    def sessions(self) -> list[NodeSession]:
        return bound(self._registry.sessions(), self._project)

    def get(self, node_id: str) -> NodeSession | None:
        session = self._registry.get(node_id)
        return None if session is None else ProjectSession(session, self._project)  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)


def bound(sessions: Iterable[NodeSession], project: Project) -> list[NodeSession]:
    return [ProjectSession(s, project) for s in sessions]  # type: ignore[misc]


# ---------------------------------------------------------------------- quorum


def resolve_overlap_nodes(spec: pb.OverlapSpec, sessions: list[NodeSession]) -> None:
    """Name the node of every dataset served by exactly one node, as the overlap run will.

    The nodes hash the spec they are sent, so the coordinator hashes the same, resolved spec.
    """
    for item in spec.datasets:
        if item.node:
            continue
        serving = [s.node_id for s in sessions if any(d.name == item.dataset for d in s.datasets)]
        if len(serving) == 1:
            item.node = serving[0]


def check_quorum(
    project: Project,
    kind: str,
    spec: pb.QuerySpec | pb.OverlapSpec | pb.ModelSpec,
    participants: list[str],
    registry: Registry,
    requested_by: str,
    timeout: float,
) -> None:
    """Refuse with ``quorum_not_met`` unless ``project.quorum`` officers approved this exact job.

    The approvers are the project's ``approvers``, or else the nodes taking part. Each is asked
    through a read-only approval query; a node that does not answer counts as not approved.
    """
    if project.quorum <= 0:
        return
    approvers = list(project.approvers) or sorted(set(participants))
    query = pb.ApprovalQuery(kind=kind)
    if isinstance(spec, pb.OverlapSpec):
        query.overlap.CopyFrom(spec)
    elif isinstance(spec, pb.ModelSpec):
        query.model.CopyFrom(spec)
    else:
        query.query.CopyFrom(spec)
    digest = canonical_job_hash(spec)
    pending: dict[str, futures.Future[pb.JobResponse]] = {}
    jobs: dict[str, str] = {}
    for node in approvers:
        session = registry.get(node)
        if session is not None:
            jobs[node] = uuid.uuid4().hex
            job = pb.JobRequest(job_id=jobs[node], approval=query, requested_by=requested_by)
            pending[node] = session.send_job(stamp(job, project))
    futures.wait(list(pending.values()), timeout=timeout)
    approved: list[str] = []
    missing: list[str] = []
    for node in approvers:
        future = pending.get(node)
        if future is None:
            missing.append(f"{node} (not connected)")
            continue
        if not future.done() or isinstance(future.exception(), NodeGone):
            registry_session = registry.get(node)
            if registry_session is not None:
                registry_session.forget(jobs[node])
            missing.append(f"{node} (no answer)")
            continue
        response = future.result()
        status = response.approval if response.WhichOneof("outcome") == "approval" else None
        if status is not None and status.approved and status.job_hash == digest:
            approved.append(node)
        elif status is not None:
            missing.append(node)
        else:
            missing.append(f"{node} (refused: {response.refusal.rule or 'no approval answer'})")
    if len(approved) >= project.quorum:
        return
    raise ProjectRefused(
        "quorum_not_met",
        f"project '{project.name}' needs the approval of {project.quorum} of {len(approvers)} officers "
        f"({', '.join(approvers)}) for job {digest}; approved: {', '.join(approved) or 'none'}; "
        f"not approved: {', '.join(missing) or 'none'}",
    )
