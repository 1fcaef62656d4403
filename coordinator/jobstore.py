"""Job history in SQLite: who asked what, when, which nodes answered, and a digest of the result."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from protocols import federation_pb2 as pb

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
"""


class JobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def start(self, job_id: str, requested_by: str, spec: pb.QuerySpec, sql: str) -> None:
        spec_json = json.dumps(MessageToDict(spec, preserving_proto_field_name=True), sort_keys=True)
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (job_id, requested_by, created_ms, project, spec_json, sql, status)"
                " VALUES (?, ?, ?, ?, ?, ?, 'running')",
                (job_id, requested_by, int(time.time() * 1000), spec.project, spec_json, sql),
            )

    def finish(self, job_id: str, status: str, digest: str, outcomes: list[pb.NodeOutcome]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE jobs SET status = ?, result_digest = ? WHERE job_id = ?", (status, digest, job_id)
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO job_nodes VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        job_id,
                        o.node,
                        o.status,
                        o.reason,
                        json.dumps(MessageToDict(o.cost, preserving_proto_field_name=True)),
                        o.audit_digest,
                    )
                    for o in outcomes
                ],
            )
            self._db.execute("COMMIT")

    def recent(self, limit: int = 50, project: str = "") -> list[pb.JobRecord]:
        query = "SELECT job_id, requested_by, created_ms, spec_json, sql, status, result_digest FROM jobs"
        args: tuple = ()
        if project:
            query += " WHERE project = ?"
            args = (project,)
        query += " ORDER BY created_ms DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*args, max(1, min(limit or 50, 1000)))).fetchall()
            records = []
            for job_id, by, created, spec_json, sql, status, digest in rows:
                record = pb.JobRecord(
                    job_id=job_id,
                    requested_by=by,
                    created_unix_ms=created,
                    spec_json=spec_json,
                    sql=sql,
                    status=status,
                    result_digest=digest,
                )
                for node, nstatus, reason, _cost, audit_digest in self._db.execute(
                    "SELECT node, status, reason, cost_json, audit_digest FROM job_nodes WHERE job_id = ?",
                    (job_id,),
                ):
                    record.nodes.add(node=node, status=nstatus, reason=reason, audit_digest=audit_digest)
                records.append(record)
        return records

    def close(self) -> None:
        with self._lock:
            self._db.close()
