"""One round of a multi-round job over the nodes' links: send each node its step, wait, keep the
replies that answer this job and round, and drop every other party with the reason it gave.

Secure queries and model rounds (SecAgg+, Bell et al. 2020) share it, so a node that times out,
disconnects, refuses or answers out of protocol is treated the same way on both paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent import futures
from typing import Any, Protocol

from coordinator.registry import NodeGone, NodeSession
from protocols import federation_pb2 as pb
from protocols.secagg import SecAggServer
from protocols.secagg_errors import SecAggError


class RoundParty(Protocol):
    session: NodeSession

    def drop(self, status: str, reason: str, rule: str = "") -> None: ...


def exchange(
    parties: Mapping[str, RoundParty],
    job_id: str,
    rnd: int,
    steps: Mapping[str, Any],
    kind: str,
    requested_by: str,
    timeout: float,
) -> dict[str, Any]:
    """Send ``steps`` (``pb.JobRequest`` field ``kind``: "secure" or "model") and collect the
    replies of that kind for ``job_id`` and round ``rnd``, within ``timeout`` seconds in all."""
    request_id = f"{job_id}:{rnd}"
    pending = {}
    for node, step in steps.items():
        job = pb.JobRequest(job_id=request_id, requested_by=requested_by, **{kind: step})
        pending[node] = parties[node].session.send_job(job)
    futures.wait(list(pending.values()), timeout=timeout)
    replies: dict[str, Any] = {}
    for node, future in pending.items():
        party = parties[node]
        if not future.done():
            party.session.forget(request_id)
            party.drop("timeout", f"node {node} did not answer round {rnd} within {timeout:g}s")
        elif isinstance(future.exception(), NodeGone):
            party.drop("disconnected", f"node {node} disconnected in round {rnd}")
        else:
            response = future.result()
            outcome = response.WhichOneof("outcome")
            reply = getattr(response, kind) if outcome == kind else None
            if outcome == "refusal":
                party.drop("refused", response.refusal.reason, response.refusal.rule)
            elif reply is not None and reply.job_id == job_id and reply.round == rnd:
                replies[node] = reply
            else:
                party.drop("refused", f"node {node} answered round {rnd} out of protocol", "secure_protocol")
    return replies


def feed(server: SecAggServer, parties: Mapping[str, RoundParty], replies: Mapping[str, Any]) -> list[str]:
    """Hand each reply's payload to the SecAgg server; a party whose message it refuses is dropped."""
    accepted = []
    for node, reply in sorted(replies.items()):
        try:
            server.receive(bytes(reply.payload))
            accepted.append(node)
        except SecAggError as exc:
            parties[node].drop("refused", f"node {node}: {exc.message}", exc.rule)
    return accepted


def encode_round(server: SecAggServer) -> dict[str, bytes]:
    """Close the server's round and encode what each node is sent; a message sent alike to many
    nodes (the unmask request lists every survivor) is encoded once, not once per node."""
    encoded: dict[int, bytes] = {}
    out = {}
    for node, msg in server.close_round().items():
        if id(msg) not in encoded:
            encoded[id(msg)] = msg.to_bytes()
        out[node] = encoded[id(msg)]
    return out
