"""Built-in SGD trainers for Flower-driven rounds: logistic and softmax regression and a small MLP.

Each round a node receives the global parameters w, runs local epochs of mini-batch SGD on its own
rows (FedAvg, McMahan et al., AISTATS 2017; with FedProx's proximal term mu/2 |w - w_global|^2, Li
et al., MLSys 2020) and returns the statistics the coordinator may only see summed over nodes:

    exact:  [n_k * w_k, n_k, loss_k]      n_k rows; loss_k the summed cross-entropy at w
    DP:     [sum_u clip(w_u - w, C), units_k, sum_u clip(loss_u)]

In DP mode every privacy unit trains on its own rows from w, its update is clipped to L2 norm C
and the node releases the sum of clipped updates and its unit count (DP-FedAvg, McMahan et al.,
ICLR 2018): adding or removing one unit moves the update sum by at most C, the count by 1 and the
loss by ``rows_per_unit * LOSS_CAP``; the Gaussian noise itself is added by the secure path.

Features arrive clamped to their bounds and scaled to [-1, 1] by those public bounds, categories
dummy-coded, with an intercept column first; outcomes arrive as class indices 0..K-1. Plain numpy:
nodes never import flwr.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocols.errors import FederationError
from protocols.lazy import lazy_module
from protocols.sgd_layout import DEFAULT_HIDDEN, layer_shapes
from protocols.sgd_layout import initial_parameters as initial_vector

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]
else:
    np = lazy_module("numpy")


LOSS_CAP = 10.0  # nats per row: a row's cross-entropy counts at most this much (bounds its sensitivity)
_EPS = 1e-12
_CHUNK = 65536  # rows per chunk when a whole table's loss or per-row gradients are computed
MAX_PARAMETERS = 100_000
MAX_WEIGHT = 1e6  # on [-1, 1] features a larger weight means nothing but overflow


@dataclass(frozen=True)
class SgdParams:
    """Hyper-parameters of one round (``TrainerParams`` on the wire)."""

    learning_rate: float = 0.1
    local_epochs: int = 1
    batch_size: int = 32  # 0: full batch
    proximal_mu: float = 0.0
    l2: float = 0.0
    clip_norm: float = 0.0  # > 0: DP mode, per-unit clipping to this L2 norm
    seed: int = 0


class Model(ABC):
    """A model as a flat parameter vector; per-row gradients take per-row parameters (n, P) or one
    shared vector broadcast to every row, so DP mode can train every unit at once."""

    classes: int
    inputs: int

    @abstractmethod
    def size(self) -> int: ...

    @abstractmethod
    def probabilities(self, w: Array, x: Array) -> Array:
        """(n, K) class probabilities; ``w`` is (P,) or (n, P)."""
        ...

    @abstractmethod
    def row_gradients(self, w: Array, x: Array, y: npt.NDArray[np.int64]) -> Array:
        """(n, P) gradients of each row's cross-entropy at its parameters."""
        ...

    def row_losses(self, w: Array, x: Array, y: npt.NDArray[np.int64]) -> Array:
        p = self.probabilities(w, x)
        picked = p[np.arange(len(y)), y]
        return np.minimum(-np.log(np.maximum(picked, _EPS)), LOSS_CAP)


def _rows(w: Array, n: int) -> Array:
    return np.broadcast_to(w, (n, w.shape[-1])) if w.ndim == 1 else w


def _softmax(z: Array) -> Array:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Logistic(Model):
    """Binary logistic regression: P = d, class 1's log-odds are x.w."""

    def __init__(self, inputs: int) -> None:
        self.inputs, self.classes = inputs, 2

    def size(self) -> int:
        return self.inputs

    def _z(self, w: Array, x: Array) -> Array:
        return x @ w if w.ndim == 1 else np.einsum("nd,nd->n", x, w)

    def probabilities(self, w: Array, x: Array) -> Array:
        p1 = 1.0 / (1.0 + np.exp(-np.clip(self._z(w, x), -500, 500)))
        return np.column_stack([1.0 - p1, p1])

    def row_gradients(self, w: Array, x: Array, y: npt.NDArray[np.int64]) -> Array:
        p1 = self.probabilities(w, x)[:, 1]
        return (p1 - y)[:, None] * x


