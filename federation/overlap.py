"""Entity overlap for analysts: build the request, and the result objects it comes back as.

The federation answers "how many entities do these datasets share?" by multi-party private set
intersection (docs/overlap.md): identifiers never leave a node readable, the coordinator counts
fully blinded tokens per membership pattern, and DP noise from OpenDP is added before the
counts reach the analyst. :class:`OverlapResult` turns the pattern counts into the views
analysts ask for: patterns, a pairwise matrix, "at >= k datasets", and an UpSet-style chart
(Lex, Gehlenborg et al., "UpSet: Visualization of Intersecting Sets", IEEE TVCG 2014).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from google.protobuf.json_format import MessageToDict

from federation.query import parse_query
from protocols import federation_pb2 as pb
from protocols.errors import FederationError, QueryError
from protocols.privacy_request import check_privacy
from protocols.spec_limits import MAX_OVERLAP_PARTIES, check_parties
from protocols.values import from_value

__all__ = ["OverlapResult", "aggregate_frame", "build_request", "parse_where", "result_from_response"]

MAX_DATASETS = MAX_OVERLAP_PARTIES  # the SDK, the coordinator and every node refuse more


@dataclass(frozen=True)
class JobProgress:
    """How far a running overlap has come: ``step`` of ``steps`` done, in ``phase``."""

    phase: str
    step: int
    steps: int
    detail: str = ""


ProgressCallback = Callable[[JobProgress], None]


def parse_where(where: str, dataset: str = "") -> pb.Filter:
    """Parse a WHERE condition with the query parser into the wire ``Filter``."""
    label = f" for {dataset}" if dataset else ""
    if not isinstance(where, str) or not where.strip():
        raise QueryError("malformed_sql", f"the where condition{label} is empty")
    try:
        spec = parse_query(f"SELECT COUNT(*) FROM x WHERE {where}")
    except QueryError as exc:
        raise QueryError(exc.rule, f"where{label}: {exc.message}") from None
    # The text must be a condition and nothing else (no GROUP BY or further clauses smuggled in).
    plain = spec.dataset == "x" and not spec.node and not spec.group_by and len(spec.aggregates) == 1
    if not plain or not spec.HasField("filter"):
        raise QueryError("malformed_sql", f"where{label} must be a condition only, e.g. port = 'Rotterdam'")
    return spec.filter


def _split(name: str) -> tuple[str, str]:
    if not isinstance(name, str) or not name.strip():
        raise QueryError(
            "malformed_request", "dataset names must be non-empty text, e.g. douane.declarations"
        )
    node, _, dataset = name.strip().lower().rpartition(".")
    if not dataset or "." in node:
        raise QueryError("malformed_request", f"'{name}' is not a dataset name; use node.dataset or dataset")
    return node, dataset


def build_request(
    on: str,
    datasets: Sequence[str],
    where: Mapping[str, str] | None = None,
    epsilon: float | None = None,
    project: str = "",
    timeout: float | None = None,
    aggregate: tuple[str, str] | None = None,
) -> pb.OverlapRequest:
    """An ``OverlapRequest``; with ``aggregate=(group_by, sum)`` the first dataset is the base."""
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf
    ):
        raise FederationError(
            "invalid_timeout", f"timeout must be a finite number of seconds above 0, not {timeout!r}"
        )
    if not isinstance(on, str) or not on.strip():
        raise QueryError("malformed_request", "name the identifier column to match on, e.g. on='company'")
    if isinstance(datasets, str):
        raise QueryError("malformed_request", "datasets must be a list of names, not one string")
    names = list(datasets)
    check_parties(len(names))
    keys = [_split(n) for n in names]
    if len(set(keys)) != len(keys):
        raise QueryError("malformed_request", "a dataset is named twice")
    conditions = dict(where or {})
    unknown = [k for k in conditions if _split(k) not in keys]
    if unknown:
        raise QueryError(
            "malformed_request", f"where names datasets not in the overlap: {', '.join(unknown)}"
        )
    spec = pb.OverlapSpec(on=on.strip().lower(), project=project)
    by_key = {_split(k): v for k, v in conditions.items()}
    for name, (node, dataset) in zip(names, keys, strict=True):
        item = spec.datasets.add(node=node, dataset=dataset)
        if (node, dataset) in by_key:
            item.filter.CopyFrom(parse_where(by_key[(node, dataset)], name))
    ask = check_privacy(epsilon, pure_only=True)  # the coordinator and every node check it again
    if ask.epsilon is not None:
        spec.privacy.epsilon = ask.epsilon
    if aggregate is not None:
        group_by, total = aggregate
        if not group_by or not total:
            raise QueryError("malformed_request", "an intersection sum needs group_by and sum")
        spec.aggregate.group_by = group_by.strip().lower()
        spec.aggregate.sum = total.strip().lower()
    return pb.OverlapRequest(spec=spec, timeout_seconds=float(timeout or 0.0))


def _pattern_label(members: Sequence[str]) -> str:
    return " & ".join(members)


@dataclass
class OverlapResult:
    """Counts of entities per exact membership pattern over the named datasets.

    ``patterns`` has one row per non-empty pattern (every one of the ``2^n - 1``, so the set of
    present patterns does not leak): a boolean column per dataset, ``n_datasets`` and
    ``count``. With DP the counts carry discrete Laplace noise (OpenDP) and may be negative;
    every derived figure (pairwise, at_least, set sizes) is computed from the noisy counts.
    """

    datasets: list[str]
    counts: dict[frozenset[str], float]
    job_id: str = ""
    epsilon: float | None = None
    noise_sd: float = 0.0
    ci_half_width: float = 0.0
    malformed: dict[str, int | None] = field(default_factory=dict)
    nodes: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        known = set(self.datasets)
        for pattern in self.counts:
            if not pattern or not pattern <= known:
                raise FederationError(
                    "malformed_result", f"pattern {sorted(pattern)} is not over the datasets"
                )

    @property
    def exact(self) -> bool:
        return self.epsilon is None

    @property
    def patterns(self) -> pd.DataFrame:
        rows = []
        for k in range(1, len(self.datasets) + 1):
            for members in combinations(self.datasets, k):
                row: dict[str, Any] = {name: name in members for name in self.datasets}
                row["n_datasets"] = k
                row["count"] = self._value(self.counts.get(frozenset(members), 0.0))
                rows.append(row)
        df = pd.DataFrame(rows, columns=[*self.datasets, "n_datasets", "count"])
        df = df.sort_values(["count", "n_datasets"], ascending=[False, False], kind="stable").reset_index(
            drop=True
        )
        df.attrs = self._attrs()
        return df

    @property
    def pairwise(self) -> pd.DataFrame:
        """Entities shared by each pair of datasets; the diagonal is each dataset's set size."""
        # One pass over the 2^n - 1 patterns into a plain matrix (element-wise .loc took seconds
        # from 8 datasets on): membership (patterns x datasets), then M^T diag(counts) M.
        index = {name: i for i, name in enumerate(self.datasets)}
        members = np.zeros((len(self.counts), len(self.datasets)), dtype=np.int64)
        values = np.zeros(len(self.counts), dtype=np.int64)
        for row, (pattern, value) in enumerate(self.counts.items()):
            members[row, [index[name] for name in pattern]] = 1
            values[row] = self._value(value)
        matrix = pd.DataFrame(
            members.T @ (members * values[:, None]), index=self.datasets, columns=self.datasets, dtype="int64"
        )
        matrix.attrs = self._attrs()
        return matrix

    @property
    def set_sizes(self) -> dict[str, int]:
        sizes = dict.fromkeys(self.datasets, 0)
        for pattern, value in self.counts.items():
            for name in pattern:
                sizes[name] += self._value(value)
        return sizes

    def at_least(self, k: int) -> int:
        """Entities present at ``k`` or more of the named datasets."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(self.datasets):
            raise FederationError("threshold", f"k must be a whole number from 1 to {len(self.datasets)}")
        return self._value(sum(v for p, v in self.counts.items() if len(p) >= k))

    def held_by_all(self, datasets: Sequence[str]) -> int:
        """Entities present at every dataset in ``datasets`` (and maybe at others)."""
        wanted = frozenset(datasets)
        if not wanted or not wanted <= set(self.datasets):
            raise FederationError(
                "unknown_dataset", f"name datasets of this overlap: {', '.join(self.datasets)}"
            )
        return self._value(sum(v for p, v in self.counts.items() if wanted <= p))

    def _value(self, value: float) -> int:
        return int(round(value))

    def _attrs(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "epsilon": self.epsilon,
            "noise_sd": self.noise_sd,
            "ci95_half_width": self.ci_half_width,
            "malformed": dict(self.malformed),
            "nodes": list(self.nodes),
        }

    def __repr__(self) -> str:
        mode = "exact" if self.exact else f"epsilon {self.epsilon:g}, noise sd {self.noise_sd:.2f}"
        return f"OverlapResult({len(self.datasets)} datasets, {len(self.counts)} patterns, {mode})"

    def plot(self, path: str | Path, top: int = 20, title: str | None = None) -> Path:
        """Write an UpSet-style chart: pattern counts as bars above a membership dot matrix."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        target = Path(path)
        df = self.patterns
        df = df[df["count"] > 0].head(max(1, int(top)))
        names = list(self.datasets)
        sizes = self.set_sizes
        width = max(6.0, 0.45 * len(df) + 3.0)
        fig = plt.figure(figsize=(width, 2.2 + 0.45 * len(names) + 2.5))
        grid = fig.add_gridspec(
            2, 2, width_ratios=(1, 4), height_ratios=(3, max(1, len(names)) * 0.45), wspace=0.05, hspace=0.05
        )
        bars = fig.add_subplot(grid[0, 1])
        dots = fig.add_subplot(grid[1, 1], sharex=bars)
        totals = fig.add_subplot(grid[1, 0], sharey=dots)
        xs = list(range(len(df)))
        bars.bar(xs, df["count"].tolist(), color="#2b5c8a")
        for x, value in zip(xs, df["count"].tolist(), strict=True):
            bars.annotate(str(value), (x, value), ha="center", va="bottom", fontsize=8)
        bars.set_ylabel("entities")
        bars.tick_params(axis="x", bottom=False, labelbottom=False)
        bars.spines[["top", "right"]].set_visible(False)
        if self.noise_sd > 0:
            bars.errorbar(
                xs, df["count"].tolist(), yerr=self.ci_half_width, fmt="none", ecolor="#999999", capsize=2
            )
        ys = list(range(len(names)))
        for x, (_, row) in zip(xs, df.iterrows(), strict=True):
            inside = [y for y, name in zip(ys, names, strict=True) if bool(row[name])]
            dots.scatter([x] * len(ys), ys, color="#dddddd", s=40, zorder=1)
            dots.scatter([x] * len(inside), inside, color="#222222", s=40, zorder=2)
            if len(inside) > 1:
                dots.plot([x, x], [min(inside), max(inside)], color="#222222", zorder=1)
        dots.set_yticks(ys, names)
        dots.tick_params(axis="y", left=False, labelleft=False)
        dots.tick_params(axis="x", bottom=False, labelbottom=False)
        dots.set_ylim(-0.5, len(names) - 0.5)
        for spine in dots.spines.values():
            spine.set_visible(False)
        totals.barh(ys, [sizes[n] for n in names], color="#888888")
        totals.invert_xaxis()
        totals.set_yticks(ys, names)
        totals.yaxis.tick_right()
        totals.tick_params(axis="y", right=False, pad=6)
        totals.set_xlabel("set size")
        totals.spines[["top", "left"]].set_visible(False)
        fig.add_subplot(grid[0, 0]).axis("off")
        note = (
            "exact counts"
            if self.exact
            else f"DP counts (epsilon {self.epsilon:g}, 95% CI +-{self.ci_half_width:g})"
        )
        fig.suptitle(title or f"Entity overlap: {note}", fontsize=10)
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return target


