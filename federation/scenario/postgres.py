"""Loading a partner's local rows into PostgreSQL, for the partner served from a database."""

from __future__ import annotations

import math

import pandas as pd

from federation.scenario.configs import check_schema, pg_table
from federation.scenario.datasets import ColumnSpec, DatasetSpec


def postgres_available(dsn: str, timeout: float = 2.0) -> bool:
    """True if a PostgreSQL server answers ``SELECT 1`` at ``dsn`` within about ``timeout`` s."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=max(1, math.ceil(timeout))) as conn:
            conn.execute("SELECT 1")
        return True
    except (psycopg.Error, OSError, ValueError):
        return False


def _pg_type(col: ColumnSpec, series: pd.Series) -> str:
    if col.kind == "numeric":
        return "double precision"
    if col.kind == "date":
        return "date"
    if pd.api.types.is_integer_dtype(series.dtype):
        return "bigint"
    return "text"


def load_postgres(frame: pd.DataFrame, spec: DatasetSpec, dsn: str, pg_schema: str) -> str:
    """Replace table ``<pg_schema>.<node>_<dataset>`` with the local rows, via COPY. Returns its name."""
    import psycopg
    from psycopg import sql

    check_schema(pg_schema)
    table = sql.Identifier(pg_schema, f"{spec.node}_{spec.name}")
    columns = [(col.local, _pg_type(col, frame[col.local])) for col in spec.columns]
    ddl = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns)
    names = sql.SQL(", ").join(sql.Identifier(n) for n, _ in columns)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(pg_schema)))
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(table, ddl))
        # CSV text keeps COPY vectorised; unquoted empty fields load as NULL.
        payload = frame[[n for n, _ in columns]].to_csv(index=False, header=False)
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(table, names)) as copy:
            copy.write(payload)
    return pg_table(pg_schema, spec)
