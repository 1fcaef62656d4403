"""Differencing defence for exact releases (no DP): refuse a cell that isolates a few units.

Two exact answers over unit sets that differ by a handful of units give those units' values away
by subtraction (the "tracker" of Denning, Denning & Schwartz, ACM TODS 1979; Schlörer 1980). As
in query auditing (Chin & Özsoyoglu, IEEE TSE 1982; Kenthapadi, Mishra & Nissim, PODS 2005), the
node keeps what it released and refuses a new cell whose privacy units differ from an earlier
released cell of the same project and dataset by more than zero but fewer than the minimum group
size.

What is kept: per released cell, the sorted 64-bit truncations of HMAC-SHA256 (RFC 2104) of its
unit ids under a node-local secret key, in ``differencing.sqlite`` in the node's state folder.
The ids cannot be read back from it without the key, which never leaves the node.

Limits (docs/security.md): the check is pairwise, so a difference spread over three or more
earlier releases is not caught; only the last ``differencing_history`` releases per project and
dataset are kept; a repeat of a query already on record is not recomputed (the sources are
assumed unchanged between the two). With DP the noise and the budget cover differencing instead.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC

from nodes.config import NodeConfig
from nodes.keys import load_or_create_differencing_key
from nodes.sources import DataSources
from nodes.sqlgen import Dialect, SqlBuilder, bounded_rows
from nodes.validate import Plan, Refused

RULE = "differencing"
STORE_FILE = "differencing.sqlite"
DIGEST_BYTES = 8  # 2^64 slots: a collision among a million units has odds of about 3e-8

Digests = npt.NDArray[np.uint64]


class DifferencingRefused(Refused):
    """An exact release would isolate fewer units than the minimum group size."""

    def __init__(self, message: str, node: str) -> None:
        super().__init__(RULE, message, node=node)


# --------------------------------------------------------------------------- units per cell


def unit_sql(plan: Plan, dialect: Dialect) -> tuple[str, list[Any]]:
    """SQL for the distinct (group key, unit) pairs that ``build_sql`` counts for ``plan``.

    It mirrors ``nodes.sqlgen.build_sql``: the same filter, the same shared-vocabulary mapping and
    the same truncation to ``max_rows_per_unit`` (same window order), so a unit is listed in a
    group exactly when it counts towards that group's released unit count.
    """
    b = SqlBuilder(dialect)
    rows = bounded_rows(plan, b, truncate=True)
    keep = " AND ".join(rows.keep)
    sql = f"SELECT DISTINCT {', '.join([*rows.groups, 'u'])} FROM {rows.source} WHERE {keep}"
    return sql, b.params


def unit_rows(plan: Plan, sources: DataSources) -> list[tuple[Any, ...]]:
    """Run ``unit_sql`` on the plan's source: (g0..gN, unit) rows. Nothing here leaves the node."""
    sql, params = unit_sql(plan, sources.dialect(plan.dataset))
    return sources.fetch(plan.dataset, sql, params)


class UnitHasher:
    """Keyed digests of unit ids: HMAC-SHA256 (RFC 2104) truncated to 64 bits."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the differencing key must hold at least 32 bytes")
        self._keyed = HMAC(key, hashes.SHA256())

    def digests(self, units: list[Any]) -> Digests:
        out = np.empty(len(units), dtype=np.uint64)
        for i, unit in enumerate(units):
            h = self._keyed.copy()  # copying the keyed state skips re-keying per unit
            h.update(str(unit).encode())
            out[i] = int.from_bytes(h.finalize()[:DIGEST_BYTES], "big")
        return np.unique(out)


def cell_digests(
    plan: Plan, rows: list[tuple[Any, ...]], hasher: UnitHasher
) -> dict[tuple[Any, ...], Digests]:
    """Group (key, unit) rows into sorted unit digests per cell key."""
    width = len(plan.group_columns)
    units: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        units.setdefault(tuple(row[:width]), []).append(row[width])
    return {key: hasher.digests(ids) for key, ids in units.items()}


def symmetric_difference(a: Digests, b: Digests) -> int:
    """|A Δ B| of two sorted, duplicate-free digest arrays."""
    common = np.intersect1d(a, b, assume_unique=True).size
    return int(a.size + b.size - 2 * common)


# --------------------------------------------------------------------------- store and check


@dataclass(frozen=True)
class Reservation:
    """A checked exact release, on record as pending until ``DifferencingGuard.record``."""

    release_id: int


def plan_key(plan: Plan) -> str:
    """What fixes a release's unit sets: dataset, grouping and filter (aggregates do not)."""
    h = hashlib.sha256(plan.dataset.name.encode())
    h.update(json.dumps([c.name for c in plan.group_columns]).encode())
    if plan.filter is not None:
        h.update(plan.filter.SerializeToString(deterministic=True))
    return h.hexdigest()


def describe(plan: Plan, key: tuple[Any, ...]) -> str:
    if not key:
        return "the total"
    return "group " + ", ".join(f"{c.name}={v}" for c, v in zip(plan.group_columns, key, strict=True))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    dataset TEXT NOT NULL,
    job_id TEXT NOT NULL,
    plan_key TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS releases_scope ON releases (project, dataset, id);
