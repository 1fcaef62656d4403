"""Entity overlap at the node: one dataset's side of multi-party PSI and intersection-sum.

Protocols: multi-party PSI cardinality by commutative blinding (Meadows 1986; Huberman, Franklin
and Hogg 1999; ``protocols/psi.py``) and Private Intersection-Sum-with-Cardinality (Ion et al.,
EuroS&P 2020; ``protocols/psi_sum.py``). Every dataset taking part is one party, named
``node.dataset``. The coordinator drives the job in phases (``OverlapPhase``):

* PREPARE: the release path for the party's set. Validate (dataset exposed, identifier column
  allowed by ``overlap_columns``, filter valid, budget fits), select the distinct identifiers with
  the node's own SQL and bound parameters, normalise them, check the set size bounds (under DP on
  a noisy size charged first: ``privacy/size_check.py``), append an audit entry, and answer a
  fresh per-job hop key.
* BLIND: hash and blind the party's own set with a fresh per-job key; seal it to the next party.
* REBLIND: open a hop sealed to this party, raise every token to its key, shuffle, and seal it to
  the next party, or, on a set's last hop, answer the fully blinded set to the coordinator.
* FETCH: further chunks of a large output (each gRPC message stays below the link's limit).
* DECRYPT: the base party of an intersection-sum decrypts the coordinator's masked sum, once.
* MIX: for a union COUNT(DISTINCT) (``OverlapSpec.distinct``, ``protocols/psi_union.py``), the
  mixing party opens every set's last hop, merges and shuffles them, and answers one list.
* FINISH: drop the keys and everything else the job held.

Intersection-sum carries a count and a sum per category in one Paillier plaintext: slot
``1 + 2c`` counts the entities of category ``c`` and slot ``2 + 2c`` sums their values, each slot
wide enough for the whole set (``SumLayout`` with ``2C`` slots), so one decryption answers every
group. An entity with rows in several categories belongs to the first of them in the column's
public domain order.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from nodes.config import Column, Dataset
from nodes.context import NodeContext
from nodes.distinct import union_set
from nodes.preblind import PreBlinder
from nodes.protect import capped_epsilon
from nodes.sources import DataSources
from nodes.sqlgen import Dialect, SqlBuilder, quote_ident
from nodes.validate import Checker, Refused
from privacy.accounting import Cost
from privacy.agreements import overlap_plan
from privacy.size_check import check_size, hard_limit, size_noise
from protocols import federation_pb2 as pb
from protocols.identifiers import normalise, normalise_many
from protocols.privacy_request import check_wire
from protocols.psi import TOKEN_BYTES, PsiError, PsiParty, pack_tokens, shuffled, unpack_tokens
from protocols.psi_sum import SumBase, SumLayout, public_key_from_bytes, rerandomiser
from protocols.psi_union import (
    ITEM_BYTES,
    WRAPPED_BYTES,
    pack_fixed,
    seal_labels,
    split_item,
    unpack_fixed,
    wrap_items,
)
from protocols.refusals import ChargedRefusal
from protocols.spec_limits import MAX_OVERLAP_PARTIES, check_parties
from protocols.values import to_value

DEFAULT_PROJECT = "default"
# A job whose coordinator went away must not keep keys in memory for ever.
STATE_TTL_SECONDS = 3600.0
DEFAULT_CHUNK_BYTES = 3 * 1024 * 1024


@dataclass
class _Party:
    """What one dataset holds for one overlap job, between phases."""

    job_id: str
    party: str
    dataset: Dataset
    project: str
    cost: Cost
    requested_by: str
    psi: PsiParty
    box: PrivateKey
    ids: list[str]
    sensitivity: int
    values: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)
    sum_base: SumBase | None = None
    layout: SumLayout | None = None
    inbox: dict[str, list[bytes | None]] = field(default_factory=dict)
    # Union COUNT(DISTINCT): the group label of each item in ``ids``; the mixing party's inputs.
    distinct: bool = False
    labels: list[bytes] = field(default_factory=list)
    mixed: dict[str, bytes] = field(default_factory=dict)
    output: list[bytes] = field(default_factory=list)
    sealed: bool = True
    created: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


class OverlapNode:
    """The overlap phases for one node; state lives here between the coordinator's messages."""

    def __init__(
        self, ctx: NodeContext, preblind_values: dict[tuple[str, str], list[Any]] | None = None
    ) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self._parties: dict[tuple[str, str], _Party] = {}
        self._lock = threading.Lock()
        self._handling = 0
        self.preblinder = PreBlinder(self.config, self._all_ids, busy=self._busy, selected=preblind_values)

    def _busy(self) -> bool:
        with self._lock:
            return bool(self._parties) or self._handling > 0

    def _all_ids(self, dataset: Dataset, column: str) -> list[Any]:
        """Every distinct raw value of an identifier column: what the offline phase blinds.

        At most ``overlap_max_set + 1`` values are read: more means the column is not pre-blinded.
        """
        return all_ids(self.ctx.sources, dataset, column)

    # ------------------------------------------------------------------ dispatch

    def handle(self, job: pb.JobRequest) -> pb.JobResponse:
        with self._lock:
            self._handling += 1
        try:
            return self._handle(job)
        finally:
            with self._lock:
                self._handling -= 1

    def _handle(self, job: pb.JobRequest) -> pb.JobResponse:
        step = job.overlap
        self._expire()
        if step.phase == pb.OVERLAP_PREPARE:
            reply = self._prepare(job, step)
        elif step.phase == pb.OVERLAP_BLIND:
            reply = self._blind(step)
        elif step.phase == pb.OVERLAP_REBLIND:
            reply = self._reblind(step)
        elif step.phase == pb.OVERLAP_FETCH:
            reply = self._fetch(step)
        elif step.phase == pb.OVERLAP_DECRYPT:
            reply = self._decrypt(step)
        elif step.phase == pb.OVERLAP_FINISH:
            reply = self._finish(step)
        elif step.phase == pb.OVERLAP_MIX:
            reply = self._mix(step)
        else:
            raise Refused("malformed_request", "an overlap step has no phase", node=self.config.node_id)
        reply.job_id = step.job_id
        reply.party = step.party
        return pb.JobResponse(job_id=job.job_id, overlap=reply)

    def abandon(self, job: pb.JobRequest) -> None:
        """A failed phase ends the party's part of the job (fail closed); a failed chunk fetch may
        be asked again."""
        step = job.overlap
        if step.phase != pb.OVERLAP_FETCH:
            self._drop(step.job_id, step.party)

    def _state(self, step: pb.OverlapStep) -> _Party:
        with self._lock:
            state = self._parties.get((step.job_id, step.party))
        if state is None:
            raise Refused(
                "protocol_order",
                f"party {step.party} holds no state for overlap job {step.job_id}",
                node=self.config.node_id,
            )
        return state

    def _drop(self, job_id: str, party: str) -> None:
        with self._lock:
            state = self._parties.pop((job_id, party), None)
        if state is not None:
            state.psi.finish()

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            old = [key for key, s in self._parties.items() if now - s.created > STATE_TTL_SECONDS]
        for job_id, party in old:
            self._drop(job_id, party)

    # ------------------------------------------------------------------ PREPARE

    def _prepare(self, job: pb.JobRequest, step: pb.OverlapStep) -> pb.OverlapReply:
        node = self.config.node_id
        spec = step.spec
        self.ctx.audit.append(
            "received",
            job.job_id,
            {"requested_by": job.requested_by, "overlap": step.job_id, "party": step.party, "on": spec.on},
        )
        dataset, index = self._dataset_for(step)
        check_parties(len(spec.datasets), node)
        policy = dataset.policy
        column = _identifier(dataset, spec.on, node)
        if spec.HasField("distinct"):
            return self._prepare_distinct(job, step, dataset)
        check = Checker(self.config, dataset)
        item = spec.datasets[index]
        if item.HasField("filter"):
            check.filter(item.filter)
        epsilon = _epsilon(spec.privacy, dataset, node)
        is_base = spec.HasField("aggregate") and index == 0
        # One privacy unit can hold this many identifiers of the overlap column, after truncation.
        sensitivity = 1 if spec.on == dataset.privacy_unit else dataset.max_rows_per_unit
        flt = item.filter if item.HasField("filter") else None
        project = spec.project or DEFAULT_PROJECT
        # Every refusal up to the budget check depends only on the policy, the request and the
        # ledger, and names its rule. The set-size check below depends on the data.
        limit = hard_limit(policy.overlap_max_set, epsilon, sensitivity)

        group: Column | None = None
        measure: Column | None = None
        max_value = 0
        layout: SumLayout | None = None
        if is_base:
            group, measure, max_value = _check_aggregate(check, dataset, spec, node)
            # Sized for the largest set the node keeps, not this one: the check is on the policy.
            layout = SumLayout.for_set(max_value, 2 * len(group.domain), limit)
            if layout.bits >= policy.overlap_key_bits - 1:
                raise Refused(
                    "sum_capacity",
                    f"{layout.bits} plaintext bits are needed; raise overlap_key_bits",
                    node=node,
                )
        cost = Cost(0.0, 0.0)
        check_cost = Cost(0.0, 0.0)
        if epsilon is not None:
            cost = _charge_plan(epsilon, sensitivity, spec.HasField("aggregate"), len(spec.datasets))
            _, check_cost = size_noise(policy.overlap_check_epsilon, sensitivity)
            # Only checked here: the size check is charged below, the release at BLIND, once every
            # party has accepted the job, so a job another party refuses costs this one the check.
            both = Cost(cost.epsilon + check_cost.epsilon, cost.rho + check_cost.rho)
            self.ctx.ledger.charge(_charge_key(step), dataset.name, project, both, dry_run=True)

        values: dict[str, int] = {}
        categories: dict[str, int] = {}
        if is_base and group is not None and measure is not None:
            values, categories, malformed = _base_values(
                self.ctx.sources, dataset, column, group, measure, flt, max_value
            )
            ids = list(values)
        else:
            raw = _select_ids(self.ctx.sources, dataset, column, flt, sensitivity)
            normalised, malformed = normalise_many(column.id_type, raw)
            ids = list(dict.fromkeys(normalised))
        self._check_size(job, step, dataset, project, len(ids), epsilon, sensitivity, check_cost)

        reply = pb.OverlapReply(set_size=len(ids), id_type=column.id_type, sensitivity=sensitivity)
        if epsilon is not None:
            delta = self.ctx.ledger.delta(dataset.name, project)
            reply.cost.epsilon = cost.epsilon
            reply.cost.delta = delta
            reply.check_cost.epsilon = check_cost.epsilon
            reply.check_cost.delta = delta
        # Without DP the node's report is exact; with DP an exact count of malformed values
        # would be an unprotected aggregate, so it stays in the node's own audit log.
        reply.malformed = malformed if epsilon is None else -1

        # The offline phase's set for this column, if one is ready (nodes/preblind.py).
        psi = PsiParty(step.party, step.job_id, prepared=self.preblinder.take(dataset.name, spec.on))
        state = _Party(
            job_id=step.job_id,
            party=step.party,
            dataset=dataset,
            project=project,
            cost=cost,
            requested_by=job.requested_by,
            psi=psi,
            box=PrivateKey.generate(),
            ids=ids,
            sensitivity=sensitivity,
            values=values,
            categories=categories,
        )
        if is_base and group is not None and layout is not None:
            state.sum_base = SumBase(psi, max_value, 2 * len(group.domain), key_bits=policy.overlap_key_bits)
            if layout.bits >= state.sum_base.public_key.n.bit_length() - 1:
                raise Refused(
                    "sum_capacity",
                    f"{layout.bits} plaintext bits are needed; raise overlap_key_bits",
                    node=node,
                )
            state.layout = layout
            reply.paillier_key = state.sum_base.public_key_bytes
            reply.max_value = max_value
            reply.slot_bits = layout.slot_bits
            reply.categories.extend(to_value(v) for v in group.domain)
        return self._released(
            job,
            step,
            state,
            reply,
            f"{len(ids)}|{cost.epsilon!r}",
            {
                "dataset": dataset.name,
                "project": project,
                "on": spec.on,
                "set_size": len(ids),
                "malformed": malformed,
                "epsilon": cost.epsilon,
            },
        )

    def _check_size(
        self,
        job: pb.JobRequest,
        step: pb.OverlapStep,
        dataset: Dataset,
        project: str,
        size: int,
        epsilon: float | None,
        sensitivity: int,
        cost: Cost,
    ) -> None:
        """Refuse a set outside ``[overlap_min_set, overlap_max_set]``: a decision on the data.

        Under DP it is decided on a noisy size (``privacy/size_check.py``) whose cost is charged
        and audited first, whatever the outcome. Without DP it is decided on the exact size, as
        exact disclosure control decides on exact counts. Either way the coordinator hands the
        analyst one undifferentiated failure (``protocols/refusals.py``), never this rule.
        """
        policy = dataset.policy
        lower, upper = policy.overlap_min_set, policy.overlap_max_set
        charged = pb.NodeCost()
        if epsilon is None:
            passed, below = lower <= size <= upper, size < lower
        else:
            key = _check_key(step)
            self.ctx.ledger.charge(key, dataset.name, project, cost, note=job.requested_by)
            charged.epsilon = cost.epsilon
            charged.delta = self.ctx.ledger.delta(dataset.name, project)
            outcome = check_size(size, lower, upper, policy.overlap_check_epsilon, sensitivity)
            passed, below = outcome.passed, outcome.below
            # Durable before the outcome leaves the node; the charge above has its entry here.
            self.ctx.audit.append(
                "released",
                key,
                {
                    "overlap": step.job_id,
                    "party": step.party,
                    "dataset": dataset.name,
                    "project": project,
                    "check": "set size",
                    "epsilon": cost.epsilon,
                    "passed": passed,
                },
            )
        if passed:
            return
        node, what = (
            self.config.node_id,
            f"{'' if epsilon is None else 'a noisy count of '}the set of dataset",
        )
        if below:
            raise ChargedRefusal(
                "set_too_small", f"{what} {dataset.name} is below {lower} (overlap_min_set)", node, charged
            )
        raise ChargedRefusal(
            "set_too_large", f"{what} {dataset.name} is above {upper} (overlap_max_set)", node, charged
        )

    def _prepare_distinct(
        self, job: pb.JobRequest, step: pb.OverlapStep, dataset: Dataset
    ) -> pb.OverlapReply:
        """PREPARE of a union COUNT(DISTINCT): the node's own checks of the query, its (group, unit)
        items, and its charge (checked now, taken at BLIND like any overlap)."""
        node = self.config.node_id
        spec = step.spec
        union = union_set(self.config, self.ctx.sources, dataset, spec)
        project = spec.project or DEFAULT_PROJECT
        if union.cost.epsilon == 0 and union.plan is not None:
            # An exact union: this node's part is checked like its part of a secure sum; it stays
            # on record (pending counts as released) whether or not the union completes.
            self.ctx.differencing.check_secure(
                step.job_id, union.plan, project, False, self.ctx.sources, union.units
            )
        if len(union.items) > dataset.policy.overlap_max_set:
            # A refusal that depends on the data is a release: under DP the union's cost is charged
            # first, and the coordinator shows the analyst one undifferentiated failure.
            charged = pb.NodeCost()
            if union.cost.epsilon > 0:
                key = _charge_key(step)
                self.ctx.ledger.charge(key, dataset.name, project, union.cost, note=job.requested_by)
                charged.epsilon = union.cost.epsilon
                self.ctx.audit.append(
                    "released",
                    key,
                    {
                        "overlap": step.job_id,
                        "party": step.party,
                        "check": "union size",
                        "epsilon": union.cost.epsilon,
                    },
                )
            raise ChargedRefusal(
                "set_too_large",
                f"the union items of dataset {dataset.name} exceed overlap_max_set",
                node,
                charged,
            )
        reply = pb.OverlapReply(set_size=len(union.items), id_type="", sensitivity=union.sensitivity)
        reply.id_type = dataset.columns[dataset.privacy_unit].id_type
        if union.cost.epsilon > 0:
            self.ctx.ledger.charge(_charge_key(step), dataset.name, project, union.cost, dry_run=True)
            reply.cost.epsilon = union.cost.epsilon
            reply.cost.delta = self.ctx.ledger.delta(dataset.name, project)
        reply.malformed = union.malformed if union.cost.epsilon == 0 else -1
        state = _Party(
            job_id=step.job_id,
            party=step.party,
            dataset=dataset,
            project=project,
            cost=union.cost,
            requested_by=job.requested_by,
            psi=PsiParty(step.party, step.job_id),
            box=PrivateKey.generate(),
            ids=[item for item, _ in union.items],
            sensitivity=union.sensitivity,
            distinct=True,
            labels=[label for _, label in union.items],
        )
        return self._released(
            job,
            step,
            state,
            reply,
            f"distinct|{len(union.items)}|{union.cost.epsilon!r}",
            {
                "dataset": dataset.name,
                "project": project,
                "distinct": spec.on,
                "group_by": list(spec.distinct.group_by),
                "items": len(union.items),
                "malformed": union.malformed,
                "epsilon": union.cost.epsilon,
            },
        )

    def _released(
        self,
        job: pb.JobRequest,
        step: pb.OverlapStep,
        state: _Party,
        reply: pb.OverlapReply,
        digest_tail: str,
        entry: dict[str, Any],
    ) -> pb.OverlapReply:
        """The PREPARE reply of a party: its hop key and digest, a durable "released" entry, and
        the party's state kept for the later phases (only once the entry is written)."""
        reply.hop_key = bytes(state.box.public_key)
        reply.audit_digest = hashlib.sha256(f"{step.job_id}|{step.party}|{digest_tail}".encode()).hexdigest()
        self.ctx.audit.append(
            "released",
            job.job_id,
            {"overlap": step.job_id, "party": step.party, **entry, "digest": reply.audit_digest},
        )
        with self._lock:
            self._parties[(step.job_id, step.party)] = state
        return reply

    def _dataset_for(self, step: pb.OverlapStep) -> tuple[Dataset, int]:
        node = self.config.node_id
        owner, _, name = step.party.partition(".")
        if owner != node or not name:
            raise Refused(
                "malformed_request", f"party '{step.party}' is not a dataset of node {node}", node=node
            )
        for i, item in enumerate(step.spec.datasets):
            if item.node == node and item.dataset == name:
                dataset = self.config.datasets.get(name)
                if dataset is None or not dataset.exposed:
                    raise Refused("dataset_not_exposed", f"dataset '{name}' is not served here", node=node)
                return dataset, i
        raise Refused("malformed_request", f"party '{step.party}' is not in the overlap job", node=node)

    # ------------------------------------------------------------------ ring

    def _blind(self, step: pb.OverlapStep) -> pb.OverlapReply:
        state = self._state(step)
        if not step.next_key:
            raise Refused(
                "protocol_order",
                "a party's own set always goes to another party first",
                node=self.config.node_id,
            )
        with state.lock:
            if state.cost.epsilon > 0:
                # Before anything derived from the set leaves; never twice for one overlap job.
                self.ctx.ledger.charge(
                    _charge_key(step), state.dataset.name, state.project, state.cost, note=state.requested_by
                )
            if state.distinct:
                if not step.wrap_key:
                    raise Refused(
                        "malformed_request",
                        "a union needs the coordinator's job key",
                        node=self.config.node_id,
                    )
                records = list(zip(state.ids, seal_labels(state.labels, step.wrap_key), strict=True))
                blob = pack_fixed(
                    [token + box for token, box in state.psi.blind_own_pairs(records)], ITEM_BYTES
                )
            elif state.sum_base is not None and state.layout is not None:
                blob = _encrypt_and_blind(state)
            else:
                blob = pack_tokens(state.psi.blind_own(state.ids))
            sealed = _seal(blob, step.next_key)
            self.ctx.audit.append(
                "released",
                state.job_id,
                {
                    "overlap": state.job_id,
                    "party": state.party,
                    "blinded": len(state.ids),
                    # How many came from the offline phase (nodes/preblind.py).
                    "preblinded": state.psi.prepared_hits,
                    "to": step.next_party,
                    "digest": hashlib.sha256(sealed).hexdigest(),
                },
            )
            return _first_chunk(state, sealed, True, step.chunk_bytes)

    def _reblind(self, step: pb.OverlapStep) -> pb.OverlapReply:
        state = self._state(step)
        node = self.config.node_id
        with state.lock:
            pieces = state.inbox.setdefault(step.owner, [None] * max(1, step.chunk_count))
            if step.chunk_count != len(pieces) or step.chunk_index >= len(pieces):
                raise Refused("malformed_request", "hop chunks do not line up", node=node)
            pieces[step.chunk_index] = step.chunk
            if any(p is None for p in pieces):
                return pb.OverlapReply(chunk_count=0)
            sealed_in = b"".join(p for p in pieces if p is not None)
            del state.inbox[step.owner]
            try:
                blob = SealedBox(state.box).decrypt(sealed_in)
            except CryptoError:
                raise PsiError("a hop does not open with this party's key", rule="hop_integrity") from None
            if state.distinct:
                pairs = [split_item(item) for item in unpack_fixed(blob, ITEM_BYTES)]
                out = state.psi.reblind_pairs(pairs, owner=step.owner)
                if step.wrap_key:
                    # Last hop: items sealed to the coordinator, the list sealed to the mixing party.
                    result = pack_fixed(wrap_items(out, step.wrap_key), WRAPPED_BYTES)
                    return _first_chunk(state, _seal(result, step.next_key), True, step.chunk_bytes)
                result = pack_fixed([token + box for token, box in out], ITEM_BYTES)
            elif step.paillier_key:
                public_key = public_key_from_bytes(step.paillier_key)
                width = TOKEN_BYTES + _ciphertext_bytes(public_key.nsquare)
                pairs = _unpack_pairs(blob, width)
                out = state.psi.reblind_pairs(pairs, owner=step.owner, refresh=rerandomiser(public_key))
                result = b"".join(token + payload for token, payload in out)
            else:
                result = pack_tokens(state.psi.reblind(unpack_tokens(blob), owner=step.owner))
            final = not step.next_party
            body = result if final else _seal(result, step.next_key)
            return _first_chunk(state, body, not final, step.chunk_bytes)

    def _mix(self, step: pb.OverlapStep) -> pb.OverlapReply:
        """Mixing party of a union: collect every set's last hop, then answer them merged and shuffled,
        so the list the coordinator can read carries no owner."""
        state = self._state(step)
        node = self.config.node_id
        if not state.distinct or not 2 <= step.parties <= MAX_OVERLAP_PARTIES:
            raise Refused("protocol_order", "only a union's mixing party mixes", node=node)
        with state.lock:
            if step.owner in state.mixed:
                raise Refused("protocol_order", f"the set of {step.owner} was mixed already", node=node)
            pieces = state.inbox.setdefault("mix:" + step.owner, [None] * max(1, step.chunk_count))
            if step.chunk_count != len(pieces) or step.chunk_index >= len(pieces):
                raise Refused("malformed_request", "hop chunks do not line up", node=node)
            pieces[step.chunk_index] = step.chunk
            if any(p is None for p in pieces):
                return pb.OverlapReply(chunk_count=0)
            del state.inbox["mix:" + step.owner]
            try:
                blob = SealedBox(state.box).decrypt(b"".join(p for p in pieces if p is not None))
            except CryptoError:
                raise PsiError("a hop does not open with this party's key", rule="hop_integrity") from None
            unpack_fixed(blob, WRAPPED_BYTES)  # checks the length before anything is kept
            state.mixed[step.owner] = blob
            if len(state.mixed) < step.parties:
                return pb.OverlapReply(chunk_count=0)
            items = [item for body in state.mixed.values() for item in unpack_fixed(body, WRAPPED_BYTES)]
            merged = pack_fixed(shuffled(items), WRAPPED_BYTES)
            self.ctx.audit.append(
                "released",
                state.job_id,
                {
                    "overlap": state.job_id,
                    "party": state.party,
                    "mixed": len(items),
                    "digest": hashlib.sha256(merged).hexdigest(),
                },
            )
            return _first_chunk(state, merged, False, step.chunk_bytes)

    def _fetch(self, step: pb.OverlapStep) -> pb.OverlapReply:
        state = self._state(step)
        with state.lock:
            if step.chunk_index >= len(state.output):
                raise Refused("malformed_request", "no such output chunk", node=self.config.node_id)
            return pb.OverlapReply(
                chunk=state.output[step.chunk_index],
                chunk_index=step.chunk_index,
                chunk_count=len(state.output),
                sealed=state.sealed,
            )

    def _decrypt(self, step: pb.OverlapStep) -> pb.OverlapReply:
        state = self._state(step)
        if state.sum_base is None:
            raise Refused(
                "protocol_order", f"party {step.party} is not the base of a sum", node=self.config.node_id
            )
        with state.lock:
            value = state.sum_base.decrypt_masked(step.chunk)
            self.ctx.audit.append(
                "released",
                state.job_id,
                {"overlap": state.job_id, "party": state.party, "decrypted": "masked intersection sum"},
            )
        return pb.OverlapReply(decrypted=value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))

    def _finish(self, step: pb.OverlapStep) -> pb.OverlapReply:
        self._drop(step.job_id, step.party)
        return pb.OverlapReply()


