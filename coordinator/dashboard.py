"""The operator's dashboard, served by the coordinator when its config has a ``[console]`` table.

Pages over the rows of coordinator/overview.py: the overview, nodes, jobs per project (with each
refusal's rule and reason), projects, and the operators' own log. One change: forgetting a
disconnected node, the same admin path as ``federation nodes --forget``. The shared console base
(protocols/web/) signs people in (one-time token, or over HTTPS a federation admin certificate by
mutual TLS), checks every form's CSRF token and hands each action to the operator log before
answering. docs/dashboard.md is the operator's guide; docs/security.md says what an operator learns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from starlette.responses import Response

from coordinator import overview
from coordinator.jobstore import MAX_LABEL_CHARS, JobStore
from coordinator.operator_log import OperatorLog
from coordinator.projects import Project
from coordinator.registry import Registry
from protocols.errors import FederationError
from protocols.web.app import Console, Visit
from protocols.web.server import ConsoleServer
from protocols.web.settings import ConsoleSettings
from protocols.web.signin import OneTimeToken, Sessions, certificate_signin

log = logging.getLogger("federation.coordinator.dashboard")

TEMPLATES = Path(__file__).parent / "templates"
NAV = [
    ("/", "Overview"),
    ("/nodes", "Nodes"),
    ("/jobs", "Jobs"),
    ("/projects", "Projects"),
    ("/log", "Operator log"),
]
JOBS_PER_PAGE = 25
ADMIN_ROLES = frozenset({"admin"})
LOG_ENTRIES = 200


def _form_text(value: str, what: str) -> str:
    if not value or len(value) > MAX_LABEL_CHARS or not value.isprintable():
        raise FederationError("console_form", f"{what} must be 1 to {MAX_LABEL_CHARS} printable characters")
    return value


def build_dashboard(
    registry: Registry,
    jobs: JobStore,
    projects: Mapping[str, Project],
    settings: ConsoleSettings,
    state_dir: Path,
    subject: str = "coordinator",
) -> tuple[Console, OneTimeToken, OperatorLog]:
    """The dashboard app, its sign-in token (written 0600 to ``state_dir``) and its operator log."""
    oplog = OperatorLog(state_dir)
    host, _ = settings.address("[console]")
    token = OneTimeToken(state_dir, settings.token_minutes)
    console = Console(
        title="Operator dashboard",
        subject=subject,
        token=token,
        sessions=Sessions(settings.session_minutes, settings.idle_minutes),
        audit=oplog.record,
        templates=TEMPLATES,
        nav=NAV,
        https=settings.https,
        # On loopback the Host header must name loopback (no DNS rebinding); a remote dashboard is
        # HTTPS only (protocols/web/settings.py) and reached under the host's own names.
        hosts=None if host in ("127.0.0.1", "localhost", "::1") else ["*"],
        # Over HTTPS with tls_ca: a federation admin's certificate signs in (the role that may
        # forget a node over the analyst service too); any other role is refused by rule.
        certificate_person=certificate_signin(settings.tls_ca, settings.tls_crl, ADMIN_ROLES)
        if settings.tls_ca
        else None,
    )

    @console.page("/")
    def home(visit: Visit) -> Response:
        nodes = overview.nodes(registry)
        listed = overview.projects(projects, jobs)
        recent = overview.jobs(jobs, limit=JOBS_PER_PAGE)
        return console.render(
            visit,
            "dashboard_overview.html",
            page_title="Overview",
            summary=overview.summary(nodes, listed, recent),
            nodes=nodes,
        )

    @console.page("/nodes")
    def nodes_page(visit: Visit) -> Response:
        return console.render(
            visit, "dashboard_nodes.html", page_title="Nodes", nodes=overview.nodes(registry)
        )

    @console.page("/jobs")
    def jobs_page(visit: Visit) -> Response:
        project = visit.query("project").strip()[:MAX_LABEL_CHARS]
        after = visit.query("after").strip()
        page = overview.jobs(jobs, project=project, token=after, limit=JOBS_PER_PAGE)
        return console.render(
            visit,
            "dashboard_jobs.html",
            page_title=f"Jobs of project {project}" if project else "Jobs",
            page=page,
            projects=sorted(projects),
            first=not after,
        )

    @console.page("/projects")
    def projects_page(visit: Visit) -> Response:
        return console.render(
            visit,
            "dashboard_projects.html",
            page_title="Projects",
            projects=overview.projects(projects, jobs),
        )

    @console.page("/log")
    def log_page(visit: Visit) -> Response:
        entries = oplog.recent(LOG_ENTRIES)
        return console.render(
            visit, "dashboard_log.html", page_title="Operator log", entries=entries, when=overview.utc
        )

    @console.action("/nodes/forget", back="/nodes")
    def forget(visit: Visit) -> str:
        node = _form_text(visit.field("node"), "the node's name")
        registry.forget_node(node)  # node_connected, unknown_node: as `federation nodes --forget`
        log.info("node %s forgotten by %s on the dashboard", node, visit.person)
        return f"Node {node} is forgotten: it is no longer listed until it connects again."

    return console, token, oplog


class Dashboard:
    """The dashboard served on ``settings.listen`` until ``close()``; ``url`` and ``token_file`` to sign in."""

    def __init__(
        self,
        registry: Registry,
        jobs: JobStore,
        projects: Mapping[str, Project],
        settings: ConsoleSettings,
        state_dir: Path,
    ) -> None:
        console, self.token, self.log = build_dashboard(registry, jobs, projects, settings, state_dir)
        try:
            self.server = ConsoleServer(console.app, settings, "[console]")
        except Exception:
            self.token.remove()  # no token lies about for a dashboard that never served
            raise

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token_file(self) -> Path:
        return self.token.path

    def close(self) -> None:
        self.server.close()
        self.token.remove()
