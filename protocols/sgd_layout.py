"""The parameter vector of the SGD trainers, shared by the analyst's side and the nodes.

logistic: d weights (class 1's log-odds); softmax: K x d, row-major by class; mlp: per layer an
(out, in) matrix, row-major, where layers after the first carry their bias as the last input
column (the design already has an intercept). d counts the design's columns, intercept included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from protocols.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy")


TRAINERS = ("logistic", "softmax", "mlp")
DEFAULT_HIDDEN = (16,)


def layer_shapes(inputs: int, classes: int, hidden: Sequence[int]) -> list[tuple[int, int]]:
    """(out, in) of every MLP layer, the bias column included from the second layer on."""
    widths = [inputs, *(tuple(hidden) or DEFAULT_HIDDEN), classes]
    return [(widths[i + 1], widths[i] + (1 if i else 0)) for i in range(len(widths) - 1)]


def parameter_count(trainer: str, inputs: int, classes: int, hidden: Sequence[int] = ()) -> int:
    if trainer == "logistic":
        return inputs
    if trainer == "softmax":
        return classes * inputs
    return sum(o * i for o, i in layer_shapes(inputs, classes, hidden))


def initial_parameters(
    trainer: str, inputs: int, classes: int, hidden: Sequence[int] = (), seed: int = 0
) -> npt.NDArray[np.float64]:
    """Zeros for the convex models; small seeded Glorot-uniform weights for the MLP (zeros would
    keep its hidden units identical for ever; Glorot & Bengio, AISTATS 2010)."""
    if trainer != "mlp":
        return np.zeros(parameter_count(trainer, inputs, classes))
    rng = np.random.default_rng(seed)
    parts = [
        rng.uniform(-1, 1, o * i) * np.sqrt(6.0 / (o + i)) for o, i in layer_shapes(inputs, classes, hidden)
    ]
    return np.concatenate(parts)


__all__ = ["DEFAULT_HIDDEN", "TRAINERS", "initial_parameters", "layer_shapes", "parameter_count"]
