"""The node's data sources: CSV/Parquet files through DuckDB, or tables inside PostgreSQL.

File sources are loaded once into the node's in-memory DuckDB at start-up, so queries do not
re-parse files. PostgreSQL queries run inside the partner's database (SQL pushed down).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import duckdb

from nodes.check import category_columns, filter_columns, unmapped_sql
from nodes.config import Dataset, NodeConfig
from nodes.sqlgen import (
    DUCKDB,
    DUCKDB_PREMAPPED,
    POSTGRES,
    Dialect,
    SqlBuilder,
    build_sql,
    diagnostics_sql,
    premapped_name,
    quote_ident,
    table_name,
)
from nodes.validate import Plan
from protocols import federation_pb2 as pb
from protocols.errors import FederationError

log = logging.getLogger("federation.node")

# How old a PostgreSQL source's count of values outside the domain may be before a job recounts it.
UNMAPPED_RECOUNT_SECONDS = 60.0


class SourceError(FederationError):
    """A data source cannot be read; the message names the dataset, never the data."""


class DataSources:
    """Runs checked plans against the configured sources and returns exact per-group aggregates."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._duck = duckdb.connect(":memory:")
        self._duck_lock = threading.Lock()
        self._pg_local = threading.local()
        # Datasets whose rows per unit never exceed the declared maximum need no truncation step.
        self._within_bound: dict[str, bool] = {}
        # Per file dataset, rows per category column whose value maps to nothing (counted at load).
        self._unmapped: dict[str, dict[str, int]] = {}
        # PostgreSQL tables change under the node, so their counts are taken again, but at most
        # once per UNMAPPED_RECOUNT_SECONDS per dataset: a second full scan on every job would
        # double the work of the release path for a figure that only feeds the operator's log.
        self._unmapped_at: dict[str, float] = {}
        for dataset in config.datasets.values():
            if dataset.exposed:
                self._load(dataset)

    def _load(self, dataset: Dataset) -> None:
        src = dataset.source
        if src.kind == "postgres":
            self._within_bound[dataset.name] = False
            return
        if src.path is None or not src.path.exists():
            raise SourceError(
                "source_unavailable",
                f"dataset {dataset.name}: source file {src.path} does not exist",
                node=self.config.node_id,
            )
        ids = {c.local: "VARCHAR" for c in dataset.columns.values() if c.kind == "identifier"}
        name = quote_ident(table_name(dataset))
        try:
            if src.kind == "csv":
                self._duck.execute(
                    f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM read_csv(?, header=true, types=?)",
                    [str(src.path), ids],
                )
            else:
                self._duck.execute(
                    f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM read_parquet(?)", [str(src.path)]
                )
            present = {row[0] for row in self._duck.execute(f"DESCRIBE {name}").fetchall()}
        except duckdb.Error as exc:
            raise SourceError(
                "source_unavailable",
                f"dataset {dataset.name}: cannot read {src.path} ({type(exc).__name__})",
                node=self.config.node_id,
            ) from None
        missing = sorted(c.local for c in dataset.columns.values() if c.local not in present)
        if missing:
            raise SourceError(
                "config",
                f"dataset {dataset.name}: declared columns missing from {src.path.name}: {missing}",
                node=self.config.node_id,
            )
        self._count_unmapped(dataset, name)
        self._premap(dataset, name)
        unit = quote_ident(dataset.columns[dataset.privacy_unit].local)
        top = self._duck.execute(
            f"SELECT max(c) FROM (SELECT count(*) AS c FROM {name} GROUP BY {unit})"
        ).fetchone()
        self._within_bound[dataset.name] = top is not None and (top[0] or 0) <= dataset.max_rows_per_unit

    def _count_unmapped(self, dataset: Dataset, name: str) -> None:
        """Count, once at load, the rows each category column drops because their value maps to
        nothing in the domain, and tell the operator (never the analyst: the counts are exact)."""
        columns = category_columns(dataset)
        if not columns:
            return
        sql, params = unmapped_sql(columns, DUCKDB, name)
        counts = self._duck.execute(sql, params).fetchone() or ()
        self._unmapped[dataset.name] = {c.name: int(n or 0) for c, n in zip(columns, counts, strict=True)}
        for column, n in self._unmapped[dataset.name].items():
            if n:
                log.warning(
                    "dataset %s column %s: %d row(s) with a value outside the domain fall in no group "
                    "(run: federation node check)",
                    dataset.name,
                    column,
                    n,
                )

    def unmapped(self, plan: Plan) -> dict[str, int]:
        """Rows per grouped or filtered category column of ``plan`` whose value maps to nothing;
        counted at load for files, and for PostgreSQL by one scan over every category column at most
        once per ``UNMAPPED_RECOUNT_SECONDS``. For the operator's log only."""
        used = {c.name for c in plan.group_columns}
        if plan.filter is not None:
            used |= filter_columns(plan.filter)
        columns = category_columns(plan.dataset, used)
        if not columns:
            return {}
        name = plan.dataset.name
        if plan.dataset.source.kind == "postgres":
            fresh = time.monotonic() - self._unmapped_at.get(name, -math.inf) < UNMAPPED_RECOUNT_SECONDS
            if not fresh:
                every = category_columns(plan.dataset)
                sql, params = unmapped_sql(every, POSTGRES, POSTGRES.table(plan.dataset))
                rows = self.fetch(plan.dataset, sql, params)
                counts = rows[0] if rows else ()
                self._unmapped[name] = {c.name: int(n or 0) for c, n in zip(every, counts, strict=False)}
                self._unmapped_at[name] = time.monotonic()
        known = self._unmapped.get(name, {})
        return {c.name: known.get(c.name, 0) for c in columns}

    def _log_unmapped(self, plan: Plan) -> None:
        try:
            counts = self.unmapped(plan)
        except Exception as exc:  # noqa: BLE001 - a note for the operator never fails the job
            log.warning("dataset %s: values outside the domain not counted: %s", plan.dataset.name, exc)
            return
        for column, n in counts.items():
            if n:
                log.warning(
                    "query on dataset %s: %d row(s) with a column %s value outside the domain fall in no group",
                    plan.dataset.name,
                    n,
                    column,
                )

    def _premap(self, dataset: Dataset, name: str) -> None:
        """Map local codes to the shared vocabulary once, at load time, instead of in every query."""
        mapped = [c for c in dataset.columns.values() if c.kind == "category" and c.codes]
        if not mapped:
            return
        builder = SqlBuilder(DUCKDB)
        exprs = [f"{builder.shared(c)} AS {quote_ident(premapped_name(c))}" for c in mapped]
        staging = quote_ident(f"{table_name(dataset)}__staging")
        self._duck.execute(
            f"CREATE OR REPLACE TABLE {staging} AS SELECT *, {', '.join(exprs)} FROM {name}", builder.params
        )
        self._duck.execute(f"DROP TABLE {name}")
        self._duck.execute(f"ALTER TABLE {staging} RENAME TO {quote_ident(table_name(dataset))}")

    def _pg(self, dsn: str) -> Any:
        import psycopg

        conns: dict[str, Any] = getattr(self._pg_local, "conns", None) or {}
        self._pg_local.conns = conns
        conn = conns.get(dsn)
        if conn is None or conn.closed:
            conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
            conns[dsn] = conn
        return conn

    def _needs_truncation(self, plan: Plan) -> bool:
        # PostgreSQL tables are not scanned at start-up, so their rows per unit are always bounded.
        within = self._within_bound.get(plan.dataset.name, False)
        return not within or plan.rows_per_unit < plan.dataset.max_rows_per_unit

    def needs_truncation(self, plan: Plan) -> bool:
        """Whether the plan's rows must be truncated per unit (not when every unit of a file source
        is within the bound already); ``run`` and the differencing check decide alike."""
        return self._needs_truncation(plan)

    def diagnostics(self, plan: Plan) -> tuple[int, ...]:
        """Exact bounding figures (``nodes.sqlgen.diagnostics_sql``): units cut by truncation, then
        values moved by clamping per SUM/AVG. Nothing here leaves the node unprotected."""
        numeric = sum(1 for a in plan.aggregates if a.function in (pb.SUM, pb.AVG))
        truncate = self._needs_truncation(plan)
        if not numeric and not truncate:
            return (0,)  # no unit has more rows than the limit: nothing to count
        rows = self.fetch(plan.dataset, *diagnostics_sql(plan, self.dialect(plan.dataset), truncate))
        return tuple(int(v or 0) for v in rows[0]) if rows else (0,) * (1 + numeric)

    def dialect(self, dataset: Dataset, premapped: bool = True) -> Dialect:
        """The SQL dialect of the dataset's engine; ``premapped`` reads the shared-vocabulary
        columns that loading a file source added (``_premap``) instead of mapping codes in SQL."""
        if dataset.source.kind == "postgres":
            return POSTGRES
        return DUCKDB_PREMAPPED if premapped else DUCKDB

    def run(self, plan: Plan, units: bool = True) -> list[tuple[Any, ...]]:
        """Exact per-group aggregates of a checked plan, in the SQL of the dataset's engine."""
        dataset = plan.dataset
        self._log_unmapped(plan)
        truncate = self._needs_truncation(plan)
        sql, params = build_sql(plan, self.dialect(dataset), truncate=truncate, units=units)
        return self.fetch(dataset, sql, params)

    def fetch(self, dataset: Dataset, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Run SQL the node wrote itself (never analyst text), every value a bound parameter, on the
        dataset's engine. A failure names the dataset and the engine, never the SQL or the data."""
        if dataset.source.kind == "postgres":
            import psycopg

            try:
                with self._pg(dataset.source.dsn).cursor() as cur:
                    cur.execute(sql, params)
                    return list(cur.fetchall())
            except psycopg.Error as exc:
                getattr(self._pg_local, "conns", {}).pop(dataset.source.dsn, None)
                raise SourceError(
                    "source_unavailable",
                    f"dataset {dataset.name}: PostgreSQL query failed ({type(exc).__name__})",
                    node=self.config.node_id,
                ) from None
        try:
            with self._duck_lock:
                cursor = self._duck.cursor()
            return cursor.execute(sql, params).fetchall()
        except duckdb.Error as exc:
            raise SourceError(
                "source_unavailable",
                f"dataset {dataset.name}: query failed in DuckDB ({type(exc).__name__})",
                node=self.config.node_id,
            ) from None

    def ping(self) -> None:
        """Raise when a source of an exposed dataset does not answer (readiness, nodes/metrics.py):
        the in-memory engine, and a fresh short connection to each PostgreSQL source."""
        import psycopg

        with self._duck_lock:
            self._duck.execute("SELECT 1").fetchone()
        dsns = {
            d.source.dsn for d in self.config.datasets.values() if d.exposed and d.source.kind == "postgres"
        }
        for dsn in sorted(dsns):
            # A connection of its own: the per-thread ones belong to job threads.
            with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
                conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        for conn in getattr(self._pg_local, "conns", {}).values():
            conn.close()
        self._duck.close()
