"""Shared set-up for the query benchmarks: six partners' ``signals`` as Parquet, with node configs.

Both benchmarks run on loopback in development mode (plaintext gRPC) and without DP by default,
so the plain side measures the query path itself and both sides of each ratio share a transport.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterable
from pathlib import Path

from federation.processes import LocalFederation
from federation.scenario import NODES, Scenario, generate, node_configs

QUERIES = {
    "distinct": (
        "SELECT region, phenomenon, COUNT(*) AS n, COUNT_DISTINCT_PER_NODE(company) AS companies FROM signals "
        "WHERE year >= 2021 GROUP BY region, phenomenon"
    ),
    "rows": "SELECT region, phenomenon, COUNT(*) AS n FROM signals WHERE year >= 2021 GROUP BY region, phenomenon",
}


IDLE_SECONDS = 1.5


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def local_federation(
    root: Path, paths: dict[str, Path], nodes: Iterable[str], address: str, tls_dir: Path | None = None
) -> LocalFederation:
    """The coordinator and ``nodes`` of ``paths`` as processes on loopback, not started yet; their
    logs go to ``root/logs``, and ``tls_dir`` is the analyst's kit when the links use mutual TLS."""
    return LocalFederation(
        coordinator_config=paths["coordinator"],
        node_configs={n: paths[n] for n in nodes},
        address=address,
        log_dir=root / "logs",
        tls_dir=tls_dir,
    )


def wait_until_idle(procs: LocalFederation, timeout: float) -> float:
    """Seconds until no node process uses CPU for IDLE_SECONDS (the offline phase is done)."""
    start = time.monotonic()
    pids = [p.pid for name, p in procs.procs.items() if name != "coordinator"]
    last = sum(cpu_seconds(pid) for pid in pids)
    while time.monotonic() - start < timeout:
        time.sleep(IDLE_SECONDS)
        now = sum(cpu_seconds(pid) for pid in pids)
        if now - last < 0.05 * IDLE_SECONDS:
            return time.monotonic() - start - IDLE_SECONDS
        last = now
    raise TimeoutError(f"nodes still busy after {timeout:g}s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def p50(values: list[float]) -> float:
    return statistics.median(values)


def write_signals(root: Path, rows: int, address: str) -> tuple[Scenario, dict[str, Path]]:
    """Write each partner's ``signals`` (``rows`` per node) and the configs; return the paths by name."""
    scenario = generate(7, rows, datasets=[f"{n}.signals" for n in NODES])
    configs = node_configs(scenario, coordinator=address, formats=dict.fromkeys(NODES, "parquet"))
    for key, frame in scenario.local_frames.items():
        node, name = key.split(".")
        (root / "data" / node).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(root / "data" / node / f"{name}.parquet", index=False)
    (root / "nodes").mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, text in configs.items():
        path = root / ("coordinator.toml" if name == "coordinator" else f"nodes/{name}.toml")
        header = "[coordinator]\n" if name == "coordinator" else "[node]\n"
        text = text.replace(header, f"{header}insecure = true\n", 1)
        # No DP by default: a side that wants DP names its epsilon explicitly.
        text = text.replace("[policy]\n", "[policy]\ndp_required = false\n", 1)
        path.write_text(text)
        paths[name] = path
    return scenario, paths
