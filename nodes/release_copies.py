"""A copy of every query result this node released, for its privacy officer to read.

The audit log holds each release's digest (nodes/release.py); the copy holds the figures, so the
officer's console can show what left and check it against that digest. The copy is made before
the audit entry: a release whose copy cannot be kept is refused (nothing leaves without it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from privacy import store
from protocols import federation_pb2 as pb

_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    job_id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    project TEXT NOT NULL,
    result BLOB NOT NULL
);
"""


def result_digest(result: pb.QueryResult) -> str:
    """The digest the audit entry records: of the result before its digest field was set."""
    bare = pb.QueryResult()
    bare.CopyFrom(result)
    bare.audit_digest = ""
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()


class ReleaseCopies:
    """Released query results by job id, in ``<state_dir>/releases.sqlite``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        store.create(self.path, _SCHEMA)

    def keep(self, job_id: str, dataset: str, project: str, result: pb.QueryResult) -> None:
        with store.session(self.path) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO releases (job_id, dataset, project, result) VALUES (?, ?, ?, ?)",
                (job_id, dataset, project, result.SerializeToString(deterministic=True)),
            )

    def get(self, job_id: str) -> pb.QueryResult | None:
        with store.session(self.path) as conn:
            row = conn.execute("SELECT result FROM releases WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        result = pb.QueryResult()
        result.ParseFromString(bytes(row[0]))
        return result
