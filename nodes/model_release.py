"""The node's side of a model job: every round's statistics leave only as a masked SecAgg input.

    validate (plan_model, trainer check, iteration cap, budget) -> read the design (own engine)
    -> guards (parameters vs rows, outcome and level group sizes) -> trainer statistics
    -> distributed Gaussian noise share (DP) -> wide fixed point -> account -> SecAgg rounds 1-4
    -> audit "released" with the masked vector's digest

One round is one secure aggregation (SecAgg, Bonawitz et al. CCS 2017, with the SecAgg+ graph of
Bell et al. CCS 2020; protocols/secagg.py), with its own job id. Under DP the job's budget rho
(an epsilon request is served at epsilon^2 / 2, privacy/distributed.py) is split evenly over the
spec's ``max_iterations`` rounds and each round is charged as it releases (zCDP composes by
addition, Bun & Steinke 2016); within a round, evenly over its blocks. Guards follow DataSHIELD's
ds.glm disclosure checks (nfilter.glm, nfilter.tab); since they read the data, the node refuses
with one rule whichever of them fired, and names no count (docs/modelling.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.protobuf.json_format import MessageToDict

import nodes.trainers.glm  # noqa: F401  (registers the glm trainer)
import nodes.trainers.sgd_catalogue  # noqa: F401  (registers logistic, softmax and mlp)
from nodes.context import NodeContext
from nodes.model_design import (
    Design,
    DesignCache,
    ModelPlan,
    design_key,
    plan_model,
    read_design,
    tightened_bounds,
)
from nodes.protect import Budget, resolve_budget
from nodes.release import DEFAULT_PROJECT
from nodes.secagg_steps import RunningJobs, answer_step, roster_config
from nodes.secure_release import verify_key_bytes
from nodes.trainers.registry import StatBlock, trainer_for
from nodes.validate import Refused
from privacy.accounting import Cost, epsilon_at_delta
from privacy.distributed import secure_rho
from privacy.dp import gaussian_vector_share, release_counts
from protocols import federation_pb2 as pb
from protocols import wide_fixed_point as wide
from protocols.errors import FederationError
from protocols.lazy import lazy_module
from protocols.secagg import SecAggClient, SecAggConfig

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy")

BITS = 64
MAX_ITERATIONS = 100  # a node runs no model job past this many rounds, whatever the spec says
DEFAULT_ITERATIONS = 25  # R's glm.control(maxit = 25)
PARAMETER_RATIO = 0.33  # DataSHIELD nfilter.glm: parameters at most this share of the rows
EXACT_FRACTION_BITS = 40  # exact releases: statistics on a 2^-40 grid
NOISE_GRID_STEPS = 1024.0  # DP releases: the grid is chosen so the noise sd spans about this many steps


def iterations_of(spec: pb.ModelSpec) -> int:
    return int(spec.max_iterations) or DEFAULT_ITERATIONS


@dataclass
class ModelJob:
    client: SecAggClient
    vector: npt.NDArray[np.uint64] | None
    dataset: str
    project: str
    cost: Cost
    model_id: str
    iteration: int
    trainer: str
    started: float
    charged: bool
    requested_by: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


def _power_of_two(x: float) -> float:
    return float(2.0 ** math.floor(math.log2(x)))


class ModelRelease:
    """Runs model-round steps for one node; a refused step raises, the router answers."""

    def __init__(self, ctx: NodeContext, clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.signing_key = ctx.secagg_key
        self.verify_key = verify_key_bytes(ctx.secagg_key)
        self.clock = clock
        self.designs = DesignCache()
        self.jobs: RunningJobs[ModelJob] = RunningJobs(self.config.node_id, "model round", clock)

    def handle(self, job: pb.JobRequest) -> pb.JobResponse:
        step = job.model
        try:
            if step.round == 0:
                return self._start(job, step)
            return self._continue(job, step)
        except (ValueError, OverflowError) as exc:
            raise FederationError(
                "secure_malformed", f"node {self.ctx.node_id}: malformed model step ({exc})", self.ctx.node_id
            ) from None

    def abandon(self, job: pb.JobRequest) -> None:
        if job.model.round != 0:
            self.jobs.drop(job.model.job_id)

    # ------------------------------------------------------------------ round 0

    def _refused(self, rule: str, message: str) -> Refused:
        return Refused(rule, message, node=self.config.node_id)

    def _guards(self, plan: ModelPlan, design: Design, parameters: int) -> None:
        """DataSHIELD's disclosure checks on the rows; one rule for all (they read the data).
        ``parameters``: the trainer's count, which for an MLP exceeds the design's columns."""
        mgs = plan.dataset.policy.min_group_size
        failed = max(plan.size, parameters) > PARAMETER_RATIO * design.n
        if plan.event is not None or (plan.spec.trainer in ("", "glm") and plan.spec.family == "binomial"):
            events = int(np.sum(design.y > 0.5))
            failed = failed or min(events, design.n - events) < mgs
        if plan.classes:  # every outcome class of a softmax or mlp outcome, as for a binary one
            per_class = np.bincount(np.rint(design.y).astype(np.int64), minlength=len(plan.classes))
            failed = failed or int(per_class.min()) < mgs
        failed = failed or any(count < mgs for count in design.level_counts.values())
        if failed:
            raise self._refused(
                "model_disclosure",
                f"the model does not pass node {self.config.node_id}'s disclosure checks on dataset "
                f"{plan.dataset.name}: at most {PARAMETER_RATIO:g} x rows parameters, and at least "
                f"{mgs} rows in each outcome class and each category level of the design",
            )

    def _layout(
        self, stats: list[StatBlock], rho: float | None, n_nodes: int, trusted: int
    ) -> tuple[list[pb.ModelBlock], list[int]]:
        """The public layout and the grid integers (with this node's noise share under DP)."""
        blocks, grid = [], []
        for block in stats:
            out = pb.ModelBlock(name=block.name, length=len(block.values))
            if rho is None:
                out.scale = float(2**EXACT_FRACTION_BITS)
                grid.extend(wide.to_grid(block.values, out.scale))
            else:
                if not block.l2 > 0:
                    raise FederationError("model_trainer", f"block {block.name} states no sensitivity")
                share_rho = rho / len(stats)
                sigma = block.l2 / math.sqrt(2.0 * share_rho)
                out.scale = _power_of_two(NOISE_GRID_STEPS / sigma)
                # Rounding each entry to the grid moves it by at most half a step: one more step of
                # sensitivity per entry, in L2 sqrt(length) (as for fixed-point sums).
                l2_grid = block.l2 * out.scale + math.sqrt(len(block.values))
                share = gaussian_vector_share(n_nodes, l2_grid, share_rho, trusted=trusted)
                values = wide.to_grid(block.values, out.scale)
                grid.extend(release_counts(values, share.per_node))
                out.l2 = block.l2
                out.mechanism = share.per_node.mechanism
                out.noise_sd = share.per_node.sd / out.scale
                out.parts = share.per_node.parts
            blocks.append(out)
        return blocks, grid

    def _secagg_config(self, step: pb.ModelStep, dim: int) -> tuple[SecAggConfig, dict[str, bytes]]:
        return roster_config(
            self.config.node_id, self.verify_key, step.job_id, step.config, dim, BITS, "model rounds", True
        )

    def _start(self, job: pb.JobRequest, step: pb.ModelStep) -> pb.JobResponse:
        node = self.config.node_id
        spec = step.spec
        self.jobs.admit(step.job_id, model=step.model_id)
        self.ctx.audit.append(
            "received",
            step.job_id,
            {
                "requested_by": job.requested_by,
                "model": MessageToDict(spec, preserving_proto_field_name=True),
                "model_id": step.model_id,
                "iteration": step.iteration,
                "secure": True,
            },
        )
        plan = plan_model(spec, self.config)
        dataset = plan.dataset
        trainer = trainer_for(spec.trainer or "glm", node)
        trainer.check(plan, node)
        cap = min(iterations_of(spec), MAX_ITERATIONS)
        if not 1 <= step.iteration <= cap:
            raise self._refused(
                "model_iterations",
                f"round {step.iteration} is past the model's iteration cap of {cap} "
                f"(the spec asks {iterations_of(spec)}, node {node} allows at most {MAX_ITERATIONS})",
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
        budget = resolve_budget(spec.privacy, dataset, node)
        rho: float | None = None
        if budget.dp:
            rho = secure_rho(budget.epsilon, budget.rho) / cap
            budget = Budget(rho=rho)
        elif tightened_bounds(plan):
            raise self._refused(
                "bounds_need_dp",
                "tighter bounds or fewer rows per unit are only allowed with differential privacy",
            )
        parameters = np.asarray(list(step.parameters), dtype=np.float64)
        expected = trainer.parameter_count(plan)
        if len(parameters) not in (0, expected) or not np.all(np.isfinite(parameters)):
            raise self._refused(
                "model_parameters",
                f"a round of this model carries 0 or {expected} finite parameters, got {len(parameters)}",
            )
        design = self.designs.get(
            design_key(step.model_id, spec), lambda: read_design(plan, self.ctx.sources)
        )
        self._guards(plan, design, expected)
        stats = trainer.statistics(plan, design, parameters, rho is not None)
        t = step.config.threshold
        blocks, grid = self._layout(stats, rho, n, t)
        vector = wide.encode(grid)
        config, keys = self._secagg_config(step, len(vector))
        project = spec.project or DEFAULT_PROJECT
        cost = Cost(epsilon=0.0, rho=rho or 0.0)
        reply = pb.ModelReply(job_id=step.job_id, iteration=step.iteration, round=0, limbs=wide.LIMBS)
        if rho is not None:
            # Only checked here: the charge comes with the masked input (round 3).
            self.ctx.ledger.charge(step.job_id, dataset.name, project, cost, dry_run=True)
            reply.cost.delta = self.ctx.ledger.delta(dataset.name, project)
            reply.cost.epsilon = epsilon_at_delta(cost.rho, reply.cost.delta)
            reply.cost.rho = cost.rho
        client = SecAggClient(config, node, self.signing_key, keys)
        reply.payload = client.advertise().to_bytes()
        reply.blocks.extend(blocks)
        reply.terms.extend(t.name for t in plan.terms)
        self.jobs.add(
            step.job_id,
            ModelJob(
                client,
                vector,
                dataset.name,
                project,
                cost,
                step.model_id,
                step.iteration,
                spec.trainer or "glm",
                self.clock(),
                charged=rho is None,
                requested_by=job.requested_by,
            ),
        )
        return pb.JobResponse(job_id=job.job_id, model=reply)

    # ------------------------------------------------------------------ rounds 2-4

    def _continue(self, job: pb.JobRequest, step: pb.ModelStep) -> pb.JobResponse:
        state = self.jobs.running(step.job_id)
        reply = pb.ModelReply(job_id=step.job_id, iteration=state.iteration, round=step.round)
        audit = {"model_id": state.model_id, "iteration": state.iteration, "trainer": state.trainer}
        answer_step(
            self.ctx,
            step.job_id,
            state,
            step.round,
            bytes(step.payload),
            reply,
            audit,
            done=lambda: self.jobs.drop(step.job_id),
        )
        return pb.JobResponse(job_id=job.job_id, model=reply)


__all__ = ["DEFAULT_ITERATIONS", "MAX_ITERATIONS", "ModelRelease", "iterations_of"]
