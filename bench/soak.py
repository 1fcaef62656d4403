"""Soak: many mixed jobs against six nodes while the nodes restart one after another.

    python -m bench.soak [--queries 10000] [--restart-every 1000] [--window 1000] [--rows 1000]

Six partner nodes and a coordinator as OS processes over mutual TLS (the scenario's PKI), real
gRPC on loopback, Parquet sources. The analyst asks, in a fixed cycle of ten: five plain exact
queries, two secure DP queries (SecAgg+, epsilon 0.01), one overlap (PSI over three partners) and
two budget reads. Every ``--restart-every`` jobs one node (the next in turn) is stopped with
SIGTERM and started again while the jobs go on. Checked, and printed per window of ``--window``
jobs:

* no job lost: every call returns an answer or a refusal naming its rule (``FederationError``),
  within the client timeout; anything else is counted as lost;
* no budget charged twice: each node's ledger (its SQLite ``charges``) holds each job at most once,
  and only jobs the coordinator's job list holds, with the node's charge as the coordinator recorded it;
* memory and file descriptors of the coordinator and the nodes (/proc/PID/status, /proc/PID/fd):
  growth from the first window after warm-up to the last;
* latency p50/p99 per window.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import statistics
import tempfile
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from federation.client import Client
from federation.processes import LocalFederation, free_port
from federation.scenario import NODES, write_scenario
from protocols.errors import FederationError

PROJECT = "soak"
PLAIN = "SELECT region, COUNT(*) AS n FROM signals WHERE year >= 2021 GROUP BY region"
SECURE = "SELECT region, COUNT(*) AS n FROM signals GROUP BY region"
OVERLAP = ["douane.signals", "politie.signals", "belastingdienst.signals"]
CYCLE = ("plain",) * 5 + ("secure",) * 2 + ("overlap",) + ("budget",) * 2
TIMEOUT = 60.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def process_state(pid: int) -> tuple[int, int]:
    """(resident MB, open file descriptors) of a live process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) // 1024
    return rss, len(list(Path(f"/proc/{pid}/fd").iterdir()))


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    document = tomllib.loads(path.read_text())
    change(document)
    path.write_text(tomli_w.dumps(document))


def _coordinator(doc: dict[str, Any]) -> None:
    doc["coordinator"].update(max_queries_per_minute=0, heartbeat_seconds=1)


def _node(doc: dict[str, Any]) -> None:
    # Budget for every DP job of the run; exact plain answers.
    doc["policy"].update(dp_required=False, budget_epsilon=1e6, dataset_budget_epsilon=1e6)


@dataclass
class Window:
    outcomes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    coordinator: tuple[int, int] = (0, 0)
    nodes: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class SoakReport:
    jobs: int
    windows: list[Window]
    lost: list[str]
    restarts: list[str]
    ledger: dict[str, int]
    window: int = 1000

    def lines(self, warmup: int = 1) -> list[str]:
        out = [
            f"{'jobs':>12s}{'answered':>10s}{'refused':>9s}{'lost':>6s}{'p50 ms':>9s}{'p99 ms':>9s}"
            f"{'coord MB':>10s}{'coord fd':>10s}{'nodes MB':>10s}{'nodes fd':>10s}"
        ]
        done = 0
        for w in self.windows:
            first, done = done + 1, done + len(w.latencies)
            refused = sum(n for k, n in w.outcomes.items() if k.startswith("refused"))
            node_mb = statistics.median(m for m, _ in w.nodes.values()) if w.nodes else 0
            node_fd = sum(f for _, f in w.nodes.values())
            out.append(
                f"{f'{first}-{done}':>12s}{w.outcomes['answered']:10d}{refused:9d}{w.outcomes['lost']:6d}"
                f"{statistics.median(w.latencies) * 1e3:9.0f}{percentile(w.latencies, 0.99) * 1e3:9.0f}"
                f"{w.coordinator[0]:10d}{w.coordinator[1]:10d}{node_mb:10.0f}{node_fd:10d}"
            )
        base = self.windows[min(warmup, len(self.windows) - 1)]
        last = self.windows[-1]
        out.append(
            f"coordinator memory growth after warm-up: {growth(base.coordinator[0], last.coordinator[0]):+.1%}, "
            f"fds {base.coordinator[1]} -> {last.coordinator[1]}"
        )
        steady = [n for n in last.nodes if n in base.nodes and n not in self.restarted_after(warmup)]
        for node in steady:
            out.append(
                f"node {node} (not restarted since): memory {growth(base.nodes[node][0], last.nodes[node][0]):+.1%}, "
                f"fds {base.nodes[node][1]} -> {last.nodes[node][1]}"
            )
        out.append(f"restarts: {', '.join(self.restarts) or 'none'}")
        out.append(f"refusal rules: {dict(sum((w.outcomes for w in self.windows), Counter()))}")
        out.append(f"ledger check: {self.ledger}")
        out.append(f"lost jobs: {len(self.lost)} {self.lost[:5]}")
        return out

    def restarted_after(self, warmup: int) -> set[str]:
        return {r.split("@")[0] for r in self.restarts if int(r.split("@")[1]) > warmup * self.window}


