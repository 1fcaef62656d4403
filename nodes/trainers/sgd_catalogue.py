"""The SGD trainers in the node's catalogue: ``logistic``, ``softmax`` and ``mlp``.

One round of a Flower-driven model job (federation/flower_grid.py) runs here: the design comes
from nodes/model_design.py (numeric covariates clamped and scaled to [-1, 1] by their bounds,
categories dummy-coded from the public domain, intercept first) and the statistics are those of
nodes/trainers/sgd.py, released block by block through secure aggregation:

    exact:  weighted_params (n_k w_k), weight (n_k), loss (summed cross-entropy at the sent w)
    DP:     update_sum (sum of per-unit clipped updates, L2 <= clip_norm), weight (units, L2 1),
            loss (per-unit capped, L2 <= rows_per_unit * LOSS_CAP)

so one privacy unit moves each block by its stated L2 amount and the distributed Gaussian noise
of DP-FedAvg (McMahan et al., ICLR 2018) is planned from the spec alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nodes.model_design import Design, ModelPlan
from nodes.trainers.registry import StatBlock, register
from nodes.trainers.sgd import (
    LOSS_CAP,
    Model,
    SgdParams,
    build_model,
    initial_parameters,
    round_statistics,
)
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np

    from nodes.trainers.registry import Array
else:
    np = lazy_module("numpy")

MAX_CLIP_NORM = 1e3


def sgd_params(params: pb.TrainerParams, dp: bool) -> SgdParams:
    """The wire's trainer parameters with the defaults of an unset field (0 on the wire)."""
    return SgdParams(
        learning_rate=params.learning_rate or 0.1,
        local_epochs=params.local_epochs,
        batch_size=params.batch_size or 32,
        proximal_mu=params.proximal_mu,
        l2=params.l2,
        clip_norm=params.clip_norm if dp else 0.0,
        seed=params.seed,
    )


class SgdTrainer:
    """Local SGD from the sent parameters (FedAvg / FedProx); per-unit clipping in DP mode."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def _model(self, plan: ModelPlan, node: str) -> Model:
        try:
            return build_model(self.kind, plan.size, self._classes(plan), tuple(plan.spec.params.hidden))
        except FederationError as exc:
            raise FederationError(exc.rule, f"node {node}: {exc.message}", node) from None

    def _classes(self, plan: ModelPlan) -> int:
        # A category of K > 2 levels: y is the level's index; else a binary outcome, y in {0, 1}.
        return len(plan.classes) or 2

    def check(self, plan: ModelPlan, node: str) -> None:
        self._model(plan, node)
        p = plan.spec.params
        if plan.spec.privacy.epsilon or plan.spec.privacy.rho:
            if not 0 < p.clip_norm <= MAX_CLIP_NORM:
                raise FederationError(
                    "model_trainer",
                    f"node {node}: DP training clips each unit's update; give clip_norm in (0, {MAX_CLIP_NORM:g}]",
                    node,
                )
        lo, hi = plan.outcome_bounds
        if not plan.classes and plan.event is None and not (lo >= 0 and hi <= 1):
            raise FederationError(
                "model_outcome",
                f"node {node}: the {self.kind} trainer needs a 0/1 outcome or a category (logistic: of two levels)",
                node,
            )

    def parameter_count(self, plan: ModelPlan) -> int:
        return self._model(plan, "").size()

    def statistics(self, plan: ModelPlan, design: Design, parameters: Array, dp: bool) -> list[StatBlock]:
        model = self._model(plan, "")
        w = parameters if parameters.size else initial_parameters(model, plan.spec.params.seed)
        params = sgd_params(plan.spec.params, dp)
        y = np.rint(design.y).astype(np.int64)
        stats = round_statistics(model, w, design.x, y, params, design.units, plan.rows_per_unit)
        size = model.size()
        if dp:
            return [
                StatBlock("update_sum", stats[:size], params.clip_norm),
                StatBlock("weight", stats[size : size + 1], 1.0),
                StatBlock("loss", stats[size + 1 :], plan.rows_per_unit * LOSS_CAP),
            ]
        return [
            StatBlock("weighted_params", stats[:size]),
            StatBlock("weight", stats[size : size + 1]),
            StatBlock("loss", stats[size + 1 :]),
        ]


register("logistic", lambda: SgdTrainer("logistic"))
register("softmax", lambda: SgdTrainer("softmax"))
register("mlp", lambda: SgdTrainer("mlp"))
