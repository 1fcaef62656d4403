"""Differencing defence for exact releases (no DP): no combination of releases may single out a few units.

Two exact answers over row sets that differ by rows of a handful of units give those rows away by
subtraction (the "tracker" of Denning, Denning & Schwartz, ACM TODS 1979; Schlörer 1980), and so
does a total minus the released cells of a grouping (complementary disclosure; Willenborg & de
Waal, *Elements of Statistical Disclosure Control*, 2001, ch. 6). As in query auditing (Chin &
Özsoyoglu, IEEE TSE 1982; Kenthapadi, Mishra & Nissim, PODS 2005) the node keeps what it released
and checks each new exact release against it, for every project of the dataset:

* **pairwise**: a released cell whose contributing rows differ from an earlier released cell's by
  rows of more than zero and fewer than ``min_group_size`` units is refused. Rows are compared,
  not only units, so dropping one row of a unit that stays in the cell is caught;
* **margins**: a released cell X that contains earlier released cells leaves a residual, X minus
  the rows those cells cover (an earlier cell X keeps its residual up to date as later cells fall
  inside it). A residual of more than zero and fewer than ``min_group_size`` units would be
  recovered exactly, so the new release suppresses cells (secondary suppression: the margin
  itself, or the smallest new cell inside an earlier margin) until none is left;
* **secure releases**: a node's contribution to a secure sum is checked the same way, cell by
  cell; it cannot suppress, so it refuses instead. Whether the coordinator suppresses a summed cell
  is unknown to the node: a local cell of fewer than ``min_group_size`` units may be suppressed, so
  a margin that would need it is refused with ``dp_required_for_shape``.

What is kept, per release: for each contributing row (after filter, vocabulary mapping and
truncation to ``max_rows_per_unit``) a 64-bit keyed digest of its unit and full contents (the
engine's MD5 of them, enciphered with AES-256 under a key derived from the node-local key), the
keyed digest of its unit, its cell and whether a later cell covers it, in ``differencing.sqlite``
in the node's state folder (21 bytes per row per release). The key never leaves the node, so ids
and values cannot be read back from the store. A repeat of a recorded query over unchanged rows is
recognised by a fingerprint the engine computes, and answered as recorded. A version of a file
source never changes (a changed file becomes a new version), so its fingerprint per query is
computed once and reused; a PostgreSQL table's is computed again for every release.

A refusal says only that this check refused ("differencing"): no count, no cell, no earlier job.
What it reveals is a yes/no of the kind small-cell suppression reveals (docs/security.md).

Limits (docs/security.md): the check is pairwise for differences and incremental for margins, so
a difference spread over three or more overlapping earlier releases can escape it; only the last
``differencing_history`` releases per dataset are kept. With DP the noise and the budget cover
differencing instead.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nodes.config import NodeConfig
from nodes.keys import load_or_create_differencing_key
from nodes.sources import DataSources
from nodes.sqlgen import Dialect, SqlBuilder, bounded_rows
from nodes.validate import Plan, Refused
from privacy import store
from protocols import federation_pb2 as pb
from protocols.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Digests = npt.NDArray[np.uint64]
else:
    np = lazy_module("numpy")

RULE = "differencing"
SHAPE_RULE = "dp_required_for_shape"
STORE_FILE = "differencing.sqlite"
DIGEST_BYTES = 8  # 2^64 slots: a collision among a million rows has odds of about 3e-8

REFUSAL = (
    "exact release refused by the differencing check: together with earlier exact releases of this "
    "dataset it would single out fewer units than the minimum group size; ask with DP (an epsilon)"
)
SHAPE_REFUSAL = (
    "exact release refused: it would complement a cell of a secure exact release that this node cannot "
    "tell was suppressed; DP (an epsilon) is required for this query shape"
)
SECONDARY = "differencing: suppressed so that no smaller cell can be recovered by subtraction"

# Cell status in a release.
RELEASED, SUPPRESSED, MAYBE = 0, 1, 2  # MAYBE: a secure cell the coordinator may have suppressed
# Row state in a recorded release: covered by later released cells, or only by ones that may be.
OPEN, COVERED, MAYBE_COVERED = 0, 1, 2


class DifferencingRefused(Refused):
    """An exact release would let fewer units than the minimum group size be singled out."""

    def __init__(self, node: str, rule: str = RULE, message: str = REFUSAL) -> None:
        super().__init__(rule, message, node=node)


# --------------------------------------------------------------------------- contributing rows


def contribution_sql(plan: Plan, dialect: Dialect, truncate: bool = True) -> tuple[str, list[Any]]:
    """SQL for the rows ``build_sql`` aggregates for ``plan``: (g0..gN, unit MD5, content MD5).

    The same filter, vocabulary mapping and truncation as ``nodes.sqlgen.build_sql``. The content
    is the unit and every declared column's raw value as text, so a row is identified by its
    contents wherever it is released. The engine computes both MD5s (raw 16 bytes) so rows do not
    cross into Python column by column; the node keys them before keeping anything (exact releases
    clamp to the declared bounds and truncate to the declared rows per unit: tighter ones are
    refused without DP, rule ``bounds_need_dp``).
    """
    b = SqlBuilder(dialect)
    carry = tuple(plan.dataset.columns[name] for name in sorted(plan.dataset.columns))
    rows = bounded_rows(plan, b, truncate=truncate, carry=carry)
    text = "VARCHAR" if dialect.name == "duckdb" else "TEXT"
    # chr(31) separates fields; chr(30) stands for a missing value, which text never holds here.
    fields = [f"CAST(u AS {text})", *(f"COALESCE(w{i}, chr(30))" for i in range(len(carry)))]

    def raw_md5(expr: str) -> str:
        return f"decode(md5({expr}), 'hex')" if dialect.name == "postgres" else f"unhex(md5({expr}))"

    unit = raw_md5(f"CAST(u AS {text})")
    content = raw_md5(f"concat_ws(chr(31), {', '.join(fields)})")
    sql = (
        f"SELECT {', '.join([*rows.groups, unit, content])} FROM {rows.source} "
        f"WHERE {' AND '.join(rows.keep) or 'TRUE'}"
    )
    return sql, b.params


def fingerprint_sql(plan: Plan, dialect: Dialect, truncate: bool = True) -> tuple[str, list[Any]]:
    """SQL for a cheap fingerprint of what the plan aggregates, computed in the engine: the number
    of kept rows and the sum of a hash of each row's (group, unit, clamped values). Equal
    fingerprints for the same query mean equal released figures; engine hashes are neither keyed
    nor stable across engine versions, so a mismatch only means the full check runs."""
    b = SqlBuilder(dialect)
    rows = bounded_rows(plan, b, truncate=truncate)
    fields = ", ".join([*rows.groups, "u", *sorted(set(rows.numeric.values()))])
    if dialect.name == "postgres":
        hashed = f"hashtextextended(ROW({fields})::text, 0)"
    else:
        hashed = f"hash({fields})"
    sql = f"SELECT COUNT(*), SUM({hashed}) FROM {rows.source} WHERE {' AND '.join(rows.keep) or 'TRUE'}"
    return sql, b.params


def fingerprint(plan: Plan, sources: DataSources) -> str:
    """``fingerprint_sql`` on the plan's source. A version of a file source never changes, so its
    fingerprint is computed once per query and version and reused (``DataSources.fetch_stable``):
    a repeat of a recorded query then costs no scan beyond the answer's own."""
    sql, params = fingerprint_sql(plan, sources.dialect(plan.dataset), sources.needs_truncation(plan))
    (row,) = sources.fetch_stable(plan.dataset, sql, params)
    return f"{row[0]}:{row[1]}"


