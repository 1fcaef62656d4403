"""State stores keep their SQLite connection between units of work, and never on a replaced file."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from privacy import store
from privacy.accounting import Cost
from privacy.ledger import Ledger

_SCHEMA = "CREATE TABLE IF NOT EXISTS t (v INTEGER);"


def test_a_connection_is_kept_for_the_next_unit_of_work(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store.create(path, _SCHEMA)
    with store.session(path) as first:
        first.execute("INSERT INTO t VALUES (1)")
    with store.session(path) as second:
        assert second is first  # no new connection, pragmas and checkpoint per unit of work
        assert second.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL still
        assert second.execute("SELECT v FROM t").fetchall() == [(1,)]


def test_a_connection_left_in_a_transaction_is_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store.create(path, _SCHEMA)
    with store.session(path) as first:
        first.execute("BEGIN")
        first.execute("INSERT INTO t VALUES (1)")
    with store.session(path) as second:
        assert second is not first
        assert second.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)  # never committed


def test_a_replaced_store_gets_a_new_connection(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store.create(path, _SCHEMA)
    with store.session(path) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)  # an operator restores or removes the store
    store.create(path, _SCHEMA)
    with store.session(path) as conn:
        conn.execute("INSERT INTO t VALUES (2)")
    reader = sqlite3.connect(path)
    try:
        assert reader.execute("SELECT v FROM t").fetchall() == [(2,)]  # written to the file at path
    finally:
        reader.close()


def test_a_charge_is_on_disk_and_once_when_charge_returns(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", require_budget=False, default_epsilon=10.0)
    for _ in range(2):  # the same job again spends nothing
        ledger.charge("job-1", "cases", "p", Cost(epsilon=0.5, rho=0.125))
    ledger.charge("job-2", "cases", "p", Cost(epsilon=0.25, rho=0.03125))
    # Another process reads the file while the node's connection stays open.
    reader = sqlite3.connect(f"file:{os.fspath(tmp_path / 'ledger.sqlite')}?mode=ro", uri=True)
    try:
        rows = reader.execute("SELECT job_id, cost_epsilon FROM charges ORDER BY id").fetchall()
    finally:
        reader.close()
    assert rows == [("job-1", 0.5), ("job-2", 0.25)]
