"""The node daemon: one long-lived outbound stream to the coordinator, reconnecting with backoff.

The node never listens on a port. Jobs arrive on the stream, run through the release path in a
small worker pool, and the answers go back on the same stream.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import grpc

from nodes.audit import AuditError
from nodes.budgets import BudgetHandler
from nodes.config import NodeConfig
from nodes.context import NodeContext
from nodes.model_release import ModelRelease
from nodes.overlap import OverlapNode
from nodes.projects import ApprovalHandler, ProjectGate
from nodes.release import QueryHandler
from nodes.router import JobObserver, JobRouter, refusal
from nodes.secure_release import SecureRelease
from nodes.source_reload import SourceWatcher
from nodes.state_lock import StateLock
from protocols import federation_pb2 as pb
from protocols.channels import channel_options
from protocols.errors import ConfigError, FederationError
from protocols.identity import PkiError
from protocols.metrics_http import MetricsServer
from protocols.safe_decode import Undecodable, node_link_connect
from protocols.values import to_value

if TYPE_CHECKING:
    from nodes.metrics import NodeMetrics
    from protocols.web.app import Console
    from protocols.web.server import ConsoleServer

log = logging.getLogger("federation.node")

VERSION = "0.1.0"
# Refusals that no retry can cure: the certificate is revoked, names another node or another role.
# The node stops with the reason instead of dialling for ever.
PERMANENT_CODES = ("PERMISSION_DENIED", "UNAUTHENTICATED")
PERMANENT_RULES = ("wrong_identity", "protocol")

_OPERATION_NAMES = {"count": "COUNT", "count_distinct": "COUNT_DISTINCT", "sum": "SUM", "avg": "AVG"}


def dataset_infos(config: NodeConfig, secagg_verify_key: bytes = b"") -> list[pb.DatasetInfo]:
    """Public schema metadata only: names, kinds, domains, bounds. Never data."""
    infos = []
    for ds in config.datasets.values():
        if not ds.exposed:
            continue
        info = pb.DatasetInfo(
            node=config.node_id,
            name=ds.name,
            description=ds.description,
            privacy_unit=ds.privacy_unit,
            max_rows_per_unit=ds.max_rows_per_unit,
            operations=list(ds.policy.operations),
            min_group_size=ds.policy.min_group_size,
            controller=ds.controller,
            release=ds.policy.release,
            secagg_verify_key=secagg_verify_key,
            default_epsilon=ds.policy.default_epsilon,
            max_epsilon=ds.policy.max_epsilon,
            dp_required=ds.policy.dp_required,
        )
        for col in ds.columns.values():
            c = info.columns.add(name=col.name, description=col.description, id_type=col.id_type)
            c.kind = {
                "category": pb.CATEGORY,
                "numeric": pb.NUMERIC,
                "date": pb.DATE,
                "identifier": pb.IDENTIFIER,
            }[col.kind]
            c.domain.extend(to_value(v) for v in col.domain)
            if col.bounds:
                c.lower, c.upper = col.bounds
            if col.date_range:
                c.first_day, c.last_day = (day.isoformat() for day in col.date_range)
        infos.append(info)
    return infos


def node_router(
    ctx: NodeContext,
    secure: SecureRelease | None = None,
    overlap: OverlapNode | None = None,
    observer: JobObserver | None = None,
) -> JobRouter:
    """The node's one router: the project gate, then one handler per job kind."""
    return JobRouter(
        ctx,
        ProjectGate(ctx),
        {
            "query": QueryHandler(ctx),
            "secure": secure or SecureRelease(ctx),
            "overlap": overlap or OverlapNode(ctx),
            "model": ModelRelease(ctx),
            "budget": BudgetHandler(ctx),
            "approval": ApprovalHandler(ctx),
        },
        observer,
    )


