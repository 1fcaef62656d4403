"""The coordinator's record of the audit chain heads nodes publish with their answers (docs/audit.md)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from coordinator.jobstore import JobStore
from protocols import federation_pb2 as pb


def _head(seq: int, digit: str) -> pb.AuditHead:
    return pb.AuditHead(seq=seq, hash=digit * 64)


def test_latest_head_per_node_and_every_head(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    for seq, digit in [(3, "a"), (9, "b"), (6, "c")]:
        assert store.record_head("douane", _head(seq, digit), f"job-{seq}")
    assert store.record_head("kmar", _head(2, "d"), "job-k")
    latest = store.heads()
    assert [(h.node, h.seq, h.hash[0], h.job_id) for h in latest.heads] == [
        ("douane", 9, "b", "job-9"),
        ("kmar", 2, "d", "job-k"),
    ]
    assert not latest.forked
    every = store.heads("douane", every=True)
    assert [h.seq for h in every.heads] == [3, 6, 9]
    # The same head again adds nothing.
    store.record_head("douane", _head(9, "b"), "job-again")
    assert len(store.heads("douane", every=True).heads) == 3
    store.close()
    # Kept across restarts.
    again = JobStore(tmp_path / "jobs.sqlite")
    assert again.heads("kmar").heads[0].seq == 2


def test_two_entries_under_one_number_are_flagged(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    store.record_head("douane", _head(5, "a"), "job-1")
    store.record_head("douane", _head(5, "e"), "job-2")
    store.record_head("kmar", _head(5, "a"), "job-3")
    assert list(store.heads().forked) == ["douane"]


def test_malformed_heads_are_not_kept(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    for head in [
        pb.AuditHead(seq=0, hash="a" * 64),
        pb.AuditHead(seq=1, hash="A" * 64),
        pb.AuditHead(seq=1, hash="a" * 63),
        pb.AuditHead(seq=1 << 63, hash="a" * 64),
    ]:
        assert not store.record_head("douane", head, "job")
    assert not store.heads().heads


def test_heads_arriving_together_share_one_durable_commit(tmp_path: Path) -> None:
    """A hundred nodes answer one job at once: their heads go to disk in a few commits, not one
    each, and each call returns only once its own head can be read from another connection."""
    path = tmp_path / "jobs.sqlite"
    store = JobStore(path)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    seen_after_return: list[bool] = []
    start = threading.Barrier(20)

    def answer(i: int) -> None:
        start.wait()
        assert store.record_head(f"n{i:03d}", _head(i + 1, "a"), f"job-{i}")
        reader = sqlite3.connect(path)
        try:
            row = reader.execute("SELECT 1 FROM audit_heads WHERE node = ?", (f"n{i:03d}",)).fetchone()
        finally:
            reader.close()
        seen_after_return.append(row is not None)

    # The store's writer is busy (a slow disk): every head that arrives meanwhile waits for one commit.
    with store._lock:
        threads = [threading.Thread(target=answer, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        time.sleep(0.5)
    for t in threads:
        t.join(timeout=30)
    assert seen_after_return == [True] * 20
    assert len(store.heads().heads) == 20
    # Transactions: explicit ones end in COMMIT; an INSERT outside BEGIN ... COMMIT is one of its own.
    commits, open_tx = 0, False
    for sql in statements:
        if sql == "BEGIN":
            open_tx = True
        elif sql == "COMMIT":
            commits, open_tx = commits + 1, False
        elif sql.startswith("INSERT") and not open_tx:
            commits += 1
    assert sum(sql.startswith("INSERT") for sql in statements) == 20
    assert commits <= 2, commits  # the first writer's own head, then everything queued behind it
