"""Picking up changed file sources in a running node: on a timer, and on `federation node reload`.

The node looks at each file source's size and modification time every ``source_check_seconds``
(a ``stat`` per file); a file that changed and then held still for one interval becomes a new
version (``DataSources.refresh``). `federation node reload` asks for it at once: it writes a
request file into the node's state folder, the running node (which polls for it twice a second)
refreshes every file source and answers in a result file the command prints. A file, not a
signal, so the command needs neither the node's process id nor the right to signal it: only
write access to the state folder, which the operator has anyway.

Every new version and every failed attempt goes into the audit log (``source_reloaded``,
``source_reload_failed``) before the new version answers any job.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from nodes.audit import AuditError, AuditLog
from nodes.config import NodeConfig
from nodes.file_sources import FileVersion
from nodes.sources import DataSources, RefreshReport
from nodes.state_lock import StateLock
from protocols.errors import FederationError

log = logging.getLogger("federation.node")

REQUEST_FILE = "reload.request"
RESULT_FILE = "reload.result"
REQUEST_POLL_SECONDS = 0.5


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps(payload, sort_keys=True))
    os.replace(partial, path)


class SourceWatcher:
    """A background thread that refreshes the node's file sources (see the module docstring)."""

    def __init__(self, config: NodeConfig, sources: DataSources, audit: AuditLog) -> None:
        self.config = config
        self.sources = sources
        self.audit = audit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="source-reload", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        interval = self.config.source_check_seconds
        next_check = time.monotonic() + interval
        while not self._stop.wait(REQUEST_POLL_SECONDS):
            try:
                if self._answer_request():
                    next_check = time.monotonic() + interval
                elif interval > 0 and time.monotonic() >= next_check:
                    self.refresh("timer")
                    next_check = time.monotonic() + interval
            except Exception:  # noqa: BLE001 - the watcher must outlive any one failed attempt
                log.exception("file source check failed")

    def refresh(self, trigger: str, force: bool = False) -> RefreshReport:
        """One refresh of every file source; each new version is audited before it is swapped in."""
        report = self.sources.refresh(force=force, announce=lambda v: self._announce(v, trigger))
        for name, reason in report.failed.items():
            log.warning("dataset %s: new version not loaded: %s", name, reason)
            try:
                self.audit.append(
                    "source_reload_failed", None, {"dataset": name, "reason": reason, "by": trigger}
                )
            except AuditError as exc:
                log.error("audit entry for a failed reload not written: %s", exc)
        return report

    def _announce(self, version: FileVersion, trigger: str) -> None:
        self.audit.append(
            "source_reloaded",
            None,
            {
                "dataset": version.dataset.name,
                "file": Path(version.signature.path).name,
                "size": version.signature.size,
                "mtime_ns": version.signature.mtime_ns,
                "version": version.key,
                "by": trigger,
            },
        )

    def _answer_request(self) -> bool:
        request = self.config.state_dir / REQUEST_FILE
        try:
            token = str(json.loads(request.read_text()).get("token", ""))
        except FileNotFoundError:
            return False
        except (OSError, ValueError, AttributeError):
            token = ""
        request.unlink(missing_ok=True)
        report = self.refresh("reload", force=True)
        _write_json(
            self.config.state_dir / RESULT_FILE,
            {
                "token": token,
                "reloaded": sorted(report.reloaded),
                "unchanged": sorted(report.unchanged),
                "failed": report.failed,
            },
        )
        return True


def request_reload(config: NodeConfig, timeout: float = 120.0) -> dict[str, Any]:
    """Ask the node running on ``config``'s state folder to reload its file sources now, and
    return its answer; raises when no node runs there or none answers within ``timeout``."""
    state = config.state_dir
    probe = StateLock(state, config.node_id)
    try:
        probe.acquire()
    except FederationError:
        pass  # held: the node is running, as it should be
    else:
        probe.release()
        raise FederationError(
            "node_not_running",
            f"node {config.node_id} is not running on {state}: a node reads its sources when it starts",
            config.node_id,
        )
    token = secrets.token_hex(8)
    _write_json(state / REQUEST_FILE, {"token": token})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer: dict[str, Any] = json.loads((state / RESULT_FILE).read_text())
            if answer.get("token") == token:
                return answer
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    (state / REQUEST_FILE).unlink(missing_ok=True)
    raise FederationError(
        "node_not_responding",
        f"node {config.node_id} did not answer the reload request within {timeout:.0f}s",
        config.node_id,
    )
