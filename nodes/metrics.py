"""The node's Prometheus metrics and readiness (served by protocols/metrics_http.py).

Labels are public names only: job kind, outcome, rule, dataset and project; never a requester, a
query, a figure or a local table (docs/security.md, "What a metrics scraper learns").
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from nodes.audit import AuditError
from nodes.context import NodeContext
from protocols import federation_pb2 as pb

log = logging.getLogger("federation.node")

# Seconds; jobs range from a cached count to a secure aggregation waiting on its peers.
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class NodeMetrics:
    """Counters and histograms the router updates, plus scrape-time state read from the node."""

    def __init__(self, ctx: NodeContext, connected: Callable[[], bool]) -> None:
        self.ctx = ctx
        self.connected = connected
        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Counter(
            "federation_node_jobs",
            "Jobs this node answered or refused, by job kind, outcome and refusal rule",
            ("kind", "outcome", "rule"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "federation_node_job_seconds",
            "Time from receiving a job to its answer or refusal, by job kind",
            ("kind",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(self))

    def observe(self, job: pb.JobRequest, response: pb.JobResponse, seconds: float) -> None:
        """Count one answered or refused job (called once per job, where the router answers)."""
        kind = job.WhichOneof("kind") or "unknown"
        refused = response.HasField("refusal")
        rule = response.refusal.rule if refused else ""
        self.jobs.labels(kind, "refused" if refused else "answered", rule).inc()
        self.latency.labels(kind).observe(seconds)

    def readiness(self) -> Mapping[str, bool]:
        """sources: every exposed source answers; audit: the log is writable; link: connected."""
        return {"sources": self._sources_ok(), "audit": self._audit_ok(), "link": bool(self.connected())}

    def _sources_ok(self) -> bool:
        try:
            self.ctx.sources.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; the log says why
            log.warning("readiness: a source does not answer (%s)", type(exc).__name__)
            return False
        return True

    def _audit_ok(self) -> bool:
        path = self.ctx.audit.path
        target = path if path.exists() else path.parent
        if not os.access(target, os.W_OK):
            return False
        try:
            self.ctx.audit.head()
        except AuditError:
            return False
        return True


class _StateCollector(Collector):
    """Read at scrape time: epsilon spent (ledger), audit entries (log head), readiness."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics
        self._lock = threading.Lock()  # one scrape at a time reads the stores

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        ctx = self.metrics.ctx
        with self._lock:
            spent = GaugeMetricFamily(
                "federation_node_epsilon_spent",
                "Epsilon spent per dataset and project from the budget ledger (at the budget's delta)",
                labels=("dataset", "project"),
            )
            for status in ctx.ledger.show():
                if math.isfinite(status.spent_epsilon):
                    spent.add_metric((status.dataset, status.project), status.spent_epsilon)
            yield spent
            try:
                seq, _ = ctx.audit.head()
            except AuditError:
                seq = -1
            if seq >= 0:
                entries = CounterMetricFamily(
                    "federation_node_audit_entries", "Entries written to this node's audit log"
                )
                entries.add_metric((), seq)
                yield entries
            checks = self.metrics.readiness()
            ready = GaugeMetricFamily(
                "federation_node_ready", "1 when sources, audit log and coordinator link are all ready"
            )
            ready.add_metric((), 1.0 if all(checks.values()) else 0.0)
            yield ready
            each = GaugeMetricFamily(
                "federation_node_ready_check", "Each readiness check: 1 passed, 0 failed", labels=("check",)
            )
            for name, ok in checks.items():
                each.add_metric((name,), 1.0 if ok else 0.0)
            yield each
