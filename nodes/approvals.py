"""A node's approvals by its privacy officer, in SQLite in the node's state dir.

An approval is bound to the canonical hash of one job, or of a query template (the spec with its
filter values blanked), see ``protocols/canonical.py``. Officers grant and revoke approvals at their
own node with ``federation approve``; nothing on the network can. Every change is one transaction
(``BEGIN IMMEDIATE``: check, write, audit, commit) and is appended to the node's hash-chained audit
log before it is committed, so an approval never takes effect without its record.

The node also keeps the jobs it refused for want of an approval ("requests"), so that the officer
sees what a hash stands for before approving it.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from nodes.audit import AuditError, AuditLog
from privacy import store
from protocols import federation_pb2 as pb
from protocols.canonical import canonical_job_hash, job_spec, template_hash
from protocols.errors import FederationError

SCOPES = ("job", "template")
_HASH = re.compile(r"[0-9a-f]{64}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hash TEXT NOT NULL,
    scope TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    approved_at TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    revoked_by TEXT,
    revoked_at TEXT,
    revoke_note TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS approvals_active ON approvals (hash) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS requests (
    job_hash TEXT PRIMARY KEY,
    template_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    project TEXT NOT NULL,
    purpose TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    times INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS rejections (
    job_hash TEXT PRIMARY KEY,
    rejected_by TEXT NOT NULL,
    rejected_at TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
"""
# Columns added after the first release of the store; added to older files when opened.
_ADDED_COLUMNS = {"requests": {"legal_basis": "TEXT NOT NULL DEFAULT ''"}}


class ApprovalError(FederationError):
    """An approval change breaks a rule; ``rule`` names which."""


