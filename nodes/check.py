"""What an operator checks before a node goes live: sources, declared schema, vocabulary, keys, identity.

``check_node`` connects to nothing but the node's own sources: it opens each exposed dataset's file
or PostgreSQL table, checks every declared column is there, counts per category column the rows
whose local values map to nothing in the declared domain, checks the key files' permissions, and
verifies the node's certificate (root, validity, CRL, role ``node``, name = node id). ``federation
node check`` prints the findings; ``federation node start`` refuses to start on any error.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from nodes.config import Column, Dataset, NodeConfig
from nodes.engines import ENGINES, Engine, open_engine
from nodes.keys import DIFFERENCING_KEY_FILE, SECAGG_KEY_FILE
from nodes.sqlgen import DUCKDB, POSTGRES, Dialect, SqlBuilder, quote_ident
from protocols.errors import FederationError
from protocols.identity import PkiError, check_peer

OK, WARNING, ERROR = "ok", "warning", "error"


@dataclass(frozen=True)
class Finding:
    """One line of the report: ``level`` is ok, warning or error; ``rule`` names what was checked."""

    level: str
    subject: str
    rule: str
    message: str


# ---------------------------------------------------------------------------- vocabulary


def category_columns(dataset: Dataset, names: Iterable[str] | None = None) -> list[Column]:
    wanted = None if names is None else set(names)
    return [
        c for c in dataset.columns.values() if c.kind == "category" and (wanted is None or c.name in wanted)
    ]


def unmapped_sql(columns: list[Column], dialect: Dialect, table: str) -> tuple[str, list[Any]]:
    """One scan counting, per column, the rows with a value that maps to nothing in the domain.

    With ``codes`` a value maps through them (``SqlBuilder.shared``, as every query does); without,
    a value must be in the domain itself. NULLs are missing data, not unmapped values.
    """
    builder = SqlBuilder(Dialect(dialect.name, dialect.placeholder, dialect.double, premapped=False))
    text = "VARCHAR" if dialect.name == "duckdb" else "TEXT"
    counts = []
    for column in columns:
        local = quote_ident(column.local)
        if column.codes:
            unmapped = f"{builder.shared(column)} IS NULL"
        else:
            listed = ", ".join(builder.bind(str(v)) for v in column.domain)
            unmapped = f"CAST({local} AS {text}) NOT IN ({listed})"
        counts.append(f"count(*) FILTER (WHERE {local} IS NOT NULL AND {unmapped})")
    return f"SELECT {', '.join(counts)} FROM {table}", builder.params


def filter_columns(message: Any) -> set[str]:
    """The column names a filter (``pb.Filter``, any depth) compares."""
    found: set[str] = set()
    for field, value in message.ListFields():
        if field.name == "column" and isinstance(value, str):
            found.add(value)
        elif field.message_type is not None:
            for item in [value] if hasattr(value, "ListFields") else value:
                found |= filter_columns(item)
    return found


# ---------------------------------------------------------------------------- sources


def _check_columns(dataset: Dataset, present: set[str]) -> list[Finding]:
    where = f"dataset {dataset.name}"
    missing = [c for c in dataset.columns.values() if c.local not in present]
    return [
        Finding(ERROR, where, "unknown_local_column", f"column {c.name}: local column '{c.local}' not found")
        for c in missing
    ]


def _unmapped_findings(dataset: Dataset, columns: list[Column], counts: Iterable[Any]) -> list[Finding]:
    where = f"dataset {dataset.name}"
    found = []
    for column, n in zip(columns, counts, strict=True):
        if n:
            found.append(
                Finding(
                    WARNING,
                    where,
                    "unmapped_values",
                    f"column {column.name}: {int(n)} row(s) with a value outside the domain fall in no group",
                )
            )
    return found


def _check_file(config: NodeConfig, dataset: Dataset) -> list[Finding]:
    # nodes.file_sources counts with this module's SQL, so it is imported here, not at the top.
    from nodes.file_sources import connect, duck_settings, known_counts, scan_sql

    src, where = dataset.source, f"dataset {dataset.name}"
    if src.path is None or not src.path.exists():
        return [Finding(ERROR, where, "source_unavailable", f"source file {src.path} does not exist")]
    columns = category_columns(dataset)
    known = known_counts(config, dataset)
    if known is not None:
        # The node counted this very file (same size, time and declaration) when it loaded it, and
        # checked its declared columns then: no DuckDB database is opened (idle node memory).
        rows = known["rows"]
        findings = [
            Finding(OK, where, "source", f"{src.kind} file {src.path.name}: {rows} rows, columns present")
        ]
        if columns:
            findings += _unmapped_findings(
                dataset, columns, [known["unmapped"].get(c.name, 0) for c in columns]
            )
        return findings
    # Scanned in place with the source's own DuckDB settings: a file larger than memory is
    # checked without being loaded.
    scan, scan_params = scan_sql(dataset)
    try:
        con = connect(duck_settings(config, dataset))
    except (duckdb.Error, OSError) as exc:
        return [Finding(ERROR, where, "source_unavailable", f"cannot open DuckDB for {src.path} ({exc})")]
    try:
        present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {scan}", scan_params).fetchall()}
        problems = _check_columns(dataset, present)
        if problems:
            return problems
        if columns:
            sql, params = unmapped_sql(columns, DUCKDB, scan)
            counted = con.execute(_with_count(sql), params + scan_params).fetchone() or (0,)
        else:
            counted = con.execute(f"SELECT count(*) FROM {scan}", scan_params).fetchone() or (0,)
        rows = counted[-1]
        findings = [
            Finding(OK, where, "source", f"{src.kind} file {src.path.name}: {rows} rows, columns present")
        ]
        if columns:
            findings += _unmapped_findings(dataset, columns, counted[:-1])
        return findings
    except duckdb.Error as exc:
        return [Finding(ERROR, where, "source_unavailable", f"cannot read {src.path} ({exc})")]
    finally:
        con.close()


def _with_count(sql: str) -> str:
    """``unmapped_sql``'s one scan, counting the rows as well."""
    head, sep, tail = sql.rpartition(" FROM ")
    return f"{head}, count(*){sep}{tail}"


