"""Where a node's count-query time goes over a Parquet source: read in place vs converted once.

    python -m bench.bench_parquet_ways [--rows 1000000] [--repeat 15]

One partner's ``signals`` from the query benchmark (bench/bench_query.py) as Parquet, served by
``DataSources`` in this process two ways, each in its own state folder: read in place
(``parquet_convert_below = "0"``) and converted into a DuckDB file (the default below 256MB). For
each way it prints the p50 of the node's exact release computation (``nodes.release.compute``),
of its SQL alone and of ``SELECT 1`` through the same path (the fixed cost per query: cursor,
settings, the file check). For the in-place way also, in the same database: the same grouping on
the local codes without mapping them, and the node's SQL over a view that maps the codes as nodes
did before (a ``CASE`` trying each shared value's codes in turn, where the view now looks each code
up in a map), so the two mappings are timed side by side. The ratio is against the converted way;
all answers must be equal.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from bench.signals import QUERIES, write_signals
from federation.query import parse_query
from nodes.config import Dataset, load_node_config
from nodes.release import compute
from nodes.sources import DataSources
from nodes.sqlgen import build_sql, premapped_name, quote_ident, table_name
from nodes.validate import validate

NODE = "politie"
UNMAPPED = (
    "SELECT eenheid, fenomeen, COUNT(*) FROM ds_signals WHERE kvk_nummer IS NOT NULL AND jaar >= 2021 "
    "GROUP BY eenheid, fenomeen"
)


def _p50(run: Callable[[], Any], repeat: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _literal(value: Any) -> str:
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


def _case_view(dataset: Dataset) -> str:
    """The dataset's view over its Parquet file with the codes mapped by ``CASE``, as before."""
    mapped = []
    for c in dataset.columns.values():
        if c.kind != "category" or not c.codes:
            continue
        arms = []
        for value in c.domain:
            if codes := c.local_codes_for(value):
                listed = ", ".join(_literal(str(code)) for code in codes)
                arms.append(
                    f"WHEN CAST({quote_ident(c.local)} AS VARCHAR) IN ({listed}) THEN {_literal(value)}"
                )
        mapped.append(f", (CASE {' '.join(arms)} END) AS {quote_ident(premapped_name(c))}")
    return (
        f"CREATE VIEW {quote_ident(table_name(dataset) + '_case')} AS SELECT *{''.join(mapped)} "
        f"FROM read_parquet({_literal(str(dataset.source.path))})"
    )


def _way(config_path: Path, root: Path, convert_below: str, repeat: int) -> dict[str, Any]:
    raw = tomllib.loads(config_path.read_text())
    raw["node"]["parquet_convert_below"] = convert_below
    raw["node"]["state_dir"] = str(root / f"state-{convert_below}")
    path = config_path.with_name(f"{NODE}-{convert_below}.toml")  # relative paths resolve alike
    path.write_text(tomli_w.dumps(raw))
    config = load_node_config(path)
    t = time.perf_counter()
    sources = DataSources(config)
    built = time.perf_counter() - t
    try:
        plan = validate(parse_query(QUERIES["rows"]), config)
        dataset = plan.dataset
        sql, params = build_sql(
            plan, sources.dialect(dataset), truncate=sources.needs_truncation(plan), units=False
        )
        figures: dict[str, Any] = {
            "built_s": built,
            "compute": _p50(lambda: compute(plan, sources, exact_release=True), repeat),
            "sql": _p50(lambda: sources.fetch(dataset, sql, params), repeat),
            "fixed": _p50(lambda: sources.fetch(dataset, "SELECT 1", []), repeat),
            "answer": sorted(compute(plan, sources, exact_release=True).rows.items(), key=str),
        }
        if convert_below == "0":
            figures["unmapped"] = _p50(lambda: sources.fetch(dataset, UNMAPPED, []), repeat)
            # The same SQL over the CASE view, in the same database, through the same path.
            sources.fetch(dataset, _case_view(dataset), [])
            case_sql = sql.replace(
                quote_ident(table_name(dataset)), quote_ident(table_name(dataset) + "_case")
            )
            assert case_sql != sql
            figures["case"] = _p50(lambda: sources.fetch(dataset, case_sql, params), repeat)
            expected = sorted(sources.fetch(dataset, sql, params), key=str)
            assert sorted(sources.fetch(dataset, case_sql, params), key=str) == expected
    finally:
        sources.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per node")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-parquet-ways-"))
    _, paths = write_signals(root, args.rows, "127.0.0.1:1")
    size = (root / "data" / NODE / "signals.parquet").stat().st_size
    print(f"{NODE} signals: {size / 1e6:.1f} MB of Parquet")
    in_place = _way(paths[NODE], root, "0", args.repeat)
    converted = _way(paths[NODE], root, "256MB", args.repeat)
    assert in_place["answer"] == converted["answer"], "the two ways answer differently"
    print(
        f"{'way':12s}{'version built':>15s}{'compute p50':>13s}{'SQL p50':>10s}{'fixed p50':>11s}{'ratio':>8s}"
    )
    for name, f in (("in place", in_place), ("converted", converted)):
        print(
            f"{name:12s}{f['built_s']:14.2f}s{f['compute']:11.1f}ms{f['sql']:8.1f}ms{f['fixed']:9.2f}ms"
            f"{f['compute'] / converted['compute']:7.2f}x"
        )
    print(f"in place, the node's SQL with the codes mapped by CASE, as before: {in_place['case']:.1f} ms")
    print(f"in place, grouping on local codes without mapping them: {in_place['unmapped']:.1f} ms")
    print("answers equal")


if __name__ == "__main__":
    main()