def _check(response: pb.OverlapResponse) -> None:
    if not response.ok:
        raise FederationError(response.error_rule or "refused", response.error or "the overlap was refused")


def _nodes(response: pb.OverlapResponse) -> list[dict[str, Any]]:
    return [MessageToDict(n, preserving_proto_field_name=True) for n in response.nodes]


def _members(pattern: pb.OverlapPatternCount, datasets: Sequence[str]) -> frozenset[str]:
    """The datasets of one pattern: bit i of ``members`` is ``datasets[i]``, or the names given."""
    if not pattern.members:
        return frozenset(pattern.datasets)
    if pattern.members >> len(datasets):
        raise FederationError("malformed_result", "a pattern names a dataset outside the overlap")
    return frozenset(name for bit, name in enumerate(datasets) if pattern.members >> bit & 1)


def result_from_response(response: pb.OverlapResponse) -> OverlapResult:
    """The analyst's view of a coordinator answer; raises the refusal with its rule."""
    _check(response)
    counts = {_members(p, response.datasets): float(p.count) for p in response.patterns}
    return OverlapResult(
        datasets=list(response.datasets),
        counts=counts,
        job_id=response.job_id,
        epsilon=response.epsilon or None,
        noise_sd=response.noise_sd,
        ci_half_width=response.ci_half_width,
        malformed={p.dataset: (None if p.malformed < 0 else int(p.malformed)) for p in response.parties},
        nodes=_nodes(response),
    )


def aggregate_frame(response: pb.OverlapResponse, sum_column: str = "sum") -> pd.DataFrame:
    """Groups of an intersection-sum answer: ``group_by``, ``count``, ``sum``."""
    _check(response)
    group = response.group_by or "group"
    rows = [
        {group: from_value(g.key), "count": int(round(g.count)), "sum": float(g.sum)} for g in response.groups
    ]
    df = pd.DataFrame(rows, columns=[group, "count", "sum"])
    df["count"] = df["count"].astype("Int64")
    df.attrs = {
        "job_id": response.job_id,
        "datasets": list(response.datasets),
        "sum_column": sum_column,
        "epsilon": response.epsilon or None,
        "noise": {
            "count": {"sd": response.noise_sd, "ci95_half_width": response.ci_half_width},
            "sum": {"sd": response.sum_noise_sd, "ci95_half_width": response.sum_ci_half_width},
        },
        "malformed": {p.dataset: (None if p.malformed < 0 else int(p.malformed)) for p in response.parties},
        "nodes": _nodes(response),
    }
    return df
