"""A node's SecAgg+ rounds 2-4 (Bell et al. 2020) for any job whose input vector is ready: share
keys, charge then mask then audit, unmask. Secure queries and model rounds both answer through it,
so the order that protects the budget and the log is written once: the ledger is charged before the
masked input exists, and the "released" entry is durable before it leaves the node.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from nodes.context import NodeContext
from nodes.validate import Refused
from privacy.accounting import Cost
from protocols import federation_pb2 as pb
from protocols import secagg_messages as m
from protocols.lazy import lazy_module
from protocols.secagg import SecAggClient, SecAggConfig
from protocols.secagg_errors import SecAggError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy")


def roster_config(
    node: str,
    verify_key: bytes,
    job_id: str,
    cfg: pb.SecureConfig,
    dim: int,
    bits: int,
    what: str,
    sized_by_node: bool = False,
) -> tuple[SecAggConfig, dict[str, bytes]]:
    """The SecAgg config of a job from its roster, refused unless the roster carries this node's own
    verification key, the ring is ``bits`` wide and the vector has this node's ``dim`` entries
    (``sized_by_node``: a declared 0 means "as each node lays it out")."""
    ids = list(cfg.node_ids)
    if len(cfg.verify_keys) != len(ids):
        raise Refused("secure_config", "the roster and its verification keys do not match", node=node)
    keys = dict(zip(ids, (bytes(k) for k in cfg.verify_keys), strict=True))
    if keys.get(node) != verify_key:
        raise Refused(
            "secagg_inconsistent", f"the roster does not carry node {node}'s own verification key", node=node
        )
    if cfg.bits != bits:
        raise Refused("secure_config", f"{what} run in a 2^{bits} ring, not 2^{cfg.bits}", node=node)
    if cfg.dim != dim and not (sized_by_node and cfg.dim == 0):
        raise Refused(
            "secure_layout",
            f"the job declares {cfg.dim} vector entries, this node's layout has {dim}",
            node=node,
        )
    return SecAggConfig(job_id, tuple(ids), cfg.threshold, cfg.neighbours, dim, bits=bits), keys


class MaskedJob(Protocol):
    client: SecAggClient
    vector: npt.NDArray[np.uint64] | None
    dataset: str
    project: str
    cost: Cost
    charged: bool
    requested_by: str
    lock: threading.Lock


# Per-job SecAgg state lives in memory only, for at most JOB_TTL_SECONDS, and at most MAX_JOBS
# jobs of a kind run at once at a node.
JOB_TTL_SECONDS = 300.0
MAX_JOBS = 8
MAX_ID_CHARS = 128


class _Started(Protocol):
    started: float


S = TypeVar("S", bound=_Started)


class RunningJobs(Generic[S]):
    """A node's jobs of one kind between their round 0 and their last SecAgg round.

    Bounded in number (``MAX_JOBS``, ``secure_busy``) and in age: a job older than
    ``JOB_TTL_SECONDS`` is forgotten, and a later round for it is refused (``secure_unknown_job``),
    so an abandoned job holds no key material for long.
    """

    def __init__(self, node: str, kind: str, clock: Callable[[], float]) -> None:
        self.node = node
        self.kind = kind  # "secure job", "model round": as the refusals name it
        self.clock = clock
        self._jobs: dict[str, S] = {}
        self._lock = threading.Lock()

    def _refused(self, rule: str, message: str) -> Refused:
        return Refused(rule, message, node=self.node)

    def admit(self, job_id: str, **ids: str) -> None:
        """Before round 0's work: the ids are well formed, the job is new and there is room."""
        now = self.clock()
        with self._lock:
            for old in [j for j, s in self._jobs.items() if now - s.started > JOB_TTL_SECONDS]:
                del self._jobs[old]
            for name, value in {"job": job_id, **ids}.items():
                if not value or ":" in value or len(value) > MAX_ID_CHARS:
                    raise self._refused("secure_job_id", f"{name} id {value!r} is empty or malformed")
            if job_id in self._jobs:
                raise self._refused("secure_duplicate", f"{self.kind} {job_id} is already running")
            if len(self._jobs) >= MAX_JOBS:
                raise self._refused("secure_busy", f"node {self.node} already runs {MAX_JOBS} {self.kind}s")

    def add(self, job_id: str, state: S) -> None:
        """After round 0's work: the job's state, unless the same id started meanwhile."""
        with self._lock:
            if job_id in self._jobs:
                raise self._refused("secure_duplicate", f"{self.kind} {job_id} is already running")
            self._jobs[job_id] = state

    def running(self, job_id: str) -> S:
        """The state of a running job; an unknown or expired one is dropped and refused."""
        with self._lock:
            state = self._jobs.get(job_id)
        if state is None or self.clock() - state.started > JOB_TTL_SECONDS:
            self.drop(job_id)
            raise self._refused("secure_unknown_job", f"no running {self.kind} {job_id} (unknown or expired)")
        return state

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)


def answer_step(
    ctx: NodeContext,
    job_id: str,
    state: MaskedJob,
    rnd: int,
    payload: bytes,
    reply: Any,
    audit: Mapping[str, object],
    done: Callable[[], None],
    released: Callable[[], None] | None = None,
) -> None:
    """Fill ``reply`` (payload, and audit_digest for the masked input) for round ``rnd``.

    ``audit`` is what the "released" entry says beyond dataset, project, digest and cost;
    ``released`` runs after that entry is written; ``done`` forgets the job after unmasking."""
    with state.lock:
        if rnd == m.ROUND_SHARE_KEYS:
            reply.payload = state.client.share_keys(payload).to_bytes()
        elif rnd == m.ROUND_MASKED_INPUT:
            if state.vector is None:
                raise SecAggError("secagg_wrong_round", "the masked input was already sent")
            if not state.charged:
                # Charged before the masked input leaves; never twice for one job id.
                ctx.ledger.charge(job_id, state.dataset, state.project, state.cost, note=state.requested_by)
                state.charged = True
            masked = state.client.masked_input(payload, state.vector).to_bytes()
            state.vector = None
            reply.audit_digest = hashlib.sha256(masked).hexdigest()
            # Durable before the masked input leaves the node.
            ctx.audit.append(
                "released",
                job_id,
                {
                    "dataset": state.dataset,
                    "project": state.project,
                    "digest": reply.audit_digest,
                    **audit,
                    "secure": True,
                    "epsilon": state.cost.epsilon,
                    "rho": state.cost.rho,
                },
            )
            if released is not None:
                released()
            reply.payload = masked
        elif rnd == m.ROUND_UNMASK:
            reply.payload = state.client.unmask(payload).to_bytes()
            done()
        else:
            raise SecAggError("secagg_wrong_round", f"there is no secure step {rnd}")