class NodeDaemon:
    """Keeps the link to the coordinator up and serves jobs until ``stop()``."""

    def __init__(
        self,
        config: NodeConfig,
        credentials: grpc.ChannelCredentials | None = None,
        max_backoff: float = 10.0,
        workers: int = 4,
        preblind_values: dict[tuple[str, str], list[Any]] | None = None,
    ) -> None:
        if credentials is None and config.tls is None and not config.insecure:
            raise ConfigError(
                f"node {config.node_id}: no TLS configured: set tls_cert, tls_key and tls_ca (or tls_dir) "
                "in [node], or insecure = true for development only",
                rule="tls_required",
            )
        if credentials is None and config.tls is not None:
            try:
                config.tls.check(f"node {config.node_id}")
            except PkiError as exc:
                raise ConfigError(exc.message, rule=exc.rule) from None
        self.config = config
        self.credentials = credentials or (config.tls.channel_credentials() if config.tls else None)
        self.max_backoff = max_backoff
        self.lock = StateLock(config.state_dir, config.node_id).acquire()
        try:
            self.ctx = NodeContext.open(config)
        except BaseException:
            self.lock.release()
            raise
        # Set when the coordinator refused this node for good; ``run`` returns and the node stops.
        self.fatal: FederationError | None = None
        self.secure = SecureRelease(self.ctx)
        # Values read ahead for the overlap offline phase (nodes/prepare.py), if any.
        self.overlap = OverlapNode(self.ctx, preblind_values)
        self._stop = threading.Event()
        self._call: Any = None
        self.connected = threading.Event()
        # Prometheus metrics and readiness on loopback, only when [node] metrics_listen is set: a node
        # that serves none keeps neither the counters nor the library (idle memory, docs/benchmarks.md).
        self.metrics: NodeMetrics | None = None
        self.metrics_server: MetricsServer | None = None
        if config.metrics_listen:
            from nodes.metrics import NodeMetrics

            self.metrics = NodeMetrics(self.ctx, self.connected.is_set)
        self.router = node_router(self.ctx, self.secure, self.overlap, self.metrics)
        if config.audit_key_path.parent == config.state_dir:
            log.warning(
                "audit signing key %s sits beside the audit log: set audit_signing_key in [node] to a "
                "separate directory (docs/audit.md)",
                config.audit_key_path,
            )
        # Pre-blind overlap identifier columns while idle (nodes/preblind.py).
        self.overlap.preblinder.start()
        # Pick up file sources changed on disk, on a timer and on `federation node reload`.
        self.watcher = SourceWatcher(config, self.ctx.sources, self.ctx.audit)
        self.watcher.start()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{config.node_id}-job")
        if self.metrics is not None:
            self.metrics_server = MetricsServer(
                config.metrics_listen, self.metrics.registry, self.metrics.readiness, "[node]"
            )
            log.info("metrics on http://%s/metrics", config.metrics_listen)
        # The officer's console, in a thread of this process: it shares the node's ledger, approval
        # store and audit log (one writer each, under the state lock), so no second process is needed.
        self.console: Console | None = None
        self.console_server: ConsoleServer | None = None
        if config.console is not None:
            # The web libraries load only for a node that serves the console (idle memory).
            from nodes.console.pages import node_console
            from protocols.web.server import ConsoleServer

            self.console = node_console(self.ctx, config.console, self.connected.is_set)
            try:
                self.console_server = ConsoleServer(self.console.app, config.console)
            except BaseException:
                self.console.token.remove()
                if self.metrics_server is not None:
                    self.metrics_server.close()
                self.pool.shutdown(wait=False)
                self.overlap.preblinder.close()
                self.lock.release()
                raise

    def stop(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()

    def run(self) -> None:
        backoff = 0.25
        while not self._stop.is_set():
            started = time.monotonic()
            reason = self._session()
            self.connected.clear()
            if self._stop.is_set() or self.fatal is not None:
                break
            if time.monotonic() - started > 5:
                backoff = 0.25  # the link was healthy for a while: start over with short waits
            delay = backoff * (1 + random.random() * 0.5)
            log.warning(
                "link to coordinator %s down (%s); retrying in %.1fs", self.config.coordinator, reason, delay
            )
            self._stop.wait(delay)
            backoff = min(backoff * 2, self.max_backoff)
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.console_server is not None and self.console is not None:
            self.console_server.close()
            self.console.token.remove()
        self.overlap.preblinder.close()
        self.watcher.close()
        self.ctx.close()
        self.lock.release()

    def _publish_head(self, response: pb.JobResponse) -> None:
        """Attach the audit chain head to an answer; the coordinator keeps it, so a log later cut at
        its end fails `federation audit verify --head` (docs/audit.md)."""
        try:
            seq, digest = self.ctx.audit.head()
        except AuditError as exc:
            log.error("audit head not published: %s", exc)  # the answer itself already has its entry
            return
        if seq:
            response.audit_head.seq, response.audit_head.hash = seq, digest

    def _session(self) -> str:
        target = self.config.coordinator
        options = channel_options()
        if self.credentials is not None:
            channel = grpc.secure_channel(target, self.credentials, options=options)
        else:
            channel = grpc.insecure_channel(target, options=options)
        outbox: queue.Queue[pb.NodeMessage | None] = queue.Queue()
        outbox.put(
            pb.NodeMessage(
                hello=pb.Hello(
                    node_id=self.config.node_id,
                    datasets=dataset_infos(self.config, self.secure.verify_key),
                    version=VERSION,
                )
            )
        )
        done = threading.Event()

        def outgoing() -> Any:
            while not done.is_set():
                try:
                    msg = outbox.get(timeout=0.5)
                except queue.Empty:
                    continue
                if msg is None:
                    return
                yield msg

        def heartbeat(interval: float) -> None:
            while not done.wait(interval):
                outbox.put(pb.NodeMessage(heartbeat=pb.Heartbeat(sent_unix_ms=int(time.time() * 1000))))

        def serve(job: pb.JobRequest) -> None:
            response = self.router.handle(job)
            self._publish_head(response)
            if not done.is_set():
                outbox.put(pb.NodeMessage(response=response))

        try:
            # A job that does not decode is refused by its id; it never drops the link.
            self._call = node_link_connect(channel)(outgoing())
            for msg in self._call:
                if isinstance(msg, Undecodable):
                    log.warning("refused a job that does not decode: %s", msg)
                    job = pb.JobRequest(job_id=msg.job_id)
                    reason = f"node {self.config.node_id}: {msg.reason}"
                    outbox.put(pb.NodeMessage(response=refusal(self.ctx, job, msg.rule, reason)))
                    continue
                kind = msg.WhichOneof("kind")
                if kind == "welcome":
                    self.connected.set()
                    log.info("connected to coordinator %s as %s", target, self.config.node_id)
                    interval = msg.welcome.heartbeat_seconds or self.config.heartbeat_seconds
                    threading.Thread(target=heartbeat, args=(interval,), daemon=True).start()
                elif kind == "job":
                    self.pool.submit(serve, msg.job)
                elif kind == "reject":
                    log.error("coordinator refused this node: %s", msg.reject.reason)
                    if msg.reject.rule in PERMANENT_RULES:
                        self._give_up(msg.reject.rule or "wrong_identity", msg.reject.reason)
                    return f"refused: {msg.reject.reason}"
            return "stream closed by coordinator"
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            if code is not None and code.name in PERMANENT_CODES:
                self._give_up(_rule_of(details), details or code.name)
            return f"{code.name if code else 'error'}: {details}"
        finally:
            done.set()
            outbox.put(None)
            channel.close()

    def _give_up(self, rule: str, reason: str) -> None:
        self.fatal = FederationError(
            rule, f"the coordinator refused this node for good: {reason}", self.config.node_id
        )
        log.error("%s; stopping (fix the certificate or the config, then start again)", self.fatal)


def _rule_of(details: str) -> str:
    """The rule a coordinator refusal names (``... [rule: revoked]``), else ``auth_refused``."""
    marker = "[rule: "
    if marker in details:
        return details.rsplit(marker, 1)[1].split("]", 1)[0] or "auth_refused"
    return "auth_refused"
