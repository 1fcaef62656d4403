"""How every state store opens SQLite: the ledger, approvals, the differencing record, the job store.

Autocommit mode (``isolation_level=None``) so that each store opens its own transactions
(``BEGIN IMMEDIATE`` where it must read and write atomically); a busy timeout instead of failing
at once while another process writes; ``synchronous=FULL`` so a committed charge or record
survives power loss; write-ahead logging so readers never block the writer.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import OrderedDict
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


# Idle connections by (process, store path, busy timeout), with the file they were opened on.
# Opening a connection per unit of work cost a folder check, two pragmas and, on closing the last
# connection of a write-ahead-logged store, a checkpoint with its own fsyncs: several per job.
# At most _IDLE_PER_STORE per store and _IDLE_STORES stores (least recently used closed first), so
# a process that opens many stores (a test run) holds few files open.
_IDLE_PER_STORE = 2
_IDLE_STORES = 16
_idle: OrderedDict[tuple[int, str, float], list[tuple[sqlite3.Connection, tuple[int, ...]]]] = OrderedDict()
_idle_lock = threading.Lock()


def _file_id(path: Path) -> tuple[int, ...] | None:
    """The store's file and its write-ahead-log index, as (device, inode) pairs.

    The index (``-shm``) lives as long as any connection to the store is open, so a kept
    connection finds it where it left it; a store whose files were removed or replaced under the
    node (a restore, a failing disk) no longer does, and its next unit of work opens the file anew
    and meets whatever is there now.
    """
    try:
        st = os.stat(path)
        shm = os.stat(f"{path}-shm")
    except OSError:
        return None
    return (st.st_dev, st.st_ino, shm.st_dev, shm.st_ino)


@contextmanager
def session(path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> Iterator[sqlite3.Connection]:
    """A connection for one unit of work (autocommit, ``synchronous=FULL``), kept open afterwards
    for the next one unless it is left inside a transaction.

    A kept connection is reused only on the file it was opened on: a store moved, restored or
    deleted since its last unit of work gets a new connection, never the old file.
    """
    key = (os.getpid(), os.fspath(path), busy_timeout_s)
    conn: sqlite3.Connection | None = None
    opened_on: tuple[int, ...] | None = None
    with _idle_lock:
        idle = _idle.get(key, [])
        while idle and conn is None:
            candidate, kept_on = idle.pop()
            if _file_id(Path(path)) == kept_on:
                conn, opened_on = candidate, kept_on
            else:
                candidate.close()
    if conn is None:
        conn = connect(path, busy_timeout_s, shared=True)
        opened_on = _file_id(Path(path))
    keep = False
    try:
        yield conn
        keep = not conn.in_transaction and opened_on is not None
    finally:
        if keep and opened_on is not None:
            evicted: list[tuple[sqlite3.Connection, tuple[int, ...]]] = []
            with _idle_lock:
                idle = _idle.setdefault(key, [])
                _idle.move_to_end(key)
                if len(idle) < _IDLE_PER_STORE:
                    idle.append((conn, opened_on))
                    conn = None
                while len(_idle) > _IDLE_STORES:
                    evicted += _idle.popitem(last=False)[1]
            for old, _ in evicted:
                old.close()
        if conn is not None:
            conn.close()


def close_idle() -> None:
    """Close every kept connection of this process (tests that remove stores, shutdown)."""
    with _idle_lock:
        stores = list(_idle.values())
        _idle.clear()
    for idle in stores:
        for conn, _ in idle:
            conn.close()
