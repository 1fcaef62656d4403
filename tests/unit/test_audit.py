"""Audit log: chaining, signatures, tamper detection, concurrency and write failures."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from nodes.audit import (
    GENESIS,
    AuditCorruptError,
    AuditInputError,
    AuditKeyError,
    AuditLog,
    AuditNotFoundError,
    AuditWriteError,
    Head,
    ProblemKind,
    export,
    load_or_create_signing_key,
    parse_head,
    read_verify_key,
    verify,
    verify_key_file,
)

REPO = Path(__file__).resolve().parents[2]
NODE = "douane"
KINDS = ["received", "budget", "released", "refused", "approval"]


def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _rehash(record: dict, key: SigningKey | None) -> dict:
    """What a forger with write access (and perhaps some key) does to make an entry look whole."""
    record = {k: v for k, v in record.items() if k not in ("hash", "sig")}
    record["hash"] = hashlib.sha256(_canonical(record)).hexdigest()
    if key is not None:
        record["sig"] = key.sign(bytes.fromhex(record["hash"])).signature.hex()
    return record


def _make_log(tmp_path: Path, n: int = 8, key: SigningKey | None = None) -> AuditLog:
    log = AuditLog(tmp_path / "audit.jsonl", NODE, signing_key=None if key is None else bytes(key))
    for i in range(n):
        log.append(KINDS[i % len(KINDS)], f"job-{i // 2}", {"i": i, "epsilon": 0.25, "cells": [1, 2]})
    return log


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def _only(report, kind: ProblemKind):
    assert not report.ok
    assert [p.kind_of_problem for p in report.problems] == [kind], report.problems
    return report.problems[0]


# --- the happy path -------------------------------------------------------------------------------------


def test_append_then_verify_and_export(tmp_path: Path) -> None:
    key = SigningKey.generate()
    log = _make_log(tmp_path, n=6, key=key)
    raw = log.path.read_bytes()
    assert raw.endswith(b"\n")
    records = [json.loads(line) for line in raw.splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["prev"] == GENESIS
    for before, after in zip(records, records[1:], strict=False):
        assert after["prev"] == before["hash"]
    for line, record in zip(raw.splitlines(), records, strict=True):
        assert line == _canonical(record)
        assert record["ts"].endswith("Z") and record["node"] == NODE
        key.verify_key.verify(bytes.fromhex(record["hash"]), bytes.fromhex(record["sig"]))

    report = verify(log.path, bytes(key.verify_key))
    assert report.ok and report.problems == []
    assert report.entries == 6 and report.signatures_checked
    assert (report.head_seq, report.head_hash) == (6, records[-1]["hash"]) == log.head()
    assert export(log.path) == records


def test_entry_returned_matches_disk(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl", NODE)
    entry = log.append("released", "job-1", {"cost": {"epsilon": 0.5}, "digest": "ab" * 32})
    assert entry.seq == 1 and entry.prev == GENESIS and entry.sig is None
    assert export(log.path) == [entry.to_dict()]
    assert log.verify_key is None


def test_unsigned_entries_are_reported_when_a_key_is_expected(tmp_path: Path) -> None:
    log = _make_log(tmp_path, n=3)
    assert verify(log.path).ok
    report = verify(log.path, bytes(SigningKey.generate().verify_key))
    assert [(p.line, p.kind_of_problem) for p in report.problems] == [
        (1, ProblemKind.UNSIGNED),
        (2, ProblemKind.UNSIGNED),
        (3, ProblemKind.UNSIGNED),
    ]


def test_empty_and_missing_logs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    report = verify(empty)
    assert report.ok and report.entries == 0 and report.head_hash == GENESIS
    with pytest.raises(AuditNotFoundError) as info:
        verify(tmp_path / "nope.jsonl")
    assert info.value.rule == "audit_missing"


# --- tampering ------------------------------------------------------------------------------------------


def test_edited_field_is_located(tmp_path: Path) -> None:
    log = _make_log(tmp_path)
    lines = _lines(log.path)
    record = json.loads(lines[4])
    record["payload"]["epsilon"] = 0.01
    lines[4] = _canonical(record)
    _write_lines(log.path, lines)

    problem = _only(verify(log.path), ProblemKind.EDITED)
    assert (problem.line, problem.seq) == (5, 5)
    assert problem.message == "entry 5 (line 5): hash does not match its contents (edited?)"


def test_edit_with_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    log = _make_log(tmp_path)
    lines = _lines(log.path)
    record = json.loads(lines[4])
    record["kind"] = "refused"
    lines[4] = _canonical(_rehash(record, None))
    _write_lines(log.path, lines)

    problem = _only(verify(log.path), ProblemKind.BROKEN_LINK)
    assert (problem.line, problem.seq) == (6, 6)
    assert "entry 6 (line 6)" in problem.message and "entry 5 (line 5)" in problem.message


def test_deleted_middle_line_is_located(tmp_path: Path) -> None:
    log = _make_log(tmp_path)
    lines = _lines(log.path)
    del lines[4]
    _write_lines(log.path, lines)

    report = verify(log.path)
    problem = _only(report, ProblemKind.DELETED)
    assert (problem.line, problem.seq) == (5, 6)
    assert problem.message == "entry 6 (line 5): entry 5 is missing (deleted?)"
    assert report.entries == 7 and report.head_seq == 8


def test_deleted_run_and_deleted_first_line(tmp_path: Path) -> None:
    log = _make_log(tmp_path)
    lines = _lines(log.path)
    _write_lines(log.path, lines[1:3] + lines[6:])

    report = verify(log.path)
    assert [(p.line, p.seq, p.kind_of_problem) for p in report.problems] == [
        (1, 2, ProblemKind.DELETED),
        (3, 7, ProblemKind.DELETED),
    ]
    assert "entry 1 is missing" in report.problems[0].message
    assert "entries 4-6 are missing" in report.problems[1].message


def test_inserted_forged_line_with_broken_chain_is_located(tmp_path: Path) -> None:
    log = _make_log(tmp_path)
    lines = _lines(log.path)
    forged = json.loads(lines[3])
    forged["payload"] = {"i": 99, "epsilon": 0.0}
    forged["prev"] = "ab" * 32
    lines.insert(3, _canonical(_rehash(forged, None)))
    _write_lines(log.path, lines)

    problem = _only(verify(log.path), ProblemKind.INSERTED)
    assert (problem.line, problem.seq) == (4, 4)
    assert problem.message.startswith("entry 4 (line 4): is not linked into the chain")


def test_inserted_branch_that_links_to_a_real_entry_is_located(tmp_path: Path) -> None:
    # The forger copies the real predecessor's hash, but nothing after the forged entry links to it.
    log = _make_log(tmp_path)
    lines = _lines(log.path)
    forged = json.loads(lines[3])
    forged["payload"] = {"i": 99}
    lines.insert(4, _canonical(_rehash(forged, None)))
    _write_lines(log.path, lines)

    problem = _only(verify(log.path), ProblemKind.INSERTED)
    assert (problem.line, problem.seq) == (5, 4)


def test_duplicated_line_is_reported(tmp_path: Path) -> None:
    log = _make_log(tmp_path)
    lines = _lines(log.path)
    lines.insert(6, lines[2])
    _write_lines(log.path, lines)

    problem = _only(verify(log.path), ProblemKind.INSERTED)
    assert (problem.line, problem.seq) == (7, 3)
    assert "repeats line 3" in problem.message


def test_swapped_lines_are_located(tmp_path: Path) -> None:
    log = _make_log(tmp_path)
    lines = _lines(log.path)
    lines[4], lines[5] = lines[5], lines[4]
    _write_lines(log.path, lines)

    problem = _only(verify(log.path), ProblemKind.REORDERED)
    assert (problem.line, problem.seq) == (5, 6)
    assert problem.message.startswith("entry 6 (line 5): comes before entry 5 (line 6)")


def test_truncated_last_line_is_located(tmp_path: Path) -> None:
    log = _make_log(tmp_path)
    raw = log.path.read_bytes()
    log.path.write_bytes(raw[: len(raw) - 40])

    report = verify(log.path)
    problem = _only(report, ProblemKind.TRUNCATED)
    assert (problem.line, problem.seq) == (8, 8)
    assert problem.message.startswith("line 8: incomplete last line")
    assert report.entries == 7 and report.head_seq == 7


def test_missing_final_newline_is_reported(tmp_path: Path) -> None:
    log = _make_log(tmp_path, n=3)
    log.path.write_bytes(log.path.read_bytes()[:-1])
    problem = _only(verify(log.path), ProblemKind.TRUNCATED)
    assert (problem.line, problem.seq) == (3, 3)


def test_garbled_middle_line_is_located(tmp_path: Path) -> None:
    log = _make_log(tmp_path)
    lines = _lines(log.path)
    lines[3] = b'{"seq": 4, "oops'
    _write_lines(log.path, lines)

    report = verify(log.path)
    assert [(p.line, p.seq, p.kind_of_problem) for p in report.problems] == [
        (4, 4, ProblemKind.GARBLED),
        (5, 5, ProblemKind.BROKEN_LINK),
    ]
    assert len(export(log.path)) == 7


def test_hand_reformatted_line_is_reported(tmp_path: Path) -> None:
    log = _make_log(tmp_path, n=3)
    lines = _lines(log.path)
    lines[1] = json.dumps(json.loads(lines[1]), indent=None).encode()
    _write_lines(log.path, lines)
    problem = _only(verify(log.path), ProblemKind.NONCANONICAL)
    assert problem.line == 2


def test_entry_resigned_with_another_key_is_located(tmp_path: Path) -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    log = _make_log(tmp_path, key=key)
    lines = _lines(log.path)
    record = json.loads(lines[4])
    record["payload"]["epsilon"] = 0.0
    lines[4] = _canonical(_rehash(record, other))
    _write_lines(log.path, lines)

    report = verify(log.path, bytes(key.verify_key))
    assert [(p.line, p.seq, p.kind_of_problem) for p in report.problems] == [
        (5, 5, ProblemKind.BAD_SIGNATURE),
        (6, 6, ProblemKind.BROKEN_LINK),
    ]
    assert report.problems[0].message.startswith("entry 5 (line 5): signature does not verify")


def test_whole_chain_rewritten_and_resigned_is_caught_only_by_the_key(tmp_path: Path) -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    log = _make_log(tmp_path, key=key)
    records = [json.loads(line) for line in _lines(log.path)]
    records[4]["payload"]["epsilon"] = 0.0
    for i in range(4, len(records)):
        records[i]["prev"] = records[i - 1]["hash"]
        records[i] = _rehash(records[i], other)
    _write_lines(log.path, [_canonical(r) for r in records])

    # A consistent rewrite fools the unkeyed chain; the node's public key does not accept it.
    assert verify(log.path).ok
    assert verify(log.path, bytes(other.verify_key)).ok is False
    report = verify(log.path, bytes(key.verify_key))
    assert [(p.line, p.kind_of_problem) for p in report.problems] == [
        (n, ProblemKind.BAD_SIGNATURE) for n in range(5, 9)
    ]


def test_entry_of_another_node_is_reported(tmp_path: Path) -> None:
    log = _make_log(tmp_path, n=3)
    lines = _lines(log.path)
    record = json.loads(lines[2])
    record["node"] = "kmar"
    lines[2] = _canonical(_rehash(record, None))
    _write_lines(log.path, lines)
    problem = _only(verify(log.path), ProblemKind.FOREIGN_NODE)
    assert (problem.line, problem.seq) == (3, 3)


# --- concurrency ----------------------------------------------------------------------------------------

_CHILD = """
import sys, time
from pathlib import Path
from nodes.audit import AuditLog
path, tag, count, ready, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
log = AuditLog(Path(path), "douane")
ready.touch()
while not go.exists():
    time.sleep(0.005)
