"""What the spread, percentile and derived-key releases cost a node, against a SUM on the same rows.

    python -m bench.bench_statistics [--rows 200000] [--repeat 9] [--quick]

One node's declarations (Parquet, DuckDB, unit, port, value, date), in this process, under DP at
epsilon 1, without the bounding figures: each query runs validate -> compute -> protect. The baseline is
``SELECT port, SUM(value)``; the others add VARIANCE (one more SQL sum), MEDIAN (64 bin counts per
group), and group on FLOOR bins or DATE_TRUNC months instead of the port. Prints p50 latency per
query and its ratio to the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from federation.query import parse_query
from nodes.config import load_node_config
from nodes.protect import Budget, protect
from nodes.release import compute
from nodes.sources import DataSources
from nodes.validate import validate

QUERIES = {
    "baseline SUM": "SELECT port, SUM(value) AS total FROM declarations GROUP BY port",
    "VARIANCE": "SELECT port, VARIANCE(value) AS v FROM declarations GROUP BY port",
    "MEDIAN": "SELECT port, MEDIAN(value) AS m FROM declarations GROUP BY port",
    "FLOOR bins": "SELECT FLOOR(value / 50000) * 50000 AS bin, SUM(value) AS total FROM declarations GROUP BY bin",
    "DATE_TRUNC months": "SELECT DATE_TRUNC('month', date) AS m, SUM(value) AS total FROM declarations GROUP BY m",
}

CONFIG = """
[node]
id = "douane"
state_dir = "state"

[policy]
min_group_size = 10

[[datasets]]
name = "declarations"
privacy_unit = "company"
max_rows_per_unit = 20

[datasets.source]
kind = "parquet"
path = "declarations.parquet"

[[datasets.columns]]
name = "company"
kind = "identifier"
id_type = "kvk"

[[datasets.columns]]
name = "port"
kind = "category"
domain = ["Rotterdam", "Amsterdam", "Vlissingen", "Moerdijk"]

[[datasets.columns]]
name = "value"
kind = "numeric"
bounds = [0, 2000000]

[[datasets.columns]]
name = "date"
kind = "date"
range = ["2019-01-01", "2024-12-31"]
"""


def _write(folder: Path, rows: int) -> Path:
    rng = np.random.default_rng(3)
    days = rng.integers(0, 6 * 365, rows)
    frame = pd.DataFrame(
        {
            "company": [f"{10_000_000 + u:08d}" for u in rng.integers(0, rows // 8, rows)],
            "port": rng.choice(["Rotterdam", "Amsterdam", "Vlissingen", "Moerdijk"], rows),
            "value": np.minimum(rng.lognormal(10.5, 1.2, rows), 2_000_000.0),
            "date": pd.Timestamp("2019-01-01") + pd.to_timedelta(days, unit="D"),
        }
    )
    frame.to_parquet(folder / "declarations.parquet", index=False)
    path = folder / "node.toml"
    path.write_text(CONFIG)
    return path


def _p50(sources: DataSources, sql: str, repeat: int) -> float:
    config = sources.config
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        spec = parse_query(sql)
        spec.no_diagnostics = True  # the same figures for every query: only the statistic differs
        plan = validate(spec, config)
        budget = Budget(epsilon=1.0)
        protect(plan, compute(plan, sources, exact_release=False), budget)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="50k rows, 5 repeats")
    args = parser.parse_args()
    rows, repeat = (50_000, 5) if args.quick else (args.rows, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        sources = DataSources(load_node_config(_write(Path(tmp), rows)))
        try:
            for sql in QUERIES.values():  # warm the engine and the file cache once
                _p50(sources, sql, 1)
            results = {name: _p50(sources, sql, repeat) for name, sql in QUERIES.items()}
        finally:
            sources.close()
    base = results["baseline SUM"]
    print(f"{rows} rows, epsilon 1, p50 of {repeat} runs (validate + compute + protect)")
    for name, seconds in results.items():
        print(f"  {name:<18} {seconds * 1000:8.1f} ms   x{seconds / base:5.2f}")


if __name__ == "__main__":
    main()
