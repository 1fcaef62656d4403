"""A node's SecAgg+ rounds 2-4 (Bell et al. 2020) for any job whose input vector is ready: share
keys, charge then mask then audit, unmask. Secure queries and model rounds both answer through it,
so the order that protects the budget and the log is written once: the ledger is charged before the
masked input exists, and the "released" entry is durable before it leaves the node.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from nodes.context import NodeContext
from privacy.accounting import Cost
from protocols import secagg_messages as m
from protocols.secagg import SecAggClient
from protocols.secagg_errors import SecAggError


class MaskedJob(Protocol):
    client: SecAggClient
    vector: npt.NDArray[np.uint64] | None
    dataset: str
    project: str
    cost: Cost
    charged: bool
    requested_by: str
    lock: threading.Lock


def answer_step(
    ctx: NodeContext,
    job_id: str,
    state: MaskedJob,
    rnd: int,
    payload: bytes,
    reply: Any,
    audit: Mapping[str, object],
    done: Callable[[], None],
    released: Callable[[], None] | None = None,
) -> None:
    """Fill ``reply`` (payload, and audit_digest for the masked input) for round ``rnd``.

    ``audit`` is what the "released" entry says beyond dataset, project, digest and cost;
    ``released`` runs after that entry is written; ``done`` forgets the job after unmasking."""
    with state.lock:
        if rnd == m.ROUND_SHARE_KEYS:
            reply.payload = state.client.share_keys(payload).to_bytes()
        elif rnd == m.ROUND_MASKED_INPUT:
            if state.vector is None:
                raise SecAggError("secagg_wrong_round", "the masked input was already sent")
            if not state.charged:
                # Charged before the masked input leaves; never twice for one job id.
                ctx.ledger.charge(job_id, state.dataset, state.project, state.cost, note=state.requested_by)
                state.charged = True
            masked = state.client.masked_input(payload, state.vector).to_bytes()
            state.vector = None
            reply.audit_digest = hashlib.sha256(masked).hexdigest()
            # Durable before the masked input leaves the node.
            ctx.audit.append(
                "released",
                job_id,
                {
                    "dataset": state.dataset,
                    "project": state.project,
                    "digest": reply.audit_digest,
                    **audit,
                    "secure": True,
                    "epsilon": state.cost.epsilon,
                    "rho": state.cost.rho,
                },
            )
            if released is not None:
                released()
            reply.payload = masked
        elif rnd == m.ROUND_UNMASK:
            reply.payload = state.client.unmask(payload).to_bytes()
            done()
        else:
            raise SecAggError("secagg_wrong_round", f"there is no secure step {rnd}")
