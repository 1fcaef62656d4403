"""The audit log for people: one readable row per entry, used by ``federation audit export`` and the
officer's console (pages, HTML report and CSV). Nothing is cut: every field of every entry."""

from __future__ import annotations

import json
from typing import Any

from protocols.spec_text import spec_text

CSV_COLUMNS = ["seq", "time", "kind", "job", "by", "what", "payload"]


def audit_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each entry as one readable row; a job's requester is carried from its "received" entry."""
    requester: dict[str, str] = {}
    rows = []
    for e in entries:
        payload = e.get("payload") or {}
        job = str(e.get("job_id") or "")
        if "requested_by" in payload:
            requester[job.split(":")[0]] = str(payload["requested_by"])
        rows.append(
            {
                "seq": e.get("seq"),
                "time": str(e.get("ts", "")).replace("T", " ")[:19],
                "kind": e.get("kind"),
                "job": job,
                "by": requester.get(job.split(":")[0], "") or _person(payload),
                "what": entry_text(e),
            }
        )
    return rows


def _person(payload: dict[str, Any]) -> str:
    """Who made a change recorded without a job: an approval's officer, a console user."""
    return str(payload.get("by") or payload.get("person") or "")


def entry_text(entry: dict[str, Any]) -> str:
    """One entry's payload as a sentence (a job as its SQL), complete."""
    payload = entry.get("payload") or {}
    kind = entry.get("kind")
    if "spec" in payload:
        return spec_text(payload["spec"])
    if kind == "released" and "groups" in payload:
        return (
            f"released {payload.get('dataset', '')} for {payload.get('project', '')}: "
            f"{payload['groups']} group(s), {payload.get('suppressed', 0)} suppressed, "
            f"epsilon {payload.get('epsilon', 0)}; digest {payload.get('digest', '')}"
        )
    if kind == "refused":
        return f"{payload.get('reason', '')} [rule: {payload.get('rule', '')}]"
    if kind == "approval":
        return (
            f"{payload.get('decision', '')} {payload.get('scope', '')} {payload.get('hash', '')} "
            f"by {payload.get('by', '')}" + (f": {payload['note']}" if payload.get("note") else "")
        )
    if kind == "console":
        fields = ", ".join(f"{k}={v}" for k, v in sorted((payload.get("fields") or {}).items()))
        return f"{payload.get('action', '')} ({fields}): {payload.get('outcome', '')}"
    return json.dumps(payload, sort_keys=True, separators=(", ", ": "))


def csv_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``audit_rows`` plus each entry's whole payload as JSON: the CSV export."""
    rows = audit_rows(entries)
    for row, entry in zip(rows, entries, strict=True):
        row["payload"] = json.dumps(entry.get("payload", {}), sort_keys=True)
    return rows
