"""One round of a model job at the coordinator: a secure aggregation of the nodes' statistics.

    round 0: spec + parameters + SecAgg config -> each node's trainer computes its statistics,
             adds its noise share (DP), and advertises keys with the public layout of its vector
    rounds 2-4: relay the SecAgg messages (share keys, masked input, unmask)
    then: unmask the sum only -> wide fixed point decode -> one float vector, blocks in order

The coordinator never holds one node's statistics, only their sum (SecAgg, Bonawitz et al. CCS
2017, with the SecAgg+ graph of Bell et al. CCS 2020). Each round has its own SecAgg job id,
``<model id>-r<iteration>``, so its keys and masks are fresh.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from coordinator.registry import NodeSession
from coordinator.round_exchange import encode_round, exchange, feed
from coordinator.secure_query import secagg_parameters
from protocols import federation_pb2 as pb
from protocols import wide_fixed_point as wide
from protocols.secagg import SecAggConfig, SecAggServer
from protocols.secagg_errors import SecAggError

BITS = 64


class RoundFailed(Exception):
    def __init__(self, rule: str, message: str, nodes: list[pb.NodeOutcome] | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.nodes = nodes or []


@dataclass
class RoundResult:
    sums: np.ndarray
    blocks: list[pb.ModelBlock]  # noise_sd: of the summed noise
    terms: list[str]
    nodes: list[pb.NodeOutcome]
    survivors: int
    seconds_nodes: float = 0.0  # round 0: the nodes' compute (statistics and noise)
    seconds_secagg: float = 0.0  # rounds 2-4
    block_values: dict[str, np.ndarray] = field(default_factory=dict)

    def block(self, name: str) -> np.ndarray:
        return self.block_values[name]


@dataclass
class _Party:
    session: NodeSession
    outcome: pb.NodeOutcome
    active: bool = True
    cost: pb.NodeCost | None = None
    masked: bool = False

    def drop(self, status: str, reason: str, rule: str = "") -> None:
        self.active = False
        self.outcome.status, self.outcome.reason, self.outcome.rule = status, reason, rule


def _shape(reply: pb.ModelReply) -> tuple[bytes, ...]:
    layout = [
        pb.ModelBlock(name=b.name, length=b.length, scale=b.scale, l2=b.l2, mechanism=b.mechanism)
        for b in reply.blocks
    ]
    return (*(b.SerializeToString(deterministic=True) for b in layout), *(t.encode() for t in reply.terms))


class ModelRound:
    """Runs one secure-aggregated round of a model job over the nodes' links."""

    def __init__(
        self,
        targets: list[NodeSession],
        spec: pb.ModelSpec,
        model_id: str,
        iteration: int,
        parameters: list[float],
        requested_by: str,
        timeout: float,
    ) -> None:
        self.spec = spec
        self.model_id = model_id
        self.iteration = iteration
        self.job_id = f"{model_id}-r{iteration}"
        self.parameters = parameters
        self.requested_by = requested_by
        self.timeout = timeout
        self.parties = {
            s.node_id: _Party(s, pb.NodeOutcome(node=s.node_id))
            for s in sorted(targets, key=lambda s: s.node_id)
        }
        self.infos = {
            node: next(d for d in p.session.datasets if d.name == spec.dataset)
            for node, p in self.parties.items()
        }

    def _exchange(self, rnd: int, steps: Mapping[str, pb.ModelStep]) -> dict[str, pb.ModelReply]:
        replies: dict[str, pb.ModelReply] = exchange(
            self.parties, self.job_id, rnd, steps, "model", self.requested_by, self.timeout
        )
        return replies

    def _feed(self, server: SecAggServer, replies: Mapping[str, pb.ModelReply]) -> list[str]:
        return feed(server, self.parties, replies)

    def _failure(self, rule: str, message: str) -> RoundFailed:
        gone = [p.outcome for p in self.parties.values() if not p.active]
        if (
            gone
            and all(o.status == "refused" for o in gone)
            and not any(p.active for p in self.parties.values())
        ):
            rules = {o.rule for o in gone}
            if len(rules) == 1:
                return RoundFailed(
                    gone[0].rule,
                    "; ".join(f"node {o.node} refused: {o.reason}" for o in gone),
                    self.outcomes(),
                )
        named = "; ".join(f"{o.node}: {o.status} ({o.reason} [rule: {o.rule}])" for o in gone) or "none"
        return RoundFailed(rule, f"{message}; dropped: {named}", self.outcomes())

    def _close(self, server: SecAggServer) -> dict[str, bytes]:
        try:
            return encode_round(server)
        except SecAggError as exc:
            raise self._failure(exc.rule, f"secure aggregation stopped: {exc.message}") from None

    def outcomes(self) -> list[pb.NodeOutcome]:
        out = []
        for party in self.parties.values():
            if party.cost is not None and party.masked:
                party.outcome.cost.CopyFrom(party.cost)  # charged with the masked input, and only then
            out.append(party.outcome)
        return out

    def run(self) -> RoundResult:
        n = len(self.parties)
        if n < 2:
            raise RoundFailed(
                "secure_min_nodes",
                f"a model job needs at least 2 nodes serving dataset '{self.spec.dataset}'; {n} connected node(s) serve it",
            )
        keys = {node: bytes(info.secagg_verify_key) for node, info in self.infos.items()}
        lacking = sorted(node for node, key in keys.items() if len(key) != 32)
        if lacking:
            raise RoundFailed(
                "secure_unsupported", f"node(s) {', '.join(lacking)} announce no secure-aggregation key"
            )
        t, k = secagg_parameters(n)
        ids = list(self.parties)
        started = time.monotonic()
        # dim 0: the vector's length is the trainer's layout, which each node states in round 0;
        # the SecAgg session is sized from the layout most nodes agree on.
        config = pb.SecureConfig(
            node_ids=ids, verify_keys=[keys[i] for i in ids], threshold=t, neighbours=k, bits=BITS
        )
        start = pb.ModelStep(
            job_id=self.job_id,
            model_id=self.model_id,
            iteration=self.iteration,
            round=0,
            config=config,
            spec=self.spec,
            parameters=self.parameters,
        )
        replies = self._exchange(0, dict.fromkeys(self.parties, start))
        seconds_nodes = time.monotonic() - started
        layouts: dict[tuple[bytes, ...], list[str]] = {}
        for node, reply in replies.items():
            layouts.setdefault(_shape(reply), []).append(node)
        if not layouts:
            raise self._failure("secagg_threshold", "no node started the secure aggregation")
        reference = max(layouts.items(), key=lambda kv: len(kv[1]))[0]
        for node in [nd for nd, r in replies.items() if _shape(r) != reference]:
            self.parties[node].drop(
                "refused",
                f"node {node} declared a different model layout than the others",
                "secure_layout_mismatch",
            )
            del replies[node]
        layout = next(iter(replies.values()))
        for node, reply in replies.items():
            self.parties[node].cost = reply.cost
        try:
            dim = sum(b.length for b in layout.blocks) * wide.LIMBS
            secagg = SecAggConfig(self.job_id, tuple(ids), t, k, dim, bits=BITS)
        except SecAggError as exc:
            raise RoundFailed(exc.rule, exc.message, self.outcomes()) from None
        server = SecAggServer(secagg, keys)
        self._feed(server, replies)
        outgoing = self._close(server)
        secagg_started = time.monotonic()
        for rnd in (2, 3, 4):
            steps = {
                node: pb.ModelStep(
                    job_id=self.job_id,
                    model_id=self.model_id,
                    iteration=self.iteration,
                    round=rnd,
                    payload=payload,
                )
                for node, payload in outgoing.items()
                if self.parties[node].active
            }
            replies = self._exchange(rnd, steps)
            for node in self._feed(server, replies):
                if rnd == 3:
                    self.parties[node].masked = True
                    self.parties[node].outcome.audit_digest = replies[node].audit_digest
            outgoing = self._close(server)
        survivors = set(server.survivors)
        for node, party in self.parties.items():
            if node in survivors:
                party.outcome.status = "answered"
            elif party.outcome.status in ("", "answered"):
                party.drop("left_out", f"node {node} dropped before its masked input; it is not in the sum")
        needed = max(2, self.spec.min_nodes)
        if len(survivors) < needed:
            raise RoundFailed(
                "min_nodes",
                f"only {len(survivors)} of the required {needed} node(s) are in the sum",
                self.outcomes(),
            )
        totals = wide.decode_sum(server.result(), n)
        sums, values, blocks = [], {}, []
        at = 0
        root = math.sqrt(len(survivors))
        for block in layout.blocks:
            grid = totals[at : at + block.length]
            at += block.length
            vals = np.asarray([g / block.scale for g in grid], dtype=np.float64)
            values[block.name] = vals
            sums.extend(vals.tolist())
            summed = pb.ModelBlock()
            summed.CopyFrom(block)
            summed.noise_sd = block.noise_sd * root  # independent shares: variances add
            blocks.append(summed)
        return RoundResult(
            sums=np.asarray(sums),
            blocks=blocks,
            terms=list(layout.terms),
            nodes=self.outcomes(),
            survivors=len(survivors),
            seconds_nodes=seconds_nodes,
            seconds_secagg=time.monotonic() - secagg_started,
            block_values=values,
        )


__all__ = ["ModelRound", "RoundFailed", "RoundResult"]
