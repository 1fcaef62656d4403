"""The node's trainer catalogue: the only model code a node runs, looked up by name.

A ``ModelSpec`` names a trainer (``glm``, ``logistic``, ...); the node runs the built-in trainer
of that name on its own rows and releases the fixed-length vector of statistics it returns, one
named block at a time, through secure aggregation (nodes/model_release.py). Analyst code never
runs on a node: an unknown name is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from nodes.model_design import Design, ModelPlan
from protocols.errors import FederationError
from protocols.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]
else:
    np = lazy_module("numpy")


@dataclass(frozen=True)
class StatBlock:
    """One named part of a round's statistics; ``l2`` bounds how far one privacy unit moves it (L2,
    in the block's own units) when the trainer runs in DP mode, 0 when exact."""

    name: str
    values: Array
    l2: float = 0.0


class Trainer(Protocol):
    def check(self, plan: ModelPlan, node: str) -> None:
        """Refuse (``FederationError``) a spec this trainer cannot run, before any row is read."""
        ...

    def parameter_count(self, plan: ModelPlan) -> int:
        """The length of the parameter vector a round carries (0: the round may carry none)."""
        ...

    def statistics(self, plan: ModelPlan, design: Design, parameters: Array, dp: bool) -> list[StatBlock]:
        """The round's statistics on this node's rows, always the same blocks and lengths for a plan."""
        ...


TRAINERS: dict[str, Callable[[], Trainer]] = {}


def register(name: str, factory: Callable[[], Trainer]) -> None:
    TRAINERS[name] = factory


def trainer_for(name: str, node: str) -> Trainer:
    factory = TRAINERS.get(name)
    if factory is None:
        raise FederationError(
            "model_trainer",
            f"node {node} has no built-in trainer '{name}' (catalogue: {', '.join(sorted(TRAINERS))})",
            node,
        )
    return factory()


__all__ = ["TRAINERS", "StatBlock", "Trainer", "register", "trainer_for"]
