"""A model job's checked plan and the design matrix a node's trainer works on.

The ``ModelSpec`` is checked against the dataset's declared schema like a query: the outcome and
every covariate must be declared, numeric columns are clamped to their declared (or tighter)
bounds, categories are dummy-coded over their public domain (one indicator per level but the
reference), the filter is checked by the query checker. The rows are then read from the node's
own engine, with the SQL the query path writes (shared vocabulary, filter, clamping, truncation to
the rows per unit), into numpy arrays that never leave the node.

Numeric covariates enter the trainers scaled by their public bounds to [-1, 1],
z = (x - mid) / half, so every design column is bounded by 1 and the statistics' sensitivities
follow from the spec alone; the coordinator maps coefficients back to the columns' own units.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nodes.config import CategoryValue, Column, Dataset, NodeConfig
from nodes.sources import DataSources
from nodes.sqlgen import SqlBuilder, bounded_rows
from nodes.validate import AggregatePlan, Checker, Plan, Refused
from privacy.bounds import rows_per_unit, tightened
from protocols import federation_pb2 as pb
from protocols.errors import FederationError
from protocols.lazy import lazy_module
from protocols.model_terms import scaling
from protocols.spec_limits import SpecTooLarge, check_spec

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]
else:
    np = lazy_module("numpy")

MAX_COVARIATES = 50
MULTICLASS_TRAINERS = ("softmax", "mlp")  # nodes/trainers/sgd_catalogue.py
MAX_CLASSES = 50
MAX_TERMS = 200
DESIGN_TTL_SECONDS = 600.0
MAX_DESIGNS = 4


@dataclass(frozen=True)
class Term:
    """One design column: the intercept, a numeric covariate (scaled), or one dummy level."""

    name: str
    column: str = ""
    level: CategoryValue | None = None
    mid: float = 0.0
    half: float = 1.0


@dataclass(frozen=True)
class ModelPlan:
    dataset: Dataset
    spec: pb.ModelSpec
    outcome: Column
    outcome_bounds: tuple[float, float]  # numeric outcome: its clamping; binary: (0, 1)
    event: CategoryValue | None  # category outcome: the level coded 1 (the last of its domain)
    numeric: tuple[tuple[Column, tuple[float, float]], ...]
    categories: tuple[tuple[Column, tuple[CategoryValue, ...]], ...]  # levels kept (reference dropped)
    terms: tuple[Term, ...]
    filter: pb.Filter | None
    rows_per_unit: int
    # softmax and mlp on a category of more than two levels: y is the level's index in its domain
    classes: tuple[CategoryValue, ...] = ()

    @property
    def size(self) -> int:
        return len(self.terms)


@dataclass
class Design:
    """The node's rows for a plan: scaled design ``x`` (n, p), outcome ``y`` and privacy units."""

    x: Array
    y: Array
    units: npt.NDArray
    level_counts: dict[str, int] = field(default_factory=dict)  # dummy term -> rows at that level

    @property
    def n(self) -> int:
        return int(self.y.shape[0])


def _refuse(config: NodeConfig, rule: str, message: str) -> Refused:
    return Refused(rule, message, node=config.node_id)


def _bounds(check: Checker, column: Column, bounds: pb.ClampBounds | None) -> tuple[float, float]:
    declared = column.bounds or (0.0, 0.0)
    if bounds is None:
        return declared
    lower = bounds.lower if bounds.HasField("lower") else None
    upper = bounds.upper if bounds.HasField("upper") else None
    try:
        return tightened(declared, lower, upper)
    except FederationError as exc:
        raise check.refuse(exc.rule, f"{column.name}: {exc.message}") from None


