"""The coordinator's record of what operators did on the dashboard: who, when, what, with what outcome.

Append-only JSON lines in ``<state_dir>/operator-log.jsonl`` (mode 0600), each written and synced
before the dashboard answers, so a change the dashboard reports as done has its record; the same
line goes to the coordinator's log. Sign-ins, refused sign-ins, CSRF refusals and every change are
recorded (OWASP Logging Cheat Sheet: who, what, when, outcome). The sign-in token is never written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from coordinator.jobstore import MAX_FREE_TEXT_CHARS, MAX_LABEL_CHARS, clean_text

LOG_FILE = "operator-log.jsonl"
SECRET_FIELDS = frozenset({"token", "csrf"})  # never written, whatever form carried them

log = logging.getLogger("federation.coordinator.dashboard")


@dataclass(frozen=True)
class Entry:
    at_unix_ms: int
    person: str
    action: str
    fields: Mapping[str, str]
    outcome: str


class OperatorLog:
    """Appends one line per dashboard action; ``recent`` reads the newest back for the log page."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOG_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def record(self, person: str, action: str, fields: Mapping[str, str], outcome: str) -> None:
        """Write one entry and sync it; raises OSError if it cannot (the dashboard then says so)."""
        entry = {
            "at_unix_ms": int(time.time() * 1000),
            "person": clean_text(person, MAX_LABEL_CHARS),
            "action": clean_text(action, MAX_LABEL_CHARS),
            "fields": {
                clean_text(k, MAX_LABEL_CHARS): clean_text(v, MAX_LABEL_CHARS)
                for k, v in fields.items()
                if k not in SECRET_FIELDS
            },
            "outcome": clean_text(outcome, MAX_FREE_TEXT_CHARS),
        }
        line = json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        log.info(
            "dashboard: %s %s %s: %s", entry["person"], entry["action"], entry["fields"], entry["outcome"]
        )

    def recent(self, limit: int = 100) -> list[Entry]:
        """The newest ``limit`` entries, newest first (a torn last line is skipped)."""
        if not self.path.exists():
            return []
        newest: deque[str] = deque(maxlen=limit)
        with self._lock, self.path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                newest.append(line)
        out = []
        for line in reversed(newest):
            try:
                raw = json.loads(line)
                out.append(
                    Entry(
                        int(raw["at_unix_ms"]),
                        str(raw["person"]),
                        str(raw["action"]),
                        {str(k): str(v) for k, v in dict(raw["fields"]).items()},
                        str(raw["outcome"]),
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue
        return out
