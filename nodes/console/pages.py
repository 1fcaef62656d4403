"""The officer's console pages: overview, budgets, approvals, releases and audit.

Every figure comes from the node's own stores through the code the CLI uses: budgets through
nodes/budgets.py and privacy/ledger.py, approvals through nodes/approvals.py, the audit log through
nodes/audit.py and nodes/audit_report.py. Changes are actions of the web base: CSRF-checked and
written to the audit log with the signed-in person (protocols/web/app.py).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.responses import HTMLResponse, Response

from nodes.audit import AuditError, export, read_verify_key, verify, verify_key_file
from nodes.audit_report import CSV_COLUMNS, audit_rows, csv_rows, entry_text
from nodes.budgets import set_budget, set_cap
from nodes.context import NodeContext
from nodes.release_copies import result_digest
from protocols.errors import FederationError
from protocols.spec_text import aggregate_text, spec_text
from protocols.values import from_value
from protocols.web.app import Console, Refused, Visit
from protocols.web.charts import step_chart
from protocols.web.settings import ConsoleSettings
from protocols.web.signin import OneTimeToken, Sessions, certificate_signin

HERE = Path(__file__).parent
NAV = [
    ("/", "Overview"),
    ("/budgets", "Budgets"),
    ("/approvals", "Approvals"),
    ("/releases", "Releases"),
    ("/audit", "Audit log"),
]
ALERT_SHARE = 0.25  # a budget with less than a quarter left is shown as an alert
AUDIT_PAGE = 100
RELEASES_PAGE = 25


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FederationError("console_form", f"{what} must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise FederationError("console_form", f"{what} must be a finite number")
    return value


def _when(iso: str) -> str:
    return iso.replace("T", " ")[:19] + " UTC" if iso else ""


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def _alerts(ctx: NodeContext) -> list[dict[str, Any]]:
    """Budgets and caps that are spent or nearly so."""
    alerts = []
    for s in ctx.ledger.show():
        if s.total_epsilon > 0 and s.remaining_epsilon < ALERT_SHARE * s.total_epsilon:
            alerts.append(
                {
                    "what": f"{s.dataset} for project {s.project}",
                    "remaining": s.remaining_epsilon,
                    "total": s.total_epsilon,
                    "level": "bad" if s.remaining_epsilon <= 0 else "warn",
                }
            )
    for c in ctx.ledger.caps():
        if c.total_epsilon > 0 and c.remaining_epsilon < ALERT_SHARE * c.total_epsilon:
            alerts.append(
                {
                    "what": f"{c.dataset}, all projects together (cap)",
                    "remaining": c.remaining_epsilon,
                    "total": c.total_epsilon,
                    "level": "bad" if c.remaining_epsilon <= 0 else "warn",
                }
            )
    return alerts


def _pending(ctx: NodeContext) -> list[dict[str, Any]]:
    return [
        {
            "job_hash": r.job_hash,
            "template_hash": r.template_hash,
            "kind": r.kind,
            "text": spec_text(r.spec_json),
            "project": r.project,
            "purpose": r.purpose,
            "legal_basis": r.legal_basis,
            "requested_by": r.requested_by,
            "first_seen": _when(r.first_seen),
            "last_seen": _when(r.last_seen),
            "times": r.times,
        }
        for r in ctx.approvals.requests()
    ]


def _figures(ctx: NodeContext, job_id: str, spec: dict[str, Any], audit_digest: str) -> dict[str, Any] | None:
    """The figures of one released query as a table, checked against the digest in its audit entry."""
    result = ctx.releases.get(job_id)
    if result is None:
        return None
    keys = list(spec.get("group_by", [])) + [d.get("alias", "") for d in spec.get("derived", [])]
    aggregates = [aggregate_text(a) for a in spec.get("aggregates", [])]
    functions = [str(a.get("function", "COUNT")) for a in spec.get("aggregates", [])]
    rows = []
    for group in result.groups:
        cells = [
            _cell_text(functions[i] if i < len(functions) else "", cell) for i, cell in enumerate(group.cells)
        ]
        rows.append(
            {
                "key": [from_value(v) for v in group.key],
                "cells": cells,
                "suppressed": group.suppressed,
                "rule": group.suppression_rule,
            }
        )
    return {
        "keys": keys[: max((len(r["key"]) for r in rows), default=len(keys))],
        "aggregates": aggregates,
        "rows": rows,
        "digest_ok": result_digest(result) == audit_digest,
        "threshold": result.threshold.min_group_size,
    }


def _noise(sd: float) -> str:
    return f"± {sd:,.2f} (sd)" if sd > 0 else "exact"


def _cell_text(function: str, cell: Any) -> dict[str, str]:
    """One released cell in words: its figures and the noise added to them."""
    if function == "AVG":
        return {
            "value": f"sum {cell.sum:,.2f} over count {cell.count:,.1f}",
            "noise": f"{_noise(cell.noise_sd)}; count {_noise(cell.count_noise_sd)}",
        }
    if function in ("VARIANCE", "STDDEV"):
        return {
            "value": f"sum {cell.sum:,.2f}, count {cell.count:,.1f}, sum of squares {cell.sum_squares:,.2f}",
            "noise": _noise(cell.noise_sd),
        }
    if function == "PERCENTILE":
        return {
            "value": f"{len(cell.bins)} bin counts, {cell.count:,.1f} in all",
            "noise": _noise(cell.bins_noise_sd),
        }
    return {"value": f"{cell.sum:,.2f}", "noise": _noise(cell.noise_sd)}


def _releases(ctx: NodeContext, entries: list[dict[str, Any]], page: int) -> tuple[list[dict[str, Any]], int]:
    """One page of the jobs this node answered with a release, newest first, each with its request
    and figures; and the number of pages."""
    received = {str(e.get("job_id")): e.get("payload") or {} for e in entries if e.get("kind") == "received"}
    released = [e for e in reversed(entries) if e.get("kind") == "released"]
    pages = max(math.ceil(len(released) / RELEASES_PAGE), 1)
    out = []
    for e in released[(page - 1) * RELEASES_PAGE : page * RELEASES_PAGE]:
        payload = e.get("payload") or {}
        job = str(e.get("job_id") or "")
        request = received.get(job) or received.get(job.split(":")[0]) or {}
        spec = request.get("spec") if isinstance(request.get("spec"), dict) else {}
        figures = _figures(ctx, job, spec, str(payload.get("digest", ""))) if spec else None
        out.append(
            {
                "seq": e.get("seq"),
                "time": _when(str(e.get("ts", ""))),
                "job": job,
                "requested_by": request.get("requested_by", ""),
                "text": spec_text(spec) if spec else entry_text(e),
                "dataset": payload.get("dataset", ""),
                "project": payload.get("project", ""),
                "epsilon": payload.get("epsilon", 0),
                "rho": payload.get("rho", 0),
                "groups": payload.get("groups"),
                "suppressed": payload.get("suppressed", 0),
                "figures": figures,
                "kind": "figures" if figures else "masked or blinded",
            }
        )
    return out, pages


def _page(visit: Visit) -> int:
    try:
        return max(int(visit.query("page", "1")), 1)
    except ValueError:
        return 1


def node_console(ctx: NodeContext, settings: ConsoleSettings, linked: Callable[[], bool]) -> Console:
    """The officer's console of the node of ``ctx``; ``linked`` tells whether the coordinator link is up."""
    config = ctx.config
    token = OneTimeToken(config.state_dir, settings.token_minutes)

    def record(person: str, action: str, fields: Any, outcome: str) -> None:
        ctx.audit.append(
            "console", None, {"person": person, "action": action, "fields": dict(fields), "outcome": outcome}
        )

    host, _ = settings.address()
    console = Console(
        title="Privacy officer's console",
        subject=f"node {config.node_id}",
        token=token,
        sessions=Sessions(settings.session_minutes, settings.idle_minutes),
        audit=record,
        templates=HERE / "templates",
        nav=NAV,
        https=settings.https,
        hosts=None if host in ("127.0.0.1", "localhost", "::1") else ["*"],
        # The node's own officers and operators (their certificate's organisation is the node id).
        certificate_person=certificate_signin(
            settings.tls_ca, settings.tls_crl, frozenset({"privacy_officer", "operator"}), config.node_id
        )
        if settings.tls_ca
        else None,
    )

    @console.page("/")
    def overview(visit: Visit) -> HTMLResponse:
        datasets = [d for d in config.datasets.values() if d.exposed]
        return console.render(
            visit,
            "overview.html",
            page_title="Overview",
            linked=linked(),
            coordinator=config.coordinator,
            datasets=datasets,
            hidden=[d.name for d in config.datasets.values() if not d.exposed],
            pending=_pending(ctx),
            alerts=_alerts(ctx),
        )

    @console.page("/budgets")
    def budgets(visit: Visit) -> HTMLResponse:
        statuses = ctx.ledger.show()
        history = ctx.ledger.history()
        charts = []
        for name in sorted({s.dataset for s in statuses}):
            series = {}
            limit = None
            for s in statuses:
                if s.dataset != name:
                    continue
                points = ctx.ledger.spending(name, s.project, s.delta or config.policy.budget_delta)
                # From the project's first budget (spent 0 then) to now.
                granted = [
                    _epoch(h.at)
                    for h in history
                    if h.kind == "budget" and (h.dataset, h.project) == (name, s.project)
                ]
                series[s.project] = [(min(granted), 0.0)] if granted else []
                series[s.project] += [(_epoch(at), spent) for at, spent in points]
                limit = max(limit or 0.0, s.total_epsilon)
            cap = ctx.ledger.cap(name)
            charts.append(
                step_chart(
                    series,
                    title=f"{name}: epsilon spent per project over time (cap {cap.total_epsilon:g})",
                    y_label="epsilon spent",
                    limit=limit,
                    limit_label="largest project budget",
                    end=time.time(),
                )
            )
        return console.render(
            visit,
            "budgets.html",
            page_title="Budgets",
            statuses=statuses,
            caps=ctx.ledger.caps(),
            charts=charts,
            datasets=sorted(config.datasets),
            delta=config.policy.budget_delta,
            history=list(reversed(history))[:50],
        )

    @console.action("/budgets/set", back="/budgets")
    def budget_set(visit: Visit) -> str:
        status = set_budget(
            config,
            ctx.ledger,
            visit.field("dataset"),
            visit.field("project"),
            _number(visit.field("epsilon"), "epsilon"),
            _number(visit.field("delta") or str(config.policy.budget_delta), "delta"),
            visit.person,
        )
        return (
            f"Budget of {status.dataset} for project {status.project} set to epsilon {status.total_epsilon:g} "
            f"(delta {status.delta:g}); spent {status.spent_epsilon:.4g}, remaining {status.remaining_epsilon:.4g}."
        )

    @console.action("/budgets/cap", back="/budgets")
    def budget_cap(visit: Visit) -> str:
        cap = set_cap(
            config,
            ctx.ledger,
            visit.field("dataset"),
            _number(visit.field("epsilon"), "epsilon"),
            _number(visit.field("delta") or str(config.policy.budget_delta), "delta"),
            visit.person,
        )
        return f"Cap of {cap.dataset} over all projects set to epsilon {cap.total_epsilon:g}."

    @console.page("/approvals")
    def approvals(visit: Visit) -> HTMLResponse:
        return console.render(
            visit,
            "approvals.html",
            page_title="Approvals",
            pending=_pending(ctx),
            approvals=list(reversed(ctx.approvals.approvals())),
        )

    @console.action("/approvals/decide", back="/approvals")
    def decide(visit: Visit) -> str:
        digest, note, decision = visit.field("job_hash"), visit.field("note"), visit.field("decision")
        if decision == "approve":
            scope = "template" if visit.field("scope") == "template" else "job"
            target = digest
            if scope == "template":
                found = [r for r in ctx.approvals.requests() if r.job_hash == digest]
                if not found:
                    raise FederationError("not_pending", f"job {digest} is not awaiting approval")
                target = found[0].template_hash
            done = ctx.approvals.approve(target, visit.person, scope=scope, note=note)
            return f"Approved {done.scope} {done.hash[:16]}… by {done.approved_by}."
        if decision == "reject":
            if not note:
                raise FederationError("console_form", "say why in the note when you reject a job")
            request = ctx.approvals.reject(digest, visit.person, note)
            return f"Rejected the {request.kind} job {digest[:16]}… of {request.requested_by}."
        raise FederationError("console_form", "choose approve or reject")

    @console.action("/approvals/revoke", back="/approvals")
    def revoke(visit: Visit) -> str:
        done = ctx.approvals.revoke(visit.field("hash"), visit.person, visit.field("note"))
        return f"Revoked the approval of {done.scope} {done.hash[:16]}…."

    @console.page("/releases")
    def releases(visit: Visit) -> HTMLResponse:
        page = _page(visit)
        releases, pages = _releases(ctx, _entries(ctx), page)
        return console.render(
            visit, "releases.html", page_title="Releases", releases=releases, page=page, pages=pages
        )

    @console.page("/audit")
    def audit(visit: Visit) -> HTMLResponse:
        entries = _entries(ctx)
        rows = list(reversed(audit_rows(entries)))
        kind = visit.query("kind")
        if kind:
            rows = [r for r in rows if r["kind"] == kind]
        page = _page(visit)
        pages = max(math.ceil(len(rows) / AUDIT_PAGE), 1)
        return console.render(
            visit,
            "audit.html",
            page_title="Audit log",
            rows=rows[(page - 1) * AUDIT_PAGE : page * AUDIT_PAGE],
            total=len(entries),
            shown=len(rows),
            kinds=sorted({str(e.get("kind")) for e in entries}),
            kind=kind,
            page=page,
            pages=pages,
            report=None,
        )

    @console.action("/audit/verify", back="/audit")
    def audit_verify(visit: Visit) -> HTMLResponse:
        report = _verify(ctx)
        entries = _entries(ctx)
        rows = list(reversed(audit_rows(entries)))
        return console.render(
            visit,
            "audit.html",
            page_title="Audit log",
            rows=rows[:AUDIT_PAGE],
            total=len(entries),
            shown=len(rows),
            kinds=sorted({str(e.get("kind")) for e in entries}),
            kind="",
            page=1,
            pages=max(math.ceil(len(rows) / AUDIT_PAGE), 1),
            report=report,
        )

    @console.page("/audit/report.html")
    def audit_html(visit: Visit) -> HTMLResponse:
        entries = _entries(ctx)
        return console.render(
            visit,
            "audit_report.html",
            page_title=f"Audit log of node {config.node_id}",
            rows=audit_rows(entries),
            entries=entries,
            payloads=[json.dumps(e.get("payload", {}), sort_keys=True, indent=1) for e in entries],
            report=_verify(ctx),
            exported=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )

    @console.page("/audit/export.csv")
    def audit_csv(visit: Visit) -> Response:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(_entries(ctx)))
        return _download(out.getvalue(), "text/csv; charset=utf-8", f"audit-{config.node_id}.csv")

    @console.page("/audit/export.json")
    def audit_json(visit: Visit) -> Response:
        body = json.dumps({"node": config.node_id, "entries": _entries(ctx)}, indent=2, sort_keys=True)
        return _download(body + "\n", "application/json", f"audit-{config.node_id}.json")

    return console


def _entries(ctx: NodeContext) -> list[dict[str, Any]]:
    path = ctx.config.state_dir / "audit.log"
    return export(path) if path.exists() else []


def _verify(ctx: NodeContext) -> dict[str, Any]:
    """``federation audit verify`` of the node's own log: chain, signatures and the log's own head."""
    path = ctx.config.state_dir / "audit.log"
    try:
        key = read_verify_key(verify_key_file(ctx.config.audit_key_path))
        result = verify(path, verify_key=key)
    except AuditError as exc:
        raise Refused(400, f"The audit log cannot be verified: {exc.message} [rule: {exc.rule}]") from None
    return {
        "ok": result.ok,
        "entries": result.entries,
        "signatures": result.signatures_checked,
        "head": f"{result.head_seq}:{result.head_hash}",
        "problems": [p.message for p in result.problems],
    }


def _download(body: str, media_type: str, filename: str) -> Response:
    return Response(
        body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
