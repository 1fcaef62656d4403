"""Per-analyst rate limit at the coordinator: at most N jobs in any sliding window of 60 seconds.

Keyed by the verified certificate subject (or the development user name on a plaintext
coordinator), so one analyst cannot flood the nodes with queries, for instance to mount a
differencing attack faster than its officers can read the audit trail.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

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
