"""Secure queries at the coordinator: secure aggregation over the node links, with distributed DP.

    round 0: query + SecAgg config -> each node computes, adds its noise share, charges its
             ledger, and advertises keys (SecAgg round 1) with the public layout of its vector
    rounds 2-4: the coordinator relays SecAgg messages (share keys, masked input, unmask)
    then: unmask the sum only -> decode -> suppress on the summed noisy unit count (or on the
          summed noisy COUNT(*) against a threshold in rows) -> AVG, noise sd, 95% intervals
          -> the usual QueryResponse

Secure aggregation is SecAgg (Bonawitz et al., CCS 2017) with the sparse graph of SecAgg+ (Bell et
al., CCS 2020), protocols/secagg.py; the noise is the distributed discrete Gaussian of Kairouz, Liu
& Steinke (ICML 2021), whose shares add up to one curator's noise (privacy/distributed.py). The
coordinator holds masked vectors and the unmasked sum, never one node's contribution.

Debugging and audit aid: with ``FEDERATION_RECORD_DIR`` set, every reply the coordinator receives
in a secure job is written to ``<dir>/<job id>/round<r>-<node>.pb`` (a serialized ``SecureReply``),
so anyone can check that nothing but masked vectors reached the coordinator.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coordinator.combine import Z95
from coordinator.registry import NodeSession, listed
from coordinator.round_exchange import encode_round, exchange, feed
from privacy.accounting import PrivacyError
from privacy.agreements import reuses_count, secure_layout
from privacy.dp import NoiseSpec, interval
from privacy.suppression import THRESHOLD_P, ThresholdNoise, combined_threshold
from protocols import federation_pb2 as pb
from protocols.fixed_point import FixedPointCodec
from protocols.secagg import SecAggConfig, SecAggServer
from protocols.secagg_errors import SecAggError

RECORD_ENV = "FEDERATION_RECORD_DIR"
BITS = 64
LEVEL = 0.95

Observer = Callable[[str, int, Mapping[str, pb.SecureReply]], None]
# Called after each round with (job id, round, replies by node): the recorder below is one; an
# operator's audit hook or a fault drill can be another.
observers: list[Observer] = []


def requires_secure(spec: pb.QuerySpec, targets: list[NodeSession]) -> bool:
    """Secure when the analyst asks for it or any target's policy releases the dataset only so."""
    return spec.secure or any(
        d.release == "secure" for s in targets for d in s.datasets if d.name == spec.dataset
    )


def secagg_parameters(n: int) -> tuple[int, int]:
    """(threshold t, neighbours k): complete graph up to 8 nodes, else a SecAgg+ graph of degree
    2 ceil(log2 n) (Bell et al. 2020); t is two thirds of a neighbourhood, at least 2."""
    k = n - 1 if n <= 8 else min(n - 1, 2 * math.ceil(math.log2(n)))
    return max(2, math.ceil(2 * (k + 1) / 3)), k


def measurement_count(spec: pb.QuerySpec) -> int:
    """Blocks per group of the secure vector, as every node lays it out (``privacy.agreements``)."""
    return len(secure_layout(spec))


def group_count(spec: pb.QuerySpec, info: pb.DatasetInfo) -> int:
    columns = {c.name: c for c in info.columns}
    count = 1
    for name in spec.group_by:
        column = columns.get(name)
        # An unknown column is refused by every node's validation, with its own rule.
        count *= max(1, len(column.domain)) if column is not None else 1
    return count


@dataclass
class _Party:
    session: NodeSession
    outcome: pb.NodeOutcome
    active: bool = True
    round0: pb.SecureReply | None = None
    masked: bool = False
    unmasked: bool = False

    def drop(self, status: str, reason: str, rule: str = "") -> None:
        self.active = False
        self.outcome.status = status
        self.outcome.reason = reason
        self.outcome.rule = rule