def growth(before: int, after: int) -> float:
    return (after - before) / before if before else 0.0


class Soak:
    """A running six-node federation for the soak."""

    def __init__(self, root: Path, rows: int) -> None:
        self.root = root
        self.address = f"127.0.0.1:{free_port()}"
        self.paths = write_scenario(
            root, seed=5, rows=rows, coordinator=self.address, formats=dict.fromkeys(NODES, "parquet")
        )
        _edit(self.paths["coordinator"], _coordinator)
        for node in NODES:
            _edit(self.paths[node], _node)
        self.kit = root / "pki" / "kits" / "analyst"
        self.procs = LocalFederation(
            coordinator_config=self.paths["coordinator"],
            node_configs={n: self.paths[n] for n in NODES},
            address=self.address,
            log_dir=root / "logs",
            tls_dir=self.kit,
        )

    def __enter__(self) -> Soak:
        self.procs.start(timeout=300)
        return self

    def __exit__(self, *exc: object) -> None:
        self.procs.stop_all()

    def restart(self, node: str) -> None:
        self.procs.stop(node)
        self.procs.start_node(node)
        self.procs.wait_for_nodes({node}, timeout=120)

    def state(self) -> tuple[tuple[int, int], dict[str, tuple[int, int]]]:
        procs = dict(self.procs.procs)
        nodes = {}
        for name, proc in procs.items():
            if name != "coordinator":
                try:
                    nodes[name] = process_state(proc.pid)
                except OSError:
                    pass  # restarting at this moment
        return process_state(procs["coordinator"].pid), nodes


def one_job(fed: Client, kind: str) -> str:
    """Run one job of ``kind``: "answered", "refused:<rule>", or "lost:<what>"."""
    try:
        if kind == "plain":
            fed.query(PLAIN, project=PROJECT, timeout=10)
        elif kind == "secure":
            fed.query(SECURE, secure=True, epsilon=0.01, project=PROJECT, timeout=10)
        elif kind == "overlap":
            fed.overlap("company", OVERLAP, project=PROJECT, timeout=10)
        else:
            fed.budget(PROJECT)
        return "answered"
    except FederationError as exc:
        return f"refused:{exc.rule}"
    except Exception as exc:  # noqa: BLE001 - anything but an answer or a refusal is a lost job
        return f"lost:{type(exc).__name__}"


