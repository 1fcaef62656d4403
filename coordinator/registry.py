"""Registry of connected nodes: their link, their public dataset metadata and their liveness."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from protocols import federation_pb2 as pb
from protocols.errors import FederationError

# Answers that list their nodes' outcomes and say why they failed.
Answer: TypeAlias = pb.QueryResponse | pb.ModelResponse | pb.ModelRoundResponse

MAX_VERSION_CHARS = 64  # a node names its own software version; kept as short, printable text


class NodeGone(Exception):
    """The node's link closed before it answered."""


@dataclass
class NodeSession:
    node_id: str
    datasets: list[pb.DatasetInfo]
    version: str = ""  # as the node's Hello said (untrusted text: see ``clean_version``)
    outbox: queue.Queue[pb.CoordinatorMessage | None] = field(default_factory=queue.Queue)
    pending: dict[str, Future[pb.JobResponse]] = field(default_factory=dict)
    connected_since: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    closed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send_job(self, job: pb.JobRequest) -> Future[pb.JobResponse]:
        future: Future[pb.JobResponse] = Future()
        with self.lock:
            if self.closed.is_set():
                future.set_exception(NodeGone(self.node_id))
                return future
            self.pending[job.job_id] = future
        self.outbox.put(pb.CoordinatorMessage(job=job))
        return future

    def waiting_for(self, job_id: str) -> bool:
        """A job on this link waits for an answer with this id."""
        with self.lock:
            return job_id in self.pending

    def resolve(self, response: pb.JobResponse) -> None:
        with self.lock:
            future = self.pending.pop(response.job_id, None)
        if future is not None and not future.done():
            future.set_result(response)

    def forget(self, job_id: str) -> None:
        with self.lock:
            self.pending.pop(job_id, None)

    def close(self) -> None:
        with self.lock:
            self.closed.set()
            pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(NodeGone(self.node_id))
        self.outbox.put(None)


def clean_version(text: str) -> str:
    """A node's self-reported version as kept and shown: printable, at most ``MAX_VERSION_CHARS``."""
    text = "".join(c if c.isprintable() else "\ufffd" for c in text)
    return text[:MAX_VERSION_CHARS]


@dataclass(frozen=True)
class NodeState:
    """What the coordinator knows of one node, connected or not (the operator dashboard's rows)."""

    node_id: str
    connected: bool  # an open link that heartbeats
    link_open: bool  # the link is open, whether or not heartbeats still arrive
    last_seen: float  # unix seconds of the last message on the link
    connected_since: float  # unix seconds the latest link opened
    version: str
    datasets: tuple[str, ...]


class Sessions(Protocol):
    """What a job run needs of the registry: the connected sessions (``Registry``, or a view of it
    that stamps a project on every job, ``coordinator.projects.ProjectRegistry``)."""

    def sessions(self) -> list[NodeSession]: ...

    def get(self, node_id: str) -> NodeSession | None: ...


