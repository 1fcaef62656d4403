"""Union COUNT(DISTINCT unit) per group across nodes, at the coordinator (docs/distinct.md).

Protocol: :mod:`protocols.psi_union`, run over the overlap machinery of ``coordinator/overlap.py``
(one party per node serving the dataset, the first party mixes):

    PREPARE every party checks the query as its own COUNT(DISTINCT unit), lists its (group, unit)
            items, checks its budget (no charge yet) and audits
    BLIND   every party charges its ledger, hashes (group key, unit), seals each label to this
            job's coordinator key, blinds, and seals the list to the next party
    REBLIND n - 1 rounds; the last hop also seals every item to the coordinator key and sends the
            list, sealed, to the mixing party
    MIX     the mixing party opens the n final lists, merges and shuffles them, answers one list
    count   the coordinator opens the items and counts distinct tokens per group; OpenDP noise
    FINISH  every party drops its keys

The coordinator never holds a final list tagged with its owner next to a readable label.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from nacl.bindings import crypto_box_keypair

from coordinator.config import CoordinatorConfig
from coordinator.jobstore import JobStore
from coordinator.overlap import OverlapFailed, OverlapJob
from coordinator.registry import Sessions
from privacy.distinct import union_noise
from privacy.dp import NoiseSpec, interval, release_counts
from privacy.suppression import ThresholdNoise, combined_threshold
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.psi_union import WRAPPED_BYTES, union_counts, unpack_fixed
from protocols.spec_limits import MAX_OVERLAP_PARTIES, TOO_MANY_PARTIES

log = logging.getLogger("federation.coordinator.distinct")

__all__ = ["UnionAnswer", "check_union_parties", "run_union", "union_aggregates"]


def check_union_parties(column: str, n_nodes: int) -> None:
    """A union takes the overlap's party cap (``too_many_parties``): say so in the query's terms."""
    if n_nodes > MAX_OVERLAP_PARTIES:
        raise FederationError(
            TOO_MANY_PARTIES,
            f"COUNT(DISTINCT {column}) over {n_nodes} nodes: the union counts each {column} once by "
            f"private set intersection over at most {MAX_OVERLAP_PARTIES} nodes; ask for "
            f"COUNT_DISTINCT_PER_NODE({column}) (each {column} once per node, summed) instead",
        )


def union_aggregates(spec: pb.QuerySpec, n_nodes: int) -> list[int]:
    """Indexes of the aggregates that are a union across nodes: plain COUNT(DISTINCT) over 2+ nodes."""
    if n_nodes < 2:
        return []
    return [i for i, a in enumerate(spec.aggregates) if a.function == pb.COUNT_DISTINCT and not a.per_node]


@dataclass
class UnionAnswer:
    """Per group key of the public domain: the released union count, and whether it is suppressed."""

    job_id: str
    keys: list[tuple]
    values: list[float]
    suppressed: list[bool]
    threshold: int
    noise: NoiseSpec | None
    outcomes: list[pb.NodeOutcome] = field(default_factory=list)

    def cell(self, index: int) -> pb.CombinedCell:
        if self.suppressed[index]:
            return pb.CombinedCell(suppressed=True)
        value = self.values[index]
        if self.noise is None:
            return pb.CombinedCell(value=value, ci_low=value, ci_high=value)
        low, high = interval(value, self.noise)
        return pb.CombinedCell(value=value, noise_sd=self.noise.sd, ci_low=low, ci_high=high)


class UnionJob(OverlapJob):
    """An overlap job whose sets are (group, unit) items, merged by a mixing party before counting."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # Fresh per job: items are sealed to it, so only this job's count can read their labels.
        self.public, self._private = crypto_box_keypair()

    def ring(self) -> dict[str, bytes]:
        n = len(self.parties)
        mixer = self.parties[0]
        in_flight: dict[str, bytes] = {}

        def blind(i: int) -> tuple[bytes, bool]:
            nxt = self.parties[(i + 1) % n]
            step = pb.OverlapStep(
                phase=pb.OVERLAP_BLIND, next_party=nxt.name, next_key=nxt.reply.hop_key, wrap_key=self.public
            )
            return self._exchange(self.parties[i], step)

        self.report("blind", 1, f"each of the {n} parties blinds its own (group, unit) items")
        for name, (body, _sealed) in self._each(
            {p.name: functools.partial(blind, i) for i, p in enumerate(self.parties)}
        ).items():
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
                    next_party=mixer.name if final else nxt.name,
                    next_key=mixer.reply.hop_key if final else nxt.reply.hop_key,
                    wrap_key=self.public if final else b"",
                )
                body, sealed = self._exchange(holder, step, in_flight[owner.name])
                if not sealed:
                    raise OverlapFailed("protocol", f"party {holder.name} answered a hop unsealed")
                return body, sealed

            for name, (body, _sealed) in self._each(
                {p.name: functools.partial(reblind, i) for i, p in enumerate(self.parties)}
            ).items():
                in_flight[name] = body
        self.report("count", n + 1, "mixing the final sets; counting per group; noise")
        merged = b""
        for i, owner in enumerate(self.parties):
            last = i == n - 1
            step = pb.OverlapStep(phase=pb.OVERLAP_MIX, owner=owner.name, parties=n)
            merged, sealed = self._exchange(mixer, step, in_flight[owner.name], output=last)
        if sealed:
            raise OverlapFailed("protocol", f"party {mixer.name} answered the merged list sealed")
        return {"merged": merged}

    def count(self, merged: bytes) -> tuple[dict[tuple, int], int]:
        counts, items = union_counts(unpack_fixed(merged, WRAPPED_BYTES), self.public, self._private)
        expected = sum(int(p.reply.set_size) for p in self.parties)
        if items != expected:
            # Every item of every set must arrive once: a dropped or added list is not counted.
            raise OverlapFailed("protocol", "the merged list does not hold every party's items")
        return counts, items