def contribution_rows(plan: Plan, sources: DataSources) -> list[tuple[Any, ...]]:
    """Run ``contribution_sql`` on the plan's source. Nothing here leaves the node."""
    sql, params = contribution_sql(plan, sources.dialect(plan.dataset), sources.needs_truncation(plan))
    return sources.fetch(plan.dataset, sql, params)


class RowHasher:
    """Keyed 64-bit digests of units and rows: AES-256 (FIPS 197) as a keyed pseudorandom
    permutation over each 16-byte MD5 from the engine, truncated to 64 bits. One key per kind,
    derived from the node's key with HKDF-SHA256 (RFC 5869). Each block is enciphered on its own
    (ECB), as a deterministic keyed digest must be; equal inputs give equal digests by design."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the differencing key must hold at least 32 bytes")
        self._rows = _subkey(key, b"differencing rows")
        self._units = _subkey(key, b"differencing units")

    @staticmethod
    def _encipher(key: bytes, blocks: bytes) -> Digests:
        encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        out = encryptor.update(blocks) + encryptor.finalize()
        return np.frombuffer(out, dtype=">u8")[::2].astype(np.uint64)

    def units(self, units: Iterable[Any]) -> Digests:
        blocks = b"".join(hashlib.md5(str(u).encode(), usedforsecurity=False).digest() for u in units)
        return np.unique(self._encipher(self._units, blocks))

    def release(self, plan: Plan, rows: Sequence[tuple[Any, ...]]) -> Contributions:
        """Digest every contributing row (g0..gN, unit MD5, content MD5). Equal rows of one unit
        get their occurrence number folded in, so the rows of a release form a set."""
        width = len(plan.group_columns)
        index = {tuple(k): i for i, k in enumerate(plan.keys)}
        n = len(rows)
        if n == 0:
            empty = np.empty(0, dtype=np.uint64)
            return Contributions.build(empty, empty, np.empty(0, dtype=np.int32), len(plan.keys))
        cell = np.fromiter((index.get(tuple(r[:width]), -1) for r in rows), dtype=np.int32, count=n)
        unit_md5 = b"".join(r[width] for r in rows)
        content = np.frombuffer(b"".join(r[width + 1] for r in rows), dtype=">u8").reshape(n, 2)
        # Occurrence number of each content among equal ones, added to its low word. Equal
        # contents are found on one 64-bit word of the two (a false match has odds of 2^-64 and
        # would only renumber two rows).
        word = content[:, 0] ^ content[:, 1]
        order = np.argsort(word, kind="stable")
        sorted_word = word[order]
        starts = np.r_[0, np.flatnonzero(sorted_word[1:] != sorted_word[:-1]) + 1]
        rank = np.empty(n, dtype=np.uint64)
        rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        blocks = content.astype(np.uint64)
        blocks[:, 1] += rank
        row_d = self._encipher(self._rows, blocks.astype(">u8").tobytes())
        unit_d = self._encipher(self._units, unit_md5)
        keep = cell >= 0  # a key outside the public domain is never released
        return Contributions.build(row_d[keep], unit_d[keep], cell[keep], len(plan.keys))


def _subkey(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


@dataclass
class Contributions:
    """One release's contributing rows, sorted by row digest."""

    rows: Digests
    units: Digests
    cells: npt.NDArray[np.int32]
    n_cells: int
    state: npt.NDArray[np.uint8] = field(default_factory=lambda: np.empty(0, dtype=np.uint8))

    @classmethod
    def build(
        cls, rows: Digests, units: Digests, cells: npt.NDArray[np.int32], n_cells: int
    ) -> Contributions:
        order = np.argsort(rows, kind="stable")
        return cls(rows[order], units[order], cells[order], n_cells, np.zeros(len(rows), dtype=np.uint8))

    def unit_count(self, mask: npt.NDArray[np.bool_]) -> int:
        return int(np.unique(self.units[mask]).size)

    def unit_sets(self) -> list[Digests]:
        """Per cell: its sorted, distinct unit digests."""
        order = np.lexsort((self.units, self.cells))
        cells, units = self.cells[order], self.units[order]
        first = np.r_[True, (cells[1:] != cells[:-1]) | (units[1:] != units[:-1])]
        cells, units = cells[first], units[first]
        bounds = np.searchsorted(cells, np.arange(self.n_cells + 1))
        return [units[bounds[c] : bounds[c + 1]] for c in range(self.n_cells)]


