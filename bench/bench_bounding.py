"""What the bounding figures of a DP query cost at the node, against the query's own SQL in the same run.

    python -m bench.bench_bounding [--rows 300000] [--repeat 15]

A DP query also counts the units truncation cut and the values clamping moved (nodes/sqlgen.py
``diagnostics_sql``). This times that extra SQL against the aggregate SQL of the same plan, on
Douane's declarations from Parquet in the node's DuckDB, interleaved: once at the declared rows
per unit (no unit exceeds it, so no window is needed) and once with ``max_rows_per_unit = 5``
(both queries rank each unit's rows).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from federation.query import parse_query
from federation.scenario import write_scenario
from nodes.config import load_node_config
from nodes.sources import DataSources
from nodes.validate import validate

QUERIES = {
    "count": "SELECT port, COUNT(*) AS n FROM declarations GROUP BY port",
    "count + sum": "SELECT port, COUNT(*) AS n, SUM(value) AS total FROM declarations GROUP BY port",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-bounding-"))
    paths = write_scenario(
        root, seed=3, rows=args.rows, coordinator="127.0.0.1:1", formats={"douane": "parquet"}
    )
    config = load_node_config(paths["douane"])
    sources = DataSources(config)
    print(
        f"declarations: {args.rows} rows, declared max_rows_per_unit {config.datasets['declarations'].max_rows_per_unit}"
    )
    try:
        for rows_per_unit in (0, 5):
            for name, sql in QUERIES.items():
                spec = parse_query(sql)
                spec.max_rows_per_unit = rows_per_unit
                spec.privacy.epsilon = 1.0
                plan = validate(spec, config)
                query, extra = [], []
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    sources.run(plan, units=False)
                    query.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    sources.diagnostics(plan)
                    extra.append(time.perf_counter() - started)
                q, d = statistics.median(query) * 1000, statistics.median(extra) * 1000
                limit = rows_per_unit or "declared"
                print(
                    f"{name}, rows per unit {limit}: query p50 {q:.1f} ms, bounding figures p50 {d:.1f} ms ({d / q:.2f}x)"
                )
    finally:
        sources.close()


if __name__ == "__main__":
    main()