def run_union(
    registry: Sessions,
    jobs: JobStore,
    config: CoordinatorConfig,
    spec: pb.QuerySpec,
    column: str,
    nodes: Sequence[str],
    keys: Sequence[tuple],
    min_group_size: int,
    requested_by: str,
    timeout: float,
) -> UnionAnswer:
    """Run the union over ``nodes``; raise ``OverlapFailed`` (with the refusing node's rule) on failure."""
    query = pb.QuerySpec()
    query.CopyFrom(spec)
    del query.aggregates[:]
    query.aggregates.add(function=pb.COUNT_DISTINCT, column=column, alias=column)
    query.min_nodes = 0
    query.secure = False
    overlap = pb.OverlapSpec(on=column, project=spec.project, distinct=query)
    overlap.privacy.CopyFrom(spec.privacy)
    for node in nodes:
        overlap.datasets.add(node=node, dataset=spec.dataset)
    request = pb.OverlapRequest(spec=overlap, timeout_seconds=timeout)
    job = UnionJob(registry, config, request, requested_by)
    job.resolve(aggregate=False)
    groups = ", ".join(spec.group_by) or "all rows"
    jobs.start(
        job.job_id,
        requested_by,
        job.spec,
        f"UNION COUNT(DISTINCT {column}) BY {groups} OVER {', '.join(nodes)}",
    )  # type: ignore[arg-type]
    prepared = False
    try:
        job.prepare()
        prepared = True
        counts, _ = job.count(job.ring()["merged"])
        epsilon, sensitivity = job.privacy()
        exact = [int(counts.get(key, 0)) for key in keys]
        unknown = set(counts) - set(keys)
        if unknown:
            raise OverlapFailed("protocol", "a party labelled items with a group outside the public domain")
        noise: NoiseSpec | None = None
        if epsilon is not None:
            noise = union_noise(epsilon, sensitivity)
            values = [float(v) for v in release_counts(exact, noise)]
            # Post-processing of the noisy union counts, calibrated to their one noise (docs/privacy.md).
            threshold = combined_threshold(min_group_size, [ThresholdNoise("laplace", noise.scale, 1)])
        else:
            values = [float(v) for v in exact]
            threshold = min_group_size
    except FederationError as exc:
        log.info("union %s failed: %s", job.job_id, exc)
        if prepared or any(p.outcome.status == "answered" for p in job.parties):
            job.finish()
        jobs.finish(job.job_id, "failed", "", [p.outcome for p in job.parties])
        if isinstance(exc, OverlapFailed):
            exc.outcomes = [p.outcome for p in job.parties]  # type: ignore[attr-defined]
            raise
        failed = OverlapFailed(exc.rule, exc.message, node=exc.node)
        failed.outcomes = [p.outcome for p in job.parties]  # type: ignore[attr-defined]
        raise failed from None
    job.finish()
    outcomes = [p.outcome for p in job.parties]
    jobs.finish(job.job_id, "complete", "", outcomes)
    return UnionAnswer(
        job_id=job.job_id,
        keys=list(keys),
        values=values,
        suppressed=[v < threshold for v in values],
        threshold=threshold,
        noise=noise,
        outcomes=outcomes,
    )