class Softmax(Model):
    """Multinomial logistic regression: P = K x d, row-major by class."""

    def __init__(self, inputs: int, classes: int) -> None:
        self.inputs, self.classes = inputs, classes

    def size(self) -> int:
        return self.classes * self.inputs

    def probabilities(self, w: Array, x: Array) -> Array:
        if w.ndim == 1:
            return _softmax(x @ w.reshape(self.classes, self.inputs).T)
        return _softmax(np.einsum("nkd,nd->nk", w.reshape(len(x), self.classes, self.inputs), x))

    def row_gradients(self, w: Array, x: Array, y: npt.NDArray[np.int64]) -> Array:
        residual = self.probabilities(w, x)
        residual[np.arange(len(y)), y] -= 1.0
        return (residual[:, :, None] * x[:, None, :]).reshape(len(x), -1)


class MLP(Model):
    """One or more tanh hidden layers and a softmax head. Layer l has a (out, in + 1) matrix whose
    last column is its bias; the input already carries an intercept column, so layer 1 has none."""

    def __init__(self, inputs: int, classes: int, hidden: Sequence[int]) -> None:
        self.inputs, self.classes, self.hidden = inputs, classes, tuple(hidden)
        self.shapes = layer_shapes(inputs, classes, hidden)  # (out, in), bias column from layer 2 on

    def size(self) -> int:
        return sum(o * i for o, i in self.shapes)

    def _layers(self, w: Array, n: int) -> list[Array]:
        w = _rows(w, n)
        out, start = [], 0
        for o, i in self.shapes:
            out.append(w[:, start : start + o * i].reshape(n, o, i))
            start += o * i
        return out

    def _forward(self, w: Array, x: Array) -> tuple[list[Array], list[Array], Array]:
        mats = self._layers(w, len(x))
        inputs, a = [], x
        for depth, m in enumerate(mats):
            if depth:
                a = np.column_stack([a, np.ones(len(a))])
            inputs.append(a)
            z = np.einsum("noi,ni->no", m, a)
            a = np.tanh(z) if depth < len(mats) - 1 else _softmax(z)
        return mats, inputs, a

    def probabilities(self, w: Array, x: Array) -> Array:
        return self._forward(w, x)[2]

    def row_gradients(self, w: Array, x: Array, y: npt.NDArray[np.int64]) -> Array:
        mats, inputs, p = self._forward(w, x)
        delta = p.copy()
        delta[np.arange(len(y)), y] -= 1.0
        grads: list[Array] = []
        for depth in range(len(mats) - 1, -1, -1):
            a = inputs[depth]
            grads.append((delta[:, :, None] * a[:, None, :]).reshape(len(x), -1))
            if depth:
                back = np.einsum("no,noi->ni", delta, mats[depth])[:, :-1]  # drop the bias column
                delta = back * (1.0 - a[:, :-1] ** 2)  # tanh' at the hidden layer's output
        return np.concatenate(grads[::-1], axis=1)


def build_model(trainer: str, inputs: int, classes: int, hidden: Sequence[int] = ()) -> Model:
    """The catalogue: ``logistic`` (2 classes), ``softmax`` and ``mlp``."""
    if trainer == "logistic":
        if classes != 2:
            raise FederationError(
                "model_outcome", f"logistic regression needs a binary outcome, not {classes} classes"
            )
        model: Model = Logistic(inputs)
    elif trainer == "softmax":
        model = Softmax(inputs, classes)
    elif trainer == "mlp":
        widths = tuple(hidden) or DEFAULT_HIDDEN
        if len(widths) > 3 or any(not 1 <= h <= 256 for h in widths):
            raise FederationError("model_trainer", "mlp hidden layers: at most 3, each 1 to 256 units wide")
        model = MLP(inputs, classes, widths)
    else:
        raise FederationError("model_trainer", f"no built-in SGD trainer named '{trainer}'")
    if model.size() > MAX_PARAMETERS:
        raise FederationError("model_trainer", f"the model has more than {MAX_PARAMETERS} parameters")
    return model


def initial_parameters(model: Model, seed: int = 0) -> Array:
    """The trainer's start when a round sends no parameters (protocols/sgd_layout.py)."""
    kind = "mlp" if isinstance(model, MLP) else "softmax" if isinstance(model, Softmax) else "logistic"
    hidden = model.hidden if isinstance(model, MLP) else ()
    return initial_vector(kind, model.inputs, model.classes, hidden, seed)