def _charge_key(step: pb.OverlapStep) -> str:
    """One ledger entry per party and overlap job (the party names node and dataset)."""
    return f"overlap:{step.job_id}:{step.party.partition('.')[2]}"


def _check_key(step: pb.OverlapStep) -> str:
    """The ledger entry of a party's set-size check, apart from its release."""
    return f"overlap-check:{step.job_id}:{step.party.partition('.')[2]}"


# ---------------------------------------------------------------------- validation


def _identifier(dataset: Dataset, name: str, node: str) -> Column:
    column = dataset.column(name)
    if column is None:
        raise Refused(
            "unknown_column", f"column '{name}' is not declared (dataset {dataset.name})", node=node
        )
    if column.kind != "identifier":
        raise Refused(
            "not_identifier",
            f"column '{name}' is {column.kind}; an overlap is on an identifier column (dataset {dataset.name})",
            node=node,
        )
    if name not in dataset.policy.overlap_columns:
        allowed = ", ".join(dataset.policy.overlap_columns) or "none"
        raise Refused(
            "identifier_not_allowed",
            f"identifier '{name}' may not take part in overlaps of dataset {dataset.name} "
            f"(overlap_columns: {allowed})",
            node=node,
        )
    return column


def _epsilon(request: pb.PrivacyRequest, dataset: Dataset, node: str) -> float | None:
    """The epsilon this release runs at after the node's policy: requested, default, or none."""
    policy = dataset.policy
    ask = check_wire(request.epsilon, request.rho, pure_only=True, node=node)
    if ask.epsilon is not None:
        return capped_epsilon(ask.epsilon, dataset, node)
    if policy.overlap_dp_required:
        return policy.default_epsilon
    return None