# --------------------------------------------------------------------------- comparing two releases


@dataclass
class Match:
    """Where the rows of a new release N fall in a recorded release O.

    Per row of N: its cell in O (-1: not in O) and the rows its (N cell, O cell) pair shares; the
    same per row of O. A pair's shared rows equal to one cell's size and less than the other's
    make that cell a proper part of the other.
    """

    in_old: npt.NDArray[np.int32]
    shared_new: npt.NDArray[np.int64]
    in_new: npt.NDArray[np.int32]
    shared_old: npt.NDArray[np.int64]
    pairs: dict[tuple[int, int], int]  # (cell in N, cell in O) -> rows in both
    new_size: npt.NDArray[np.int64]
    old_size: npt.NDArray[np.int64]

    @classmethod
    def of(cls, new: Contributions, old: Contributions) -> Match:
        in_old = _locate(new.rows, old.rows, old.cells)
        in_new = _locate(old.rows, new.rows, new.cells)
        shared_new, pairs = _shared(new.cells, in_old, old.n_cells)
        shared_old, _ = _shared(in_new, old.cells, old.n_cells)
        return cls(
            in_old,
            shared_new,
            in_new,
            shared_old,
            pairs,
            np.bincount(new.cells, minlength=new.n_cells).astype(np.int64),
            np.bincount(old.cells, minlength=old.n_cells).astype(np.int64),
        )