class Registry:
    """Thread-safe map of node id -> live session; a reconnecting node replaces its old session."""

    def __init__(self, heartbeat_seconds: float) -> None:
        self.heartbeat_seconds = heartbeat_seconds
        self._sessions: dict[str, NodeSession] = {}
        self._known: dict[str, float] = {}
        # The last version and datasets a node announced, kept after it disconnects.
        self._announced: dict[str, tuple[str, tuple[str, ...], float]] = {}
        self._lock = threading.Lock()

    def register(self, session: NodeSession) -> None:
        with self._lock:
            old = self._sessions.get(session.node_id)
            self._sessions[session.node_id] = session
            self._known[session.node_id] = session.last_seen
            self._announced[session.node_id] = (
                session.version,
                tuple(d.name for d in session.datasets),
                session.connected_since,
            )
        if old is not None:
            old.close()

    def unregister(self, session: NodeSession) -> None:
        with self._lock:
            if self._sessions.get(session.node_id) is session:
                del self._sessions[session.node_id]
            self._known[session.node_id] = session.last_seen
        session.close()

    def alive(self, session: NodeSession) -> bool:
        # Three missed heartbeats and the node counts as gone even if TCP has not noticed yet.
        return not session.closed.is_set() and time.time() - session.last_seen < 3 * self.heartbeat_seconds

    def sessions(self) -> list[NodeSession]:
        with self._lock:
            return [s for s in self._sessions.values() if self.alive(s)]

    def get(self, node_id: str) -> NodeSession | None:
        with self._lock:
            session = self._sessions.get(node_id)
        return session if session is not None and self.alive(session) else None

    def absent(self, dataset: str) -> list[tuple[str, float]]:
        """Nodes that announced ``dataset`` but are not connected now, with seconds since last heard.

        A query names them among the missing, so an answer without a partner says so.
        """
        now = time.time()
        with self._lock:
            sessions = dict(self._sessions)
            known = dict(self._known)
            announced = dict(self._announced)
        out = []
        for node_id, (_, datasets, _) in sorted(announced.items()):
            session = sessions.get(node_id)
            if dataset not in datasets or (session is not None and self.alive(session)):
                continue
            last_seen = session.last_seen if session is not None else known.get(node_id, now)
            out.append((node_id, max(0.0, now - last_seen)))
        return out

    def forget(self, node_id: str) -> str:
        """Drop a disconnected node's entry: "forgotten", "connected" (kept) or "unknown"."""
        with self._lock:
            session = self._sessions.get(node_id)
            if session is not None and self.alive(session):
                return "connected"
            if node_id not in self._known and session is None:
                return "unknown"
            self._known.pop(node_id, None)
            self._announced.pop(node_id, None)
            self._sessions.pop(node_id, None)
            return "forgotten"

    def forget_node(self, node_id: str) -> None:
        """``forget``, or a FederationError naming why not (node_connected, unknown_node)."""
        outcome = self.forget(node_id)
        if outcome == "connected":
            raise FederationError(
                "node_connected", f"node {node_id} is connected: stop it before forgetting it"
            )
        if outcome == "unknown":
            raise FederationError("unknown_node", f"no node {node_id} is known")

    def states(self) -> list[NodeState]:
        """Every node known since start (or since it was forgotten), by name, connected or not."""
        with self._lock:
            sessions = dict(self._sessions)
            known = dict(self._known)
            announced = dict(self._announced)
        out = []
        for node_id in sorted(set(known) | set(sessions)):
            version, datasets, since = announced.get(node_id, ("", (), 0.0))
            s = sessions.get(node_id)
            last_seen = s.last_seen if s is not None else known[node_id]
            out.append(
                NodeState(
                    node_id=node_id,
                    connected=s is not None and self.alive(s),
                    link_open=s is not None and not s.closed.is_set(),
                    last_seen=last_seen,
                    connected_since=s.connected_since if s is not None else since,
                    version=version,
                    datasets=datasets,
                )
            )
        return out

    def status(self) -> list[pb.NodeStatus]:
        with self._lock:
            sessions = dict(self._sessions)
            known = dict(self._known)
        out = []
        for node_id in sorted(set(known) | set(sessions)):
            s = sessions.get(node_id)
            if s is not None:
                out.append(
                    pb.NodeStatus(
                        node_id=node_id,
                        connected=self.alive(s),
                        last_seen_unix_ms=int(s.last_seen * 1000),
                        connected_since_unix_ms=int(s.connected_since * 1000),
                        datasets=[d.name for d in s.datasets],
                    )
                )
            else:
                out.append(
                    pb.NodeStatus(
                        node_id=node_id, connected=False, last_seen_unix_ms=int(known[node_id] * 1000)
                    )
                )
        return out


def listed(outcomes: Iterable[pb.NodeOutcome]) -> str:
    """Nodes and how each ended, as refusals name them: "kmar: timeout (did not answer within 2s)"."""
    return "; ".join(f"{o.node}: {o.status} ({o.reason})" for o in outcomes)


def name_absent(response: Answer, absent: list[tuple[str, float]]) -> None:
    """Name the nodes that serve the dataset but were not connected among the answer's outcomes.

    Without them a partial answer or a ``min_nodes`` refusal would not say which partner is absent.
    """
    named = {o.node for o in response.nodes}
    extra = [
        pb.NodeOutcome(
            node=node, status="disconnected", reason=f"not connected: last heard {seconds:.0f}s ago"
        )
        for node, seconds in absent
        if node not in named
    ]
    response.nodes.extend(extra)
    if extra and not response.ok and response.error_rule in ("min_nodes", "secure_min_nodes"):
        response.error = f"{response.error.rstrip('; ')}; {listed(extra)}"
