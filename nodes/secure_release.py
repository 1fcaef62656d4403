"""The node's side of a secure query: its release path ends in a masked SecAgg input, not a result.

    validate -> compute -> protect (distributed noise, no per-node suppression) -> account
    -> SecAgg rounds 1-4 -> audit "released" with the masked vector's digest -> masked input

Secure aggregation is SecAgg (Bonawitz et al., CCS 2017) with the SecAgg+ graph (Bell et al.,
CCS 2020), see protocols/secagg.py. Noise is the distributed discrete Gaussian of Kairouz, Liu &
Steinke 2021, drawn by OpenDP through privacy/dp.py: the shares of the nodes in the sum add up
to one curator's noise; an epsilon request is served at rho = epsilon^2 / 2
(privacy/distributed.py). A dataset whose policy requires node-level suppression refuses. Suppression is decided by the coordinator on the summed noisy unit count, since
no single node's counts are ever seen; when the query names its DP budget and asks for COUNT(*)
but not COUNT(DISTINCT unit), on the summed noisy COUNT(*) against a threshold in rows, and the
node skips the distinct-unit scan (``reuses_count``).

Per-job protocol state lives in memory only (``nodes.secagg_steps.RunningJobs``: at most
``MAX_JOBS`` secure jobs at once, each for at most ``JOB_TTL_SECONDS``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from nodes.context import NodeContext
from nodes.differencing import Reservation
from nodes.protect import Budget, exact_columns, resolve_budget
from nodes.release import DEFAULT_PROJECT, compute, spec_summary
from nodes.secagg_steps import RunningJobs, answer_step, roster_config
from nodes.validate import Plan, Refused, validate
from privacy.accounting import Cost, epsilon_at_delta
from privacy.agreements import MEASURE_KIND, count_stands_in, layout
from privacy.distributed import secure_rho
from privacy.dp import NoisePlan, integer_noise_share, plan_noise, release_counts
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.fixed_point import FixedPointCodec
from protocols.lazy import lazy_module
from protocols.secagg import SecAggClient, SecAggConfig
from protocols.values import to_value

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy")

BITS = 64
# A group sum must fit 2^24 rows at the bound of largest magnitude on the fixed-point grid, and
# the grid must stay exact in float64 (2^53) when the coordinator decodes it.
ROWS_CAP = 1 << 24
_FLOAT_EXACT = 1 << 53


# --------------------------------------------------------------------------- signing key


def verify_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Block:
    """One measured quantity over every group; ``values`` are integers on its grid."""

    role: str  # value | avg_count | threshold
    aggregate: int  # -1: the threshold-only distinct-unit count
    kind: str  # count | count_distinct | sum
    scale: float  # grid steps per unit
    values: list[int] = field(default_factory=list)


def grid_scale(bounds: tuple[float, float]) -> float:
    """Fixed-point steps per unit for a SUM: the finest power of ten (up to 10^6) at which a group
    sum of ``ROWS_CAP`` rows at the bounds stays below 2^53."""
    largest = max(abs(bounds[0]), abs(bounds[1]), 1e-300)
    for digits in range(6, -1, -1):
        if largest * 10**digits * ROWS_CAP <= _FLOAT_EXACT:
            return float(10**digits)
    return 1.0


def reuses_count(plan: Plan, request: pb.PrivacyRequest) -> bool:
    """Whether COUNT(*) stands in for the distinct-unit block: decided from the query alone, as
    the coordinator decides it (``privacy.agreements.count_stands_in``)."""
    return count_stands_in({a.function for a in plan.aggregates}, request)


def measurements(plan: Plan, reuse_count: bool = False) -> list[tuple[str, int, str]]:
    """(role, aggregate, kind) per block: the layout the coordinator expects
    (``privacy.agreements.layout``)."""
    return [(b.role, b.aggregate, b.kind) for b in layout([a.function for a in plan.aggregates], reuse_count)]


def exact_blocks(
    plan: Plan, exact_rows: list[int], units: list[int], numeric: dict, reuse_count: bool = False
) -> list[Block]:
    """Exact per-group integers of every block; sums are put on their fixed-point grid."""
    blocks = []
    for role, i, kind in measurements(plan, reuse_count):
        scale = 1.0
        if kind == "count_distinct":
            values = list(units)
        elif kind == "count":
            values = list(numeric[i][1]) if role == "avg_count" else list(exact_rows)
        else:
            bounds = plan.aggregates[i].bounds  # the query's clamping: declared, or tighter
            assert bounds is not None
            scale = grid_scale(bounds)
            cap = max(abs(bounds[0]), abs(bounds[1])) * ROWS_CAP
            codec = FixedPointCodec(lo=-cap, hi=cap, scale=scale, bits=BITS)
            # A group sum beyond the cap (more than 2^24 rows at the bound) is clamped, never
            # refused: a refusal decided on an exact sum would be a free answer about the data.
            # Clamping is 1-Lipschitz, so the sum's sensitivity and its noise stay as planned.
            # The codec rounds onto the grid; on 64 bits the two's-complement word read as int64
            # is that grid integer.
            sums = np.clip(np.asarray(numeric[i][0], dtype=np.float64), -cap, cap)
            grid = codec.encode(sums).view(np.int64)
            values = [int(v) for v in grid]
        blocks.append(Block(role, i, kind, scale, [int(v) for v in values]))
    return blocks


def _noise_plan(plan: Plan, budget: Budget, blocks: list[Block], max_rows: int) -> NoisePlan:
    kinds: list[tuple[str, tuple[float, float] | None]] = []
    for i, agg in enumerate(plan.aggregates):
        kind = MEASURE_KIND[agg.function]
        bounds = None
        if kind in ("sum", "avg"):
            assert agg.bounds is not None
            step = 1.0 / next(b.scale for b in blocks if b.aggregate == i)
            lo, hi = agg.bounds
            # The group sum, not each row, is rounded to the grid: one more step of sensitivity.
            bounds = (lo - step, hi + step)
        kinds.append((kind, bounds))
    # The blocks say whether COUNT(*) stands in for the distinct-unit block; the plan must agree.
    separate = any(b.role == "threshold" for b in blocks)
    return plan_noise(
        kinds,
        max_rows,
        epsilon=budget.epsilon,
        rho=budget.rho,
        n_groups=len(plan.keys),
        reuse_count=not separate,
    )


def add_noise(
    plan: Plan, budget: Budget, blocks: list[Block], n_nodes: int, trusted: int, max_rows: int
) -> tuple[list[pb.SecureComponent], Cost]:
    """Add this node's share of distributed integer noise to every block (in place)."""
    components = [
        pb.SecureComponent(role=b.role, aggregate=b.aggregate, kind=b.kind, scale=b.scale) for b in blocks
    ]
    if not budget.dp:
        return components, Cost(epsilon=0.0, rho=0.0)
    noise = _noise_plan(plan, budget, blocks, max_rows)
    measured = [c for c in noise.components if not (c.role == "threshold" and c.aggregate is not None)]
    for block, component, out in zip(blocks, measured, components, strict=True):
        if (component.role, component.spec.kind) != (block.role, block.kind):
            raise FederationError("secure_layout", "noise plan and block layout disagree")
        share = integer_noise_share(n_nodes, component.spec, trusted=trusted, fixed_point_scale=block.scale)
        block.values[:] = release_counts(block.values, share.per_node)
        out.mechanism = share.per_node.mechanism
        out.noise_scale = share.per_node.scale
        out.noise_sd = share.per_node.sd
        out.parts = share.per_node.parts
    return components, noise.cost


