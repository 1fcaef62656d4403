"""Job history in SQLite: who asked what, when, which nodes answered, and a digest of the result.

It is also the coordinator's accountability record (docs/projects.md): for every job the project,
its purpose and legal basis, the time, the nodes and what each node charged.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.json_format import MessageToDict, ParseDict

from privacy import store
from protocols import federation_pb2 as pb
from protocols.errors import FederationError

MAX_PAGE_JOBS = 500  # jobs per page at most
DEFAULT_PAGE_JOBS = 50
PAGE_BYTES = 2 * 1024 * 1024  # a page stops growing here, well under the 4 MiB message limit
MAX_SQL_CHARS = 20_000  # the SDK's own limit on the query text (federation/query.py)
MAX_FREE_TEXT_CHARS = 2_000  # a refusal reason or error: cut, never refused
MAX_LABEL_CHARS = 256  # requester, purpose and legal basis as stored
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
_TOKEN = re.compile(r"([0-9]{1,19})\.([0-9a-f]{1,64})")


def clean_text(text: str, limit: int) -> str:
    """Free text as stored and shown: control characters replaced, cut to ``limit`` characters."""
    text = _CONTROL.sub("\ufffd", text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


@dataclass(frozen=True)
class Viewer:
    """Whose job records a caller may read (docs/security.md, "Who reads what").

    ``everything``: admins. Otherwise the caller's own jobs, the jobs of ``projects`` (the listed
    projects it is a member of), and for a privacy officer the jobs sent to ``node`` (its own
    organisation's node).
    """

    subject: str
    projects: tuple[str, ...] = ()
    node: str = ""
    everything: bool = False

    def where(self) -> tuple[str, list[object]]:
        if self.everything:
            return "1 = 1", []
        clauses = ["requested_by = ?"]
        args: list[object] = [self.subject]
        if self.projects:
            clauses.append(f"project IN ({', '.join('?' for _ in self.projects)})")
            args.extend(self.projects)
        if self.node:
            clauses.append("job_id IN (SELECT job_id FROM job_nodes WHERE node = ?)")
            args.append(self.node)
        return "(" + " OR ".join(clauses) + ")", args


def _bad_token() -> FederationError:
    return FederationError("invalid_page_token", "the page token is not one the coordinator handed out")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    requested_by TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    project TEXT NOT NULL DEFAULT '',
    spec_json TEXT NOT NULL,
    sql TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    result_digest TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS job_nodes (
    job_id TEXT NOT NULL REFERENCES jobs(job_id),
    node TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    cost_json TEXT NOT NULL DEFAULT '{}',
    audit_digest TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, node)
);
CREATE INDEX IF NOT EXISTS jobs_project ON jobs(project, created_ms);
CREATE TABLE IF NOT EXISTS audit_heads (
    node TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    job_id TEXT NOT NULL,
    seen_ms INTEGER NOT NULL,
    PRIMARY KEY (node, seq, hash)
);
"""

_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_SEQ = (1 << 63) - 1  # SQLite INTEGER

# Accountability columns, added to job stores made before projects existed.
_ACCOUNTABILITY = {
    "purpose": "TEXT NOT NULL DEFAULT ''",
    "legal_basis": "TEXT NOT NULL DEFAULT ''",
    "epsilon": "REAL NOT NULL DEFAULT 0",
    "error": "TEXT NOT NULL DEFAULT ''",
}


JobEnded = Callable[[str, str, str, float], None]  # (kind, status, error, seconds)


def job_kind(spec: object) -> str:
    """The kind of job a spec starts, as metrics count it."""
    if isinstance(spec, pb.OverlapSpec):
        return "distinct" if spec.HasField("distinct") else "overlap"
    return "query"


class JobStore:
    def __init__(self, path: Path, on_finish: JobEnded | None = None) -> None:
        # Called once per job where it finishes (coordinator/metrics.py); jobs in flight by id.
        self._on_finish = on_finish
        self._running: dict[str, tuple[str, float]] = {}
        store.create(path, _SCHEMA)
        self._db = store.connect(path, shared=True)  # one connection, behind self._lock
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, kind in _ACCOUNTABILITY.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        if "rule" not in {row[1] for row in self._db.execute("PRAGMA table_info(job_nodes)")}:
            # The refusing rule per node, apart from its reason (stores made before it existed).
            self._db.execute("ALTER TABLE job_nodes ADD COLUMN rule TEXT NOT NULL DEFAULT ''")
        self._lock = threading.Lock()
        # Audit heads waiting for their group commit (``record_head``), by arrival number.
        self._heads_cv = threading.Condition()
        self._heads_queue: list[tuple[str, int, str, str, int]] = []
        self._heads_queued = 0
        self._heads_committed = 0
        self._heads_writing = False
        self._heads_failed: set[int] = set()

    def start(
        self,
        job_id: str,
        requested_by: str,
        spec: pb.QuerySpec | pb.ModelSpec,
        sql: str,
        purpose: str = "",
        legal_basis: str = "",
    ) -> None:
        spec_json = json.dumps(MessageToDict(spec, preserving_proto_field_name=True), sort_keys=True)
        # The coordinator refuses longer text before a job starts; this keeps the row bounded anyway.
        sql = clean_text(sql, MAX_SQL_CHARS)
        requested_by = clean_text(requested_by, MAX_LABEL_CHARS)
        purpose, legal_basis = clean_text(purpose, MAX_LABEL_CHARS), clean_text(legal_basis, MAX_LABEL_CHARS)
        with self._lock:
            self._running[job_id] = (job_kind(spec), time.monotonic())
            self._db.execute(
                "INSERT INTO jobs (job_id, requested_by, created_ms, project, spec_json, sql, status, purpose,"
                " legal_basis) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                (
                    job_id,
                    requested_by,
                    int(time.time() * 1000),
                    spec.project,
                    spec_json,
                    sql,
                    purpose,
                    legal_basis,
                ),
            )

    def annotate(self, job_id: str, project: str, purpose: str, legal_basis: str) -> None:
        """Record the project a job ran for (jobs started by code that does not know the project)."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET project = ?, purpose = ?, legal_basis = ? WHERE job_id = ?",
                (
                    clean_text(project, MAX_LABEL_CHARS),
                    clean_text(purpose, MAX_LABEL_CHARS),
                    clean_text(legal_basis, MAX_LABEL_CHARS),
                    job_id,
                ),
            )

    def refused(
        self,
        job_id: str,
        requested_by: str,
        spec: pb.QuerySpec | pb.ModelSpec,
        sql: str,
        rule: str,
        reason: str,
        purpose: str = "",
        legal_basis: str = "",
    ) -> None:
        """Record a job the coordinator refused before any node was asked."""
        self.start(job_id, requested_by, spec, sql, purpose, legal_basis)
        self.finish(job_id, "refused", "", [], error=f"{reason} [rule: {rule}]")

    def finish(
        self, job_id: str, status: str, digest: str, outcomes: list[pb.NodeOutcome], error: str = ""
    ) -> None:
        # What the nodes charged, in epsilon at each node's delta; the per-node figures stay in job_nodes.
        epsilon = sum(o.cost.epsilon for o in outcomes)
        error = clean_text(error, MAX_FREE_TEXT_CHARS)
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE jobs SET status = ?, result_digest = ?, epsilon = ?, error = ? WHERE job_id = ?",
                (status, digest, epsilon, error, job_id),
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO job_nodes (job_id, node, status, reason, cost_json, audit_digest, rule)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        job_id,
                        clean_text(o.node, MAX_LABEL_CHARS),
                        o.status,
                        clean_text(o.reason, MAX_FREE_TEXT_CHARS),
                        json.dumps(MessageToDict(o.cost, preserving_proto_field_name=True)),
                        o.audit_digest,
                        clean_text(o.rule, MAX_LABEL_CHARS),
                    )
                    for o in outcomes
                ],
            )
            self._db.execute("COMMIT")
            started = self._running.pop(job_id, None)
        if started is not None and self._on_finish is not None:
            self._on_finish(started[0], status, error, time.monotonic() - started[1])

    def recent(self, limit: int = DEFAULT_PAGE_JOBS, project: str = "") -> list[pb.JobRecord]:
        """The newest jobs, every one (for tools on the coordinator's host; the service pages)."""
        return self.page(Viewer("", everything=True), limit, project)[0]

    def page(
        self, viewer: Viewer, limit: int = DEFAULT_PAGE_JOBS, project: str = "", token: str = ""
    ) -> tuple[list[pb.JobRecord], str]:
        """One page of the jobs ``viewer`` may read, newest first, and the token of the next page.

        A page holds at most ``limit`` jobs (``MAX_PAGE_JOBS``) and stops growing at ``PAGE_BYTES``,
        so it always fits one message; the token names the last job on it (keyset paging: jobs
        added meanwhile neither repeat nor shift the next page).
        """
        size = max(1, min(limit or DEFAULT_PAGE_JOBS, MAX_PAGE_JOBS))
        where, args = viewer.where()
        clauses = [where]
        if project:
            clauses.append("project = ?")
            args.append(project)
        if token:
            match = _TOKEN.fullmatch(token)
            if match is None:
                raise _bad_token()
            clauses.append("(created_ms < ? OR (created_ms = ? AND job_id < ?))")
            args.extend([int(match.group(1)), int(match.group(1)), match.group(2)])
        query = (
            "SELECT job_id, requested_by, created_ms, spec_json, sql, status, result_digest, project, purpose,"
            f" legal_basis, epsilon, error FROM jobs WHERE {' AND '.join(clauses)}"
            " ORDER BY created_ms DESC, job_id DESC LIMIT ?"
        )
        records: list[pb.JobRecord] = []
        used = 0
        with self._lock:
            rows = self._db.execute(query, (*args, size + 1)).fetchall()
            for row in rows[:size]:
                record = self._record(row)
                used += record.ByteSize()
                if records and used > PAGE_BYTES:
                    break
                records.append(record)
        more = len(records) < len(rows)
        last = records[-1] if records else None
        token = f"{last.created_unix_ms}.{last.job_id}" if more and last is not None else ""
        return records, token

    def _record(self, row: tuple) -> pb.JobRecord:
        job_id, by, created, spec_json, sql, status, digest, project, purpose, basis, eps, error = row
        record = pb.JobRecord(
            job_id=job_id,
            requested_by=by,
            created_unix_ms=created,
            spec_json=spec_json,
            sql=sql,
            status=status,
            result_digest=digest,
            project=project,
            purpose=purpose,
            legal_basis=basis,
            epsilon=eps,
            error=error,
        )
        for node, nstatus, reason, cost, audit_digest, rule in self._db.execute(
            "SELECT node, status, reason, cost_json, audit_digest, rule FROM job_nodes WHERE job_id = ?",
            (job_id,),
        ):
            outcome = record.nodes.add(
                node=node, status=nstatus, reason=reason, audit_digest=audit_digest, rule=rule
            )
            ParseDict(json.loads(cost or "{}"), outcome.cost, ignore_unknown_fields=True)
        return record

    def counts(self) -> dict[str, dict[str, int]]:
        """Jobs per project and status, over the whole history (the operator dashboard's totals)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT project, status, COUNT(*) FROM jobs GROUP BY project, status"
            ).fetchall()
        out: dict[str, dict[str, int]] = {}
        for project, status, n in rows:
            out.setdefault(project, {})[status] = n
        return out

    def record_head(self, node: str, head: pb.AuditHead, job_id: str) -> bool:
        """Keep an audit chain head a node published with an answer (docs/audit.md); False if malformed.

        The first sighting of each (node, entry, hash) is kept, so the table grows by at most one row
        per entry of a node's log; the same entry number under two hashes is kept twice (a fork).
        """
        if not 0 < head.seq <= _MAX_SEQ or not _HEX64.fullmatch(head.hash):
            return False
        row = (node, head.seq, head.hash, job_id[:128], int(time.time() * 1000))
        # Group commit: every node of a job answers at about the same time, and one durable commit
        # per answer put a hundred fsyncs in a row on the job's path. A caller's row is queued; the
        # first caller with nothing being written writes every queued row in one transaction, the
        # others wait until a commit holding their row is done. Each caller still returns only once
        # its head is on disk.
        with self._heads_cv:
            self._heads_queue.append(row)
            self._heads_queued += 1
            ticket = self._heads_queued
            while self._heads_committed < ticket:
                if not self._heads_writing:
                    self._heads_writing = True
                    batch, self._heads_queue = self._heads_queue, []
                    upto = self._heads_queued
                    break
                self._heads_cv.wait()
            else:
                if ticket in self._heads_failed:
                    self._heads_failed.discard(ticket)
                    raise sqlite3.OperationalError("the audit heads written with this one were not kept")
                return True
        failed: BaseException | None = None
        try:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    self._db.executemany(
                        "INSERT OR IGNORE INTO audit_heads (node, seq, hash, job_id, seen_ms)"
                        " VALUES (?, ?, ?, ?, ?)",
                        batch,
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except BaseException as exc:
            failed = exc
            raise
        finally:
            with self._heads_cv:
                if failed is not None:
                    # The other callers of this batch report the failure too (they log it).
                    self._heads_failed.update(
                        t for t in range(upto - len(batch) + 1, upto + 1) if t != ticket
                    )
                self._heads_committed = upto
                self._heads_writing = False
                self._heads_cv.notify_all()
        return True

    def heads(self, node: str = "", every: bool = False) -> pb.AuditHeadsResponse:
        """The heads seen, latest per node (or ``every`` one), and the nodes whose heads fork."""
        where, args = ("WHERE node = ?", (node,)) if node else ("", ())
        if every:
            query = f"SELECT node, seq, hash, job_id, seen_ms FROM audit_heads {where} ORDER BY node, seq"
        else:
            # SQLite takes the bare columns from the row holding the MAX().
            query = (
                f"SELECT node, MAX(seq), hash, job_id, seen_ms FROM audit_heads {where} "
                "GROUP BY node ORDER BY node"
            )
        forks = f"SELECT DISTINCT node FROM audit_heads {where} GROUP BY node, seq HAVING COUNT(*) > 1"
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
            forked = [row[0] for row in self._db.execute(forks + " ORDER BY node", args)]
        return pb.AuditHeadsResponse(
            heads=[
                pb.AuditHeadRecord(node=n, seq=seq, hash=h, job_id=j, seen_unix_ms=ms)
                for n, seq, h, j, ms in rows
            ],
            forked=forked,
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()
