"""The offline phase of entity overlap: identifier sets pre-blinded while the node is idle.

In the multi-party PSI ring (``protocols/psi.py``) every party raises every set to its key. A
party's first step, ``H(x)^k`` over its own identifiers under a fresh key, depends on nothing
from the job, so the node does it ahead of time for each identifier column its policy lets
take part (``overlap_columns``), over all distinct values of the column. The next overlap job
on that column takes the set, and its key, and only looks its own tokens up; values the offline
phase did not see (new rows, a filter it could not know) are blinded during the job. Each set
serves one job; a fresh one is made once no overlap job is running. This is the
offline/online split of precomputation in two-party computation, e.g. Beaver, "Precomputing
oblivious transfer" (CRYPTO 1995).

It saves a quarter of a party's work in a six-party job (docs/overlap.md); the cost is
memory, about 150 bytes per identifier, and idle CPU: the work runs on one thread at the
lowest scheduling priority. ``overlap_preblind = false``
in a dataset's policy turns it off.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from nodes.config import Dataset, NodeConfig
from protocols.identifiers import normalise_many
from protocols.psi import PreBlinded, preblind

log = logging.getLogger(__name__)

# How long a refill waits for running overlap jobs to end before it gives up until next time.
IDLE_WAIT_SECONDS = 3600.0
IDLE_POLL_SECONDS = 0.2

Key = tuple[str, str]  # (dataset, identifier column)


def _lower_priority() -> None:
    """Run the calling thread at nice 19 where the OS allows it per thread (Linux)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


def preblind_columns(config: NodeConfig) -> list[Key]:
    """The (dataset, column) pairs a node pre-blinds: exposed, allowed, and identifiers."""
    out = []
    for dataset in config.datasets.values():
        if not dataset.exposed or not dataset.policy.overlap_preblind:
            continue
        for name in dataset.policy.overlap_columns:
            column = dataset.column(name)
            if column is not None and column.kind == "identifier":
                out.append((dataset.name, name))
    return out


class PreBlinder:
    """Keeps one pre-blinded set ready per (dataset, overlap column) that allows it.

    ``select`` returns the raw distinct values of a column; ``busy`` says whether an overlap
    job is running, so the offline phase does not take CPU from one. ``selected`` holds values
    read ahead for a column's first set (``nodes/prepare.py``: read in a child process at start,
    so the node itself opens no DuckDB database before its first job).
    """

    def __init__(
        self,
        config: NodeConfig,
        select: Callable[[Dataset, str], list[Any]],
        busy: Callable[[], bool] = lambda: False,
        selected: dict[Key, list[Any]] | None = None,
    ) -> None:
        self.config = config
        self._select = select
        self._selected = dict(selected or {})
        self._busy = busy
        self._ready: dict[Key, PreBlinded] = {}
        self._queued: set[Key] = set()
        self._lock = threading.Lock()
        self._work: queue.Queue[Key | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def columns(self) -> list[Key]:
        """The (dataset, column) pairs this node pre-blinds."""
        return preblind_columns(self.config)

    def start(self) -> None:
        """Start the background worker and queue every eligible column."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="overlap-offline", daemon=True)
            self._thread.start()
        columns = self.columns()
        if columns:
            log.info(
                "overlap offline phase: pre-blinding %s in the background at low priority",
                ", ".join(f"{d}.{c}" for d, c in columns),
            )
        for key in columns:
            self.schedule(*key)

    def schedule(self, dataset: str, column: str) -> None:
        """Queue a fresh set for this column, unless one is ready or on its way."""
        key = (dataset, column)
        if self._closed.is_set() or key not in self.columns():
            return
        with self._lock:
            if key in self._ready or key in self._queued:
                return
            self._queued.add(key)
        self._work.put(key)

    def take(self, dataset: str, column: str) -> PreBlinded | None:
        """The ready set for this column, handed out once; a new one is queued at once."""
        with self._lock:
            ready = self._ready.pop((dataset, column), None)
        if ready is not None:
            self.schedule(dataset, column)
        return ready

    def ready(self) -> dict[Key, int]:
        """Identifiers per ready set, for operators and tests."""
        with self._lock:
            return {key: len(pre) for key, pre in self._ready.items()}

    def wait_ready(self, timeout: float) -> bool:
        """Block until every eligible column has a set ready, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        wanted = set(self.columns())
        while time.monotonic() < deadline:
            with self._lock:
                if wanted <= set(self._ready):
                    return True
            time.sleep(IDLE_POLL_SECONDS)
        return False

    def close(self) -> None:
        self._closed.set()
        self._work.put(None)
        with self._lock:
            self._ready.clear()

    def _run(self) -> None:
        _lower_priority()
        while not self._closed.is_set():
            key = self._work.get()
            if key is None:
                return
            try:
                self._fill(key)
            except Exception as exc:  # a failed offline phase only makes the next job slower
                log.warning("offline phase for %s.%s failed: %s", key[0], key[1], exc)
            finally:
                with self._lock:
                    self._queued.discard(key)

    def _wait_idle(self) -> bool:
        deadline = time.monotonic() + IDLE_WAIT_SECONDS
        while self._busy():
            if self._closed.is_set() or time.monotonic() > deadline:
                return False
            time.sleep(IDLE_POLL_SECONDS)
        return not self._closed.is_set()

    def _fill(self, key: Key) -> None:
        if not self._wait_idle():
            return
        dataset = self.config.datasets[key[0]]
        column = dataset.column(key[1])
        if column is None or not column.id_type:
            return
        with self._lock:
            ahead = self._selected.pop(key, None)
        raw = ahead if ahead is not None else self._select(dataset, key[1])
        if not raw or len(raw) > dataset.policy.overlap_max_set:
            log.info("offline phase skipped for %s.%s: %d or more distinct values", key[0], key[1], len(raw))
            return
        ids, _ = normalise_many(column.id_type, raw)
        unique = list(dict.fromkeys(ids))
        started = time.monotonic()
        # One thread, at the lowest priority: the offline phase uses idle CPU, not a job's.
        ready = preblind(unique, workers=1)
        with self._lock:
            if not self._closed.is_set():
                self._ready[key] = ready
        log.info(
            "offline phase ready for %s.%s: %d identifiers in %.1fs",
            key[0],
            key[1],
            len(ready),
            time.monotonic() - started,
        )
