"""Ways to map local codes to the shared vocabulary over Parquet read in place, side by side.

    python -m bench.bench_code_mapping [--rows 1000000] [--repeat 11]

A file read in place is mapped row by row as DuckDB reads it (nodes/file_sources.py), so the
mapping expression is much of a query's cost. Each way below is a view over the same Parquet file,
in its own in-process DuckDB connection, queried with the same SQL; the answers must be equal.

1. **The node's count SQL** (``build_sql`` of the query benchmark's count query) over politie's
   ``signals`` (bench/signals.py), and the same grouping on the local codes, unmapped.
2. **Many codes**: a synthetic file with one column of N codes (10, 100, 1000) onto 12 values and
   one of 13 codes onto 12 values, grouped on both, since a lookup that searches a list grows with
   it.

Ways: ``CASE`` per shared value (what nodes did before), ``MAP`` lookups, the list lookup the node
uses (``SqlBuilder.lookup``), and a ``LEFT JOIN`` to a mapping table per column. Prints p50s and the
ratio to the node's lookup.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from bench.bench_parquet_ways import NODE, UNMAPPED
from bench.signals import QUERIES, write_signals
from federation.query import parse_query
from nodes.config import load_node_config
from nodes.sqlgen import DUCKDB_PREMAPPED, build_sql, premapped_name, quote_ident
from nodes.validate import validate

Codes = dict[str, Any]
Mapped = list[tuple[str, str, Codes]]  # per mapped column: local name, name of its mapped column, codes


def _lit(value: Any) -> str:
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


def _case(local: str, codes: Codes) -> str:
    by_value: dict[Any, list[str]] = {}
    for code, value in codes.items():
        by_value.setdefault(value, []).append(code)
    arms = " ".join(
        f"WHEN CAST({local} AS VARCHAR) IN ({', '.join(_lit(c) for c in cs)}) THEN {_lit(v)}"
        for v, cs in by_value.items()
    )
    return f"(CASE {arms} END)"


def _map(local: str, codes: Codes) -> str:
    pairs = ", ".join(f"{_lit(c)}: {_lit(v)}" for c, v in codes.items())
    return f"map_extract(MAP {{{pairs}}}, CAST({local} AS VARCHAR))[1]"


def _list(local: str, codes: Codes) -> str:
    values, listed = ", ".join(_lit(v) for v in codes.values()), ", ".join(_lit(c) for c in codes)
    return f"[{values}][list_position([{listed}], CAST({local} AS VARCHAR))]"


EXPRESSIONS: dict[str, Callable[[str, Codes], str]] = {
    "CASE (before)": _case,  # CASE WHEN code IN (...) THEN value ... per shared value
    "MAP": _map,  # map_extract(MAP {code: value, ...}, code)[1]
    "list (the node's)": _list,  # [values][list_position([codes], code)]
}
JOIN = "join"  # LEFT JOIN to a mapping table per column
KEPT = "list (the node's)"


def _connect(path: Path, table: str, columns: Mapped, way: str) -> Any:
    """An in-memory database with ``table``: the file with each mapped column added, ``way``'s way."""
    conn = duckdb.connect(config={"preserve_insertion_order": False})
    conn.execute("SET enable_progress_bar = false")
    scan = f"read_parquet({_lit(str(path))})"
    if way == JOIN:
        joins, added = [], []
        for i, (local, name, codes) in enumerate(columns):
            kind = "BIGINT" if all(isinstance(v, int) for v in codes.values()) else "VARCHAR"
            conn.execute(f"CREATE TABLE m{i} (code VARCHAR PRIMARY KEY, shared {kind})")
            conn.executemany(f"INSERT INTO m{i} VALUES (?, ?)", list(codes.items()))
            joins.append(f"LEFT JOIN m{i} ON CAST(f.{quote_ident(local)} AS VARCHAR) = m{i}.code")
            added.append(f", m{i}.shared AS {quote_ident(name)}")
        conn.execute(f"CREATE VIEW {table} AS SELECT f.*{''.join(added)} FROM {scan} AS f {' '.join(joins)}")
    else:
        expr = EXPRESSIONS[way]
        added = [
            f", {expr(quote_ident(local), codes)} AS {quote_ident(name)}" for local, name, codes in columns
        ]
        conn.execute(f"CREATE VIEW {table} AS SELECT *{''.join(added)} FROM {scan}")
    return conn