@dataclass(frozen=True)
class Approval:
    """One approval as the officer granted it, and its revocation if any."""

    id: int
    hash: str
    scope: str
    approved_by: str
    approved_at: str
    note: str
    revoked_by: str | None
    revoked_at: str | None
    revoke_note: str

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Request:
    """A job this node refused because it had no approval: what the officer would approve."""

    job_hash: str
    template_hash: str
    kind: str
    project: str
    purpose: str
    requested_by: str
    spec_json: str
    first_seen: str
    last_seen: str
    times: int
    legal_basis: str = ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_hash(value: str) -> str:
    """A lower-case SHA-256 hex digest, or an ApprovalError naming the rule ``bad_hash``."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if not _HASH.fullmatch(text):
        raise ApprovalError("bad_hash", f"{value!r} is not a job hash (64 hexadecimal characters)")
    return text


def _text(value: str, what: str, limit: int = 500) -> str:
    if not isinstance(value, str) or len(value) > limit or any(ord(c) < 32 for c in value):
        raise ApprovalError("bad_input", f"{what} must be one line of at most {limit} characters")
    return value.strip()


class ApprovalStore:
    """Approvals and pending requests of one node. Each call opens its own connection (WAL mode)."""

    def __init__(self, path: str | Path, node_id: str, audit: AuditLog | None = None) -> None:
        self.path = Path(path)
        self.node_id = node_id
        self.audit = audit
        store.create(self.path, _SCHEMA)
        with self._connect() as conn:
            for table, columns in _ADDED_COLUMNS.items():
                present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                for column, declaration in columns.items():
                    if column not in present:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        return store.session(self.path)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _audit(self, decision: str, payload: dict[str, str]) -> None:
        if self.audit is None:
            raise ApprovalError(
                "audit_unavailable", "approvals change only with the node's audit log at hand"
            )
        try:
            self.audit.append("approval", None, {"decision": decision, **payload})
        except AuditError as exc:
            raise ApprovalError(
                "audit_unavailable", f"the audit log cannot be written ({exc.message}); nothing changed"
            ) from None

    # ------------------------------------------------------------------ changes (officers, locally)

    def approve(self, digest: str, by: str, scope: str = "job", note: str = "") -> Approval:
        """Approve a job hash (``scope="job"``) or a template hash; audited before it takes effect."""
        digest = check_hash(digest)
        by, note = _text(by, "the approver's name", 200), _text(note, "the note")
        if not by:
            raise ApprovalError("bad_input", "say who approves (the officer's name)")
        if scope not in SCOPES:
            raise ApprovalError("bad_scope", f"an approval is bound to a job or a template, not {scope!r}")
        with self._write() as conn:
            if conn.execute(
                "SELECT 1 FROM approvals WHERE hash = ? AND revoked_at IS NULL", (digest,)
            ).fetchone():
                raise ApprovalError(
                    "already_approved", f"{scope} {digest} is already approved at {self.node_id}"
                )
            at = _now()
            cur = conn.execute(
                "INSERT INTO approvals (hash, scope, approved_by, approved_at, note) VALUES (?, ?, ?, ?, ?)",
                (digest, scope, by, at, note),
            )
            self._audit("approved", {"hash": digest, "scope": scope, "by": by, "note": note})
            row_id = cur.lastrowid
        return self._get(int(row_id or 0))

    def revoke(self, digest: str, by: str, note: str = "") -> Approval:
        """Withdraw the active approval of ``digest``; later jobs with that hash are refused again."""
        digest = check_hash(digest)
        by, note = _text(by, "the officer's name", 200), _text(note, "the note")
        if not by:
            raise ApprovalError("bad_input", "say who revokes (the officer's name)")
        with self._write() as conn:
            row = conn.execute(
                "SELECT id, scope FROM approvals WHERE hash = ? AND revoked_at IS NULL", (digest,)
            ).fetchone()
            if row is None:
                raise ApprovalError("not_approved", f"{digest} has no active approval at {self.node_id}")
            conn.execute(
                "UPDATE approvals SET revoked_by = ?, revoked_at = ?, revoke_note = ? WHERE id = ?",
                (by, _now(), note, row[0]),
            )
            self._audit("revoked", {"hash": digest, "scope": row[1], "by": by, "note": note})
        return self._get(int(row[0]))

    def reject(self, job_hash: str, by: str, note: str = "") -> Request:
        """Turn down a pending request: it leaves the pending list (audited) until the job is asked
        again. Nothing is approved, so the job stays refused either way; the note says why."""
        digest = check_hash(job_hash)
        by, note = _text(by, "the officer's name", 200), _text(note, "the note")
        if not by:
            raise ApprovalError("bad_input", "say who rejects (the officer's name)")
        pending = {r.job_hash: r for r in self.requests()}
        if digest not in pending:
            raise ApprovalError("not_pending", f"job {digest} is not awaiting approval at {self.node_id}")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO rejections (job_hash, rejected_by, rejected_at, note) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (job_hash) DO UPDATE SET rejected_by = excluded.rejected_by,"
                " rejected_at = excluded.rejected_at, note = excluded.note",
                (digest, by, _now(), note),
            )
            request = pending[digest]
            self._audit(
                "rejected",
                {"hash": digest, "scope": "job", "by": by, "note": note, "project": request.project},
            )
        return request

    # ------------------------------------------------------------------ reads

    def _get(self, row_id: int) -> Approval:
        with self._connect() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM approvals WHERE id = ?", (row_id,)).fetchone()
        return Approval(*row)

    def find(self, job_hash: str, template: str = "") -> Approval | None:
        """The active approval that covers a job: of its exact hash, else of its template."""
        with self._connect() as conn:
            for digest, scope in ((job_hash, "job"), (template, "template")):
                if not digest:
                    continue
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM approvals WHERE hash = ? AND scope = ? AND revoked_at IS NULL",
                    (digest, scope),
                ).fetchone()
                if row is not None:
                    return Approval(*row)
        return None

    def approvals(self, include_revoked: bool = True) -> list[Approval]:
        query = f"SELECT {_COLUMNS} FROM approvals"
        if not include_revoked:
            query += " WHERE revoked_at IS NULL"
        with self._connect() as conn:
            return [Approval(*row) for row in conn.execute(query + " ORDER BY id")]

    # ------------------------------------------------------------------ requests (the job path)

    def note_request(
        self,
        job: pb.JobRequest | pb.ApprovalQuery,
        kind: str,
        requested_by: str,
        purpose: str,
        legal_basis: str = "",
    ) -> None:
        """Remember a job that needs approval, so the officer can see what its hash stands for."""
        spec = job_spec(job)
        if spec is None:
            return
        spec_json = json.dumps(MessageToDict(spec, preserving_proto_field_name=True), sort_keys=True)
        at = _now()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO requests (job_hash, template_hash, kind, project, purpose, requested_by, spec_json,"
                " first_seen, last_seen, legal_basis) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (job_hash) DO UPDATE SET last_seen = excluded.last_seen, times = times + 1,"
                " requested_by = excluded.requested_by, legal_basis = excluded.legal_basis",
                (
                    canonical_job_hash(spec),
                    template_hash(spec),
                    kind,
                    spec.project,
                    purpose,
                    requested_by[:200],
                    spec_json[:20000],
                    at,
                    at,
                    legal_basis[:500],
                ),
            )

    def requests(self, pending_only: bool = True) -> list[Request]:
        """Refused jobs; with ``pending_only`` those that no active approval covers yet."""
        query = (
            "SELECT job_hash, template_hash, kind, project, purpose, requested_by, spec_json, first_seen,"
            " last_seen, times, legal_basis FROM requests"
        )
        if pending_only:
            query += (
                " WHERE NOT EXISTS (SELECT 1 FROM approvals a WHERE a.revoked_at IS NULL AND"
                " ((a.scope = 'job' AND a.hash = requests.job_hash) OR"
                " (a.scope = 'template' AND a.hash = requests.template_hash)))"
                # turned down, and not asked again since
                " AND NOT EXISTS (SELECT 1 FROM rejections r WHERE r.job_hash = requests.job_hash"
                " AND r.rejected_at >= requests.last_seen)"
            )
        with self._connect() as conn:
            return [Request(*row) for row in conn.execute(query + " ORDER BY last_seen DESC")]


_COLUMNS = "id, hash, scope, approved_by, approved_at, note, revoked_by, revoked_at, revoke_note"


def approvals_path(state_dir: Path) -> Path:
    return state_dir / "approvals.sqlite"


def answer_approval_query(store: ApprovalStore, job: pb.JobRequest) -> pb.JobResponse:
    """Answer the coordinator's quorum question: is this job approved here?

    Read-only for approvals and budgets: an unapproved job is only remembered as a request for the
    officer to review. The node hashes the spec it was sent; it never takes a hash on trust.
    """
    query = job.approval
    if query.kind not in ("query", "secure", "overlap"):
        raise ApprovalError("malformed_request", f"an approval query names a job kind, not {query.kind!r}")
    spec = job_spec(query)
    assert spec is not None  # an ApprovalQuery always names a spec, possibly empty
    digest, template = canonical_job_hash(spec), template_hash(spec)
    found = store.find(digest, template)
    status = pb.ApprovalStatus(
        node=store.node_id, job_hash=digest, template_hash=template, approved=found is not None
    )
    if found is not None:
        status.scope = found.scope
        status.approved_by = found.approved_by
        status.approved_at = found.approved_at
    else:
        store.note_request(query, query.kind, job.requested_by, job.purpose, job.legal_basis)
    return pb.JobResponse(job_id=job.job_id, approval=status)
