"""Entity overlap at the coordinator: drive the PSI ring, count, add DP noise, answer the analyst.

Protocols: multi-party PSI cardinality by commutative blinding (``protocols/psi.py``; Meadows
1986, Huberman, Franklin and Hogg 1999) and Private Intersection-Sum-with-Cardinality (Ion et
al., EuroS&P 2020; ``protocols/psi_sum.py``). Each dataset taking part is a party
``node.dataset``; the ring is the order the analyst named them in (the base first for a sum).

    PREPARE every party (validate, select, normalise, account, audit; hop keys back)
    BLIND   every party blinds its own set, sealed to the next party
    REBLIND n - 1 rounds: each set moves one hop; the last hop answers it fully blinded
    count   patterns (or the masked intersection sum, decrypted once by the base party)
    noise   OpenDP over the whole pattern histogram (or per group count and sum)
    FINISH  every party drops its keys

Nodes only dial out, so the coordinator relays every hop; hops are sealed to the next party's
per-job X25519 key, and what the coordinator can read is the final, fully blinded sets only.
With ``FEDERATION_RECORD_DIR`` set, every node message received in an overlap job is written
there, so tests can inspect exactly what the coordinator saw.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from coordinator.config import CoordinatorConfig
from coordinator.jobstore import JobStore
from coordinator.progress import Report
from coordinator.registry import NodeGone, Sessions
from privacy.agreements import overlap_plan
from privacy.dp import NoiseSpec, interval, release_counts, release_sums
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.privacy_request import check_wire
from protocols.psi import TOKEN_BYTES, pattern_counts, unpack_tokens
from protocols.psi_sum import SumLayout, masked_intersection_sum, public_key_from_bytes
from protocols.refusals import NOT_COMPUTED, OVERLAP_NOT_COMPUTED, is_data_dependent
from protocols.spec_limits import check_parties
from protocols.values import from_value

log = logging.getLogger("federation.coordinator.overlap")
T = TypeVar("T")

RECORD_ENV = "FEDERATION_RECORD_DIR"
# Room for the message envelope around one chunk of tokens.
_ENVELOPE_BYTES = 64 * 1024
# The node's link accepts gRPC messages up to the default 4 MiB.
_NODE_LINK_BYTES = 4 * 1024 * 1024


class OverlapFailed(FederationError):
    """The overlap job cannot go on; ``rule`` names why (a node's rule where a node refused).

    ``charged`` is what a refusing node charged before it decided (a noisy set-size check).
    """

    def __init__(self, rule: str, message: str, node: str = "") -> None:
        super().__init__(rule, message, node)
        self.charged = pb.NodeCost()


@dataclass
class _Party:
    name: str  # node.dataset
    node: str
    dataset: str
    reply: pb.OverlapReply = field(default_factory=pb.OverlapReply)
    outcome: pb.NodeOutcome = field(default_factory=pb.NodeOutcome)


class _Recorder:
    """Writes every node message received in overlap jobs to ``FEDERATION_RECORD_DIR``."""

    def __init__(self) -> None:
        where = os.environ.get(RECORD_ENV, "")
        self.dir = Path(where) if where else None
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def write(self, job_id: str, response: pb.JobResponse) -> None:
        if self.dir is None:
            return
        with self._lock:
            seq = next(self._seq)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"{job_id}-{seq:06d}.bin").write_bytes(response.SerializeToString())


_recorder = _Recorder()


class OverlapJob:
    """One overlap job from the analyst's request to the answer."""

    def __init__(
        self,
        registry: Sessions,
        config: CoordinatorConfig,
        request: pb.OverlapRequest,
        requested_by: str,
        report: Report | None = None,
    ) -> None:
        self.registry = registry
        self.report: Report = report or (lambda phase, step, detail: None)
        self.spec = pb.OverlapSpec()
        self.spec.CopyFrom(request.spec)
        self.requested_by = requested_by
        self.job_id = uuid.uuid4().hex
        self.timeout = request.timeout_seconds if request.timeout_seconds > 0 else config.node_timeout_seconds
        self.chunk_bytes = min(config.max_message_bytes, _NODE_LINK_BYTES) - _ENVELOPE_BYTES
        self.parties: list[_Party] = []
        self._messages = itertools.count()
        # Nodes that timed out or dropped in this job: FINISH is sent to them without waiting.
        self._lost: set[str] = set()

    # ------------------------------------------------------------------ set-up

    def resolve(self, aggregate: bool) -> None:
        """Check the request against the public metadata and name every party."""
        spec = self.spec
        if not spec.on:
            raise OverlapFailed("malformed_request", "name the identifier column to match on (on=...)")
        try:
            # A union COUNT(DISTINCT) runs over the nodes serving the dataset: the same cap.
            check_parties(len(spec.datasets))
        except FederationError as exc:
            raise OverlapFailed(exc.rule, exc.message) from None
        if aggregate != spec.HasField("aggregate"):
            raise OverlapFailed(
                "malformed_request", "an intersection sum needs group_by and sum; an overlap none"
            )
        if aggregate and not (spec.aggregate.group_by and spec.aggregate.sum):
            raise OverlapFailed("malformed_request", "an intersection sum needs both group_by and sum")
        try:
            check_wire(spec.privacy.epsilon, spec.privacy.rho, pure_only=True)
        except FederationError as exc:
            raise OverlapFailed(exc.rule, exc.message) from None
        sessions = self.registry.sessions()
        id_types: dict[str, str] = {}
        for item in spec.datasets:
            serving = [s for s in sessions if any(d.name == item.dataset for d in s.datasets)]
            if item.node:
                chosen = [s for s in serving if s.node_id == item.node]
                if not chosen:
                    if any(s.node_id == item.node for s in sessions):
                        raise OverlapFailed(
                            "unknown_dataset", f"node {item.node} does not serve dataset '{item.dataset}'"
                        )
                    raise OverlapFailed("node_unreachable", f"node {item.node} is not connected")
            else:
                chosen = serving
                if len(chosen) != 1:
                    where = ", ".join(sorted(s.node_id for s in chosen)) or "no connected node"
                    raise OverlapFailed(
                        "unknown_dataset",
                        f"dataset '{item.dataset}' is served by {where}; name it as node.dataset",
                    )
            session = chosen[0]
            item.node = session.node_id
            name = f"{item.node}.{item.dataset}"
            if any(p.name == name for p in self.parties):
                raise OverlapFailed("malformed_request", f"dataset {name} is named twice")
            info = next(d for d in session.datasets if d.name == item.dataset)
            column = next((c for c in info.columns if c.name == spec.on), None)
            if column is None:
                raise OverlapFailed("unknown_column", f"dataset {name} declares no column '{spec.on}'")
            if column.kind != pb.IDENTIFIER:
                raise OverlapFailed("not_identifier", f"column '{spec.on}' of {name} is not an identifier")
            id_types[name] = column.id_type
            self.parties.append(
                _Party(name=name, node=item.node, dataset=item.dataset, outcome=pb.NodeOutcome(node=name))
            )
        if len(set(id_types.values())) > 1:
            shown = ", ".join(f"{k}: {v}" for k, v in id_types.items())
            raise OverlapFailed("id_type_mismatch", f"'{spec.on}' has different identifier types ({shown})")

    # ------------------------------------------------------------------ messaging

    def _job(self, party: _Party, step: pb.OverlapStep) -> pb.JobRequest:
        step.job_id = self.job_id
        step.party = party.name
        message_id = f"{self.job_id}:{next(self._messages)}:{party.name}"
        return pb.JobRequest(job_id=message_id, overlap=step, requested_by=self.requested_by)

    def _post(self, party: _Party, step: pb.OverlapStep) -> None:
        """Send without waiting for the answer (to a node that already failed to answer once)."""
        session = self.registry.get(party.node)
        if session is not None:
            job = self._job(party, step)
            session.send_job(job)
            session.forget(job.job_id)

    def _send(self, party: _Party, step: pb.OverlapStep) -> pb.OverlapReply:
        session = self.registry.get(party.node)
        if session is None:
            self._lost.add(party.node)
            raise OverlapFailed("node_unreachable", f"node {party.node} is not connected", node=party.node)
        job = self._job(party, step)
        future = session.send_job(job)
        try:
            response = future.result(timeout=self.timeout)
        except FutureTimeout:
            session.forget(job.job_id)
            self._lost.add(party.node)
            raise OverlapFailed(
                "timeout", f"node {party.node} did not answer within {self.timeout:g}s", node=party.node
            ) from None
        except NodeGone:
            self._lost.add(party.node)
            raise OverlapFailed(
                "node_disconnected", f"node {party.node} disconnected during the overlap", node=party.node
            ) from None
        _recorder.write(self.job_id, response)
        if response.WhichOneof("outcome") == "refusal":
            refusal = response.refusal
            failure = OverlapFailed(refusal.rule, refusal.reason, node=party.node)
            failure.charged.CopyFrom(refusal.cost)
            raise failure
        if response.WhichOneof("outcome") != "overlap":
            raise OverlapFailed("protocol", f"node {party.node} answered an overlap step with something else")
        return response.overlap

    def _exchange(
        self, party: _Party, step: pb.OverlapStep, body: bytes | None = None, output: bool = True
    ) -> tuple[bytes, bool]:
        """Send ``step`` (with ``body`` in chunks), then collect the party's whole output (none when
        ``output`` is false: the party only keeps the input)."""
        step.chunk_bytes = self.chunk_bytes
        if body is None:
            reply = self._send(party, step)
        else:
            pieces = [body[i : i + self.chunk_bytes] for i in range(0, len(body), self.chunk_bytes)] or [b""]
            for index, piece in enumerate(pieces):
                message = pb.OverlapStep()
                message.CopyFrom(step)
                message.chunk, message.chunk_index, message.chunk_count = piece, index, len(pieces)
                reply = self._send(party, message)
        if not output:
            return b"", False
        if reply.chunk_count == 0:
            raise OverlapFailed("protocol", f"party {party.name} answered no output", node=party.node)
        out = [reply.chunk]
        for index in range(1, reply.chunk_count):
            more = self._send(party, pb.OverlapStep(phase=pb.OVERLAP_FETCH, chunk_index=index))
            out.append(more.chunk)
        return b"".join(out), reply.sealed

    def _each(self, work: dict[str, Callable[[], T]]) -> dict[str, T]:
        """Run one callable per party in parallel; the first failure wins."""
        with ThreadPoolExecutor(max_workers=len(work), thread_name_prefix="overlap") as pool:
            futures = {name: pool.submit(fn) for name, fn in work.items()}
            results: dict[str, T] = {}
            failure: Exception | None = None
            for name, future in futures.items():
                try:
                    results[name] = future.result()
                except Exception as exc:  # noqa: BLE001 - reported below, with its rule
                    failure = failure or exc
            if failure is not None:
                raise failure
            return results

    # ------------------------------------------------------------------ phases

    def prepare(self) -> None:
        def one(party: _Party) -> pb.OverlapReply:
            step = pb.OverlapStep(phase=pb.OVERLAP_PREPARE, spec=self.spec, parties=len(self.parties))
            try:
                reply = self._send(party, step)
            except OverlapFailed as exc:
                party.outcome.status = (
                    "refused" if exc.rule not in ("timeout", "node_disconnected") else exc.rule
                )
                party.outcome.reason = exc.message
                party.outcome.rule = exc.rule
                party.outcome.cost.CopyFrom(exc.charged)
                raise
            party.reply = reply
            party.outcome.status = "answered"
            party.outcome.cost.CopyFrom(reply.cost)
            party.outcome.cost.epsilon += reply.check_cost.epsilon
            party.outcome.audit_digest = reply.audit_digest
            return reply

        with ThreadPoolExecutor(max_workers=len(self.parties), thread_name_prefix="overlap") as pool:
            futures = [pool.submit(one, party) for party in self.parties]
            failures = []
            for party, future in zip(self.parties, futures, strict=True):
                try:
                    future.result()
                except OverlapFailed as exc:
                    failures.append((party, exc))
        if failures:
            raise self._prepare_failure(failures)
        for party in self.parties:
            if len(party.reply.hop_key) != 32:
                raise OverlapFailed("protocol", f"party {party.name} sent no hop key")

    def _prepare_failure(self, failures: list[tuple[_Party, OverlapFailed]]) -> OverlapFailed:
        """The one failure the analyst sees for a job some party refused at PREPARE.

        A refusal decided on a party's data (its set size) must not say which rule fired at which
        party: every party that is not named by a data-independent refusal gets the same outcome,
        ``not_computed``, with what it charged. Refusals that depend only on the policy, the
        request or the budget are named as before, and decide the job's rule when there are any.
        """
        named = [(p, exc) for p, exc in failures if not is_data_dependent(exc.rule)]
        for party in self.parties:
            if any(p is party for p, _ in named):
                continue
            # What the party charged is its size check only: the release is charged at BLIND.
            check = pb.NodeCost()
            check.CopyFrom(
                party.reply.check_cost if party.outcome.status == "answered" else party.outcome.cost
            )
            party.outcome.CopyFrom(
                pb.NodeOutcome(
                    node=party.name,
                    status=NOT_COMPUTED,
                    rule=NOT_COMPUTED,
                    reason=OVERLAP_NOT_COMPUTED,
                    cost=check,
                )
            )
        if not named:
            return OverlapFailed(NOT_COMPUTED, OVERLAP_NOT_COMPUTED)
        rules = {exc.rule for _, exc in named}
        message = "; ".join(
            f"{party.name} refused: {exc.message}" + (f" [rule: {exc.rule}]" if len(rules) > 1 else "")
            for party, exc in named
        )
        return OverlapFailed(named[0][1].rule, message)

    def ring(self) -> dict[str, bytes]:
        """Move every set around the ring; return each party's fully blinded set (serialised)."""
        n = len(self.parties)
        base_key = self.parties[0].reply.paillier_key if self.spec.HasField("aggregate") else b""
        in_flight: dict[str, bytes] = {}

        def blind(i: int) -> tuple[bytes, bool]:
            nxt = self.parties[(i + 1) % n]
            step = pb.OverlapStep(phase=pb.OVERLAP_BLIND, next_party=nxt.name, next_key=nxt.reply.hop_key)
            return self._exchange(self.parties[i], step)

        self.report("blind", 1, f"each of the {n} parties blinds its own set")
        outputs = self._each({p.name: functools.partial(blind, i) for i, p in enumerate(self.parties)})
        for name, (body, _sealed) in outputs.items():
            in_flight[name] = body
        for hop in range(1, n):
            self.report("re-blind", 1 + hop, f"round {hop} of {n - 1}: every set moves one party on")

            def reblind(i: int, hop: int = hop) -> tuple[bytes, bool]:
                owner = self.parties[i]
                holder = self.parties[(i + hop) % n]
                nxt = self.parties[(i + hop + 1) % n]
                final = nxt.name == owner.name
                step = pb.OverlapStep(
                    phase=pb.OVERLAP_REBLIND,
                    owner=owner.name,
                    next_party="" if final else nxt.name,
                    next_key=b"" if final else nxt.reply.hop_key,
                    paillier_key=base_key if i == 0 else b"",
                )
                body, sealed = self._exchange(holder, step, in_flight[owner.name])
                if sealed == final:
                    raise OverlapFailed("protocol", f"party {holder.name} sealed the wrong hop")
                return body, sealed

            outputs = self._each({p.name: functools.partial(reblind, i) for i, p in enumerate(self.parties)})
            for name, (body, _sealed) in outputs.items():
                in_flight[name] = body
        self.report("count", n + 1, "matching the fully blinded sets; noise")
        return in_flight

    def finish(self) -> None:
        """Every party drops its keys; best effort, a node that is gone has dropped them already."""

        def one(party: _Party) -> None:
            step = pb.OverlapStep(phase=pb.OVERLAP_FINISH)
            try:
                if party.node in self._lost:
                    # The analyst is not kept waiting a second timeout for a stalled node.
                    self._post(party, step)
                else:
                    self._send(party, step)
            except OverlapFailed:
                pass

        with ThreadPoolExecutor(max_workers=len(self.parties), thread_name_prefix="overlap") as pool:
            list(pool.map(one, self.parties))

    # ------------------------------------------------------------------ results

    def privacy(self) -> tuple[float | None, int]:
        """The epsilon the release runs at (the smallest any party charged) and the sensitivity."""
        charged = [p.reply.cost.epsilon for p in self.parties if p.reply.cost.epsilon > 0]
        sensitivity = max(max(p.reply.sensitivity for p in self.parties), 1)
        return (min(charged) if charged else None), sensitivity

    def patterns(self, final: dict[str, bytes]) -> pb.OverlapResponse:
        names = [p.name for p in self.parties]
        counts = pattern_counts({name: unpack_tokens(final[name]) for name in names})
        masks = list(range(1, 2 ** len(names)))
        members = [[names[b] for b in range(len(names)) if mask >> b & 1] for mask in masks]
        exact = [counts.get(frozenset(m), 0) for m in members]
        epsilon, sensitivity = self.privacy()
        response = pb.OverlapResponse(job_id=self.job_id, ok=True, datasets=names)
        values: list[float] = [float(v) for v in exact]
        if epsilon is not None:
            spec = pattern_noise(epsilon, sensitivity, len(names))
            values = [float(v) for v in release_counts(exact, spec)]
            response.epsilon = epsilon
            response.noise_sd = spec.sd
            response.ci_half_width = interval(0.0, spec)[1]
        for mask, value in zip(masks, values, strict=True):
            response.patterns.add(members=mask, count=value)
        for bit, party in enumerate(self.parties):
            size = sum(v for mask, v in zip(masks, values, strict=True) if mask >> bit & 1)
            response.parties.add(
                dataset=party.name,
                node=party.node,
                set_size=size if epsilon is not None else float(party.reply.set_size),
                malformed=party.reply.malformed,
            )
        return response

    def intersection_sum(self, final: dict[str, bytes]) -> pb.OverlapResponse:
        base = self.parties[0]
        reply = base.reply
        public_key = public_key_from_bytes(reply.paillier_key)
        width = TOKEN_BYTES + (public_key.nsquare.bit_length() + 7) // 8
        blob = final[base.name]
        if len(blob) % width:
            raise OverlapFailed("protocol", "the base set does not split into (token, ciphertext) records")
        pairs = [
            (blob[i : i + TOKEN_BYTES], blob[i + TOKEN_BYTES : i + width]) for i in range(0, len(blob), width)
        ]
        required = {p.name: unpack_tokens(final[p.name]) for p in self.parties[1:]}
        masked = masked_intersection_sum(pairs, required, public_key)
        answer = self._send(base, pb.OverlapStep(phase=pb.OVERLAP_DECRYPT, chunk=masked.ciphertext))
        decrypted = int.from_bytes(answer.decrypted, "big")
        if not 0 <= decrypted < public_key.n:
            raise OverlapFailed("sum_integrity", "the base party's decryption is outside the plaintext space")
        categories = [from_value(v) for v in reply.categories]
        layout = SumLayout(
            max_value=int(reply.max_value), categories=2 * len(categories), slot_bits=reply.slot_bits
        )
        _, slots = layout.decode((decrypted - masked.mask) % public_key.n)
        counts = [slots[2 * c] for c in range(len(categories))]
        sums = [slots[2 * c + 1] for c in range(len(categories))]
        if sum(counts) != masked.matched:
            raise OverlapFailed("sum_integrity", "group counts do not add up to the matched entities")
        epsilon, sensitivity = self.privacy()
        response = pb.OverlapResponse(
            job_id=self.job_id,
            ok=True,
            datasets=[p.name for p in self.parties],
            group_by=self.spec.aggregate.group_by,
        )
        noisy_counts = [float(c) for c in counts]
        noisy_sums = [float(s) for s in sums]
        if epsilon is not None:
            count_spec, sum_spec = sum_noise(epsilon, sensitivity, int(reply.max_value))
            noisy_counts = [float(v) for v in release_counts(counts, count_spec)]
            noisy_sums = release_sums([float(s) for s in sums], sum_spec)
            response.epsilon = epsilon
            response.noise_sd = count_spec.sd
            response.ci_half_width = interval(0.0, count_spec)[1]
            response.sum_noise_sd = sum_spec.sd
            response.sum_ci_half_width = interval(0.0, sum_spec)[1]
        for value, count, total in zip(reply.categories, noisy_counts, noisy_sums, strict=True):
            response.groups.add(key=value, count=count, sum=total)
        for party in self.parties:
            response.parties.add(
                dataset=party.name,
                node=party.node,
                set_size=float(party.reply.set_size) if epsilon is None else -1.0,
                malformed=party.reply.malformed,
            )
        return response


def pattern_noise(epsilon: float, sensitivity: int, parties: int) -> NoiseSpec:
    """Discrete Laplace over the pattern histogram, whose cost every party charged
    (``privacy.agreements.overlap_plan``)."""
    return overlap_plan(epsilon, sensitivity, parties, aggregate=False).components[0].spec


def sum_noise(epsilon: float, sensitivity: int, max_value: int) -> tuple[NoiseSpec, NoiseSpec]:
    """Noise for group counts and sums over the intersection: each entity is in one group."""
    plan = overlap_plan(epsilon, sensitivity, 2, aggregate=True, max_value=float(max_value))
    values = {c.spec.kind: c.spec for c in plan.components if c.role == "value"}
    return values["count_distinct"], values["sum"]


def _digest(response: pb.OverlapResponse) -> str:
    h = hashlib.sha256()
    for item in (*response.patterns, *response.groups):
        h.update(item.SerializeToString(deterministic=True))
    return h.hexdigest()


def _describe(spec: pb.OverlapSpec) -> str:
    names = ", ".join(f"{d.node}.{d.dataset}" if d.node else d.dataset for d in spec.datasets)
    if spec.HasField("aggregate"):
        return (
            f"OVERLAP SUM({spec.aggregate.sum}) BY {spec.aggregate.group_by} ON {spec.on} "
            f"OVER {names} (base first)"
        )
    return f"OVERLAP ON {spec.on} OVER {names}"


def run_overlap(
    registry: Sessions,
    jobs: JobStore,
    config: CoordinatorConfig,
    request: pb.OverlapRequest,
    requested_by: str,
    aggregate: bool,
    report: Report | None = None,
) -> pb.OverlapResponse:
    """Run one overlap (pattern counts) or intersection-sum job; never raises.

    ``report(phase, steps done, detail)`` follows it: ``progress_steps(n)`` steps for n parties.
    """
    job = OverlapJob(registry, config, request, requested_by, report)
    try:
        job.resolve(aggregate)
    except OverlapFailed as exc:
        job.report("failed", 0, exc.message)
        return pb.OverlapResponse(job_id=job.job_id, ok=False, error=exc.message, error_rule=exc.rule)
    jobs.start(job.job_id, requested_by, job.spec, _describe(job.spec))  # type: ignore[arg-type]
    try:
        job.report("prepare", 0, f"{len(job.parties)} parties check, select and normalise their sets")
        job.prepare()
        final = job.ring()
        response = job.intersection_sum(final) if aggregate else job.patterns(final)
    except FederationError as exc:
        log.info("overlap %s failed: %s", job.job_id, exc)
        # Every party is told to finish, whether it accepted or refused: which parties hold state
        # must not show in how long the failure takes to reach the analyst.
        job.finish()
        outcomes = [p.outcome for p in job.parties]
        jobs.finish(job.job_id, "failed", "", outcomes, error=f"{exc.message} [rule: {exc.rule}]")
        job.report("failed", 0, exc.message)
        return pb.OverlapResponse(
            job_id=job.job_id,
            ok=False,
            error=exc.message,
            error_rule=exc.rule,
            datasets=[p.name for p in job.parties],
            nodes=outcomes,
        )
    job.finish()
    response.nodes.extend(p.outcome for p in job.parties)
    jobs.finish(job.job_id, "complete", _digest(response), [p.outcome for p in job.parties])
    job.report("done", progress_steps(len(job.parties)), "")
    return response


def progress_steps(parties: int) -> int:
    """Steps an overlap of ``parties`` reports: prepare, blind, ``parties - 1`` rounds, count."""
    return parties + 2