def plan_model(spec: pb.ModelSpec, config: NodeConfig) -> ModelPlan:
    """Check ``spec`` against the dataset's schema; raise ``Refused`` naming the rule that fired."""
    try:
        check_spec(spec, config.node_id)  # type: ignore[arg-type]
    except SpecTooLarge as exc:
        raise Refused(exc.rule, exc.message, node=config.node_id) from None
    dataset = config.datasets.get(spec.dataset)
    if dataset is None or not dataset.exposed:
        raise _refuse(config, "dataset_not_exposed", f"dataset '{spec.dataset}' is not served here")
    check = Checker(config, dataset)
    if not spec.outcome:
        raise check.refuse("model_spec", "a model needs an outcome column")
    if len(spec.covariates) > MAX_COVARIATES:
        raise check.refuse("oversized_request", f"more than {MAX_COVARIATES} covariates")
    outcome = check.column(spec.outcome, "model")
    event: CategoryValue | None = None
    classes: tuple[CategoryValue, ...] = ()
    if outcome.kind == "category" and spec.trainer in MULTICLASS_TRAINERS and len(outcome.domain) > 2:
        if len(outcome.domain) > MAX_CLASSES:
            raise check.refuse(
                "model_outcome", f"outcome '{outcome.name}' has more than {MAX_CLASSES} levels"
            )
        classes = tuple(outcome.domain)
        outcome_bounds = (0.0, float(len(classes) - 1))
    elif outcome.kind == "category":
        if spec.HasField("event"):
            level = check.value_for(outcome, spec.event)  # refused unless in the public domain
            event = level if isinstance(level, str | int) else int(level)
        elif len(outcome.domain) == 2:
            event = outcome.domain[-1]
        else:
            raise check.refuse(
                "model_outcome",
                f"outcome '{outcome.name}' is a category of {len(outcome.domain)} levels; name the level "
                "that is the event (a two-level category's event is its last level)",
            )
        outcome_bounds = (0.0, 1.0)
    elif outcome.kind == "numeric":
        outcome_bounds = outcome.bounds or (0.0, 0.0)
    else:
        raise check.refuse(
            "model_outcome", f"outcome '{outcome.name}' must be numeric or a two-level category"
        )
    seen = {outcome.name}
    numeric: list[tuple[Column, tuple[float, float]]] = []
    categories: list[tuple[Column, tuple[CategoryValue, ...]]] = []
    terms: list[Term] = [] if spec.no_intercept else [Term("Intercept")]
    for cov in spec.covariates:
        column = check.column(cov.column, "model")
        if column.name in seen:
            raise check.refuse("model_spec", f"column '{column.name}' appears twice in the model")
        seen.add(column.name)
        if column.kind == "numeric":
            lo, hi = _bounds(check, column, cov.bounds if cov.HasField("bounds") else None)
            numeric.append((column, (lo, hi)))
            mid, half = scaling(lo, hi, intercept=not spec.no_intercept)
            terms.append(Term(column.name, column.name, None, mid, half))
        elif column.kind == "category":
            if cov.HasField("reference"):
                reference = check.value_for(column, cov.reference)
            else:
                reference = column.domain[0]
            levels = tuple(v for v in column.domain if v != reference)
            categories.append((column, levels))
            for level in levels:
                terms.append(Term(f"C({column.name})[T.{level}]", column.name, level))
        else:
            raise check.refuse("model_spec", f"column '{column.name}' ({column.kind}) cannot be a covariate")
    if not terms:
        raise check.refuse("model_spec", "the model has no terms")
    if len(terms) > MAX_TERMS:
        raise check.refuse("oversized_request", f"the design has more than {MAX_TERMS} columns")
    if spec.HasField("filter"):
        check.filter(spec.filter)
    try:
        max_rows = rows_per_unit(dataset.max_rows_per_unit, int(spec.max_rows_per_unit))
    except FederationError as exc:
        raise check.refuse(exc.rule, exc.message) from None
    return ModelPlan(
        dataset=dataset,
        spec=spec,
        outcome=outcome,
        outcome_bounds=outcome_bounds,
        event=event,
        classes=classes,
        numeric=tuple(numeric),
        categories=tuple(categories),
        terms=tuple(terms),
        filter=spec.filter if spec.HasField("filter") else None,
        rows_per_unit=max_rows,
    )


def tightened_bounds(plan: ModelPlan) -> bool:
    """Whether the spec clamps harder or truncates harder than declared (allowed only under DP)."""
    return plan.rows_per_unit < plan.dataset.max_rows_per_unit or any(
        bounds != column.bounds for column, bounds in plan.numeric
    )