def run(
    soak: Soak,
    jobs: int,
    restart_every: int,
    window: int,
    on_window: Callable[[int, Window], None] | None = None,
) -> SoakReport:
    windows: list[Window] = []
    lost: list[str] = []
    restarts: list[str] = []
    restarter: threading.Thread | None = None
    with Client(soak.address, timeout=TIMEOUT, tls_dir=soak.kit) as fed:
        current = Window()
        for i in range(1, jobs + 1):
            # A restart starts with the first job of a window, and a window's snapshot waits for it
            # to end: every snapshot sees all six nodes and their links (a node caught stopping
            # would drop its descriptors from the count and show a false step when it is back).
            if (
                restart_every
                and i > 1
                and (i - 1) % restart_every == 0
                and (restarter is None or not restarter.is_alive())
            ):
                node = NODES[((i - 1) // restart_every - 1) % len(NODES)]
                restarts.append(f"{node}@{i}")
                restarter = threading.Thread(target=soak.restart, args=(node,), daemon=True)
                restarter.start()  # while the jobs go on: some meet the node stopping or starting
            kind = CYCLE[i % len(CYCLE)]
            t = time.perf_counter()
            outcome = one_job(fed, kind)
            current.latencies.append(time.perf_counter() - t)
            current.outcomes["lost" if outcome.startswith("lost") else outcome] += 1
            if outcome.startswith("lost"):
                lost.append(f"{i}:{kind}:{outcome}")
            if i % window == 0 or i == jobs:
                if restarter is not None:
                    restarter.join(timeout=180)
                current.coordinator, current.nodes = soak.state()
                windows.append(current)
                if on_window is not None:
                    on_window(i, current)
                current = Window()
        if restarter is not None:
            restarter.join(timeout=180)
        listed = job_list(fed, jobs)
    return SoakReport(jobs, windows, lost, restarts, check_ledgers(soak, listed), window)


# "node:status eps 0.01" per node; an overlap names its parties "node.dataset".
_NODE_COST = re.compile(r"([\w.-]+):(\w+)(?: eps ([0-9.eE+-]+))?")


def job_list(fed: Client, jobs: int) -> dict[str, dict[str, float]]:
    """The coordinator's job list: job id -> {node: epsilon it recorded as charged}."""
    frame = fed.jobs(limit=jobs + 100, project=PROJECT)
    out: dict[str, dict[str, float]] = {}
    for job_id, nodes in zip(frame["job_id"], frame["nodes"], strict=True):
        charged: dict[str, float] = {}
        for m in _NODE_COST.finditer(nodes):
            node = m.group(1).split(".")[0]
            charged[node] = charged.get(node, 0.0) + float(m.group(3) or 0)
        out[job_id] = charged
    return out


def check_ledgers(soak: Soak, listed: dict[str, dict[str, float]]) -> dict[str, int]:
    """Compare every node's ledger with the coordinator's job list (see the module docstring)."""
    counts: Counter[str] = Counter()
    for node in NODES:
        ledger = soak.root / "state" / node / "ledger.sqlite"
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT job_id, dataset, cost_epsilon FROM charges WHERE project != ''"
            ).fetchall()
        seen: Counter[tuple[str, str, str]] = Counter()
        for job_id, dataset, _ in rows:
            # Queries charge under their job id; an overlap party under "overlap:<job>:<dataset>",
            # and its DP set-size check under "overlap-check:<job>:<dataset>" (nodes/overlap.py).
            kind, _, rest = job_id.partition(":") if job_id.startswith("overlap") else ("query", "", job_id)
            base = rest.split(":")[0]
            seen[(kind, base, dataset)] += 1
            counts["charges"] += 1
            if base not in listed:
                counts["charged_job_not_in_coordinator_list"] += 1
            elif listed[base].get(node, 0) == 0:
                counts["charged_but_not_recorded_by_coordinator"] += 1  # left the job after charging
        counts["charged_twice"] += sum(1 for n in seen.values() if n > 1)
        charged = {base for _, base, _ in seen}
        for job_id, nodes in listed.items():
            if nodes.get(node, 0) > 0 and job_id not in charged:
                counts["recorded_by_coordinator_but_not_charged"] += 1
    counts["jobs_listed"] = len(listed)
    return dict(counts)


def progress(done: int, window: Window) -> None:
    """One line per finished window, as the run goes (a long run can be read before it ends)."""
    print(
        f"{done:6d} jobs {time.strftime('%H:%M:%S')}: {dict(window.outcomes)}, "
        f"p50 {statistics.median(window.latencies) * 1e3:.0f} ms, p99 {percentile(window.latencies, 0.99) * 1e3:.0f} ms, "
        f"coordinator {window.coordinator[0]} MB {window.coordinator[1]} fds, "
        f"nodes (MB, fds) {window.nodes}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--restart-every", type=int, default=1000)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="soak-"))
    started = time.perf_counter()
    with Soak(root, args.rows) as soak:
        report = run(soak, args.queries, args.restart_every, args.window, progress)
    print(
        f"soak: {args.queries} jobs, a node restarted every {args.restart_every}, "
        f"{time.perf_counter() - started:.0f}s in all; logs in {root / 'logs'}"
    )
    for line in report.lines():
        print(line)


if __name__ == "__main__":
    main()
