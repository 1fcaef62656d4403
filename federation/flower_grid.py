"""A Flower ``Grid`` over the federation: Flower strategies drive built-in node trainers.

The analyst runs an unchanged Flower strategy (``flwr.serverapp.strategy``: FedAvg, FedAvgM,
FedProx, FedAdam, FedYogi, FedAdagrad) in their own Python session against ``FlowerGrid``. All
messages the strategy pushes in one call become ONE round of a ``model`` job: every node serving
the dataset runs its built-in trainer (nodes/trainers/sgd.py) from the sent parameters and its
statistics leave it only as a SecAgg+ input. The Grid hands the strategy one reply, as if from one
node, whose arrays are the weighted average sum(n_k w_k) / sum(n_k) and whose "num-examples" is
sum(n_k): exactly what FedAvg's aggregation would make of the individual replies (McMahan et al.,
AISTATS 2017), without anyone seeing them. With DP on the nodes release the sum of per-unit
clipped updates and their unit count with distributed Gaussian noise (DP-FedAvg, McMahan et al.,
ICLR 2018), and the reply's arrays are w + noisy sum / noisy count.

Strategies that need the individual updates (FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan,
q-FedAvg, Flower's own DP wrappers, the XGBoost strategies) are refused: the coordinator never
has them. docs/modelling.md says what each party learns.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedMedian,
    FedTrimmedAvg,
    FedXgbBagging,
    FedXgbCyclic,
    MultiKrum,
    QFedAvg,
    Strategy,
)
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from protocols import federation_pb2 as pb
from protocols.errors import FederationError

# Krum is a MultiKrum; each of these needs one reply per node, which secure aggregation never gives.
NEEDS_INDIVIDUAL_UPDATES: tuple[type, ...] = (
    FedMedian,
    FedTrimmedAvg,
    MultiKrum,
    Bulyan,
    QFedAvg,
    FedXgbBagging,
    FedXgbCyclic,
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
)
NODE_WAIT_SECONDS = 30.0
COORDINATOR_NODE_ID = 0  # the "node" the one aggregated reply comes from
RUN_ID = 1
# Flower's config keys (its examples and FedProx) -> the node trainers' parameters.
CONFIG_KEYS = {
    "lr": "learning_rate",
    "learning-rate": "learning_rate",
    "local-epochs": "local_epochs",
    "batch-size": "batch_size",
    "proximal-mu": "proximal_mu",
}

RoundCall = Callable[[pb.ModelRoundRequest], pb.ModelRoundResponse]
NodeList = Callable[[], list[str]]


def check_strategy(strategy: object) -> None:
    """Refuse a strategy that needs every node's own update (rule ``flower_strategy``)."""
    if isinstance(strategy, NEEDS_INDIVIDUAL_UPDATES):
        name = type(strategy).__name__
        raise FederationError(
            "flower_strategy",
            f"{name} needs every node's own update, and secure aggregation releases only their sum; "
            "use FedAvg, FedAvgM, FedProx, FedAdam, FedYogi or FedAdagrad (DP: the federation's own "
            "DP-FedAvg, epsilon= on the grid)",
        )


def _calling_strategy() -> Strategy | None:
    """The strategy whose ``start`` (or configure step) called the Grid, if any: a strategy run
    against the Grid directly is checked as ``fit_flower`` checks it."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, Strategy):
                return owner
            frame = frame.f_back
        return None
    finally:
        del frame


def node_number(name: str) -> int:
    """A stable positive 63-bit id for a node name (Flower addresses nodes by integers)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1 or 1


@dataclass
class RoundRecord:
    """What one round released: the decoded sums, for the analyst's history."""

    iteration: int
    kind: str  # train | evaluate
    examples: float
    loss: float
    job_id: str
    nodes: list[str] = field(default_factory=list)  # the nodes in the round's sum
    rho: float = 0.0  # the largest zCDP cost one node charged for this round (0: exact)


