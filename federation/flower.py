"""The analyst's Flower entry points: ``fed.flower_grid(...)`` and ``fed.fit_flower(...)``.

``flower_grid`` turns a model description (trainer, dataset, outcome, features, DP request) into
a ``ModelSpec`` and a ``FlowerGrid`` (federation/flower_grid.py) that any supported Flower strategy
runs against; ``fit_flower`` is the one-call form for the common case. Flower is the optional
``federation[flower]`` extra: it is imported only when one of these is called.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.privacy_request import check_privacy
from protocols.sgd_layout import TRAINERS, initial_parameters, parameter_count
from protocols.spec_limits import check_name
from protocols.values import from_value

if TYPE_CHECKING:
    from federation.flower_grid import FlowerGrid, RoundRecord

MAX_ROUNDS = 1000


def _flower() -> Any:
    try:
        import federation.flower_grid as grid
    except ImportError:
        raise FederationError(
            "flower_missing", "Flower is not installed: pip install 'federation[flower]'"
        ) from None
    return grid


def design_terms(
    info: pb.DatasetInfo, features: Sequence[str], outcome: str, model: str = "logistic"
) -> tuple[list[str], int]:
    """(term names, outcome classes) as every node builds the design (nodes/model_design.py):
    intercept, numeric features, then one dummy per level of a category but its first."""
    columns = {c.name: c for c in info.columns}
    if outcome not in columns:
        raise FederationError("model_spec", f"outcome '{outcome}' is not a declared column of {info.name}")
    terms = ["Intercept"]
    for name in features:
        column = columns.get(name)
        if column is None or name == outcome:
            raise FederationError(
                "model_spec", f"feature '{name}' is not a declared column of {info.name} (or is the outcome)"
            )
        if column.kind == pb.NUMERIC:
            terms.append(name)
        elif column.kind == pb.CATEGORY:
            terms += [f"{name}[{from_value(level)}]" for level in column.domain[1:]]
        else:
            raise FederationError("model_spec", f"feature '{name}' is neither numeric nor a category")
    target = columns[outcome]
    if model in ("softmax", "mlp") and target.kind == pb.CATEGORY and len(target.domain) > 2:
        return terms, len(target.domain)  # y is the level's index in the domain (nodes/model_design.py)
    return terms, 2


def build_spec(
    info: pb.DatasetInfo,
    model: str,
    outcome: str,
    features: Sequence[str],
    *,
    rounds: int,
    epsilon: float | None,
    rho: float | None,
    clip_norm: float,
    learning_rate: float,
    local_epochs: int,
    batch_size: int,
    proximal_mu: float,
    l2: float,
    hidden: Sequence[int],
    seed: int,
    project: str,
    max_rows_per_unit: int,
) -> pb.ModelSpec:
    if model not in TRAINERS:
        raise FederationError("model_trainer", f"model must be one of {', '.join(TRAINERS)}, not {model!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
        raise FederationError("model_iterations", f"rounds must be a whole number in [1, {MAX_ROUNDS}]")
    ask = check_privacy(epsilon, rho)
    if (ask.epsilon or ask.rho) and not clip_norm > 0:
        raise FederationError("model_trainer", "DP training (epsilon or rho) needs clip_norm > 0")
    check_name(project, "the project name")
    spec = pb.ModelSpec(
        dataset=info.name,
        outcome=outcome,
        trainer=model,
        max_iterations=rounds,
        project=project,
        max_rows_per_unit=int(max_rows_per_unit),
        params=pb.TrainerParams(
            learning_rate=float(learning_rate),
            local_epochs=int(local_epochs),
            batch_size=int(batch_size),
            proximal_mu=float(proximal_mu),
            l2=float(l2),
            clip_norm=float(clip_norm) if (ask.epsilon or ask.rho) else 0.0,
            hidden=[int(h) for h in hidden],
            seed=int(seed),
        ),
    )
    spec.privacy.epsilon = ask.epsilon or 0.0
    spec.privacy.rho = ask.rho or 0.0
    for name in features:
        spec.covariates.add(column=name)
    return spec


@dataclass
class FlowerFit:
    """What ``fit_flower`` returns: the final parameters by design term and each round's record."""

    params: pd.Series
    history: pd.DataFrame
    result: Any  # flwr's own Result (arrays, per-round metrics)
    model_id: str
    rounds: list[RoundRecord] = field(default_factory=list)


def make_grid(
    infos: Callable[[], list[pb.DatasetInfo]],
    call: Callable[[pb.ModelRoundRequest], pb.ModelRoundResponse],
    model: str,
    data: str,
    outcome: str,
    features: Sequence[str],
    *,
    rounds: int,
    node_wait: float,
    timeout: float,
    **options: Any,
) -> tuple[FlowerGrid, list[str], np.ndarray]:
    """(grid, design terms, the trainer's start parameters) for ``Client.flower_grid``."""
    grid_module = _flower()
    served = [i for i in infos() if i.name == data]
    if not served:
        raise FederationError("unknown_dataset", f"no connected node serves dataset '{data}'")
    spec = build_spec(served[0], model, outcome, features, rounds=rounds, **options)
    terms, classes = design_terms(served[0], features, outcome, model)
    hidden = tuple(spec.params.hidden)
    start = initial_parameters(model, len(terms), classes, hidden, spec.params.seed)
    assert len(start) == parameter_count(model, len(terms), classes, hidden)

    def nodes() -> list[str]:
        return sorted({i.node for i in infos() if i.name == data})

    grid = grid_module.FlowerGrid(spec, call, nodes, node_wait=node_wait, timeout=timeout)
    grid.terms, grid.start_parameters = terms, start
    return grid, terms, start


def run_flower(
    flower_grid: Callable[..., FlowerGrid],
    strategy: Any,
    rounds: int,
    model: str,
    data: str,
    outcome: str,
    features: Sequence[str],
    train_config: Any,
    options: dict[str, Any],
) -> FlowerFit:
    """``Client.fit_flower``: check the strategy, size the job's rounds, run it, tidy the result."""
    grid_module = _flower()
    grid_module.check_strategy(strategy)
    from flwr.app import ConfigRecord

    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
        raise FederationError("model_iterations", f"rounds must be a whole number in [1, {MAX_ROUNDS}]")
    # Each evaluate step is a secure round (and a release) of its own.
    evaluates = float(getattr(strategy, "fraction_evaluate", 0.0) or 0.0) > 0
    grid = flower_grid(model, data, outcome, features, rounds=rounds * (2 if evaluates else 1), **options)
    result = strategy.start(
        grid=grid,
        initial_arrays=grid.initial_arrays(),
        num_rounds=rounds,
        train_config=ConfigRecord(dict(train_config or {})),
    )
    vector = np.concatenate([a.ravel() for a in result.arrays.to_numpy_ndarrays()])
    index = grid.terms if len(vector) == len(grid.terms) else range(len(vector))
    history = pd.DataFrame(
        [
            {
                "round": r.iteration,
                "kind": r.kind,
                "loss": r.loss,
                "examples": r.examples,
                "rho": r.rho,
                "job_id": r.job_id,
            }
            for r in grid.history
        ],
        columns=["round", "kind", "loss", "examples", "rho", "job_id"],
    )
    return FlowerFit(
        params=pd.Series(vector, index=list(index), name=model),
        history=history,
        result=result,
        model_id=grid.model_id,
        rounds=list(grid.history),
    )