def _charge_plan(epsilon: float, sensitivity: int, aggregate: bool, parties: int) -> Cost:
    """What this release costs the dataset: the cost of the noise the coordinator adds
    (``privacy.agreements.overlap_plan``)."""
    return overlap_plan(epsilon, sensitivity, parties, aggregate).cost


def _check_aggregate(
    check: Checker, dataset: Dataset, spec: pb.OverlapSpec, node: str
) -> tuple[Column, Column, int]:
    if spec.on != dataset.privacy_unit:
        raise Refused(
            "overlap_unit",
            f"an intersection sum needs '{spec.on}' to be the privacy unit of base dataset {dataset.name} "
            f"(it is '{dataset.privacy_unit}')",
            node=node,
        )
    if "sum" not in dataset.policy.operations:
        raise Refused("operation_not_allowed", "operation SUM is not allowed by policy", node=node)
    group = check.column(spec.aggregate.group_by, "group")
    if group.kind != "category":
        raise Refused(
            "not_groupable", f"column '{group.name}' is {group.kind}; group by a category column", node=node
        )
    measure = check.column(spec.aggregate.sum, "aggregate")
    if measure.kind != "numeric" or measure.bounds is None:
        raise Refused("not_numeric", f"SUM({measure.name}) needs a numeric column with bounds", node=node)
    lo, hi = measure.bounds
    if lo < 0:
        raise Refused(
            "value_bounds",
            f"an intersection sum needs non-negative values; '{measure.name}' is bounded below by {lo:g}",
            node=node,
        )
    # Truncation keeps at most max_rows_per_unit rows per entity, each clamped to the bounds.
    return group, measure, int(math.ceil(hi * dataset.max_rows_per_unit))