class FlowerGrid(Grid):
    """``flwr.serverapp.Grid`` over the federation's analyst link (see the module docstring)."""

    def __init__(
        self,
        spec: pb.ModelSpec,
        call: RoundCall,
        nodes: NodeList,
        *,
        node_wait: float = NODE_WAIT_SECONDS,
        timeout: float = 0.0,
    ) -> None:
        self.spec = spec
        self._call = call
        self._nodes = nodes
        self.node_wait = node_wait
        self.timeout = timeout
        self.model_id = ""
        self.iteration = 0
        self.history: list[RoundRecord] = []
        self._replies: dict[str, Message] = {}
        self._waiting_since: float | None = None
        self._run = Run.create_empty(RUN_ID)
        self.terms: list[str] = []  # design term names (federation/flower.py sets them)
        self.start_parameters = np.zeros(0)
        _claim_identity()

    def initial_arrays(self) -> ArrayRecord:
        """The trainer's start as one array: zeros, or the MLP's seeded initial weights."""
        return ArrayRecord([self.start_parameters])

    # ------------------------------------------------------------------ run

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    # ------------------------------------------------------------------ nodes

    def get_node_ids(self) -> Iterable[int]:
        """The nodes serving the dataset now. Flower's ``sample_nodes`` polls this once a second
        for ever while fewer than ``min_available_nodes`` are connected: after ``node_wait``
        seconds of such polling the Grid ends the wait with rule ``flower_nodes``."""
        names = self._nodes()
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        elif now - self._waiting_since > self.node_wait:
            self._waiting_since = None
            raise FederationError(
                "flower_nodes",
                f"the strategy waited {self.node_wait:g} s for more nodes than the {len(names)} "
                f"that serve '{self.spec.dataset}'; lower min_available_nodes or start more nodes",
            )
        return [node_number(n) for n in names]

    def get_nodes(self) -> Iterable[NodeInfo]:
        return (NodeInfo(node_id=node_id) for node_id in self.get_node_ids())

    # ------------------------------------------------------------------ messages

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Run the messages of one strategy step as one secure round; remember its one reply."""
        self._waiting_since = None
        batch = list(messages)
        if not batch:
            return []
        strategy = _calling_strategy()
        if strategy is not None:
            check_strategy(strategy)
        kind = _one_kind(batch)
        content = batch[0].content
        if any(m.content is not content and m.content != content for m in batch[1:]):
            raise FederationError(
                "flower_message", "every node of a round gets the same parameters and configuration"
            )
        expected = {node_number(n) for n in self._nodes()}
        if {m.metadata.dst_node_id for m in batch} != expected:
            raise FederationError(
                "flower_sampling",
                "every node serving the dataset takes part in every round (their updates are "
                "only ever summed); set fraction_train/fraction_evaluate to 1.0 or 0.0",
            )
        ids = []
        for message in batch:
            # Flower's own grids set the id this way: Metadata.message_id has no setter.
            message.metadata.__dict__["_message_id"] = message.object_id
            ids.append(message.metadata.message_id)
        reply = self._round(batch[0], kind)
        for message_id in ids:
            self._replies[message_id] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The round's one reply, once, however many of its message ids are asked for."""
        out: list[Message] = []
        for message_id in message_ids:
            reply = self._replies.pop(message_id, None)
            if reply is not None and all(reply is not seen for seen in out):
                out.append(reply)
        return out

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push and pull at once: the round is over when ``push_messages`` returns."""
        return self.pull_messages(list(self.push_messages(messages)))

    # ------------------------------------------------------------------ one round

    def _round(self, message: Message, kind: str) -> Message:
        arrays_key, arrays = _one_record(message.content.array_records, "ArrayRecord")
        config = _one_record(message.content.config_records, "ConfigRecord", optional=True)[1]
        shapes = [(key, a.shape, a.dtype) for key, a in ((k, v.numpy()) for k, v in arrays.items())]
        vector = np.concatenate([arrays[k].numpy().ravel().astype(np.float64) for k, _, _ in shapes])
        spec = pb.ModelSpec()
        spec.CopyFrom(self.spec)
        _apply_config(spec.params, config or ConfigRecord())
        if kind == MessageType.EVALUATE:
            spec.params.local_epochs = 0  # the loss at the sent parameters, no training
        spec.params.seed = self.spec.params.seed + self.iteration + 1  # a new shuffle each round
        self.iteration += 1
        response = self._call(
            pb.ModelRoundRequest(
                spec=spec,
                model_id=self.model_id,
                iteration=self.iteration,
                parameters=vector.tolist(),
                timeout_seconds=self.timeout,
            )
        )
        if not response.ok:
            raise FederationError(response.error_rule or "refused", response.error)
        self.model_id = response.model_id or self.model_id
        params, examples, loss = decode_round(response, vector)
        self.history.append(
            RoundRecord(
                iteration=self.iteration,
                kind="evaluate" if kind == MessageType.EVALUATE else "train",
                examples=examples,
                loss=loss,
                job_id=response.job_id,
                nodes=[n.node for n in response.nodes if n.status == "answered"],
                rho=max((n.cost.rho for n in response.nodes), default=0.0),
            )
        )
        weight = max(examples, 1.0)
        if kind == MessageType.EVALUATE:
            content = RecordDict({"metrics": MetricRecord({"num-examples": weight, "loss": loss})})
        else:
            record = ArrayRecord(
                array_dict={
                    key: Array(params[start : start + int(np.prod(shape))].reshape(shape).astype(dtype))
                    for (key, shape, dtype), start in zip(shapes, _offsets(shapes), strict=True)
                }
            )
            content = RecordDict(
                {arrays_key: record, "metrics": MetricRecord({"num-examples": weight, "train_loss": loss})}
            )
        return Message(content, reply_to=message)


def decode_round(response: pb.ModelRoundResponse, sent: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(new parameters, examples, mean loss at the sent parameters) from a round's summed vector.

    Exact: [sum n_k w_k, sum n_k, sum loss]; DP: [sum of clipped updates, units, sum loss], all
    noisy, so the parameters are the sent ones moved by the average clipped update."""
    blocks: dict[str, np.ndarray] = {}
    sums = np.asarray(response.sums, dtype=np.float64)
    start = 0
    for block in response.blocks:
        blocks[block.name] = sums[start : start + block.length]
        start += block.length
    if start != len(sums) or not {"weight", "loss"} <= blocks.keys():
        raise FederationError("malformed_request", "the round's statistics do not have the trainers' layout")
    examples = float(blocks["weight"][0])
    weight = max(examples, 1.0)
    loss = float(blocks["loss"][0]) / weight
    if "update_sum" in blocks:
        params = sent + blocks["update_sum"] / weight
    elif "weighted_params" in blocks:
        params = blocks["weighted_params"] / weight
    else:
        raise FederationError("malformed_request", "the round's statistics carry no parameters")
    if params.shape != sent.shape:
        raise FederationError(
            "model_parameters",
            f"the nodes' model has {len(params)} parameters, the strategy sent {len(sent)}",
        )
    return params, examples, loss


