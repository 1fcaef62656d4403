"""Append-only, hash-chained, signed audit log of a node.

One JSON object per line (JSON Lines).  Every entry carries the SHA-256 (FIPS 180-4) of its own canonical
form and the hash of the entry before it, so an edit, deletion, insertion or reordering breaks the chain
(the linked-timestamping construction of Haber & Stornetta, 1991).  With a signing key configured, each
entry hash is also signed with Ed25519 (RFC 8032) so that a rewrite of the whole chain is detectable by
anyone holding the node's public audit key.

An entry is on disk (written, flushed and fsynced) before `AuditLog.append` returns; the node releases a
result only after that, so a release is never without its record.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import stat
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from nodes.keys import write_secret
from protocols.errors import FederationError

GENESIS = "0" * 64
SIGNING_KEY_FILE = "audit_signing.key"
VERIFY_KEY_FILE = "audit_verify.key"
MAX_LINE_BYTES = 1 << 20

_FIELDS = frozenset({"seq", "ts", "node", "kind", "job_id", "payload", "prev", "hash"})
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MAX_JOB_ID = 256
_TAIL_CHUNK = 8192


class AuditError(FederationError):
    """An audit-log failure with a machine-readable rule and a one-line reason.

    Each subclass names its default rule in ``default_rule``.
    """

    default_rule = "audit"

    def __init__(self, message: str, rule: str | None = None, node: str = "") -> None:
        super().__init__(rule or self.default_rule, message, node)


class AuditWriteError(AuditError):
    """The entry could not be made durable; the caller must not release anything."""

    default_rule = "audit_unavailable"


class AuditCorruptError(AuditWriteError):
    """The log's last entry is unreadable or foreign, so no entry can be chained after it."""

    default_rule = "audit_corrupt"


class AuditInputError(AuditError, ValueError):
    """An entry to append is malformed (bad kind, job id or payload)."""

    default_rule = "audit_entry"


class AuditKeyError(AuditError):
    """An audit signing or verify key is missing, malformed, exposed or mismatched."""

    default_rule = "audit_key"


class AuditNotFoundError(AuditError):
    """The audit log to verify or export does not exist."""

    default_rule = "audit_missing"


@dataclass(frozen=True, slots=True)
class Entry:
    """One audit record as stored on its line."""

    seq: int
    ts: str
    node: str
    kind: str
    job_id: str | None
    payload: dict[str, Any]
    prev: str
    hash: str
    sig: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq,
            "ts": self.ts,
            "node": self.node,
            "kind": self.kind,
            "job_id": self.job_id,
            "payload": json.loads(_canonical(self.payload)),
            "prev": self.prev,
            "hash": self.hash,
        }
        if self.sig is not None:
            out["sig"] = self.sig
        return out


class ProblemKind(StrEnum):
    GARBLED = "garbled"
    TRUNCATED = "truncated"
    EDITED = "edited"
    NONCANONICAL = "noncanonical"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    BROKEN_LINK = "broken_link"
    SEQ = "seq"
    FOREIGN_NODE = "foreign_node"
    BAD_SIGNATURE = "bad_signature"
    UNSIGNED = "unsigned"
    TAIL_MISSING = "tail_missing"
    HEAD_MISMATCH = "head_mismatch"