CREATE TABLE IF NOT EXISTS cells (
    release_id INTEGER NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    cell TEXT NOT NULL,
    size INTEGER NOT NULL,
    units BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS cells_release ON cells (release_id);
"""


class DifferencingGuard:
    """Checks exact releases against earlier ones of the same project and dataset.

    ``check`` runs after validation and before protection; it refuses with rule ``differencing``
    or puts the release on record as pending. ``record`` marks it released once the audit entry
    is durable. A pending release whose audit failed still counts in later checks: fail closed.
    """

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._hasher: UnitHasher | None = None

    def _open(self) -> tuple[sqlite3.Connection, UnitHasher]:
        if self._conn is None or self._hasher is None:
            state = self.config.state_dir
            self._hasher = UnitHasher(load_or_create_differencing_key(state))
            conn = sqlite3.connect(state / STORE_FILE, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn, self._hasher

    def check(
        self, job_id: str, plan: Plan, project: str, dp: bool, sources: DataSources
    ) -> Reservation | None:
        """Refuse (``DifferencingRefused``) or reserve; ``None`` when the check does not apply."""
        history = plan.dataset.policy.differencing_history
        if dp or history == 0:
            return None  # with DP the noise and the ledger bound what any combination reveals
        try:
            return self._check(job_id, plan, project, history, sources)
        except (sqlite3.Error, OSError) as exc:
            # Without its record the check cannot be made: fail closed.
            raise Refused(
                "differencing_unavailable",
                f"exact release: the differencing record cannot be read or written ({type(exc).__name__}); "
                "nothing is released",
                node=self.config.node_id,
            ) from None

    def _check(
        self, job_id: str, plan: Plan, project: str, history: int, sources: DataSources
    ) -> Reservation | None:
        node = self.config.node_id
        dataset = plan.dataset.name
        key = plan_key(plan)
        with self._lock:
            conn, hasher = self._open()
            if _already_on_record(conn, project, dataset, key):
                return None
        minimum = plan.dataset.policy.min_group_size
        # Only cells that will be released count: exact protection suppresses the smaller ones.
        cells = {
            k: d for k, d in cell_digests(plan, unit_rows(plan, sources), hasher).items() if d.size >= minimum
        }
        with self._lock:
            if _already_on_record(conn, project, dataset, key):
                return None
            for cell_key, digests in cells.items():
                clash = _closest_clash(conn, project, dataset, digests, minimum)
                if clash is not None:
                    difference, earlier_job = clash
                    raise DifferencingRefused(
                        f"exact release: differencing check: {describe(plan, cell_key)} differs by "
                        f"{difference} privacy unit(s) from a cell released earlier to project "
                        f"'{project}' (job {earlier_job}), fewer than the minimum group size {minimum} "
                        f"(dataset {dataset}); a query with DP (an epsilon) is covered by noise and "
                        "budget instead",
                        node=node,
                    )
            return _reserve(conn, job_id, project, dataset, key, cells, history)

    def record(self, reservation: Reservation | None) -> None:
        """The release went out with its audit entry: mark it released."""
        if reservation is None:
            return
        try:
            with self._lock:
                conn, _ = self._open()
                conn.execute(
                    "UPDATE releases SET status = 'released' WHERE id = ?", (reservation.release_id,)
                )
        except sqlite3.Error:
            pass  # a release left pending still counts in every later check, so nothing is lost

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _already_on_record(conn: sqlite3.Connection, project: str, dataset: str, key: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM releases WHERE project = ? AND dataset = ? AND plan_key = ? LIMIT 1",
        (project, dataset, key),
    ).fetchone()
    return found is not None


def _closest_clash(
    conn: sqlite3.Connection, project: str, dataset: str, digests: Digests, minimum: int
) -> tuple[int, str] | None:
    """The first earlier released cell within 0 < |A Δ B| < minimum, as (difference, job id)."""
    rows = conn.execute(
        "SELECT c.size, c.units, r.job_id FROM cells c JOIN releases r ON r.id = c.release_id "
        "WHERE r.project = ? AND r.dataset = ? AND c.size > ? AND c.size < ?",
        # ||A| - |B|| <= |A Δ B|: sizes that far apart can never clash, so SQLite skips them.
        (project, dataset, digests.size - minimum, digests.size + minimum),
    )
    for _size, blob, earlier_job in rows:
        earlier = np.frombuffer(blob, dtype="<u8")
        difference = symmetric_difference(digests, earlier)
        if 0 < difference < minimum:
            return difference, str(earlier_job)
    return None


def _reserve(
    conn: sqlite3.Connection,
    job_id: str,
    project: str,
    dataset: str,
    key: str,
    cells: dict[tuple[Any, ...], Digests],
    history: int,
) -> Reservation:
    conn.execute("BEGIN IMMEDIATE")
    try:
        cursor = conn.execute(
            "INSERT INTO releases (project, dataset, job_id, plan_key, status, created) "
            "VALUES (?, ?, ?, ?, 'pending', ?)",
            (project, dataset, job_id, key, time.time()),
        )
        release_id = int(cursor.lastrowid or 0)
        conn.executemany(
            "INSERT INTO cells (release_id, cell, size, units) VALUES (?, ?, ?, ?)",
            [
                (release_id, json.dumps(list(k), default=str), int(d.size), d.astype("<u8").tobytes())
                for k, d in cells.items()
            ],
        )
        # Keep the last ``history`` releases of this project and dataset.
        conn.execute(
            "DELETE FROM releases WHERE project = ? AND dataset = ? AND id NOT IN "
            "(SELECT id FROM releases WHERE project = ? AND dataset = ? ORDER BY id DESC LIMIT ?)",
            (project, dataset, project, dataset, history),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return Reservation(release_id)


__all__ = [
    "DifferencingGuard",
    "DifferencingRefused",
    "Reservation",
    "RULE",
    "UnitHasher",
    "cell_digests",
    "plan_key",
    "symmetric_difference",
    "unit_rows",
    "unit_sql",
]