class _Failed(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


class SecureQuery:
    """One secure query job, driven round by round over the nodes' links."""

    def __init__(
        self,
        targets: list[NodeSession],
        spec: pb.QuerySpec,
        job_id: str,
        requested_by: str,
        timeout: float,
    ) -> None:
        self.spec = spec
        self.job_id = job_id
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

    # ------------------------------------------------------------------ transport

    def _exchange(self, rnd: int, steps: Mapping[str, pb.SecureStep]) -> dict[str, pb.SecureReply]:
        replies: dict[str, pb.SecureReply] = exchange(
            self.parties, self.job_id, rnd, steps, "secure", self.requested_by, self.timeout
        )
        for observer in [*observers, _recorder()]:
            if observer is not None:
                observer(self.job_id, rnd, replies)
        return replies

    def _feed(self, server: SecAggServer, replies: Mapping[str, pb.SecureReply]) -> list[str]:
        return feed(server, self.parties, replies)

    def _close(self, server: SecAggServer) -> dict[str, bytes]:
        try:
            return encode_round(server)
        except SecAggError as exc:
            raise self._threshold_failure(exc) from None

    def _threshold_failure(self, exc: SecAggError) -> _Failed:
        gone = [p.outcome for p in self.parties.values() if not p.active]
        if gone and all(o.status == "refused" for o in gone) and len({o.rule for o in gone}) == 1:
            if not any(p.active for p in self.parties.values()):
                return _Failed(gone[0].rule, "; ".join(f"node {o.node} refused: {o.reason}" for o in gone))
        named = listed(gone) or "none"
        return _Failed(exc.rule, f"secure aggregation stopped: {exc.message}; dropped: {named}")

    # ------------------------------------------------------------------ rounds

    def _config(self) -> tuple[pb.SecureConfig, SecAggConfig, dict[str, bytes]]:
        n = len(self.parties)
        if n < 2:
            raise _Failed(
                "secure_min_nodes",
                f"a secure query needs at least 2 nodes serving dataset '{self.spec.dataset}'; {n} connected node(s) serve it",
            )
        keys = {node: bytes(info.secagg_verify_key) for node, info in self.infos.items()}
        lacking = sorted(node for node, key in keys.items() if len(key) != 32)
        if lacking:
            raise _Failed(
                "secure_unsupported", f"node(s) {', '.join(lacking)} announce no secure-aggregation key"
            )
        t, k = secagg_parameters(n)
        first = self.infos[min(self.infos)]
        dim = group_count(self.spec, first) * measurement_count(self.spec)
        ids = list(self.parties)
        config = pb.SecureConfig(
            node_ids=ids,
            verify_keys=[keys[i] for i in ids],
            threshold=t,
            neighbours=k,
            dim=dim,
            bits=BITS,
            # The query may lower the rows per unit below every declaration (privacy/bounds.py).
            max_rows_per_unit=max(
                min(info.max_rows_per_unit, self.spec.max_rows_per_unit or info.max_rows_per_unit)
                for info in self.infos.values()
            ),
        )
        try:
            secagg = SecAggConfig(self.job_id, tuple(ids), t, k, dim, bits=BITS)
        except SecAggError as exc:
            raise _Failed(exc.rule, exc.message) from None
        return config, secagg, keys

    def _check_layouts(self, replies: dict[str, pb.SecureReply]) -> pb.SecureReply:
        def shape(r: pb.SecureReply) -> tuple[bytes, ...]:
            return tuple(x.SerializeToString(deterministic=True) for x in [*r.keys, *r.components])

        shapes = {node: shape(reply) for node, reply in replies.items()}  # once per node
        counts: dict[tuple[bytes, ...], list[str]] = {}
        for node, layout in shapes.items():
            counts.setdefault(layout, []).append(node)
        if not counts:
            raise _Failed("secagg_threshold", "no node started the secure aggregation")
        # The layout most nodes agree on; a node whose bounds, domains or noise differ is left out.
        reference = max(counts.items(), key=lambda kv: len(kv[1]))[0]
        for node in [n for n, layout in shapes.items() if layout != reference]:
            self.parties[node].drop(
                "refused",
                f"node {node} declared a different layout (domains, bounds or noise) than the others",
                "secure_layout_mismatch",
            )
            del replies[node]
        return next(iter(replies.values()))

    def run(self) -> tuple[pb.QueryResponse, str]:
        columns = list(self.spec.group_by) + [a.alias for a in self.spec.aggregates]
        response = pb.QueryResponse(job_id=self.job_id, columns=columns)
        try:
            rows, status = self._run()
        except _Failed as failure:
            response.ok = False
            response.error, response.error_rule = failure.message, failure.rule
            response.nodes.extend(self._outcomes())
            return response, "failed"
        response.ok = True
        response.rows.extend(rows)
        response.nodes.extend(self._outcomes())
        return response, status

    def _outcomes(self) -> list[pb.NodeOutcome]:
        out = []
        for party in self.parties.values():
            if party.round0 is not None and party.masked:
                # A node charges its ledger as it sends its masked input, and only then.
                party.outcome.cost.CopyFrom(party.round0.cost)
            out.append(party.outcome)
        return out

    def _run(self) -> tuple[list[pb.CombinedRow], str]:
        config, secagg, keys = self._config()
        server = SecAggServer(secagg, keys)
        start = pb.SecureStep(job_id=self.job_id, round=0, config=config, query=self.spec)
        replies = self._exchange(0, dict.fromkeys(self.parties, start))
        for node, reply in replies.items():
            self.parties[node].round0 = reply
        layout = self._check_layouts(replies) if replies else None
        self._feed(server, replies)
        outgoing = self._close(server)
        if layout is None:  # unreachable: closing round 1 without adverts fails on the threshold
            raise _Failed("secagg_threshold", "no node started the secure aggregation")
        for rnd in (2, 3, 4):
            steps = {
                node: pb.SecureStep(job_id=self.job_id, round=rnd, payload=payload)
                for node, payload in outgoing.items()
                if self.parties[node].active
            }
            replies = self._exchange(rnd, steps)
            accepted = self._feed(server, replies)
            for node in accepted:
                party = self.parties[node]
                if rnd == 3:
                    party.masked = True
                    party.outcome.audit_digest = replies[node].audit_digest
                elif rnd == 4:
                    party.unmasked = True
            outgoing = self._close(server)
        survivors = set(server.survivors)
        for node, party in self.parties.items():
            if node in survivors:
                party.outcome.status = "answered"
                if not party.unmasked:
                    party.outcome.reason = (
                        f"node {node} dropped after sending its masked input; its input is in the sum, "
                        "unmasked from its neighbours' shares (recovered)"
                    )
                    party.outcome.rule = ""
            elif party.outcome.status in ("", "answered"):
                party.drop("left_out", f"node {node} dropped before its masked input; it is not in the sum")
            else:
                party.outcome.reason = f"left out of the sum: {party.outcome.reason}"
        needed = max(1, self.spec.min_nodes)
        if len(survivors) < needed:
            raise _Failed(
                "min_nodes", f"only {len(survivors)} of the required {needed} node(s) are in the sum"
            )
        n = len(self.parties)
        codec = FixedPointCodec(lo=-(2**62) // n, hi=2**62 // n, bits=BITS, max_parties=n)
        totals = np.asarray(codec.decode_sum(server.result(), as_integer=True), dtype=np.int64)
        min_size = max(int(info.min_group_size) for info in self.infos.values())
        rows = assemble(
            self.spec, layout, totals, len(survivors), min_size, max_rows_per_unit=config.max_rows_per_unit
        )
        status = "complete" if len(survivors) == n else "partial"
        return rows, status


# --------------------------------------------------------------------------- assembly


def _spec(component: pb.SecureComponent, parts: int | None = None, max_rows_per_unit: int = 1) -> NoiseSpec:
    kind = "count_distinct" if component.kind == "count_distinct" else "count"
    return NoiseSpec(
        mechanism=component.mechanism,  # type: ignore[arg-type]
        scale=component.noise_scale,
        sd=component.noise_sd,
        kind=kind,  # type: ignore[arg-type]
        max_rows_per_unit=max_rows_per_unit,
        parts=parts if parts is not None else max(1, component.parts),
        integer=True,
    )


def _half_width(component: pb.SecureComponent, survivors: int, level: float) -> float:
    """Half-width on the grid of an interval holding the summed noise with probability ``level``."""
    if not component.mechanism:
        return 0.0
    if component.mechanism == "gaussian":
        # The sum of the survivors' discrete Gaussian shares is close to one discrete Gaussian (KLS21).
        return interval(0.0, _spec(component, survivors), level)[1]
    # A sum of discrete Laplace noises is not Laplace: union bound over the survivors' shares.
    return survivors * interval(0.0, _spec(component, 1), 1.0 - (1.0 - level) / survivors)[1]


def noisy_threshold(
    component: pb.SecureComponent, survivors: int, min_group_size: int, max_rows_per_unit: int = 1
) -> int:
    """Threshold T on the summed threshold count; a group below the minimum size clears it w.p. <= 1e-3.

    For a unit count T starts from min_group_size - 1; for COUNT(*) (``component.kind == "count"``)
    from (min_group_size - 1) R, R = ``max_rows_per_unit``, the common bound every node calibrated
    its noise to: a group of fewer units has at most that many rows. The noise is the sum of the
    survivors' shares (privacy/suppression.py): for discrete Gaussian shares, one discrete
    Gaussian's tail at the summed variance, the one noise the shares add up to.
    """
    rows = component.kind == "count"
    if rows and (
        isinstance(max_rows_per_unit, bool) or not isinstance(max_rows_per_unit, int) or max_rows_per_unit < 1
    ):
        raise PrivacyError(
            "max_rows_per_unit", f"max_rows_per_unit must be an integer >= 1, got {max_rows_per_unit!r}"
        )
    per_unit = max_rows_per_unit if rows else 1
    if not component.mechanism:
        return (min_group_size - 1) * per_unit + 1
    share = ThresholdNoise(component.mechanism, component.noise_scale, per_unit)
    return combined_threshold(min_group_size, [share] * survivors, THRESHOLD_P)


def assemble(
    spec: pb.QuerySpec,
    layout: pb.SecureReply,
    totals: np.ndarray,
    survivors: int,
    min_group_size: int,
    max_rows_per_unit: int = 1,
) -> list[pb.CombinedRow]:
    """Rows of the answer from the decoded sums, one block of ``len(layout.keys)`` per component.

    Suppression reads the distinct-unit block, else the COUNT(DISTINCT unit) block, else (no unit
    count in the layout) the noisy COUNT(*) block against a threshold in rows.
    """
    n_groups = len(layout.keys)
    comps = list(layout.components)
    blocks = totals.reshape(len(comps), n_groups)
    where = {(c.role, c.aggregate): b for b, c in enumerate(comps)}
    unit_block = where.get(("threshold", -1))
    for kind in ("count_distinct", "count"):
        if unit_block is None:
            unit_block = next((b for b, c in enumerate(comps) if c.role == "value" and c.kind == kind), None)
    if unit_block is None:
        raise PrivacyError("secure_layout", "the secure layout has no count to decide suppression on")
    threshold = noisy_threshold(comps[unit_block], survivors, min_group_size, max_rows_per_unit)
    measured = "row" if comps[unit_block].kind == "count" else "unit"
    inner = 1.0 - (1.0 - LEVEL) / 2.0
    root = math.sqrt(survivors)
    rows = []
    for g, key in enumerate(layout.keys):
        row = pb.CombinedRow()
        row.key.extend(key.key)
        if blocks[unit_block][g] < threshold:
            row.suppressed = True
            row.suppressed_by.append(f"secure sum: min_group_size: summed {measured} count below {threshold}")
        for i, agg in enumerate(spec.aggregates):
            cell = row.cells.add()
            if row.suppressed:
                cell.suppressed = True
                continue
            b = where[("value", i)]
            comp = comps[b]
            value = float(blocks[b][g]) / comp.scale
            sd = comp.noise_sd * root / comp.scale
            if agg.function == pb.AVG:
                cb = where[("avg_count", i)]
                count, count_comp = float(blocks[cb][g]), comps[cb]
                count_sd = count_comp.noise_sd * root
                total = value
                value = total / count if count > 0 else math.nan
                sd = math.sqrt(sd**2 / count**2 + total**2 * count_sd**2 / count**4) if count > 0 else 0.0
                hc = _half_width(count_comp, survivors, inner)
                if count - hc <= 0:
                    lo, hi = (-math.inf, math.inf) if sd > 0 or count <= 0 else (value, value)
                else:
                    # The delta method, as for plain answers (coordinator/combine.py): the range of
                    # sum / count over both intervals would cover far more than 95%.
                    lo, hi = value - Z95 * sd, value + Z95 * sd
            else:
                h = _half_width(comp, survivors, LEVEL) / comp.scale
                lo, hi = value - h, value + h
            cell.value, cell.noise_sd, cell.ci_low, cell.ci_high = value, sd, lo, hi
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- recording


def _recorder() -> Observer | None:
    where = os.environ.get(RECORD_ENV)
    if not where:
        return None

    def record(job_id: str, rnd: int, replies: Mapping[str, pb.SecureReply]) -> None:
        folder = Path(where) / job_id
        folder.mkdir(parents=True, exist_ok=True)
        for node, reply in replies.items():
            (folder / f"round{rnd}-{node}.pb").write_bytes(reply.SerializeToString(deterministic=True))

    return record


def run_secure_query(
    targets: list[NodeSession], spec: pb.QuerySpec, job_id: str, requested_by: str, timeout: float
) -> tuple[pb.QueryResponse, str]:
    """Run one secure query; returns the response and the job status (complete, partial, failed)."""
    return SecureQuery(targets, spec, job_id, requested_by, timeout).run()


__all__ = [
    "RECORD_ENV",
    "SecureQuery",
    "assemble",
    "measurement_count",
    "noisy_threshold",
    "observers",
    "reuses_count",
    "requires_secure",
    "run_secure_query",
    "secagg_parameters",
]
