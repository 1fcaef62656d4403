"""How every state store opens SQLite: the ledger, approvals, the differencing record, the job store.

Autocommit mode (``isolation_level=None``) so that each store opens its own transactions
(``BEGIN IMMEDIATE`` where it must read and write atomically); a busy timeout instead of failing
at once while another process writes; ``synchronous=FULL`` so a committed charge or record
survives power loss; write-ahead logging so readers never block the writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_S = 30.0


def connect(path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S, shared: bool = False) -> sqlite3.Connection:
    """A connection to the store at ``path`` (its folder is made); ``shared``: usable from any
    thread, for a store that keeps one connection behind its own lock."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=not shared)
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def create(path: Path, schema: str, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
    """Create the store's tables if need be, in write-ahead-log mode."""
    with session(path, busy_timeout_s) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(schema)


@contextmanager
def session(path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> Iterator[sqlite3.Connection]:
    """A connection for one unit of work, closed afterwards."""
    conn = connect(path, busy_timeout_s)
    try:
        yield conn
    finally:
        conn.close()