def _locate(rows: Digests, other: Digests, cells: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    out = np.full(rows.size, -1, dtype=np.int32)
    if other.size == 0 or rows.size == 0:
        return out
    at = np.minimum(np.searchsorted(other, rows), other.size - 1)
    hit = other[at] == rows
    out[hit] = cells[at[hit]]
    return out


def _shared(
    new_cell: npt.NDArray[np.int32], old_cell: npt.NDArray[np.int32], n_old: int
) -> tuple[npt.NDArray[np.int64], dict[tuple[int, int], int]]:
    """Per row: the rows its (new cell, old cell) pair shares (0 where either is -1)."""
    out = np.zeros(new_cell.size, dtype=np.int64)
    hit = (new_cell >= 0) & (old_cell >= 0)
    if not hit.any():
        return out, {}
    code = new_cell[hit].astype(np.int64) * max(n_old, 1) + old_cell[hit].astype(np.int64)
    keys, inverse, counts = np.unique(code, return_inverse=True, return_counts=True)
    out[hit] = counts[inverse]
    pairs = {
        (int(k) // max(n_old, 1), int(k) % max(n_old, 1)): int(c) for k, c in zip(keys, counts, strict=True)
    }
    return out, pairs


@dataclass
class Recorded:
    release_id: int
    max_rows: int
    status: npt.NDArray[np.int8]
    data: Contributions
    plan_key: str = ""


def _pairwise_clash(
    new: Contributions,
    new_units: list[Digests],
    status: npt.NDArray[np.int8],
    old: Recorded,
    match: Match,
    minimum: int,
    max_rows: int,
) -> bool:
    """A new cell and a recorded cell, both not suppressed, whose unit sets differ by 0 < units <
    minimum (distinct counts would give those units' number away), or whose rows differ by rows of
    0 < units < minimum (counts and sums would give those rows' values away)."""
    old_units = old.data.unit_sets()
    new_size = np.array([u.size for u in new_units])
    old_size = np.array([u.size for u in old_units])
    # ||A| - |B|| <= |A delta B|: only pairs of close sizes can differ by fewer than minimum units.
    near = np.abs(new_size[:, None] - old_size[None, :]) < minimum
    near &= (status != SUPPRESSED)[:, None] & (old.status != SUPPRESSED)[None, :]
    for i, j in zip(*np.nonzero(near), strict=True):
        a, b = new_units[i], old_units[j]
        common = np.intersect1d(a, b, assume_unique=True).size
        if 0 < a.size + b.size - 2 * common < minimum:
            return True
    # One unit adds at most max_rows rows to each side, so a larger row difference has enough units.
    limit = 2 * max(max_rows, old.max_rows) * (minimum - 1)
    for (i, j), both in match.pairs.items():
        if status[i] == SUPPRESSED or old.status[j] == SUPPRESSED:
            continue
        differ = int(match.new_size[i] + match.old_size[j] - 2 * both)
        if differ == 0 or differ > limit:
            continue
        only_new = (new.cells == i) & (match.in_old != j)
        only_old = (old.data.cells == j) & (match.in_new != i)
        units = np.unique(np.concatenate([new.units[only_new], old.data.units[only_old]])).size
        if 0 < units < minimum:
            return True
    return False


# --------------------------------------------------------------------------- the decision


@dataclass
class Decision:
    """What a new release may do: its cell statuses, and how recorded rows become covered."""

    status: npt.NDArray[np.int8]
    new_state: npt.NDArray[np.uint8]
    old_states: dict[int, npt.NDArray[np.uint8]]


class Verdict(Exception):
    """What ``decide`` refuses with: the rule (``differencing`` or ``dp_required_for_shape``)."""

    def __init__(self, rule: str) -> None:
        self.rule = rule


def decide(
    new: Contributions,
    status: npt.NDArray[np.int8],
    history: list[Recorded],
    minimum: int,
    max_rows: int,
    can_suppress: bool,
) -> Decision:
    """The pairwise check, then secondary suppression (when allowed) until no margin leaves a small
    residual. Raises ``Verdict`` with the refusing rule."""
    status = status.copy()
    matches = [Match.of(new, old.data) for old in history]
    new_units = new.unit_sets()
    for old, match in zip(history, matches, strict=True):
        if _pairwise_clash(new, new_units, status, old, match, minimum, max_rows):
            raise Verdict(RULE)
    for _ in range(new.n_cells + 1):
        new_state, old_states, to_suppress, rule = _margins(new, status, history, matches, minimum)
        if not to_suppress:
            break
        if not can_suppress:
            raise Verdict(rule)
        status[sorted(to_suppress)] = SUPPRESSED
    else:  # pragma: no cover - every round suppresses at least one of n_cells cells
        raise Verdict(RULE)
    return Decision(status, new_state, old_states)


def _residual_small(
    data: Contributions, rows: npt.NDArray[np.bool_], state: npt.NDArray[np.uint8], minimum: int
) -> str | None:
    """The rule a residual (``rows`` of ``data`` with their cover ``state``) breaks, if any."""
    residual = rows & (state != COVERED)
    if not residual.any():
        return None
    sure = residual & (state == OPEN)
    if (residual & (state == MAYBE_COVERED)).any() and data.unit_count(sure) < minimum:
        return SHAPE_RULE  # the residual may be the maybe-suppressed cells alone
    units = data.unit_count(residual)
    return RULE if 0 < units < minimum else None


def _margins(
    new: Contributions,
    status: npt.NDArray[np.int8],
    history: list[Recorded],
    matches: list[Match],
    minimum: int,
) -> tuple[npt.NDArray[np.uint8], dict[int, npt.NDArray[np.uint8]], set[int], str]:
    """Cover states after this release, the new cells to suppress so no residual is small, and the
    rule that asks for it (``dp_required_for_shape`` when a residual may hide suppressed cells).

    A cell covers the rows of a cell it is a proper part of; an equal cell covers nothing (their
    difference is empty, and it must not hide what the margin still leaves uncovered).
    """
    new_state = np.zeros(new.rows.size, dtype=np.uint8)
    margin = np.zeros(new.n_cells, dtype=bool)  # new cells that properly contain a recorded cell
    old_states: dict[int, npt.NDArray[np.uint8]] = {}
    suppress: set[int] = set()
    rule = RULE
    live = status != SUPPRESSED
    for old, match in zip(history, matches, strict=True):
        # Recorded cells properly inside a new cell cover that cell's rows.
        j = np.where(match.in_old >= 0, match.in_old, 0)
        size_j = match.old_size[j]
        inside = (
            (match.in_old >= 0)
            & live[new.cells]
            & (old.status[j] != SUPPRESSED)
            & (match.shared_new == size_j)
            & (size_j < match.new_size[new.cells])
        )
        margin[new.cells[inside]] = True
        cover = np.where(old.status[j] == RELEASED, COVERED, MAYBE_COVERED).astype(np.uint8)
        new_state = np.where(inside & (new_state != COVERED), cover, new_state).astype(np.uint8)
        # New cells properly inside a recorded cell cover that cell's rows.
        i = np.where(match.in_new >= 0, match.in_new, 0)
        size_i = match.new_size[i]
        outer = old.data.cells
        within = (
            (match.in_new >= 0)
            & live[i]
            & (old.status[outer] != SUPPRESSED)
            & (match.shared_old == size_i)
            & (size_i < match.old_size[outer])
        )
        cover = np.where(status[i] == RELEASED, COVERED, MAYBE_COVERED).astype(np.uint8)
        state = np.where(within & (old.data.state != COVERED), cover, old.data.state).astype(np.uint8)
        for jj in np.unique(outer[within]):
            verdict = _residual_small(old.data, outer == jj, state, minimum)
            if verdict is not None:
                rule = SHAPE_RULE if verdict == SHAPE_RULE else rule
                cells = np.unique(i[within & (outer == jj)])
                # Suppress the new cell inside this margin with the fewest rows.
                suppress.add(int(min(cells, key=lambda c: (int(match.new_size[c]), int(c)))))
        old_states[old.release_id] = state
    for cell in np.flatnonzero(margin):
        verdict = _residual_small(new, new.cells == cell, new_state, minimum)
        if verdict is not None:
            rule = SHAPE_RULE if verdict == SHAPE_RULE else rule
            suppress.add(int(cell))
    return new_state, old_states, suppress, rule


# --------------------------------------------------------------------------- store and guard


@dataclass(frozen=True)
class Reservation:
    """A checked exact release, on record as pending until ``DifferencingGuard.record``."""

    release_id: int
    secondary: tuple[int, ...] = ()  # group positions (in ``plan.keys``) to suppress as well
    on_record: bool = False  # a repeat of a release already marked released: nothing to write


def plan_key(plan: Plan) -> str:
    """What fixes a release's rows: dataset, grouping and filter (aggregates do not)."""
    h = hashlib.sha256(plan.dataset.name.encode())
    h.update(json.dumps([c.name for c in plan.group_columns]).encode())
    if plan.filter is not None:
        h.update(plan.filter.SerializeToString(deterministic=True))
    return h.hexdigest()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS exact_releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    dataset TEXT NOT NULL,
    job_id TEXT NOT NULL,
    plan_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    max_rows INTEGER NOT NULL,
    n_cells INTEGER NOT NULL,
    cell_status BLOB NOT NULL,
    rows BLOB NOT NULL,
    units BLOB NOT NULL,
    cells BLOB NOT NULL,
    state BLOB NOT NULL,
    fingerprint TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS exact_releases_dataset ON exact_releases (dataset, id);
-- A repeat is found from the index: the fingerprint is stored after the row digests, so finding it
-- in the table would read every recorded release's digests.
CREATE INDEX IF NOT EXISTS exact_releases_repeat ON exact_releases (dataset, plan_key, kind, fingerprint, id);
"""


def _load(row: tuple[Any, ...]) -> Recorded:
    rid, max_rows, n_cells, cell_status, rows, units, cells, state, key = row
    data = Contributions(
        np.frombuffer(rows, dtype="<u8").astype(np.uint64),
        np.frombuffer(units, dtype="<u8").astype(np.uint64),
        np.frombuffer(cells, dtype="<i4").astype(np.int32),
        int(n_cells),
        np.frombuffer(state, dtype=np.uint8).copy(),
    )
    return Recorded(int(rid), int(max_rows), np.frombuffer(cell_status, dtype=np.int8).copy(), data, str(key))


def _repeat(
    conn: sqlite3.Connection, plan: Plan, kind: str, mark: str, status: npt.NDArray[np.int8]
) -> Reservation | None:
    """The recorded release of the same query, of the same kind, over the same rows, with what it
    suppressed."""
    found = conn.execute(
        "SELECT id, cell_status, status FROM exact_releases WHERE dataset = ? AND plan_key = ? AND kind = ? "
        "AND fingerprint = ? ORDER BY id DESC LIMIT 1",
        (plan.dataset.name, plan_key(plan), kind, mark),
    ).fetchone()
    if found is None:
        return None
    recorded = np.frombuffer(found[1], dtype=np.int8)
    if recorded.size != status.size:
        return None
    # Released the same way as then: the cells suppressed on record stay suppressed.
    secondary = np.flatnonzero((recorded == SUPPRESSED) & (status != SUPPRESSED))
    return Reservation(int(found[0]), tuple(int(g) for g in secondary), on_record=found[2] == "released")


def _same(old: Recorded, new: Contributions, status: npt.NDArray[np.int8]) -> bool:
    return (
        np.array_equal(old.status, status)
        and np.array_equal(old.data.rows, new.rows)
        and np.array_equal(old.data.cells, new.cells)
    )


class DifferencingGuard:
    """Checks exact releases against every earlier one of the same dataset, over all projects.

    ``check`` (plain queries, after ``protect``) suppresses further cells of the result or refuses;
    ``check_secure`` (a node's contribution to a secure sum) refuses. Either puts the release on
    record as pending; ``record`` marks it released once the audit entry is durable. A pending
    release whose audit failed still counts in later checks: fail closed.
    """

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._hasher: RowHasher | None = None

    def _open(self) -> tuple[sqlite3.Connection, RowHasher]:
        if self._conn is None or self._hasher is None:
            state = self.config.state_dir
            self._hasher = RowHasher(load_or_create_differencing_key(state))
            store.create(state / STORE_FILE, _SCHEMA)
            self._conn = store.connect(state / STORE_FILE, shared=True)  # used behind self._lock
        return self._conn, self._hasher

    def check(
        self,
        job_id: str,
        plan: Plan,
        project: str,
        dp: bool,
        sources: DataSources,
        result: pb.QueryResult,
    ) -> Reservation | None:
        """Check a protected exact result; suppress cells of it in place, or refuse."""
        if dp or plan.dataset.policy.differencing_history == 0:
            return None  # with DP the noise and the ledger bound what any combination reveals
        status = np.array([SUPPRESSED if g.suppressed else RELEASED for g in result.groups], dtype=np.int8)
        reserved = self._guarded(job_id, plan, project, "plain", sources, status, can_suppress=True)
        for g in reserved.secondary:
            suppress_group(result.groups[g], len(plan.aggregates))
        return reserved

    def check_secure(
        self, job_id: str, plan: Plan, project: str, dp: bool, sources: DataSources, units: Sequence[int]
    ) -> Reservation | None:
        """Check this node's exact contribution to a secure sum (``units``: its distinct units per
        key of ``plan.keys``); refuse, never suppress."""
        if dp or plan.dataset.policy.differencing_history == 0:
            return None
        minimum = plan.dataset.policy.min_group_size
        status = np.array(
            [SUPPRESSED if n == 0 else MAYBE if n < minimum else RELEASED for n in units], dtype=np.int8
        )
        return self._guarded(job_id, plan, project, "secure", sources, status, can_suppress=False)

    def _guarded(
        self,
        job_id: str,
        plan: Plan,
        project: str,
        kind: str,
        sources: DataSources,
        status: npt.NDArray[np.int8],
        can_suppress: bool,
    ) -> Reservation:
        node = self.config.node_id
        try:
            mark = fingerprint(plan, sources)
            with self._lock:
                conn, hasher = self._open()
                repeat = _repeat(conn, plan, kind, mark, status)
            if repeat is not None:
                return repeat  # the same rows released before: nothing new to compare
            new = hasher.release(plan, contribution_rows(plan, sources))
            with self._lock:
                conn, _ = self._open()
                return self._decide_and_reserve(
                    conn, job_id, plan, project, kind, new, status, can_suppress, mark
                )
        except Verdict as verdict:
            if verdict.rule == SHAPE_RULE:
                raise DifferencingRefused(node, SHAPE_RULE, SHAPE_REFUSAL) from None
            raise DifferencingRefused(node) from None
        except (sqlite3.Error, OSError) as exc:
            # Without its record the check cannot be made: fail closed.
            raise Refused(
                "differencing_unavailable",
                f"exact release: the differencing record cannot be read or written ({type(exc).__name__}); "
                "nothing is released",
                node=node,
            ) from None

    def _decide_and_reserve(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        plan: Plan,
        project: str,
        kind: str,
        new: Contributions,
        status: npt.NDArray[np.int8],
        can_suppress: bool,
        mark: str,
    ) -> Reservation:
        dataset = plan.dataset
        history_size = dataset.policy.differencing_history
        history = [
            _load(row)
            for row in conn.execute(
                "SELECT id, max_rows, n_cells, cell_status, rows, units, cells, state, plan_key FROM exact_releases "
                "WHERE dataset = ? ORDER BY id DESC LIMIT ?",
                (dataset.name, history_size),
            )
        ]
        # Cells without rows hold nothing to protect or to recover.
        sizes = np.bincount(new.cells, minlength=new.n_cells)
        status = np.where(sizes == 0, SUPPRESSED, status).astype(np.int8)
        decision = decide(
            new, status, history, dataset.policy.min_group_size, dataset.max_rows_per_unit, can_suppress
        )
        secondary = tuple(
            int(g) for g in np.flatnonzero((decision.status == SUPPRESSED) & (status != SUPPRESSED))
        )
        key = plan_key(plan)
        for old in history:
            if old.plan_key == key and _same(old, new, decision.status):
                # A repeat of a release on record adds nothing to compare against: it is not
                # recorded again, so repeating a query does not push other releases out.
                return Reservation(old.release_id, secondary)
        conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = conn.execute(
                "INSERT INTO exact_releases (project, dataset, job_id, plan_key, kind, status, created, max_rows, "
                "n_cells, cell_status, rows, units, cells, state, fingerprint) "
                "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    project,
                    dataset.name,
                    job_id,
                    key,
                    kind,
                    time.time(),
                    dataset.max_rows_per_unit,
                    new.n_cells,
                    decision.status.astype(np.int8).tobytes(),
                    new.rows.astype("<u8").tobytes(),
                    new.units.astype("<u8").tobytes(),
                    new.cells.astype("<i4").tobytes(),
                    decision.new_state.tobytes(),
                    mark,
                ),
            )
            release_id = int(cursor.lastrowid or 0)
            for rid, state in decision.old_states.items():
                conn.execute("UPDATE exact_releases SET state = ? WHERE id = ?", (state.tobytes(), rid))
            # Keep the last ``differencing_history`` releases of this dataset.
            conn.execute(
                "DELETE FROM exact_releases WHERE dataset = ? AND id NOT IN "
                "(SELECT id FROM exact_releases WHERE dataset = ? ORDER BY id DESC LIMIT ?)",
                (dataset.name, dataset.name, history_size),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return Reservation(release_id, secondary)

    def record(self, reservation: Reservation | None) -> None:
        """The release went out with its audit entry: mark it released."""
        if reservation is None or reservation.on_record:
            return  # a repeat of a release on record as released changes nothing (and costs no fsync)
        try:
            with self._lock:
                conn, _ = self._open()
                conn.execute(
                    "UPDATE exact_releases SET status = 'released' WHERE id = ?", (reservation.release_id,)
                )
        except sqlite3.Error:
            pass  # a release left pending still counts in every later check, so nothing is lost

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def suppress_group(group: pb.GroupResult, n_aggregates: int) -> None:
    """Suppress a released group as a whole row (secondary suppression)."""
    group.suppressed = True
    group.suppression_rule = SECONDARY
    del group.cells[:]
    for _ in range(n_aggregates):
        group.cells.add()


__all__ = [
    "Contributions",
    "DifferencingGuard",
    "DifferencingRefused",
    "RULE",
    "Reservation",
    "RowHasher",
    "SHAPE_RULE",
    "contribution_rows",
    "contribution_sql",
    "decide",
    "plan_key",
    "suppress_group",
]
