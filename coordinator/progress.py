"""Progress of long jobs (entity overlaps), for the analyst who started them.

The analyst picks a ``progress_id`` with the request and polls ``Analyst.Progress`` with it.
Entries are keyed by the caller's certificate subject as well, so one analyst cannot read
another's; they live in memory for ten minutes after the job ends, and the board holds a
bounded number of them.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from protocols import federation_pb2 as pb

MAX_ENTRIES = 1024
KEEP_SECONDS = 600.0
PROGRESS_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

Report = Callable[[str, int, str], None]  # phase, steps done, detail


class ProgressIdInvalid(ValueError):
    rule = "malformed_request"


@dataclass
class _Entry:
    phase: str
    step: int
    steps: int
    detail: str
    ended: float | None = None


class ProgressBoard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._clock = clock

    def start(self, user: str, progress_id: str, steps: int) -> Report:
        """Open an entry and return the callable the job reports through; no id, no entry."""
        if not progress_id:
            return lambda phase, step, detail: None
        if not PROGRESS_ID.fullmatch(progress_id):
            raise ProgressIdInvalid("progress_id must be 1 to 64 letters, digits, '-' or '_'")
        key = (user, progress_id)
        with self._lock:
            self._expire()
            self._entries[key] = _Entry("queued", 0, steps, "")
            self._entries.move_to_end(key)
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)

        def report(phase: str, step: int, detail: str) -> None:
            with self._lock:
                entry = self._entries.get(key)
                if entry is None:
                    return
                # A failure keeps the step it was reached at.
                entry.phase, entry.detail = phase, detail
                entry.step = entry.step if phase == "failed" else min(step, entry.steps)
                if phase in ("done", "failed"):
                    entry.ended = self._clock()

        return report

    def read(self, user: str, progress_id: str) -> pb.ProgressResponse:
        with self._lock:
            self._expire()
            entry = self._entries.get((user, progress_id))
            if entry is None:
                return pb.ProgressResponse(found=False)
            return pb.ProgressResponse(
                found=True, phase=entry.phase, step=entry.step, steps=entry.steps, detail=entry.detail
            )

    def _expire(self) -> None:
        now = self._clock()
        old = [k for k, e in self._entries.items() if e.ended is not None and now - e.ended > KEEP_SECONDS]
        for key in old:
            del self._entries[key]