def _offsets(shapes: list[tuple[str, tuple[int, ...], Any]]) -> list[int]:
    sizes = [int(np.prod(shape)) for _, shape, _ in shapes]
    return [int(x) for x in np.cumsum([0, *sizes[:-1]])]


def _one_kind(batch: list[Message]) -> str:
    kinds = {m.metadata.message_type for m in batch}
    if len(kinds) != 1 or not kinds <= {MessageType.TRAIN, MessageType.EVALUATE}:
        raise FederationError(
            "flower_message", f"the nodes' trainers answer train and evaluate messages, not {sorted(kinds)}"
        )
    return kinds.pop()


def _one_record(records: Any, what: str, optional: bool = False) -> tuple[str, Any]:
    items = list(records.items())
    if len(items) == 1:
        return items[0]
    if optional and not items:
        return "", None
    raise FederationError("flower_message", f"a round's message carries exactly one {what}, not {len(items)}")


def _apply_config(params: pb.TrainerParams, config: ConfigRecord) -> None:
    """Flower's config keys onto the trainer's parameters; the rest (e.g. server-round) is for
    the strategy only and never reaches a node."""
    for key, name in CONFIG_KEYS.items():
        if key in config:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FederationError("flower_message", f"config '{key}' must be a number")
            setattr(params, name, int(value) if name in ("local_epochs", "batch_size") else float(value))


def _claim_identity() -> None:
    """Flower 1.41 builds every ``Message`` from the process's task identity (a ServerApp process
    gets it from the SuperLink). An analyst's session has none, so the Grid gives it one, keeping
    any that a real ServerApp already set."""
    for name, value in (("run_id", RUN_ID), ("node_id", COORDINATOR_NODE_ID), ("task_id", RUN_ID)):
        try:
            getattr(TaskIdentity, name)
        except RuntimeError:
            setattr(TaskIdentity, name, value)