# ---------------------------------------------------------------------- SQL at the node


def select_ids_sql(
    dataset: Dataset, column: Column, flt: pb.Filter | None, sensitivity: int, dialect: Dialect
) -> tuple[str, list[Any]]:
    """Distinct raw identifiers of ``column`` under the filter, every value a bound parameter.

    When the overlap column is not the privacy unit, each unit keeps at most
    ``max_rows_per_unit`` rows, so it contributes at most ``sensitivity`` identifiers.
    """
    b = SqlBuilder(dialect)
    ident = quote_ident(column.local)
    where = [f"{ident} IS NOT NULL"]
    if sensitivity == 1:
        if flt is not None:
            where.append(b.filter(flt, dataset))
        return f"SELECT DISTINCT {ident} FROM {dialect.table(dataset)} WHERE {' AND '.join(where)}", b.params
    unit = quote_ident(dataset.columns[dataset.privacy_unit].local)
    where.append(f"{unit} IS NOT NULL")
    if flt is not None:
        where.append(b.filter(flt, dataset))
    inner = (
        f"SELECT {ident} AS v, ROW_NUMBER() OVER (PARTITION BY {unit} ORDER BY {ident}) AS rn "
        f"FROM {dialect.table(dataset)} WHERE {' AND '.join(where)}"
    )
    return f"SELECT DISTINCT v FROM ({inner}) AS bounded WHERE rn <= {b.bind(sensitivity)}", b.params


