"""The coordinator's Prometheus metrics (served by protocols/metrics_http.py).

Jobs are counted where they finish (coordinator/jobstore.py), by kind, outcome and rule; connected
nodes are read from the registry at scrape time. Labels are public names only: never a requester,
a project name an analyst typed, a query or a figure (docs/security.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from coordinator.registry import Registry
from protocols.rules import RULES

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_RULE = re.compile(r"\[rule: ([a-z][a-z0-9_]*)\]\s*$")


def rule_of(error: str) -> str:
    """The registered rule an error text ends with (``... [rule: budget]``); "other" for any other."""
    if not error:
        return ""
    match = _RULE.search(error)
    return match.group(1) if match and match.group(1) in RULES else "other"


class CoordinatorMetrics:
    """Job counters and latency the job store updates; connected nodes read at scrape time."""

    def __init__(self, registry: Registry) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Counter(
            "federation_coordinator_jobs",
            "Jobs finished at the coordinator, by job kind, outcome (status) and rule",
            ("kind", "outcome", "rule"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "federation_coordinator_job_seconds",
            "Time from a job's start to its end at the coordinator, by job kind",
            ("kind",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Connected(registry))

    def finished(self, kind: str, status: str, error: str, seconds: float) -> None:
        self.jobs.labels(kind, status, rule_of(error)).inc()
        self.latency.labels(kind).observe(seconds)


class _Connected(Collector):
    def __init__(self, registry: Registry) -> None:
        self.nodes = registry

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("federation_coordinator_connected_nodes", "Nodes connected now")
        gauge.add_metric((), len(self.nodes.sessions()))
        yield gauge