for i in range(count):
    log.append("released", f"{tag}-{i}", {"writer": tag, "i": i})
"""


def test_threads_and_processes_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    go = tmp_path / "go"
    per_writer, n_threads, n_procs = 15, 8, 3
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = []
    for p in range(n_procs):
        ready = tmp_path / f"ready-{p}"
        args = [sys.executable, "-c", _CHILD, str(path), f"proc{p}", str(per_writer), str(ready), str(go)]
        procs.append((subprocess.Popen(args, env=env, cwd=REPO), ready))
    deadline = time.monotonic() + 15
    while not all(ready.exists() for _, ready in procs):
        assert time.monotonic() < deadline, "writer processes did not start"
        time.sleep(0.01)

    log = AuditLog(path, NODE)
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def writer(t: int) -> None:
        try:
            start.wait()
            for i in range(per_writer):
                log.append("received", f"thread{t}-{i}", {"writer": f"thread{t}", "i": i})
        except BaseException as exc:  # collected so the main thread can fail the test with it
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    go.touch()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for proc, _ in procs:
        assert proc.wait(timeout=20) == 0
    assert errors == []

    total = per_writer * (n_threads + n_procs)
    report = verify(path)
    assert report.ok, report.problems
    assert report.entries == total and report.head_seq == total
    entries = export(path)
    assert [e["seq"] for e in entries] == list(range(1, total + 1))
    assert len({e["job_id"] for e in entries}) == total
    # The processes really interleaved with the threads rather than running after them.
    writers = [e["payload"]["writer"].startswith("proc") for e in entries]
    assert any(a != b for a, b in zip(writers, writers[1:], strict=False))


def test_instance_picks_up_entries_written_by_another(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first, second = AuditLog(path, NODE), AuditLog(path, NODE)
    assert first.append("received", "j", {}).seq == 1
    assert second.append("budget", "j", {}).seq == 2
    third = first.append("released", "j", {})
    assert third.seq == 3 and third.prev == export(path)[1]["hash"]
    assert verify(path).ok


# --- write failures -------------------------------------------------------------------------------------


def test_disk_full_raises_and_leaves_no_partial_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _make_log(tmp_path, n=3)
    before = log.path.read_bytes()

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(AuditWriteError) as info:
        log.append("released", "job-9", {"rows": 10})
    monkeypatch.undo()
    assert info.value.rule == "audit_unavailable"
    assert "No space left on device" in str(info.value)
    assert log.path.read_bytes() == before
    assert verify(log.path).ok

    assert log.append("released", "job-9", {"rows": 10}).seq == 4
    assert verify(log.path).ok


def test_short_write_then_disk_full_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _make_log(tmp_path, n=3)
    before = log.path.read_bytes()
    real_write = os.write
    calls = []

    def half_then_full(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(AuditWriteError):
        log.append("released", "job-9", {"rows": 10})
    monkeypatch.undo()
    assert len(calls) == 2
    assert log.path.read_bytes() == before
    assert verify(log.path).ok


def test_failed_fsync_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _make_log(tmp_path, n=2)
    before = log.path.read_bytes()
    real_fsync = os.fsync
    calls = []

    def failing_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_once)
    with pytest.raises(AuditWriteError):
        log.append("released", "job-9", {})
    monkeypatch.undo()
    assert log.path.read_bytes() == before


def _mount_tmpfs(where: Path) -> None:
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full disk needs root on Linux to mount a tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")


def test_real_full_disk(tmp_path: Path) -> None:
    mnt = tmp_path / f"tiny-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    _mount_tmpfs(mnt)
    try:
        log = AuditLog(mnt / "audit.jsonl", NODE, signing_key=bytes(SigningKey.generate()))
        for i in range(3):
            log.append("released", f"job-{i}", {"i": i})
        filler = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(filler, b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(filler)

        # Entries bigger than a page need a new one, which the full tmpfs cannot give.
        failure = None
        for i in range(40):
            try:
                log.append("released", f"big-{i}", {"blob": "x" * 6000})
            except AuditWriteError as exc:
                failure = exc
                break
        assert failure is not None and failure.rule == "audit_unavailable"
        assert log.path.read_bytes().endswith(b"\n")
        assert verify(log.path, log.verify_key).ok

        os.unlink(mnt / "filler")
        log.append("released", "after", {"blob": "x" * 6000})
        report = verify(log.path, log.verify_key)
        assert report.ok and export(log.path)[-1]["job_id"] == "after"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_incomplete_last_line_is_set_aside_and_recorded(tmp_path: Path) -> None:
    log = _make_log(tmp_path, n=3)
    fragment = b'{"hash":"12ab","job_id":"job-x","ki'
    with log.path.open("ab") as f:
        f.write(fragment)
    fresh = AuditLog(log.path, NODE)
    entry = fresh.append("released", "job-4", {})
    assert entry.seq == 5
    entries = export(log.path)
    assert entries[3]["kind"] == "recovered"
    assert entries[3]["payload"]["discarded_bytes"] == len(fragment)
    assert entries[3]["payload"]["discarded_sha256"] == hashlib.sha256(fragment).hexdigest()
    assert Path(f"{log.path}.discarded").read_bytes() == fragment + b"\n"
    assert verify(log.path).ok


def test_unreadable_last_entry_blocks_appending(tmp_path: Path) -> None:
    log = _make_log(tmp_path, n=3)
    lines = _lines(log.path)
    record = json.loads(lines[-1])
    record["payload"] = {"edited": True}
    lines[-1] = _canonical(record)
    _write_lines(log.path, lines)
    with pytest.raises(AuditCorruptError) as info:
        AuditLog(log.path, NODE).append("released", "job", {})
    assert info.value.rule == "audit_corrupt"
    assert isinstance(info.value, AuditWriteError)

    _write_lines(log.path, lines[:-1] + [b"not json"])
    with pytest.raises(AuditCorruptError, match="unreadable"):
        AuditLog(log.path, NODE).append("released", "job", {})


def test_log_of_another_node_is_refused(tmp_path: Path) -> None:
    log = _make_log(tmp_path, n=2)
    with pytest.raises(AuditCorruptError, match="belongs to node 'douane'"):
        AuditLog(log.path, "kmar").append("received", "job", {})


# --- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "job_id", "payload", "rule"),
    [
        ("Released!", "j", {}, "audit_kind"),
        ("", "j", {}, "audit_kind"),
        ("released", "j" * 257, {}, "audit_job_id"),
        ("released", 7, {}, "audit_job_id"),
        ("released", "j", {"noise": float("nan")}, "audit_payload"),
        ("released", "j", {"when": object()}, "audit_payload"),
        ("released", "j", ["not", "a", "mapping"], "audit_payload"),
        ("released", "j", {"blob": "x" * (1 << 20)}, "audit_entry_too_large"),
    ],
)
def test_bad_entries_are_refused_with_a_rule(tmp_path: Path, kind, job_id, payload, rule) -> None:
    log = _make_log(tmp_path, n=1)
    before = log.path.read_bytes()
    with pytest.raises(AuditInputError) as info:
        log.append(kind, job_id, payload)
    assert info.value.rule == rule
    assert f"[rule: {rule}]" in str(info.value)
    assert log.path.read_bytes() == before


def test_bad_node_id_and_key_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditInputError) as info:
        AuditLog(tmp_path / "a.jsonl", "douane\nkmar")
    assert info.value.rule == "audit_node_id"
    with pytest.raises(AuditKeyError) as info:
        AuditLog(tmp_path / "a.jsonl", NODE, signing_key=b"short")
    assert info.value.rule == "audit_key_invalid"
    with pytest.raises(AuditKeyError):
        verify(tmp_path / "a.jsonl", b"short")


# --- published heads ------------------------------------------------------------------------------------


def test_signatures_are_counted(tmp_path: Path) -> None:
    key = SigningKey.generate()
    log = _make_log(tmp_path, n=7, key=key)
    report = verify(log.path, bytes(key.verify_key))
    assert report.ok and report.entries == 7 and report.signatures_checked == 7
    assert verify(log.path).signatures_checked == 0


def test_tail_cut_at_a_line_boundary_fails_against_a_published_head(tmp_path: Path) -> None:
    key = SigningKey.generate()
    log = _make_log(tmp_path, n=8, key=key)
    published = Head(*log.head())
    assert verify(log.path, bytes(key.verify_key), heads=[published]).heads_checked == 1
    _write_lines(log.path, _lines(log.path)[:6])
    # The chain alone cannot see it: what is left is a whole, signed chain.
    assert verify(log.path, bytes(key.verify_key)).ok
    report = verify(log.path, bytes(key.verify_key), heads=[published])
    problem = _only(report, ProblemKind.TAIL_MISSING)
    assert problem.seq == 8 and "ends at entry 6" in problem.message
    assert report.rule == "audit_truncated" and report.heads_checked == 0


def test_log_cut_and_regrown_fails_against_a_published_head(tmp_path: Path) -> None:
    key = SigningKey.generate()
    log = _make_log(tmp_path, n=8, key=key)
    published = Head(*log.head())
    _write_lines(log.path, _lines(log.path)[:5])
    # The node chains on after the cut: entries 6-9 exist again, but entry 8 is another one.
    regrown = AuditLog(log.path, NODE, signing_key=bytes(key))
    for i in range(4):
        regrown.append("received", f"job-x{i}", {"i": i})
    assert verify(log.path, bytes(key.verify_key)).ok
    report = verify(log.path, bytes(key.verify_key), heads=[published])
    problem = _only(report, ProblemKind.HEAD_MISMATCH)
    assert problem.seq == 8 and problem.line == 8
    assert report.rule == "audit_head_mismatch"


def test_earlier_heads_are_checked_too(tmp_path: Path) -> None:
    log = _make_log(tmp_path, n=4)
    first = Head(*log.head())
    for i in range(3):
        log.append("received", f"job-y{i}", {"i": i})
    report = verify(log.path, heads=[first, Head(*log.head())])
    assert report.ok and report.heads_checked == 2
    forged = Head(first.seq, "f" * 64)
    assert _only(verify(log.path, heads=[forged]), ProblemKind.HEAD_MISMATCH).seq == first.seq


@pytest.mark.parametrize("text", ["", "7", "0:" + "a" * 64, "x:" + "a" * 64, "3:abc", "3:" + "g" * 64])
def test_malformed_heads_are_refused(text: str) -> None:
    with pytest.raises(AuditInputError) as info:
        parse_head(text)
    assert info.value.rule == "audit_head_invalid"


def test_head_text_round_trips() -> None:
    head = Head(292, "AB" * 32)
    assert parse_head(str(head)) == Head(292, "ab" * 32)


# --- keys -----------------------------------------------------------------------------------------------


def test_signing_key_in_its_own_directory(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "douane-audit.key"
    key = load_or_create_signing_key(key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert verify_key_file(key_file) == tmp_path / "keys" / "douane-audit.key.pub"
    assert read_verify_key(verify_key_file(key_file)) == bytes(key.verify_key)
    assert not (tmp_path / "keys" / "audit_verify.key").exists()


def test_missing_verify_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(AuditKeyError) as info:
        read_verify_key(tmp_path / "audit_verify.key")
    assert info.value.rule == "audit_key_missing"


def test_signing_key_is_created_private_and_reloaded(tmp_path: Path) -> None:
    state = tmp_path / "state" / "douane"
    key = load_or_create_signing_key(state / "audit_signing.key")
    signing_file, verify_file = state / "audit_signing.key", state / "audit_verify.key"
    assert signing_file.stat().st_mode & 0o777 == 0o600
    assert read_verify_key(verify_file) == bytes(key.verify_key) == read_verify_key(state)
    assert bytes(load_or_create_signing_key(state)) == bytes(key)

    log = AuditLog(state / "audit.jsonl", NODE, signing_key=key)
    log.append("approval", "job-1", {"officer": "privacy-officer-douane", "decision": "approved"})
    assert verify(log.path, read_verify_key(state)).ok


def test_exposed_or_mismatched_keys_are_refused(tmp_path: Path) -> None:
    load_or_create_signing_key(tmp_path)
    (tmp_path / "audit_verify.key").write_text(bytes(SigningKey.generate().verify_key).hex() + "\n")
    with pytest.raises(AuditKeyError) as info:
        load_or_create_signing_key(tmp_path)
    assert info.value.rule == "audit_key_mismatch"

    os.chmod(tmp_path / "audit_signing.key", 0o644)
    with pytest.raises(AuditKeyError) as info:
        load_or_create_signing_key(tmp_path)
    assert info.value.rule == "audit_key_permissions"

    (tmp_path / "bad.key").write_text("not a key\n")
    with pytest.raises(AuditKeyError) as info:
        read_verify_key(tmp_path / "bad.key")
    assert info.value.rule == "audit_key_invalid"
