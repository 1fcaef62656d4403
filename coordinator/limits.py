"""Per-analyst limits at the coordinator: a rate (at most N jobs in any sliding window of 60
seconds), a cap on each job's timeout, and a cap on the jobs running at once.

Keyed by the verified certificate subject (or the development user name on a plaintext
coordinator), so one analyst cannot flood the nodes with queries, for instance to mount a
differencing attack faster than its officers can read the audit trail.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from protocols.errors import FederationError

WINDOW_SECONDS = 60.0


class RateLimited(Exception):
    """The caller sent more jobs than ``max_queries_per_minute`` allows."""

    rule = "rate_limited"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RateLimiter:
    """Sliding-window counter per caller; thread-safe. A limit of 0 turns it off."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 0:
            raise ValueError("max_queries_per_minute must be 0 (off) or more")
        self.per_minute = per_minute
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, caller: str) -> None:
        """Count one job for ``caller``, or raise ``RateLimited`` (the refused job is not counted)."""
        if self.per_minute == 0:
            return
        now = self.clock()
        with self._lock:
            seen = self._seen.setdefault(caller, deque())
            while seen and now - seen[0] >= WINDOW_SECONDS:
                seen.popleft()
            if len(seen) >= self.per_minute:
                wait = WINDOW_SECONDS - (now - seen[0])
                raise RateLimited(
                    f"{caller} sent {len(seen)} jobs in the last minute; the coordinator allows "
                    f"{self.per_minute} per minute (max_queries_per_minute); retry in {wait:.0f}s"
                )
            seen.append(now)
            if len(self._seen) > 10_000:
                # Forget callers idle for a whole window so the map stays small.
                for who in [w for w, q in self._seen.items() if not q or now - q[-1] >= WINDOW_SECONDS]:
                    del self._seen[who]


class JobRefused(FederationError):
    """A job the coordinator refuses before any node is asked: its timeout, or too many jobs at once."""


INVALID_TIMEOUT = "invalid_timeout"
TOO_MANY_CONCURRENT_JOBS = "too_many_concurrent_jobs"
COORDINATOR_BUSY = "coordinator_busy"


def job_timeout(requested: float, default: float, cap: float) -> float:
    """The per-node (or per-step) timeout of a job: ``requested`` if it is within ``(0, cap]``.

    0 means the coordinator's default. NaN, infinities, negative values and anything past ``cap``
    (``max_timeout_seconds``) are refused before anything is sent: an unbounded wait holds a worker
    thread, and one past what ``futures.wait`` accepts fails only after the nodes were asked.
    """
    if requested == 0:
        return min(default, cap)
    if not math.isfinite(requested) or requested < 0 or requested > cap:
        raise JobRefused(
            INVALID_TIMEOUT,
            f"timeout_seconds must be a number of seconds above 0 and at most {cap:g} "
            "(max_timeout_seconds); 0 means the coordinator's default",
        )
    return requested


class JobSlots:
    """Jobs running at once, per caller and in all; thread-safe. A caller past its share is refused.

    Every running job holds one of the coordinator's worker threads until its nodes answer or time
    out. The per-caller limit keeps one analyst from taking them all; the total stays below the
    worker count, so short calls (nodes, datasets, jobs, progress) are answered even when every
    job slot is taken.
    """

    def __init__(self, per_caller: int, total: int) -> None:
        if per_caller < 1 or total < 1:
            raise ValueError("job slot limits must be 1 or more")
        self.per_caller = per_caller
        self.total = total
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, caller: str) -> Iterator[None]:
        """Hold one slot for ``caller`` while the body runs, or raise ``JobRefused``."""
        with self._lock:
            mine = self._running.get(caller, 0)
            if mine >= self.per_caller:
                raise JobRefused(
                    TOO_MANY_CONCURRENT_JOBS,
                    f"{caller} already runs {mine} jobs; the coordinator runs at most {self.per_caller} "
                    "per analyst at once (max_concurrent_jobs_per_analyst); retry when one has finished",
                )
            if sum(self._running.values()) >= self.total:
                raise JobRefused(
                    COORDINATOR_BUSY,
                    f"the coordinator runs its maximum of {self.total} jobs at once (max_concurrent_jobs); "
                    "retry shortly",
                )
            self._running[caller] = mine + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._running[caller] - 1
                if left:
                    self._running[caller] = left
                else:
                    del self._running[caller]
