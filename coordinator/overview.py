"""What the operator dashboard shows (issue 12): nodes, jobs per project, projects.

Pure functions over the coordinator's registry, job store and projects, returning plain rows the
web pages only lay out (coordinator/dashboard.py). Every time is UTC. The operator is an admin of
the coordinator: these rows cover every job, as ``federation jobs`` does for an admin.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from coordinator.jobstore import DEFAULT_PAGE_JOBS, JobStore, Viewer
from coordinator.projects import ANY, Project
from coordinator.registry import Registry
from protocols import federation_pb2 as pb

_RULE = re.compile(r"^(?P<reason>.*?)\s*\[rule: (?P<rule>[a-z][a-z0-9_]*)\]$", re.DOTALL)
OPERATOR = Viewer("operator", everything=True)


def utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def split_rule(error: str) -> tuple[str, str]:
    """``"reason [rule: name]"`` as stored by the job store -> (reason, rule); no rule -> (error, "")."""
    match = _RULE.match(error)
    return (match.group("reason"), match.group("rule")) if match else (error, "")


# ---------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class NodeRow:
    node_id: str
    state: str  # connected | silent (link open, heartbeats missed) | disconnected
    last_heartbeat: dt.datetime
    seconds_since_heartbeat: float
    connected_since: dt.datetime | None
    version: str
    datasets: tuple[str, ...]

    @property
    def forgettable(self) -> bool:
        """Only a node that is not connected may be forgotten (``federation nodes --forget``)."""
        return self.state != "connected"


def nodes(registry: Registry, now: float | None = None) -> list[NodeRow]:
    """Every node the coordinator knows, by name: link state, last heartbeat, version, datasets."""
    when = time.time() if now is None else now
    rows = []
    for s in registry.states():
        state = "connected" if s.connected else "silent" if s.link_open else "disconnected"
        rows.append(
            NodeRow(
                node_id=s.node_id,
                state=state,
                last_heartbeat=utc(s.last_seen),
                seconds_since_heartbeat=max(0.0, when - s.last_seen),
                connected_since=utc(s.connected_since) if s.connected_since else None,
                version=s.version,
                datasets=s.datasets,
            )
        )
    return rows


# ---------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class OutcomeRow:
    node: str
    status: str  # answered, refused, timeout, disconnected
    rule: str
    reason: str
    epsilon: float


@dataclass(frozen=True)
class JobRow:
    job_id: str
    created: dt.datetime
    requested_by: str
    project: str
    kind: str  # query, overlap, distinct
    status: str  # running, complete, partial, failed, refused
    query: str  # the SQL the analyst wrote, or the overlap described
    epsilon: float
    rule: str  # why the job failed or was refused, when it did
    reason: str
    nodes: tuple[OutcomeRow, ...]

    @property
    def refused(self) -> bool:
        """The coordinator or a node refused the job (not merely a timeout)."""
        return self.status == "refused" or any(o.status == "refused" for o in self.nodes)

    @property
    def needs_attention(self) -> bool:
        """Refused, failed, or answered without every node (a timeout, a disconnect)."""
        return self.status not in ("complete", "running") or any(o.status != "answered" for o in self.nodes)


@dataclass(frozen=True)
class JobPage:
    rows: tuple[JobRow, ...]
    next_token: str  # "" on the oldest page
    project: str  # the project shown, "" for all


def _kind(spec_json: str) -> str:
    try:
        spec = json.loads(spec_json or "{}")
    except ValueError:
        return "query"
    if isinstance(spec, dict) and "datasets" in spec:
        return "distinct" if "distinct" in spec else "overlap"
    if isinstance(spec, dict) and "outcome" in spec:
        return "model"
    return "query"


def job_row(record: pb.JobRecord) -> JobRow:
    reason, rule = split_rule(record.error)
    outcomes = tuple(
        OutcomeRow(
            node=o.node,
            status=o.status,
            rule=o.rule or split_rule(o.reason)[1],
            reason=split_rule(o.reason)[0],
            epsilon=o.cost.epsilon,
        )
        for o in record.nodes
    )
    if not rule:
        # A failed job whose nodes all refused under one rule (as the analyst was told).
        rules = {o.rule for o in outcomes if o.status == "refused" and o.rule}
        rule = rules.pop() if len(rules) == 1 and record.status != "complete" else ""
    return JobRow(
        job_id=record.job_id,
        created=utc(record.created_unix_ms / 1000),
        requested_by=record.requested_by,
        project=record.project,
        kind=_kind(record.spec_json),
        status=record.status,
        query=record.sql,
        epsilon=record.epsilon,
        rule=rule,
        reason=reason,
        nodes=outcomes,
    )


def jobs(store: JobStore, project: str = "", token: str = "", limit: int = DEFAULT_PAGE_JOBS) -> JobPage:
    """One page of every job, newest first, optionally of one project; raises ``invalid_page_token``."""
    records, next_token = store.page(OPERATOR, limit, project, token)
    return JobPage(tuple(job_row(r) for r in records), next_token, project)


# ---------------------------------------------------------------------- projects


@dataclass(frozen=True)
class ProjectRow:
    name: str
    purpose: str
    legal_basis: str
    members: tuple[str, ...]
    expires: dt.date
    expired: bool
    days_left: int  # until the last day jobs may run; negative once expired
    quorum: int
    approvers: tuple[str, ...]
    jobs: Mapping[str, int]  # status -> count over the whole history

    @property
    def catch_all(self) -> bool:
        """The development catch-all every unlisted project name runs as (docs/projects.md)."""
        return self.name == ANY

    @property
    def total_jobs(self) -> int:
        return sum(self.jobs.values())


def projects(
    listed: Mapping[str, Project], store: JobStore, today: dt.date | None = None
) -> list[ProjectRow]:
    """The coordinator's projects by name, with purpose, members, expiry and their jobs by status."""
    when = today or dt.datetime.now(dt.UTC).date()
    counts = store.counts()
    return [
        ProjectRow(
            name=p.name,
            purpose=p.purpose,
            legal_basis=p.legal_basis,
            members=p.members,
            expires=p.expires,
            expired=p.expired(when),
            days_left=(p.expires - when).days,
            quorum=p.quorum,
            approvers=p.approvers,
            jobs=dict(sorted(counts.get(p.name, {}).items())),
        )
        for p in sorted(listed.values(), key=lambda p: p.name)
    ]


# ---------------------------------------------------------------------- the overview page


@dataclass(frozen=True)
class Summary:
    nodes_connected: int
    nodes_known: int
    datasets: tuple[str, ...]  # served by a connected node
    projects_active: int
    projects_expired: int
    troubled: tuple[JobRow, ...]  # the newest jobs that need attention, at most ``TROUBLED_SHOWN``
    looked_at: int  # how many of the newest jobs were looked at


TROUBLED_SHOWN = 5


def summary(node_rows: list[NodeRow], project_rows: list[ProjectRow], recent: JobPage) -> Summary:
    connected = [n for n in node_rows if n.state == "connected"]
    return Summary(
        nodes_connected=len(connected),
        nodes_known=len(node_rows),
        datasets=tuple(sorted({d for n in connected for d in n.datasets})),
        projects_active=sum(1 for p in project_rows if not p.expired),
        projects_expired=sum(1 for p in project_rows if p.expired),
        troubled=tuple(j for j in recent.rows if j.needs_attention)[:TROUBLED_SHOWN],
        looked_at=len(recent.rows),
    )