def _p50(conn: Any, sql: str, params: list[Any], repeat: int) -> tuple[float, list[Any]]:
    answer = sorted(conn.execute(sql, params).fetchall(), key=str)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        conn.execute(sql, params).fetchall()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, answer


def _ways(
    path: Path, table: str, columns: Mapped, queries: dict[str, tuple[str, list[Any]]], repeat: int
) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    expected: dict[str, list[Any]] = {}
    for way in [*EXPRESSIONS, JOIN]:
        conn = _connect(path, table, columns, way)
        try:
            figures[way] = {}
            for name, (sql, params) in queries.items():
                figures[way][name], answer = _p50(conn, sql, params, repeat)
                assert expected.setdefault(name, answer) == answer, f"{way}: {name} answers differently"
        finally:
            conn.close()
    return figures


def node_sql(root: Path, rows: int, repeat: int) -> None:
    _, paths = write_signals(root, rows, "127.0.0.1:1")
    config = load_node_config(paths[NODE])
    plan = validate(parse_query(QUERIES["rows"]), config)
    dataset = plan.dataset
    columns = [
        (c.local, premapped_name(c), dict(c.codes))
        for c in dataset.columns.values()
        if c.kind == "category" and c.codes
    ]
    sql, params = build_sql(plan, DUCKDB_PREMAPPED, truncate=False, units=False)
    assert dataset.source.path is not None
    print(f"part 1: the node's SQL for {QUERIES['rows']!r}\n  over {NODE} signals, {rows:,} rows")
    figures = _ways(
        dataset.source.path, "ds_signals", columns, {"node": (sql, params), "local": (UNMAPPED, [])}, repeat
    )
    print(f"  {'way':20s}{'node SQL':>10s}{'ratio':>8s}{'grouping on local codes':>25s}")
    for way, f in figures.items():
        print(f"  {way:20s}{f['node']:8.1f}ms{f['node'] / figures[KEPT]['node']:7.2f}x{f['local']:23.1f}ms")


def many_codes(root: Path, rows: int, repeat: int) -> None:
    print(f"part 2: {rows:,} synthetic rows, grouped on a column of N codes and one of 13")
    other = {f"F{i:02d}": f"p{i % 12}" for i in range(13)}
    sql = (
        "SELECT g0, g1, COUNT(*) FROM (SELECT __shared__e AS g0, __shared__f AS g1 FROM t "
        "WHERE jaar >= 2021) AS base WHERE g0 IS NOT NULL AND g1 IS NOT NULL GROUP BY g0, g1"
    )
    print(f"  {'codes':>6s}" + "".join(f"{way:>20s}" for way in [*EXPRESSIONS, JOIN]))
    for n in (10, 100, 1000):
        codes = {f"E{i:04d}": f"r{i % 12}" for i in range(n)}
        path = root / f"codes-{n}.parquet"
        # One code of each column maps to nothing; pandas-like files have one row group.
        e_list, f_list = [*codes, "XX"], [*other, "YY"]
        conn = duckdb.connect()
        conn.execute(
            f"""COPY (SELECT {e_list}[1 + CAST(hash(i + 1) % {len(e_list)} AS BIGINT)] AS e,
                     {f_list}[1 + CAST(hash(i + 2) % {len(f_list)} AS BIGINT)] AS f,
                     CAST(2019 + hash(i + 3) % 6 AS INTEGER) AS jaar FROM range({rows}) t(i))
                TO {_lit(str(path))} (FORMAT parquet, ROW_GROUP_SIZE {rows})"""
        )
        conn.close()
        mapped = [("e", "__shared__e", codes), ("f", "__shared__f", other)]
        figures = _ways(path, "t", mapped, {"group": (sql, [])}, repeat)
        print(f"  {n:6d}" + "".join(f"{f['group']:18.1f}ms" for f in figures.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-code-mapping-") as folder:
        node_sql(Path(folder), args.rows, args.repeat)
        many_codes(Path(folder), args.rows, args.repeat)
    print("answers equal across the ways")


if __name__ == "__main__":
    main()
