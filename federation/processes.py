"""Start a local federation (a coordinator and nodes, each its own process) and stop it cleanly.

Used by ``federation demo``, the integration tests and the benchmarks. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from federation.client import Client
from protocols.errors import FederationError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalFederation:
    """A coordinator plus nodes on loopback, as separate OS processes; ``tls_dir`` is the analyst kit."""

    coordinator_config: Path
    node_configs: dict[str, Path]
    address: str
    log_dir: Path
    tls_dir: Path | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def _spawn(self, name: str, args: list[str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child process
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "federation.entry", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()

    def start_coordinator(self) -> None:
        self._spawn("coordinator", ["coordinator", "start", "--config", str(self.coordinator_config)])

    def start_node(self, node: str) -> None:
        self._spawn(node, ["node", "start", "--config", str(self.node_configs[node])])

    def start(self, timeout: float = 60.0) -> None:
        """Start the coordinator and every node; if they do not all come up, stop what did start,
        so a failed start leaves no process behind."""
        try:
            self.start_coordinator()
            for node in self.node_configs:
                self.start_node(node)
            self.wait_for_nodes(set(self.node_configs), timeout=timeout)
        except BaseException:
            self.stop_all()
            raise

    def wait_for_nodes(self, nodes: set[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        with Client(self.address, timeout=2.0, tls_dir=self.tls_dir) as fed:
            while time.monotonic() < deadline:
                self._check_alive()
                try:
                    up = {row.node for row in fed.nodes().itertuples() if row.connected}
                    if nodes <= up:
                        return
                    last = f"connected so far: {sorted(up)}"
                except FederationError as exc:
                    last = str(exc)
                time.sleep(0.2)
        raise FederationError(
            "startup_timeout",
            f"nodes {sorted(nodes)} did not connect within {timeout:g}s ({last}); logs: {self.log_dir}",
        )

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise FederationError(
                    "startup_failed", f"{name} exited with code {proc.returncode}: {' | '.join(tail)}"
                )

    def kill(self, name: str) -> None:
        """Kill a process at once (SIGKILL), as a crash would."""
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(timeout=10)

    def stop(self, name: str, timeout: float = 10.0) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)

    def stop_all(self) -> None:
        for name in [n for n in self.procs if n != "coordinator"] + ["coordinator"]:
            if name in self.procs:
                self.stop(name)

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