# The rule a failed `verify` is reported under, by the kind of its first problem: a log that ends
# before a head the node published lost its tail; one that holds another entry there was rewritten.
FAILURE_RULES: dict[ProblemKind, str] = {
    ProblemKind.TAIL_MISSING: "audit_truncated",
    ProblemKind.TRUNCATED: "audit_truncated",
    ProblemKind.HEAD_MISMATCH: "audit_head_mismatch",
    ProblemKind.BAD_SIGNATURE: "audit_bad_signature",
    ProblemKind.UNSIGNED: "audit_unsigned",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of `verify`: where it is (1-based line, entry seq) and what is wrong."""

    line: int
    seq: int | None
    kind_of_problem: ProblemKind
    message: str


@dataclass(frozen=True, slots=True)
class Head:
    """A chain head a node published: its last entry's ``seq`` and ``hash`` (nothing else of the log)."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


def parse_head(text: str) -> Head:
    """Read ``INDEX:HASH`` (entry number, 64 lowercase hex digits) as a `Head`."""
    seq, sep, digest = text.strip().partition(":")
    if not sep or not seq.isdigit() or int(seq) < 1 or not _HEX64.fullmatch(digest.lower()):
        raise AuditInputError(
            f"head {text!r} is not INDEX:HASH (an entry number and 64 hex digits)", rule="audit_head_invalid"
        )
    return Head(int(seq), digest.lower())


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Outcome of `verify`; `head_seq`/`head_hash` identify the last entry of the intact chain.

    ``signatures_checked`` counts the entries whose Ed25519 signature verified; ``heads_checked`` the
    published heads found in the log.
    """

    ok: bool
    entries: int
    problems: list[Problem] = field(default_factory=list)
    signatures_checked: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    heads_checked: int = 0

    @property
    def rule(self) -> str:
        """The rule a failure is reported under (``audit`` unless a more specific one applies)."""
        for problem in self.problems:
            if problem.kind_of_problem in FAILURE_RULES:
                return FAILURE_RULES[problem.kind_of_problem]
        return "audit"


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def _entry_hash(record: Mapping[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k not in ("hash", "sig")}
    return hashlib.sha256(_canonical(body)).hexdigest()


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _signing_key(key: bytes | SigningKey | None) -> SigningKey | None:
    if key is None or isinstance(key, SigningKey):
        return key
    if not isinstance(key, bytes) or len(key) != 32:
        raise AuditKeyError("audit signing key must be a 32-byte Ed25519 seed", rule="audit_key_invalid")
    return SigningKey(key)


def _verify_key(key: bytes | VerifyKey | None) -> VerifyKey | None:
    if key is None or isinstance(key, VerifyKey):
        return key
    if not isinstance(key, bytes) or len(key) != 32:
        raise AuditKeyError("audit verify key must be a 32-byte Ed25519 public key", rule="audit_key_invalid")
    return VerifyKey(key)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate field {key!r}")
        out[key] = value
    return out


def _parse_line(raw: bytes) -> dict[str, Any]:
    """Parse and structurally check one stored line; ValueError names what is wrong."""
    try:
        record = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except UnicodeDecodeError as exc:
        raise ValueError("not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from exc
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    missing = _FIELDS - record.keys()
    if missing:
        raise ValueError(f"missing field(s) {', '.join(sorted(missing))}")
    extra = record.keys() - _FIELDS - {"sig"}
    if extra:
        raise ValueError(f"unexpected field(s) {', '.join(sorted(extra))}")
    seq = record["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError("seq is not a positive integer")
    for name in ("ts", "node", "kind"):
        if not isinstance(record[name], str):
            raise ValueError(f"{name} is not a string")
    if record["job_id"] is not None and not isinstance(record["job_id"], str):
        raise ValueError("job_id is neither a string nor null")
    if not isinstance(record["payload"], dict):
        raise ValueError("payload is not an object")
    for name in ("prev", "hash"):
        if not isinstance(record[name], str) or not _HEX64.fullmatch(record[name]):
            raise ValueError(f"{name} is not 64 lowercase hex digits")
    sig = record.get("sig")
    if sig is not None and (not isinstance(sig, str) or not _HEX128.fullmatch(sig)):
        raise ValueError("sig is not 128 lowercase hex digits")
    return record


def _to_entry(record: Mapping[str, Any]) -> Entry:
    return Entry(
        seq=record["seq"],
        ts=record["ts"],
        node=record["node"],
        kind=record["kind"],
        job_id=record["job_id"],
        payload=record["payload"],
        prev=record["prev"],
        hash=record["hash"],
        sig=record.get("sig"),
    )


def _read_tail(fd: int, size: int) -> tuple[bytes, int]:
    """Return ``(line, torn)``: the last complete line without its newline, and the count of bytes after it.

    ``line`` is empty when the file holds no complete line; ``torn`` > 0 means the file ends inside a line
    (a write that never completed).
    """
    pos = size
    buf = b""
    # Walk backwards in chunks until the start of the last complete line is in the buffer.
    while pos > 0:
        step = min(_TAIL_CHUNK, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        last_nl = buf.rfind(b"\n")
        if last_nl == -1:
            continue
        prev_nl = buf.rfind(b"\n", 0, last_nl)
        if prev_nl != -1 or pos == 0:
            return buf[prev_nl + 1 : last_nl], len(buf) - last_nl - 1
    return b"", len(buf)


class AuditLog:
    """A node's audit log; `append` is safe across threads and processes sharing the file."""

    def __init__(self, path: Path, node_id: str, signing_key: bytes | SigningKey | None = None) -> None:
        if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id):
            raise AuditInputError(f"node id {node_id!r} is not a valid node id", rule="audit_node_id")
        self.path = Path(path)
        self.node_id = node_id
        self._signer = _signing_key(signing_key)
        self._lock = threading.Lock()
        # (inode, size) of the file when the tail below was read; another writer changes it.
        self._seen: tuple[int, int] | None = None
        self._last_seq = 0
        self._last_hash = GENESIS

    @property
    def verify_key(self) -> bytes | None:
        return None if self._signer is None else bytes(self._signer.verify_key)

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry on disk; (0, GENESIS) for an empty log."""
        with self._lock:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                self._refresh(fd, os.fstat(fd), repair=False)
                return self._last_seq, self._last_hash
            finally:
                os.close(fd)

    def append(self, kind: str, job_id: str | None, payload: Mapping[str, Any]) -> Entry:
        """Chain, sign and durably write one entry; raise AuditWriteError if it is not on disk."""
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise AuditInputError(f"entry kind {kind!r} must be a short lowercase word", rule="audit_kind")
        if job_id is not None and (not isinstance(job_id, str) or len(job_id) > _MAX_JOB_ID):
            raise AuditInputError(
                f"job id must be null or a string of at most {_MAX_JOB_ID} characters", rule="audit_job_id"
            )
        if not isinstance(payload, Mapping):
            raise AuditInputError("payload must be a mapping", rule="audit_payload")
        try:
            # Round-trip so the stored payload is exactly what verify will re-serialise.
            clean_payload = json.loads(_canonical(dict(payload)))
        except (TypeError, ValueError) as exc:
            raise AuditInputError(
                f"payload is not plain JSON (finite numbers, string keys): {exc}", rule="audit_payload"
            ) from exc
        with self._lock:
            fd = self._open()
            try:
                self._lock_file(fd)
                st = os.fstat(fd)
                self._refresh(fd, st, repair=True)
                entry = self._write(fd, kind, job_id, clean_payload)
                return entry
            finally:
                os.close(fd)

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AuditWriteError(f"cannot open audit log {self.path}: {exc.strerror or exc}") from exc

    def _lock_file(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise AuditWriteError(f"cannot lock audit log {self.path}: {exc.strerror or exc}") from exc

    def _refresh(self, fd: int, st: os.stat_result, repair: bool) -> None:
        """Re-read the last entry if the file changed since we last saw it (another writer, rotation)."""
        if self._seen == (st.st_ino, st.st_size):
            return
        line, torn = _read_tail(fd, st.st_size)
        self._adopt_tail(line, st.st_size - torn)
        if not torn:
            self._seen = (st.st_ino, st.st_size)
        elif repair:
            self._discard_torn_tail(fd, st.st_size, torn)

    def _adopt_tail(self, line: bytes, complete_bytes: int) -> None:
        """Take the last complete line as the chain head, refusing one nothing may be chained after."""
        self._seen = None
        if not line:
            if complete_bytes > 0:
                raise AuditCorruptError(f"audit log {self.path} ends with an empty line; run verify")
            self._last_seq, self._last_hash = 0, GENESIS
            return
        try:
            record = _parse_line(line)
        except ValueError as exc:
            raise AuditCorruptError(
                f"last line of audit log {self.path} is unreadable ({exc}); run verify"
            ) from exc
        if _entry_hash(record) != record["hash"]:
            raise AuditCorruptError(
                f"last entry {record['seq']} of audit log {self.path} does not match its hash; run verify"
            )
        if record["node"] != self.node_id:
            raise AuditCorruptError(
                f"audit log {self.path} belongs to node {record['node']!r}, not {self.node_id!r}"
            )
        self._last_seq, self._last_hash = record["seq"], record["hash"]

    def _discard_torn_tail(self, fd: int, size: int, torn: int) -> None:
        """Cut an incomplete last line left by an interrupted write and keep it aside as evidence.

        Such a line was never acknowledged to a caller, so nothing was released on its account.  The
        bytes go to ``<log>.discarded`` and a ``recovered`` entry records their length and hash.
        """
        fragment = os.pread(fd, torn, size - torn)
        try:
            side = os.open(
                f"{self.path}.discarded", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                _write_all(side, fragment + b"\n")
                os.fsync(side)
            finally:
                os.close(side)
            os.ftruncate(fd, size - torn)
            os.fsync(fd)
        except OSError as exc:
            raise AuditWriteError(
                f"cannot set aside the incomplete last line of {self.path}: {exc.strerror or exc}"
            ) from exc
        self._write(
            fd,
            "recovered",
            None,
            {
                "discarded_bytes": torn,
                "discarded_sha256": hashlib.sha256(fragment).hexdigest(),
                "reason": "incomplete last line from an interrupted write",
            },
        )

    def _write(self, fd: int, kind: str, job_id: str | None, payload: dict[str, Any]) -> Entry:
        record: dict[str, Any] = {
            "seq": self._last_seq + 1,
            "ts": _utc_now(),
            "node": self.node_id,
            "kind": kind,
            "job_id": job_id,
            "payload": payload,
            "prev": self._last_hash,
        }
        record["hash"] = _entry_hash(record)
        if self._signer is not None:
            record["sig"] = self._signer.sign(bytes.fromhex(record["hash"])).signature.hex()
        line = _canonical(record) + b"\n"
        if len(line) > MAX_LINE_BYTES:
            raise AuditInputError(
                f"audit entry is {len(line)} bytes, over the {MAX_LINE_BYTES}-byte limit",
                rule="audit_entry_too_large",
            )
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, line)
            os.fsync(fd)
            if size == 0:
                _fsync_dir(self.path.parent)
        except OSError as exc:
            self._roll_back(fd, size)
            raise AuditWriteError(
                f"audit entry {record['seq']} could not be written to {self.path}: {exc.strerror or exc}"
            ) from exc
        st = os.fstat(fd)
        self._seen = (st.st_ino, st.st_size)
        self._last_seq, self._last_hash = record["seq"], record["hash"]
        return _to_entry(record)

    def _roll_back(self, fd: int, size: int) -> None:
        # Leave no partial line: the next append must chain onto the last complete entry.
        self._seen = None
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError:
            # The next append sees the torn tail and sets it aside; the caller already gets an error.
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# --- verification and export -------------------------------------------------------------------------


@dataclass(slots=True)
class _Row:
    line: int
    record: dict[str, Any]
    hash_ok: bool


def _read_lines(path: Path) -> tuple[list[bytes], bool]:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise AuditNotFoundError(f"audit log {path} does not exist") from exc
    except OSError as exc:
        raise AuditError(
            f"cannot read audit log {path}: {exc.strerror or exc}", rule="audit_unreadable"
        ) from exc
    if not data:
        return [], True
    terminated = data.endswith(b"\n")
    lines = data.split(b"\n")
    if terminated:
        lines.pop()
    return lines, terminated


def _where(row: _Row) -> str:
    return f"entry {row.record['seq']} (line {row.line})"


def _span(first: int, last: int) -> str:
    return f"entry {first} is" if first == last else f"entries {first}-{last} are"


def verify(
    path: Path, verify_key: bytes | VerifyKey | None = None, heads: Sequence[Head] = ()
) -> VerifyReport:
    """Check every line, hash, chain link, sequence number and (with a key) signature of a log.

    Each of ``heads`` (heads the node published, e.g. as kept by the coordinator) must be an intact entry
    of the log: the chain alone cannot show entries cut from its end, a published head can.
    """
    vk = _verify_key(verify_key)
    lines, terminated = _read_lines(path)
    problems: list[Problem] = []
    rows: list[_Row] = []
    garbled_lines: list[int] = []
    node: str | None = None
    last_seq = 0
    signed = 0

    for index, raw in enumerate(lines):
        lineno = index + 1
        is_last = index == len(lines) - 1
        try:
            record = _parse_line(raw)
        except ValueError as exc:
            garbled_lines.append(lineno)
            if is_last and not terminated:
                kind, what = ProblemKind.TRUNCATED, f"incomplete last line ({exc}) (truncated?)"
            else:
                kind, what = ProblemKind.GARBLED, f"unreadable line ({exc})"
            problems.append(Problem(lineno, last_seq + 1, kind, f"line {lineno}: {what}"))
            last_seq += 1
            continue
        last_seq = record["seq"]
        row = _Row(lineno, record, _entry_hash(record) == record["hash"])
        rows.append(row)
        if not row.hash_ok:
            problems.append(
                Problem(
                    lineno,
                    record["seq"],
                    ProblemKind.EDITED,
                    f"{_where(row)}: hash does not match its contents (edited?)",
                )
            )
        elif raw != _canonical(record):
            problems.append(
                Problem(
                    lineno,
                    record["seq"],
                    ProblemKind.NONCANONICAL,
                    f"{_where(row)}: line is not in canonical form (re-written by hand?)",
                )
            )
        if is_last and not terminated:
            problems.append(
                Problem(
                    lineno,
                    record["seq"],
                    ProblemKind.TRUNCATED,
                    f"{_where(row)}: last line has no line end (truncated?)",
                )
            )
        if node is None:
            node = record["node"]
        elif record["node"] != node:
            problems.append(
                Problem(
                    lineno,
                    record["seq"],
                    ProblemKind.FOREIGN_NODE,
                    f"{_where(row)}: written for node {record['node']!r}, the log is node {node!r}'s",
                )
            )
        if vk is not None:
            found = _check_signature(vk, row)
            problems.extend(found)
            signed += not found

    head = _check_chain(rows, garbled_lines, problems)
    anchored = _check_heads(rows, heads, len(lines), problems)
    problems.sort(key=lambda p: (p.line, p.kind_of_problem))
    return VerifyReport(
        ok=not problems,
        entries=len(rows),
        problems=problems,
        signatures_checked=signed,
        head_seq=head.record["seq"] if head else 0,
        head_hash=head.record["hash"] if head else GENESIS,
        heads_checked=anchored,
    )


def _check_heads(rows: list[_Row], heads: Sequence[Head], line_count: int, problems: list[Problem]) -> int:
    """Report each published head the log does not hold as an intact entry; return how many it holds."""
    intact = {(row.record["seq"], row.record["hash"]): row for row in rows if row.hash_ok}
    by_seq: dict[int, _Row] = {}
    for row in rows:
        by_seq.setdefault(row.record["seq"], row)
    last_seq = max((row.record["seq"] for row in rows), default=0)
    found = 0
    for head in sorted(set(heads), key=lambda h: h.seq):
        if (head.seq, head.hash) in intact:
            found += 1
            continue
        if head.seq > last_seq:
            problems.append(
                Problem(
                    line_count + 1,
                    head.seq,
                    ProblemKind.TAIL_MISSING,
                    f"the log ends at entry {last_seq}, but the node published entry {head.seq} "
                    f"({head.hash[:16]}...): entries {last_seq + 1}-{head.seq} or more are missing "
                    "(deleted from the end?)",
                )
            )
            continue
        at = by_seq.get(head.seq)
        line = at.line if at else line_count + 1
        problems.append(
            Problem(
                line,
                head.seq,
                ProblemKind.HEAD_MISMATCH,
                f"entry {head.seq} (line {line}) is not the entry the node published "
                f"({head.hash[:16]}...) (log cut and re-grown, or rewritten?)"
                if at
                else f"entry {head.seq} that the node published ({head.hash[:16]}...) is not in the log",
            )
        )
    return found


def _check_signature(vk: VerifyKey, row: _Row) -> list[Problem]:
    sig = row.record.get("sig")
    if sig is None:
        return [
            Problem(row.line, row.record["seq"], ProblemKind.UNSIGNED, f"{_where(row)}: has no signature")
        ]
    try:
        vk.verify(bytes.fromhex(row.record["hash"]), bytes.fromhex(sig))
    except BadSignatureError:
        return [
            Problem(
                row.line,
                row.record["seq"],
                ProblemKind.BAD_SIGNATURE,
                f"{_where(row)}: signature does not verify with the node's audit key (forged or re-signed?)",
            )
        ]
    return []


def _check_chain(rows: list[_Row], garbled_lines: list[int], problems: list[Problem]) -> _Row | None:
    """Rebuild the chain from the prev links and report where the file departs from it.

    The chain is followed from the genesis entry, preferring at a fork the branch that goes on longest;
    entries left off it were inserted, a link into nothing marks deleted or replaced entries, and chain
    neighbours whose lines run backwards were reordered.  Returns the head of the rebuilt chain.
    """
    if not rows:
        return None
    by_hash: dict[str, int] = {}
    for i, row in enumerate(rows):
        first = by_hash.setdefault(row.record["hash"], i)
        if first != i:
            original = rows[first]
            problems.append(
                Problem(
                    row.line,
                    row.record["seq"],
                    ProblemKind.INSERTED,
                    f"{_where(row)}: repeats line {original.line} (inserted copy?)",
                )
            )
    unique = sorted(set(by_hash.values()))
    children: dict[int, list[int]] = {i: [] for i in unique}
    roots: list[int] = []
    for i in unique:
        parent = by_hash.get(rows[i].record["prev"])
        if parent is None or parent == i:
            roots.append(i)
        else:
            children[parent].append(i)
    depth = _depths(unique, children)

    def best(candidates: list[int]) -> int:
        return max(candidates, key=lambda i: (depth[i], -rows[i].line))

    if not roots:
        # Only possible when stored hashes were edited into a cycle; start anywhere so it gets reported.
        roots = [unique[0]]
    genesis_roots = [i for i in roots if rows[i].record["prev"] == GENESIS]
    if genesis_roots:
        current = best(genesis_roots)
        if rows[current].record["seq"] != 1:
            row = rows[current]
            problems.append(
                Problem(row.line, row.record["seq"], ProblemKind.SEQ, f"{_where(row)}: first entry must be 1")
            )
    else:
        lowest = min(rows[i].record["seq"] for i in roots)
        current = best([i for i in roots if rows[i].record["seq"] == lowest])
        row = rows[current]
        problems.append(_missing(row, 1, None, garbled_lines))
    on_chain = {current}
    while True:
        kids = [k for k in children[current] if k not in on_chain]
        if kids:
            nxt = best(kids)
            prev_row, row = rows[current], rows[nxt]
            if row.record["seq"] != prev_row.record["seq"] + 1:
                problems.append(
                    Problem(
                        row.line,
                        row.record["seq"],
                        ProblemKind.SEQ,
                        f"{_where(row)}: follows entry {prev_row.record['seq']} but is not numbered "
                        f"{prev_row.record['seq'] + 1}",
                    )
                )
            if row.line < prev_row.line:
                problems.append(
                    Problem(
                        row.line,
                        row.record["seq"],
                        ProblemKind.REORDERED,
                        f"{_where(row)}: comes before entry {prev_row.record['seq']} (line {prev_row.line}) "
                        "that it follows in the chain (reordered?)",
                    )
                )
        else:
            after = rows[current].record["seq"]
            later = [i for i in roots if i not in on_chain and rows[i].record["seq"] > after]
            if not later:
                break
            lowest = min(rows[i].record["seq"] for i in later)
            nxt = best([i for i in later if rows[i].record["seq"] == lowest])
            problems.append(_missing(rows[nxt], after + 1, rows[current], garbled_lines))
        on_chain.add(nxt)
        current = nxt

    for i in unique:
        if i not in on_chain:
            row = rows[i]
            problems.append(
                Problem(
                    row.line,
                    row.record["seq"],
                    ProblemKind.INSERTED,
                    f"{_where(row)}: is not linked into the chain (inserted?)",
                )
            )
    return rows[current]


def _missing(row: _Row, expected: int, before: _Row | None, garbled_lines: list[int]) -> Problem:
    """Describe a link into nothing: entries expected..seq-1 missing, or the previous entry replaced."""
    seq = row.record["seq"]
    lo = before.line if before else 0
    unreadable = [n for n in garbled_lines if lo < n < row.line]
    if unreadable:
        return Problem(
            row.line,
            seq,
            ProblemKind.BROKEN_LINK,
            f"{_where(row)}: links to an entry that cannot be read (line {unreadable[0]})",
        )
    if seq > expected:
        return Problem(
            row.line,
            seq,
            ProblemKind.DELETED,
            f"{_where(row)}: {_span(expected, seq - 1)} missing (deleted?)",
        )
    assert before is not None
    return Problem(
        row.line,
        seq,
        ProblemKind.BROKEN_LINK,
        f"{_where(row)}: prev does not match the hash of entry {before.record['seq']} (line {before.line}) "
        "(that entry replaced?)",
    )


def _depths(nodes: list[int], children: dict[int, list[int]]) -> dict[int, int]:
    """Longest run of descendants below each node, iteratively (logs can be far deeper than recursion)."""
    depth: dict[int, int] = {}
    for start in nodes:
        if start in depth:
            continue
        stack = [(start, False)]
        visiting: set[int] = set()
        while stack:
            node, expanded = stack.pop()
            if expanded:
                depth[node] = 1 + max((depth.get(k, 0) for k in children[node] if k in depth), default=-1)
                visiting.discard(node)
                continue
            if node in depth or node in visiting:
                continue
            visiting.add(node)
            stack.append((node, True))
            stack.extend((k, False) for k in children[node] if k not in depth and k not in visiting)
    return depth


def export(path: Path) -> list[dict[str, Any]]:
    """Every readable entry as a dict, in file order; `verify` reports lines that cannot be read."""
    lines, _ = _read_lines(path)
    out: list[dict[str, Any]] = []
    for raw in lines:
        try:
            out.append(_parse_line(raw))
        except ValueError:
            continue
    return out


# --- keys --------------------------------------------------------------------------------------------


def signing_key_file(location: Path) -> Path:
    """The signing key file named by ``location``: a directory holds it as ``audit_signing.key``."""
    location = Path(location)
    return location / SIGNING_KEY_FILE if location.is_dir() else location


def verify_key_file(signing_key: Path) -> Path:
    """Where the public half of a signing key is kept: ``audit_verify.key`` beside the default key file,
    ``<key file>.pub`` beside any other."""
    key_file = signing_key_file(signing_key)
    if key_file.name == SIGNING_KEY_FILE:
        return key_file.with_name(VERIFY_KEY_FILE)
    return key_file.with_name(key_file.name + ".pub")


def load_or_create_signing_key(location: Path) -> SigningKey:
    """Load the node's audit signing key, creating it (mode 0600) on first use.

    ``location`` is the key file (the ``audit_signing_key`` config key), or a directory that holds it
    as ``audit_signing.key``. The public half is written beside it (`verify_key_file`) for privacy
    officers to verify with; they should keep their own copy.
    """
    key_path = signing_key_file(location)
    try:
        key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not key_path.exists():
            _create_key_file(key_path, SigningKey.generate())
        key = _read_signing_key(key_path)
        _ensure_verify_key(verify_key_file(key_path), key.verify_key)
    except OSError as exc:
        raise AuditKeyError(
            f"cannot load or create audit key {key_path}: {exc.strerror or exc}", rule="audit_key_io"
        ) from exc
    return key


def read_verify_key(path: Path) -> bytes:
    """Read an ``audit_verify.key`` file (or the state directory holding one) as raw 32 bytes."""
    path = Path(path)
    if path.is_dir():
        path = path / VERIFY_KEY_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError as exc:
        raise AuditKeyError(f"no audit verify key at {path}", rule="audit_key_missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditKeyError(f"cannot read audit verify key {path}", rule="audit_key_io") from exc
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise AuditKeyError(
            f"{path} does not hold a 64-hex-digit Ed25519 public key", rule="audit_key_invalid"
        )
    return bytes.fromhex(text)


def _create_key_file(key_path: Path, key: SigningKey) -> None:
    # The seed as hex text, so officers can read and copy it; written as every node key is.
    write_secret(key_path, bytes(key).hex().encode("ascii") + b"\n")


def _read_signing_key(key_path: Path) -> SigningKey:
    mode = stat.S_IMODE(key_path.stat().st_mode)
    if mode & 0o077:
        raise AuditKeyError(
            f"{key_path} is readable by others (mode {mode:04o}); it must be 0600",
            rule="audit_key_permissions",
        )
    text = key_path.read_text(encoding="ascii").strip()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise AuditKeyError(f"{key_path} does not hold a 64-hex-digit Ed25519 seed", rule="audit_key_invalid")
    return SigningKey(bytes.fromhex(text))


def _ensure_verify_key(path: Path, verify_key: VerifyKey) -> None:
    expected = bytes(verify_key).hex()
    if path.exists():
        if read_verify_key(path).hex() != expected:
            raise AuditKeyError(
                f"{path} does not belong to the audit signing key beside it", rule="audit_key_mismatch"
            )
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, expected.encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