# --------------------------------------------------------------------------- per-job state


@dataclass
class SecureJob:
    client: SecAggClient
    vector: npt.NDArray[np.uint64] | None
    dataset: str
    project: str
    cost: Cost
    groups: int
    started: float
    charged: bool = False  # exact jobs have nothing to charge
    requested_by: str = ""
    differencing: Reservation | None = None  # exact contributions on record (nodes/differencing.py)
    lock: threading.Lock = field(default_factory=threading.Lock)


class SecureRelease:
    """Runs secure-query steps for one node; a refused step raises, the router answers."""

    def __init__(self, ctx: NodeContext, clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.signing_key = ctx.secagg_key
        self.verify_key = verify_key_bytes(ctx.secagg_key)
        self.clock = clock
        self.jobs: RunningJobs[SecureJob] = RunningJobs(self.config.node_id, "secure job", clock)

    def handle(self, job: pb.JobRequest) -> pb.JobResponse:
        step = job.secure
        try:
            if step.round == 0:
                return self._start(job, step)
            return self._continue(job, step)
        except (ValueError, OverflowError) as exc:
            # Malformed bytes or values from the wire end the job with a reason, not a stack trace.
            raise FederationError(
                "secure_malformed",
                f"node {self.ctx.node_id}: malformed secure step ({exc})",
                self.ctx.node_id,
            ) from None

    def abandon(self, job: pb.JobRequest) -> None:
        """A failed round ends the job here (fail closed); a refused start registered nothing, and
        must not end a running job that happens to share its id."""
        if job.secure.round != 0:
            self.jobs.drop(job.secure.job_id)

    # ------------------------------------------------------------------ round 0

    def _refused(self, rule: str, message: str) -> Refused:
        return Refused(rule, message, node=self.config.node_id)

    def _secagg_config(self, step: pb.SecureStep, dim: int) -> tuple[SecAggConfig, dict[str, bytes]]:
        return roster_config(
            self.config.node_id, self.verify_key, step.job_id, step.config, dim, BITS, "secure queries"
        )

    def _start(self, job: pb.JobRequest, step: pb.SecureStep) -> pb.JobResponse:
        node = self.config.node_id
        spec = step.query
        self.jobs.admit(step.job_id)
        self.ctx.audit.append(
            "received",
            step.job_id,
            {"requested_by": job.requested_by, "spec": spec_summary(spec), "secure": True},
        )
        # The bounding figures are not released under secure aggregation: nothing computes them.
        plan = replace(validate(spec, self.config), diagnostics=False)
        dataset = plan.dataset
        if any(a.function not in MEASURE_KIND for a in plan.aggregates) or spec.derived:
            raise self._refused(
                "unsupported_under_secure",
                "under secure aggregation only COUNT(*), COUNT(DISTINCT unit), SUM and AVG over category "
                "groups are released; ask VARIANCE, STDDEV, MEDIAN, PERCENTILE_CONT and histogram or "
                "date-part keys without secure=True",
            )
        if any(a.bound_quantile for a in plan.aggregates):
            # Every share must be calibrated to the same bounds; a clamp each node chose differs.
            raise self._refused(
                "bound_quantile",
                "bounds chosen by a DP quantile are not available under secure aggregation; give bounds",
            )
        n = len(step.config.node_ids)
        if n < dataset.policy.secure_min_nodes:
            raise self._refused(
                "secure_min_nodes",
                f"dataset {dataset.name} joins secure aggregations of at least "
                f"{dataset.policy.secure_min_nodes} nodes; this one has {n}",
            )
        if node not in step.config.node_ids:
            raise self._refused("secagg_unknown_node", f"node {node} is not in the roster of this job")
        if dataset.policy.suppression == "node":
            raise self._refused(
                "suppression_node",
                f'dataset {dataset.name} requires node-level suppression (policy suppression = "node"), '
                "which a secure sum cannot give; ask without secure=True",
            )
        budget = resolve_budget(spec.privacy, dataset, node)
        if budget.dp:
            # One curator's noise, split in discrete Gaussian shares (privacy/distributed.py).
            budget = Budget(rho=secure_rho(budget.epsilon, budget.rho))
        reuse = reuses_count(plan, spec.privacy) and budget.dp
        # Without a distinct-unit block the costly distinct scan is skipped.
        rows, units, numeric = exact_columns(plan, compute(plan, self.ctx.sources, units=not reuse))
        project = spec.project or DEFAULT_PROJECT
        # Differencing defence (exact contributions): refuse, or on record as pending.
        reserved = self.ctx.differencing.check_secure(
            step.job_id, plan, project, budget.dp, self.ctx.sources, units
        )
        blocks = exact_blocks(plan, rows, units, numeric, reuse)
        dim = len(blocks) * len(plan.keys)
        config, keys = self._secagg_config(step, dim)
        # Every participant calibrates to the largest contribution bound, so each unit is covered.
        max_rows = max(plan.rows_per_unit, step.config.max_rows_per_unit)
        components, cost = add_noise(plan, budget, blocks, n, config.threshold, max_rows)
        flat = np.asarray([v for b in blocks for v in b.values], dtype=np.int64)
        vector = FixedPointCodec(lo=-(2**62) // n, hi=2**62 // n, bits=BITS, max_parties=n).encode(flat)
        reply = pb.SecureReply(job_id=step.job_id, round=0)
        if budget.dp:
            # Only checked here: the charge comes with the masked input (round 3), the first thing
            # computed from the data that leaves, so a job that fails before costs nothing.
            self.ctx.ledger.charge(step.job_id, dataset.name, project, cost, dry_run=True)
            reply.cost.delta = self.ctx.ledger.delta(dataset.name, project)
            reply.cost.epsilon = cost.epsilon if cost.pure else epsilon_at_delta(cost.rho, reply.cost.delta)
            reply.cost.rho = cost.rho
        client = SecAggClient(config, node, self.signing_key, keys)
        reply.payload = client.advertise().to_bytes()
        for key in plan.keys:
            reply.keys.add().key.extend(to_value(k) for k in key)
        reply.components.extend(components)
        self.jobs.add(
            step.job_id,
            SecureJob(
                client,
                vector,
                dataset.name,
                project,
                cost,
                len(plan.keys),
                self.clock(),
                charged=not budget.dp,
                requested_by=job.requested_by,
                differencing=reserved,
            ),
        )
        return pb.JobResponse(job_id=job.job_id, secure=reply)

    # ------------------------------------------------------------------ rounds 2-4

    def _continue(self, job: pb.JobRequest, step: pb.SecureStep) -> pb.JobResponse:
        state = self.jobs.running(step.job_id)
        reply = pb.SecureReply(job_id=step.job_id, round=step.round)
        answer_step(
            self.ctx,
            step.job_id,
            state,
            step.round,
            bytes(step.payload),
            reply,
            {"groups": state.groups},
            done=lambda: self.jobs.drop(step.job_id),
            released=lambda: self.ctx.differencing.record(state.differencing),
        )
        return pb.JobResponse(job_id=job.job_id, secure=reply)

    def active(self) -> int:
        return len(self.jobs)


__all__ = [
    "SecureRelease",
    "grid_scale",
    "measurements",
    "reuses_count",
    "verify_key_bytes",
]
