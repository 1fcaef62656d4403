"""The node's data sources: CSV/Parquet files through DuckDB, tables inside PostgreSQL, or an
engine of ``nodes.engines`` (Spark).

File sources are never held in memory: CSV and Parquet files below ``parquet_convert_below`` are
converted once into a DuckDB file in the node's state, larger Parquet files are queried in place
(nodes/file_sources.py). Each file source is served as a version;
a changed file becomes a new version, built aside and swapped in whole (``refresh``), while jobs
that started on the old version finish on it (``pinned``). PostgreSQL queries run inside the
partner's database (SQL pushed down), and so do Spark queries in the partner's cluster.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import duckdb

from nodes.check import category_columns, filter_columns, unmapped_sql
from nodes.config import Dataset, NodeConfig
from nodes.engines import ENGINES, Engine, open_engine
from nodes.file_sources import FileVersion, Signature, SourceError, build_version, stale_files
from nodes.sqlgen import (
    DUCKDB,
    DUCKDB_PREMAPPED,
    POSTGRES,
    Dialect,
    build_sql,
    diagnostics_sql,
)
from nodes.validate import Plan
from protocols import federation_pb2 as pb

log = logging.getLogger("federation.node")

# How old a PostgreSQL source's count of values outside the domain may be before a job recounts it.
UNMAPPED_RECOUNT_SECONDS = 60.0

# Sources served as file versions in the node's DuckDB; the rest are queried where they live.
FILE_KINDS = ("csv", "parquet")

# The file-source versions a job holds, by dataset, from its first read to its end (``pinned``).
_PINNED: contextvars.ContextVar[dict[str, FileVersion] | None] = contextvars.ContextVar(
    "federation_pinned_sources", default=None
)

__all__ = ["DataSources", "RefreshReport", "SourceError"]


@dataclass
class RefreshReport:
    """What one ``refresh`` did, per dataset: a new version, no change, or why not."""

    reloaded: dict[str, int] = field(default_factory=dict)  # dataset: rows in the new version
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # dataset: reason (rule and message)
    waiting: list[str] = field(default_factory=list)  # changed, picked up once the file is still


class DataSources:
    """Runs checked plans against the configured sources and returns exact per-group aggregates."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._pg_local = threading.local()
        # The current version of each exposed file source; replaced whole by ``refresh``.
        self._versions: dict[str, FileVersion] = {}
        self._versions_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        # A changed file is picked up once its signature held still for one check (``refresh``).
        self._seen: dict[str, Signature] = {}
        # The file state and reason of each source's last failed load, so it is reported once.
        self._failed: dict[str, tuple[Signature | None, str]] = {}
        # Per PostgreSQL dataset, rows per category column whose value maps to nothing.
        self._unmapped: dict[str, dict[str, int]] = {}
        # PostgreSQL tables change under the node, so their counts are taken again, but at most
        # once per UNMAPPED_RECOUNT_SECONDS per dataset: a second full scan on every job would
        # double the work of the release path for a figure that only feeds the operator's log.
        self._unmapped_at: dict[str, float] = {}
        self._engines: dict[str, Engine] = {}
        self._engines_lock = threading.Lock()
        try:
            for dataset in config.datasets.values():
                if dataset.exposed and dataset.source.kind in FILE_KINDS:
                    self._versions[dataset.name] = self._build(dataset, self._signature(dataset))
                elif dataset.exposed and dataset.source.kind in ENGINES:
                    self._open(dataset)
        except BaseException:
            self.close()
            raise
        for dataset in self._file_datasets():
            self._remove_stale(dataset)

    def _file_datasets(self) -> list[Dataset]:
        return [d for d in self.config.datasets.values() if d.exposed and d.source.kind in FILE_KINDS]

    def _open(self, dataset: Dataset) -> None:
        """Make a dataset on another engine queryable and check its declared columns are there."""
        engine = self.engine(dataset.source.kind)
        engine.load(dataset)
        present = engine.columns(dataset)
        missing = sorted(c.local for c in dataset.columns.values() if c.local not in present)
        if missing:
            raise SourceError(
                "config",
                f"dataset {dataset.name}: declared columns missing from its {dataset.source.kind} table: {missing}",
                node=self.config.node_id,
            )

    def engine(self, kind: str) -> Engine:
        """The node's engine for sources of ``kind`` (one of ``nodes.engines.ENGINES``)."""
        with self._engines_lock:
            if kind not in self._engines:
                self._engines[kind] = open_engine(kind, self.config)
            return self._engines[kind]

    def _signature(self, dataset: Dataset) -> Signature:
        path = dataset.source.path
        try:
            if path is None:
                raise FileNotFoundError
            return Signature.of(path)
        except OSError:
            raise SourceError(
                "source_unavailable",
                f"dataset {dataset.name}: source file {path} does not exist",
                node=self.config.node_id,
            ) from None

    def _build(self, dataset: Dataset, signature: Signature) -> FileVersion:
        version = build_version(self.config, dataset, signature)
        for column, n in version.unmapped.items():
            if n:
                log.warning(
                    "dataset %s column %s: %d row(s) with a value outside the domain fall in no group "
                    "(run: federation node check)",
                    dataset.name,
                    column,
                    n,
                )
        return version

    def _remove_stale(self, dataset: Dataset) -> None:
        with self._versions_lock:
            current = self._versions.get(dataset.name)
            keep = set(current.files) if current is not None else set()
        for path in stale_files(self.config, dataset, keep):
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ versions

    def refresh(
        self, force: bool = False, announce: Callable[[FileVersion], None] | None = None
    ) -> RefreshReport:
        """Pick up file sources that changed on disk: build each new version aside, then swap it
        in whole. Without ``force`` (the timer) a change is taken once the file's size and time
        held still since the previous check; ``force`` (``federation node reload``) takes it now.
        ``announce`` (the audit entry) runs before the swap; if it raises, the version is dropped."""
        report = RefreshReport()
        with self._refresh_lock:
            for dataset in self._file_datasets():
                self._refresh_one(dataset, force, announce, report)
        return report

    def _refresh_one(
        self,
        dataset: Dataset,
        force: bool,
        announce: Callable[[FileVersion], None] | None,
        report: RefreshReport,
    ) -> None:
        name = dataset.name
        with self._versions_lock:
            current = self._versions.get(name)
        try:
            signature = self._signature(dataset)
        except SourceError as exc:
            self._failure(report, name, None, f"{exc.message} [rule: {exc.rule}]", force)
            return
        if current is not None and current.signature == signature:
            self._seen.pop(name, None)
            self._failed.pop(name, None)
            report.unchanged.append(name)
            return
        if not force and self._failed.get(name, (None, ""))[0] == signature:
            return  # this file failed to load already: tried again when it changes, or on reload
        if not force and self._seen.get(name) != signature:
            self._seen[name] = signature
            report.waiting.append(name)
            return
        self._seen.pop(name, None)
        try:
            version = self._build(dataset, signature)
        except SourceError as exc:
            self._failure(report, name, signature, f"{exc.message} [rule: {exc.rule}]", force)
            return
        try:
            if announce is not None:
                announce(version)
        except Exception as exc:  # noqa: BLE001 - an unrecorded version never answers
            version.retire()
            report.failed[name] = f"the new version was not recorded ({type(exc).__name__})"
            return
        with self._versions_lock:
            old = self._versions.get(name)
            self._versions[name] = version
        if old is not None:
            old.retire()
        self._failed.pop(name, None)
        report.reloaded[name] = version.rows
        log.info("dataset %s: new version of %s in use (%d rows)", name, signature.path, version.rows)

    def _failure(
        self, report: RefreshReport, name: str, signature: Signature | None, reason: str, force: bool
    ) -> None:
        """Report a failed load once per file state (and on every reload), not on every check."""
        if force or self._failed.get(name) != (signature, reason):
            report.failed[name] = reason
        self._failed[name] = (signature, reason)

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Every read inside sees, per file source, the version current at its first read: a job
        never mixes two versions, and a version in use is not closed under it."""
        if _PINNED.get() is not None:
            yield
            return
        held: dict[str, FileVersion] = {}
        token = _PINNED.set(held)
        try:
            yield
        finally:
            _PINNED.reset(token)
            for version in held.values():
                version.release()

    @contextmanager
    def _version(self, dataset: Dataset) -> Iterator[FileVersion]:
        held = _PINNED.get()
        if held is not None and dataset.name in held:
            yield held[dataset.name]
            return
        with self._versions_lock:
            version = self._versions.get(dataset.name)
            if version is None:
                raise SourceError(
                    "source_unavailable",
                    f"dataset {dataset.name}: no file source is loaded for it",
                    node=self.config.node_id,
                )
            version.acquire()
        if held is not None:
            held[dataset.name] = version  # released when the job ends
            yield version
            return
        try:
            yield version
        finally:
            version.release()

    def unmapped(self, plan: Plan) -> dict[str, int]:
        """Rows per grouped or filtered category column of ``plan`` whose value maps to nothing;
        counted per version for files, and for PostgreSQL and Spark by one scan over every category
        column at most once per ``UNMAPPED_RECOUNT_SECONDS``. For the operator's log only."""
        used = {c.name for c in plan.group_columns}
        if plan.filter is not None:
            used |= filter_columns(plan.filter)
        columns = category_columns(plan.dataset, used)
        if not columns:
            return {}
        name = plan.dataset.name
        if plan.dataset.source.kind in FILE_KINDS:
            with self._version(plan.dataset) as version:
                known = version.unmapped
            return {c.name: known.get(c.name, 0) for c in columns}
        fresh = time.monotonic() - self._unmapped_at.get(name, -math.inf) < UNMAPPED_RECOUNT_SECONDS
        if not fresh:
            every = category_columns(plan.dataset)
            dialect = self.dialect(plan.dataset, premapped=False)
            sql, params = unmapped_sql(every, dialect, dialect.table(plan.dataset))
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
        # PostgreSQL and Spark tables are not scanned at start-up, so their rows per unit are always
        # bounded.
        within = False
        if plan.dataset.source.kind in FILE_KINDS:
            with self._version(plan.dataset) as version:
                within = version.within_bound
        return not within or plan.rows_per_unit < plan.dataset.max_rows_per_unit

    def known_rows(self, dataset: Dataset) -> int | None:
        """Rows in a file source's current version (counted when it was built); None for engines
        whose tables are not scanned at start-up."""
        if dataset.source.kind not in FILE_KINDS:
            return None
        with self._version(dataset) as version:
            return version.rows

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
        """The SQL dialect of the dataset's engine; ``premapped`` reads a file source's
        shared-vocabulary columns (stored by a conversion, computed by the view over a Parquet
        file read in place) instead of mapping codes in the query."""
        if dataset.source.kind == "postgres":
            return POSTGRES
        if dataset.source.kind in ENGINES:
            return self.engine(dataset.source.kind).dialect
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
        if dataset.source.kind in ENGINES:
            return self.engine(dataset.source.kind).fetch(dataset, sql, params)
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
            with self._version(dataset) as version:
                return version.fetch(sql, params, self.config.node_id)
        except duckdb.Error as exc:
            raise SourceError(
                "source_unavailable",
                f"dataset {dataset.name}: query failed in DuckDB ({type(exc).__name__})",
                node=self.config.node_id,
            ) from None

    def fetch_columns(
        self, dataset: Dataset, sql: str, params: list[Any], names: list[str]
    ) -> dict[str, Any]:
        """As ``fetch``, one numpy array per output column ``names`` (in SELECT order): the rows of
        a model design stay in this process."""
        if dataset.source.kind == "postgres" or dataset.source.kind in ENGINES:
            import numpy as np

            rows = self.fetch(dataset, sql, params)
            return {name: np.asarray([r[i] for r in rows], dtype=object) for i, name in enumerate(names)}
        try:
            with self._version(dataset) as version:
                columns = version.fetch_columns(sql, params, self.config.node_id)
        except duckdb.Error as exc:
            raise SourceError(
                "source_unavailable",
                f"dataset {dataset.name}: query failed in DuckDB ({type(exc).__name__})",
                node=self.config.node_id,
            ) from None
        return {name: columns[name] for name in names}

    def fetch_stable(self, dataset: Dataset, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """``fetch`` for a small result that depends only on the rows. A file source's version
        never changes once built (a changed file is a new version), so the version computes it once
        per SQL and parameters and reuses it; a PostgreSQL table can change under the node, so
        there it is always computed again, and so is a Spark table."""
        if dataset.source.kind not in FILE_KINDS:
            return self.fetch(dataset, sql, params)
        try:
            with self._version(dataset) as version:
                return version.fetch_stable(sql, params, self.config.node_id)
        except duckdb.Error as exc:
            raise SourceError(
                "source_unavailable",
                f"dataset {dataset.name}: query failed in DuckDB ({type(exc).__name__})",
                node=self.config.node_id,
            ) from None

    def ping(self) -> None:
        """Raise when a source of an exposed dataset does not answer (readiness, nodes/metrics.py):
        each file source's engine, and a fresh short connection to each PostgreSQL source."""
        for dataset in self._file_datasets():
            with self._version(dataset) as version:
                version.ping()
        with self._engines_lock:
            engines = list(self._engines.values())
        for engine in engines:
            engine.ping()
        dsns = {
            d.source.dsn for d in self.config.datasets.values() if d.exposed and d.source.kind == "postgres"
        }
        if not dsns:
            return  # psycopg is loaded only by nodes with a PostgreSQL source
        import psycopg

        for dsn in sorted(dsns):
            # A connection of its own: the per-thread ones belong to job threads.
            with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
                conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._engines_lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.close()
        for conn in getattr(self._pg_local, "conns", {}).values():
            conn.close()
        with self._versions_lock:
            versions, self._versions = list(self._versions.values()), {}
        for version in versions:
            version.retire(discard=False)