def _check_postgres(dataset: Dataset) -> list[Finding]:
    import psycopg

    src, where = dataset.source, f"dataset {dataset.name}"
    table = POSTGRES.table(dataset)
    try:
        conn = psycopg.connect(src.dsn, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        return [Finding(ERROR, where, "source_unavailable", f"cannot connect to PostgreSQL ({exc})")]
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(f"SELECT * FROM {table} LIMIT 0")
            except psycopg.Error as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                return [Finding(ERROR, where, "unknown_local_table", f"table {src.table}: {first}")]
            present = {d.name for d in cur.description or []}
            problems = _check_columns(dataset, present)
            if problems:
                return problems
            cur.execute(f"SELECT count(*) FROM {table}")
            row = cur.fetchone()
            findings = [
                Finding(OK, where, "source", f"PostgreSQL table {src.table}: {row[0] if row else 0} rows")
            ]
            columns = category_columns(dataset)
            if columns:
                sql, params = unmapped_sql(columns, POSTGRES, table)
                cur.execute(sql, params)
                findings += _unmapped_findings(dataset, columns, cur.fetchone() or ())
            return findings
    except psycopg.Error as exc:
        return [Finding(ERROR, where, "source_unavailable", f"PostgreSQL query failed ({exc})")]
    finally:
        conn.close()


def _check_engine(dataset: Dataset, engine: Engine) -> list[Finding]:
    """A dataset on an engine of ``nodes.engines``: its table, columns and unmapped values."""
    src, where = dataset.source, f"dataset {dataset.name}"
    try:
        engine.load(dataset)
        problems = _check_columns(dataset, engine.columns(dataset))
        if problems:
            return problems
        table = engine.dialect.table(dataset)
        ((rows,),) = engine.fetch(dataset, f"SELECT count(*) FROM {table}", [])
        findings = [
            Finding(OK, where, "source", f"{src.kind} table {src.table or src.location}: {rows} rows")
        ]
        columns = category_columns(dataset)
        if columns:
            sql, params = unmapped_sql(columns, engine.dialect, table)
            findings += _unmapped_findings(dataset, columns, engine.fetch(dataset, sql, params)[0])
        return findings
    except FederationError as exc:
        return [Finding(ERROR, where, exc.rule, exc.message)]


def check_sources(config: NodeConfig) -> list[Finding]:
    findings: list[Finding] = []
    engines: dict[str, Engine] = {}
    for dataset in config.datasets.values():
        if not dataset.exposed:
            findings.append(Finding(OK, f"dataset {dataset.name}", "source", "not exposed: not checked"))
            continue
        kind = dataset.source.kind
        if kind in ENGINES:
            if kind not in engines:
                engines[kind] = open_engine(kind, config)
            findings += _check_engine(dataset, engines[kind])
            continue
        findings += _check_postgres(dataset) if kind == "postgres" else _check_file(config, dataset)
    return findings


# ---------------------------------------------------------------------------- keys and identity


def key_file_problem(path: Path) -> str | None:
    """Why a private key file is not fit to use (group- or world-readable), or ``None``."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if mode & 0o077:
        return f"is readable by others (mode {mode:04o}); run: chmod 600 {path}"
    return None


def check_key_permissions(config: NodeConfig) -> list[Finding]:
    keys: list[tuple[str, Path]] = []
    if config.tls is not None and config.tls.key.exists():
        keys.append(("tls_key", config.tls.key))
    for label, path in (
        ("audit_signing_key", config.audit_key_path),
        ("secagg key", config.state_dir / SECAGG_KEY_FILE),
        ("differencing key", config.state_dir / DIFFERENCING_KEY_FILE),
    ):
        if path.exists():
            keys.append((label, path))
    findings = []
    for label, path in keys:
        problem = key_file_problem(path)
        if problem:
            findings.append(Finding(ERROR, label, "key_permissions", f"key file {path} {problem}"))
        else:
            findings.append(Finding(OK, label, "key_permissions", f"{path.name}: mode 0600"))
    return findings


def check_identity(config: NodeConfig, now: dt.datetime | None = None) -> list[Finding]:
    tls = config.tls
    if tls is None:
        if config.insecure:
            return [Finding(WARNING, "certificate", "tls_required", "insecure = true: development only")]
        return [
            Finding(
                ERROR,
                "certificate",
                "tls_required",
                "no TLS configured: set tls_cert, tls_key and tls_ca (or tls_dir) in [node], "
                "or insecure = true for development only",
            )
        ]
    try:
        tls.check(f"node {config.node_id}")
        identity = check_peer(tls.cert, tls.ca, tls.crl_bytes(), now=now, expected_roles={"node"})
    except PkiError as exc:
        return [Finding(ERROR, "certificate", exc.rule, exc.message)]
    if identity.subject != config.node_id:
        return [
            Finding(
                ERROR,
                "certificate",
                "wrong_identity",
                f"the certificate names '{identity.subject}', but this node is '{config.node_id}'",
            )
        ]
    crl = "checked against crl.pem" if tls.crl_bytes() is not None else "no CRL installed"
    return [Finding(OK, "certificate", "certificate", f"{identity.subject}, role node, valid; {crl}")]


def check_node(config: NodeConfig, now: dt.datetime | None = None) -> list[Finding]:
    """Every finding about ``config``'s node, in report order; connects to no coordinator."""
    return [*check_identity(config, now), *check_key_permissions(config), *check_sources(config)]


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == ERROR]


class NodeCheckFailed(FederationError):
    """``node start`` refused: the check found errors (each listed in the message)."""

    def __init__(self, config: NodeConfig, found: list[Finding]) -> None:
        lines = "; ".join(f"{f.subject}: {f.message} [rule: {f.rule}]" for f in found)
        super().__init__(
            found[0].rule,
            f"not started: {lines} (federation node check shows every finding)",
            config.node_id,
        )
