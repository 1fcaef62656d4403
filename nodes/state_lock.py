"""One node process per state folder: an exclusive ``flock`` on ``<state_dir>/node.lock``.

Two processes on one config would write one audit log and take turns on the coordinator link
(each connect drops the other). The lock is the kernel's, so a crashed process never leaves it held.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from protocols.errors import FederationError

LOCK_FILE = "node.lock"


class StateLock:
    """Held from ``acquire`` until ``release`` (or the process ends)."""

    def __init__(self, state_dir: Path, node: str) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self.node = node
        self._fd: int | None = None

    def acquire(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FederationError(
                "state_locked",
                f"node {self.node} is already running on this state folder (process {holder}); "
                "stop it first, or give this config its own state_dir",
                self.node,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