def all_ids(sources: DataSources, dataset: Dataset, column: str) -> list[Any]:
    """Every distinct raw value of an identifier column, at most ``overlap_max_set + 1`` of them."""
    sql, params = select_ids_sql(
        dataset, dataset.columns[column], None, 1, sources.dialect(dataset, premapped=False)
    )
    limit = int(dataset.policy.overlap_max_set) + 1
    return [row[0] for row in sources.fetch(dataset, f"{sql} LIMIT {limit}", params)]


def _select_ids(
    sources: DataSources, dataset: Dataset, column: Column, flt: pb.Filter | None, sensitivity: int
) -> list[Any]:
    sql, params = select_ids_sql(dataset, column, flt, sensitivity, sources.dialect(dataset, premapped=False))
    return [row[0] for row in sources.fetch(dataset, sql, params)]


def base_rows_sql(
    dataset: Dataset, column: Column, group: Column, measure: Column, flt: pb.Filter | None, dialect: Dialect
) -> tuple[str, list[Any]]:
    """(identifier, shared category, clamped value) per row, at most ``max_rows_per_unit`` per entity."""
    b = SqlBuilder(dialect)
    ident = quote_ident(column.local)
    lo, hi = measure.bounds or (0.0, 0.0)
    raw = f"CAST({quote_ident(measure.local)} AS {dialect.double})"
    shared = b.shared(group)
    clamp = (
        f"COALESCE(LEAST(GREATEST({raw}, CAST({b.bind(lo)} AS {dialect.double})), "
        f"CAST({b.bind(hi)} AS {dialect.double})), 0)"
    )
    where = [f"{ident} IS NOT NULL"]
    if flt is not None:
        where.append(b.filter(flt, dataset))
    base = f"SELECT {ident} AS u, {shared} AS g, {clamp} AS v FROM {dialect.table(dataset)} WHERE {' AND '.join(where)}"
    # Which rows of an entity are kept depends only on its own values, never on the analyst.
    ranked = f"SELECT u, g, v, ROW_NUMBER() OVER (PARTITION BY u ORDER BY g, v) AS rn FROM ({base}) AS base WHERE g IS NOT NULL"
    return (
        f"SELECT u, g, v FROM ({ranked}) AS bounded WHERE rn <= {b.bind(dataset.max_rows_per_unit)}",
        b.params,
    )