def total_loss(model: Model, w: Array, x: Array, y: npt.NDArray[np.int64]) -> float:
    """Summed (capped) cross-entropy of every row at ``w``, in chunks."""
    return float(
        sum(model.row_losses(w, x[s : s + _CHUNK], y[s : s + _CHUNK]).sum() for s in range(0, len(y), _CHUNK))
    )


def _check(model: Model, w: Array, params: SgdParams) -> None:
    if w.shape != (model.size(),) or not np.all(np.abs(w) <= MAX_WEIGHT):
        raise FederationError(
            "model_parameters",
            f"the parameters must be {model.size()} finite numbers within +-{MAX_WEIGHT:g} for this model",
        )
    if not (0 < params.learning_rate <= 10 and 0 <= params.local_epochs <= 100):
        raise FederationError(
            "model_trainer", "learning rate must be in (0, 10] and local epochs in [0, 100]"
        )
    if params.proximal_mu < 0 or params.l2 < 0 or params.clip_norm < 0:
        raise FederationError("model_trainer", "proximal mu, l2 and clip norm cannot be negative")


def local_sgd(model: Model, w_global: Array, x: Array, y: npt.NDArray[np.int64], params: SgdParams) -> Array:
    """Local epochs of mini-batch SGD from the global parameters, rows reshuffled every epoch."""
    _check(model, w_global, params)
    w = w_global.copy()
    n = len(y)
    if n == 0:
        return w
    batch = params.batch_size if 0 < params.batch_size < n else n
    rng = np.random.default_rng(params.seed)
    for _ in range(params.local_epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            grad = model.row_gradients(w, x[rows], y[rows]).mean(axis=0)
            grad += params.l2 * w + params.proximal_mu * (w - w_global)
            w -= params.learning_rate * grad
    return w


def unit_updates(
    model: Model, w_global: Array, x: Array, y: npt.NDArray[np.int64], units: npt.NDArray, params: SgdParams
) -> tuple[Array, int]:
    """Every privacy unit's local update (full-batch gradient steps on the unit's own rows, all
    units at once), each clipped to L2 norm ``clip_norm``; returns (sum of clipped updates, units)."""
    _check(model, w_global, params)
    if len(y) == 0:
        return np.zeros(model.size()), 0
    order = np.argsort(units, kind="stable")
    x, y, units = x[order], y[order], units[order]
    _, starts, counts = np.unique(units, return_index=True, return_counts=True)
    inverse = np.repeat(np.arange(len(starts)), counts)
    w = np.tile(w_global, (len(starts), 1))
    for _ in range(params.local_epochs):
        grads = model.row_gradients(w[inverse], x, y)
        mean = np.add.reduceat(grads, starts, axis=0) / counts[:, None]
        mean += params.l2 * w + params.proximal_mu * (w - w_global)
        w -= params.learning_rate * mean
    delta = w - w_global
    norms = np.linalg.norm(delta, axis=1)
    delta *= np.minimum(1.0, params.clip_norm / np.maximum(norms, _EPS))[:, None]
    return delta.sum(axis=0), len(starts)


def unit_losses(
    model: Model, w: Array, x: Array, y: npt.NDArray[np.int64], units: npt.NDArray, rows_per_unit: int
) -> float:
    """Summed loss with each unit's share capped at ``rows_per_unit * LOSS_CAP`` (its sensitivity)."""
    if len(y) == 0:
        return 0.0
    _, inverse = np.unique(units, return_inverse=True)
    per_unit = np.bincount(inverse, weights=model.row_losses(w, x, y))
    return float(np.minimum(per_unit, rows_per_unit * LOSS_CAP).sum())


def round_statistics(
    model: Model,
    w_global: Array,
    x: Array,
    y: npt.NDArray[np.int64],
    params: SgdParams,
    units: npt.NDArray | None = None,
    rows_per_unit: int = 1,
) -> Array:
    """The vector this node contributes to the round's secure sum (layout in the module docstring)."""
    if params.clip_norm > 0:
        if units is None:
            raise FederationError("model_trainer", "DP training needs the privacy unit of every row")
        update, count = unit_updates(model, w_global, x, y, units, params)
        loss = unit_losses(model, w_global, x, y, units, rows_per_unit)
        return np.concatenate([update, [float(count), loss]])
    w = local_sgd(model, w_global, x, y, params)
    n = float(len(y))
    return np.concatenate([n * w, [n, total_loss(model, w_global, x, y)]])