def _query_plan(plan: ModelPlan) -> Plan:
    """The query plan whose bounded rows (nodes/sqlgen.py) are the model's rows."""
    groups = [c for c, _ in plan.categories]
    aggregates = [AggregatePlan(pb.SUM, c, c.name, bounds) for c, bounds in plan.numeric]
    if plan.outcome.kind == "category":
        groups.append(plan.outcome)
    else:
        aggregates.append(AggregatePlan(pb.SUM, plan.outcome, plan.outcome.name, plan.outcome_bounds))
    return Plan(
        dataset=plan.dataset,
        group_columns=tuple(groups),
        aggregates=tuple(aggregates),
        filter=plan.filter,
        keys=((),),
        max_rows_per_unit=plan.rows_per_unit,
    )


def read_design(plan: ModelPlan, sources: DataSources) -> Design:
    """Read the plan's rows from the node's engine (complete cases, bounded per unit)."""
    query = _query_plan(plan)
    b = SqlBuilder(sources.dialect(plan.dataset))
    rows = bounded_rows(query, b, truncate=sources.needs_truncation(query))
    values = [rows.value(a) for a in query.aggregates]
    names = ["u", *rows.groups, *[v for v in values if v is not None]]
    keep = [*rows.keep, *(f"{v} IS NOT NULL" for v in values if v is not None)]
    sql = f"SELECT {', '.join(names)} FROM {rows.source}"
    if keep:
        sql += f" WHERE {' AND '.join(keep)}"
    data = sources.fetch_columns(plan.dataset, sql, b.params, names)
    n = len(data["u"])
    by_column = {c.name: data[f"g{i}"] for i, c in enumerate(query.group_columns)}
    by_column.update(
        {a.column.name: data[v] for a, v in zip(query.aggregates, values, strict=True) if a.column and v}
    )
    x = np.empty((n, plan.size), dtype=np.float64)
    counts: dict[str, int] = {}
    for j, term in enumerate(plan.terms):
        if not term.column:
            x[:, j] = 1.0
        elif term.level is None:
            x[:, j] = (np.asarray(by_column[term.column], dtype=np.float64) - term.mid) / term.half
        else:
            hit = np.asarray(by_column[term.column]) == term.level
            x[:, j] = hit
            counts[term.name] = int(hit.sum())
    if plan.classes:
        index = {level: i for i, level in enumerate(plan.classes)}
        y = np.array([index[v] for v in by_column[plan.outcome.name]], dtype=np.float64)
    elif plan.event is not None:
        y = (np.asarray(by_column[plan.outcome.name]) == plan.event).astype(np.float64)
    else:
        y = np.asarray(by_column[plan.outcome.name], dtype=np.float64)
    return Design(x=x, y=y, units=np.asarray(data["u"]), level_counts=counts)


def design_key(model_id: str, spec: pb.ModelSpec) -> str:
    """A model job's design is read once and reused across its rounds; keyed by the spec too, so
    a round that changes the spec reads afresh."""
    body = spec.SerializeToString(deterministic=True)
    return model_id + ":" + hashlib.sha256(body).hexdigest()


class DesignCache:
    """The designs of running model jobs, in memory only, for at most ``DESIGN_TTL_SECONDS``."""

    def __init__(self) -> None:
        self._designs: dict[str, tuple[float, Design]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, read: Callable[[], Design]) -> Design:
        now = time.monotonic()
        with self._lock:
            for old in [k for k, (t, _) in self._designs.items() if now - t > DESIGN_TTL_SECONDS]:
                del self._designs[old]
            hit = self._designs.get(key)
        if hit is not None:
            return hit[1]
        design = read()
        with self._lock:
            while len(self._designs) >= MAX_DESIGNS:
                del self._designs[min(self._designs, key=lambda k: self._designs[k][0])]
            self._designs[key] = (now, design)
        return design


__all__ = [
    "Design",
    "DesignCache",
    "ModelPlan",
    "Term",
    "design_key",
    "plan_model",
    "read_design",
    "tightened_bounds",
]