def _base_values(
    sources: DataSources,
    dataset: Dataset,
    column: Column,
    group: Column,
    measure: Column,
    flt: pb.Filter | None,
    max_value: int,
) -> tuple[dict[str, int], dict[str, int], int]:
    """Per normalised entity: its value (sum, rounded, capped) and its category index."""
    sql, params = base_rows_sql(
        dataset, column, group, measure, flt, sources.dialect(dataset, premapped=False)
    )
    order = {value: i for i, value in enumerate(group.domain)}
    sums: dict[str, float] = {}
    cats: dict[str, int] = {}
    bad: set[Any] = set()
    for raw, category, value in sources.fetch(dataset, sql, params):
        entity = normalise(column.id_type, raw)
        if entity is None:
            bad.add(raw)
            continue
        index = order.get(category)
        if index is None:
            continue
        sums[entity] = sums.get(entity, 0.0) + float(value)
        cats[entity] = min(index, cats.get(entity, index))
    values = {e: min(max_value, max(0, round(v))) for e, v in sums.items()}
    return values, cats, len(bad)


# ---------------------------------------------------------------------- wire helpers


def _ciphertext_bytes(nsquare: int) -> int:
    return (nsquare.bit_length() + 7) // 8


def _encrypt_and_blind(state: _Party) -> bytes:
    """Base party: encrypt (count, value) in its category's slots, blind, shuffle, serialise."""
    base, layout = state.sum_base, state.layout
    assert base is not None and layout is not None
    public_key = base.public_key
    width = _ciphertext_bytes(public_key.nsquare)
    records = []
    for entity, value in state.values.items():
        c = state.categories[entity]
        plain = layout.encode(0, 2 * c) + (value << (layout.slot_bits * (2 + 2 * c)))
        records.append((entity, public_key.raw_encrypt(plain).to_bytes(width, "big")))
    pairs = state.psi.blind_own_pairs(records)
    return b"".join(token + payload for token, payload in pairs)


def _unpack_pairs(blob: bytes, width: int) -> list[tuple[bytes, bytes]]:
    if len(blob) % width:
        raise PsiError(
            "a hop of pairs has a length that is not a whole number of records", rule="token_format"
        )
    return [
        (blob[i : i + TOKEN_BYTES], blob[i + TOKEN_BYTES : i + width]) for i in range(0, len(blob), width)
    ]


def _seal(blob: bytes, recipient: bytes) -> bytes:
    try:
        return SealedBox(PublicKey(recipient)).encrypt(blob)
    except (CryptoError, ValueError, TypeError):
        raise PsiError("the next party's hop key is not an X25519 public key", rule="hop_integrity") from None


def _first_chunk(state: _Party, body: bytes, sealed: bool, chunk_bytes: int) -> pb.OverlapReply:
    size = chunk_bytes or DEFAULT_CHUNK_BYTES
    state.output = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    state.sealed = sealed
    return pb.OverlapReply(chunk=state.output[0], chunk_index=0, chunk_count=len(state.output), sealed=sealed)
