"""File sources beyond memory: a node under a 1 GB DuckDB limit over a 200M-row Parquet file, and
the file sources against the old in-memory load on the same query.

    python -m bench.bench_scale_files [--rows 200000000] [--compare-rows 20000000] [--keep]

Two parts, in one run on one machine:

1. **Same query, three ways** (``--compare-rows`` rows, default 20M): the Douane declarations as
   Parquet and as CSV, answered by ``DataSources`` (Parquet read in place, ``parquet_convert_below =
   "0"``; CSV converted once into a DuckDB file) and by the old way, the file loaded into an in-memory DuckDB with the vocabulary
   mapped at load. Each runs in a fresh process; prints load time, query p50, the ratio to the
   in-memory p50, and the process's peak resident memory. The answers must be equal.
2. **A node over ``--rows`` rows** (default 200M): a coordinator and the Douane node as real
   processes, the node with ``duckdb_memory_limit = "1GB"`` over a Parquet file generated here
   (DuckDB COPY; deleted afterwards unless ``--keep``). Prints the file size, the time until the
   node connected (it scans the file twice at first start: ``node check`` and the per-version counts),
   a DP query's p50, the node's resident and peak resident memory, and the same after a restart,
   which reuses the counts.

Units have 5 rows each (``max_rows_per_unit`` is 6), so no query truncates; the overlap offline phase
is off (it would blind a million identifiers of the big file at idle).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import statistics
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import duckdb
import tomli_w

QUERY = (
    "SELECT port, COUNT(*) AS n, SUM(value) AS total FROM declarations "
    "WHERE year = 2023 AND inspected = 1 GROUP BY port"
)
GOODS = ["HS2914", "HS2932", "HS85", "HS08", "HS62", "HS84", "HS87", "HS99"]
COUNTRIES = ["CN", "BR", "CO", "EC", "US", "TR", "IN", "MA", "DE", "BE"]
ROWS_PER_UNIT = 5


def generate(path: Path, rows: int, memory_limit: str = "2GB") -> float:
    """Write ``rows`` declarations as Parquet or CSV (by suffix) with DuckDB; seconds taken."""
    started = time.perf_counter()
    units = max(rows // ROWS_PER_UNIT, 1)
    select = f"""
        SELECT CAST(10000000 + (i % {units}) AS VARCHAR) AS kvk_nummer,
               ['RTM', 'AMS', 'VLI', 'MOE'][CAST(1 + hash(i) % 4 AS BIGINT)] AS haven,
               {GOODS}[CAST(1 + hash(i + 1) % {len(GOODS)} AS BIGINT)] AS goederencategorie,
               {COUNTRIES}[CAST(1 + hash(i + 2) % {len(COUNTRIES)} AS BIGINT)] AS land_herkomst,
               round((hash(i + 3) % 200000000) / 100.0, 2) AS aangegeven_waarde,
               CAST(hash(i + 4) % 10 = 0 AS INTEGER) AS gecontroleerd,
               CAST(hash(i + 5) % 50 = 0 AS INTEGER) AS inbeslagname,
               CAST(2019 + hash(i + 6) % 6 AS INTEGER) AS jaar,
               DATE '2019-01-01' + CAST(hash(i + 7) % 2190 AS INTEGER) AS datum
        FROM range({rows}) t(i)"""
    options = "FORMAT parquet, COMPRESSION zstd" if path.suffix == ".parquet" else "FORMAT csv, HEADER"
    con = duckdb.connect(config={"memory_limit": memory_limit, "preserve_insertion_order": False})
    con.execute("SET enable_progress_bar = false")
    con.execute(f"COPY ({select}) TO '{path}' ({options})")
    con.close()
    return time.perf_counter() - started


def write_node(root: Path, source: Path, address: str, memory_limit: str) -> dict[str, Path]:
    """The scenario's coordinator and Douane node, the node serving only ``source`` as declarations."""
    from federation.scenario import write_scenario

    paths = write_scenario(root, seed=7, rows=1000, coordinator=address)
    raw = tomllib.loads(paths["douane"].read_text())
    raw["node"]["duckdb_memory_limit"] = memory_limit
    raw["node"]["parquet_convert_below"] = "0"  # read in place (the default threshold would too)
    raw["policy"].update({"overlap_preblind": False, "max_epsilon": 10.0})
    declarations = next(d for d in raw["datasets"] if d["name"] == "declarations")
    declarations["source"] = {"kind": source.suffix.lstrip("."), "path": str(source)}
    raw["datasets"] = [declarations]
    paths["douane"].write_text(tomli_w.dumps(raw))
    coordinator = tomllib.loads(paths["coordinator"].read_text())
    coordinator["coordinator"]["max_timeout_seconds"] = 3600.0  # a scan of the big file takes minutes
    paths["coordinator"].write_text(tomli_w.dumps(coordinator))
    return paths


def _memory(pid: str | int = "self") -> dict[str, float]:
    """Resident and peak resident memory of a process, in MB (Linux /proc)."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


# ---------------------------------------------------------------------------- part 1


def _variant(kind: str, source: str, state: str, repeat: int, out: Any) -> None:
    """One way of answering, in its own process: load, then ``repeat`` timed queries."""
    from nodes.check import category_columns, unmapped_sql
    from nodes.config import load_node_config
    from nodes.sources import DataSources
    from nodes.sqlgen import DUCKDB, DUCKDB_PREMAPPED, SqlBuilder, build_sql, premapped_name, quote_ident

    config = load_node_config(Path(state) / "douane.toml")
    from federation.query import parse_query
    from nodes.validate import validate

    plan = validate(parse_query(QUERY), config)
    started = time.perf_counter()
    if kind == "in-memory":
        # What a node did before: the whole file in an in-memory DuckDB, codes mapped at load.
        dataset = plan.dataset
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
        scan = "read_parquet(?)" if source.endswith(".parquet") else "read_csv(?, header=true, types=?)"
        params: list[Any] = [source] if source.endswith(".parquet") else [source, {"kvk_nummer": "VARCHAR"}]
        mapped = [c for c in dataset.columns.values() if c.kind == "category" and c.codes]
        builder = SqlBuilder(DUCKDB)
        extra = "".join(f", {builder.shared(c)} AS {quote_ident(premapped_name(c))}" for c in mapped)
        con.execute(f"CREATE TABLE ds_declarations AS SELECT *{extra} FROM {scan}", builder.params + params)
        # ... and counted at load, as now: rows per unit against the bound, unmapped values.
        con.execute("SELECT max(c) FROM (SELECT count(*) AS c FROM ds_declarations GROUP BY kvk_nummer)")
        counted, counted_params = unmapped_sql(category_columns(dataset), DUCKDB, "ds_declarations")
        con.execute(counted, counted_params).fetchall()
        sql, sql_params = build_sql(plan, DUCKDB_PREMAPPED, truncate=False)
        load = time.perf_counter() - started

        def run() -> list[tuple[Any, ...]]:
            return con.execute(sql, sql_params).fetchall()
    else:
        sources = DataSources(config)
        load = time.perf_counter() - started

        def run() -> list[tuple[Any, ...]]:
            return sources.run(plan)

    # Sums of doubles in another order differ in the last bits: compare to the cent.
    answer = sorted(
        (tuple(round(v, 2) if isinstance(v, float) else v for v in row) for row in run()), key=str
    )
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    out.put({"load": load, "p50": statistics.median(times), "answer": repr(answer), **_memory()})


def compare(root: Path, rows: int, repeat: int, memory_limit: str) -> None:
    print(f"part 1: {QUERY}")
    ctx = multiprocessing.get_context("spawn")
    results: dict[str, dict[str, Any]] = {}
    for suffix in ("parquet", "csv"):
        source = root / f"compare.{suffix}"
        seconds = generate(source, rows)
        print(
            f"  {rows:,} rows as {suffix}: {source.stat().st_size / 1e6:,.0f} MB, written in {seconds:.1f}s"
        )
        for kind in ("in-memory", f"{suffix} file", f"{suffix} file, restart"):
            state = root / f"state-{suffix}"
            if kind.endswith("file"):
                shutil.rmtree(state, ignore_errors=True)
            state.mkdir(exist_ok=True)
            (state / "douane.toml").write_text(_compare_config(state, source, memory_limit))
            out = ctx.Queue()
            proc = ctx.Process(target=_variant, args=(kind, str(source), str(state), repeat, out))
            proc.start()
            results[f"{suffix}: {kind}"] = out.get(timeout=3600)
            proc.join()
        source.unlink()
    base: dict[str, float] = {}
    print(f"  {'way':32s}{'load':>9s}{'query p50':>11s}{'ratio':>8s}{'peak RSS':>10s}")
    for name, r in results.items():
        suffix = name.split(":")[0]
        if name.endswith("in-memory"):
            base[suffix] = r["p50"]
            reference = r["answer"]
        assert r["answer"] == reference, f"{name}: answer differs from the in-memory load"
        print(
            f"  {name:32s}{r['load']:8.1f}s{r['p50'] * 1e3:9.0f}ms{r['p50'] / base[suffix]:7.2f}x"
            f"{r['VmHWM']:8.0f}MB"
        )
    print(f"  answers equal across all ways; file sources under memory_limit {memory_limit}")


def _compare_config(state: Path, source: Path, memory_limit: str) -> str:
    from federation.scenario import write_scenario

    kit = state / "scenario"
    if not kit.exists():
        write_scenario(kit, seed=7, rows=1000, coordinator="127.0.0.1:1", tls=False)
    raw = tomllib.loads((kit / "nodes" / "douane.toml").read_text())
    declarations = next(d for d in raw["datasets"] if d["name"] == "declarations")
    declarations["source"] = {"kind": source.suffix.lstrip("."), "path": str(source)}
    raw["datasets"] = [declarations]
    raw["node"] = {"id": "douane", "state_dir": str(state / "node"), "duckdb_memory_limit": memory_limit}
    raw["node"]["insecure"] = True
    # The way measured here is Parquet read in place, whatever the file's size.
    raw["node"]["parquet_convert_below"] = "0"
    return tomli_w.dumps(raw)


# ---------------------------------------------------------------------------- part 2


def node_run(root: Path, rows: int, repeat: int, memory_limit: str) -> None:
    from federation.client import Client
    from federation.processes import LocalFederation, free_port

    source = root / "declarations.parquet"
    seconds = generate(source, rows)
    print(f"part 2: {rows:,} rows, Parquet {source.stat().st_size / 1e9:.2f} GB, written in {seconds:.0f}s")
    address = f"127.0.0.1:{free_port()}"
    paths = write_node(root / "fed", source, address, memory_limit)
    for attempt in ("first start", "restart"):
        procs = LocalFederation(
            coordinator_config=paths["coordinator"],
            node_configs={"douane": paths["douane"]},
            address=address,
            log_dir=root / "logs",
            tls_dir=root / "fed" / "pki" / "kits" / "analyst",
        )
        started = time.perf_counter()
        procs.start(timeout=3600)
        connected = time.perf_counter() - started
        try:
            pid = procs.procs["douane"].pid
            idle = _memory(pid)
            times = []
            with Client(address, tls_dir=root / "fed" / "pki" / "kits" / "analyst") as fed:
                for _ in range(repeat):
                    t = time.perf_counter()
                    df = fed.query(QUERY, epsilon=1.0, timeout=3600)
                    times.append(time.perf_counter() - t)
            after = _memory(pid)
        finally:
            procs.stop_all()
        print(
            f"  {attempt}: connected after {connected:.0f}s (RSS {idle['VmRSS']:.0f} MB); "
            f"DP query p50 {statistics.median(times):.1f}s over {repeat}; node RSS {after['VmRSS']:.0f} MB, "
            f"peak {after['VmHWM']:.0f} MB; duckdb_memory_limit {memory_limit}"
        )
    print(f"  answer (noisy): {json.dumps(df.to_dict(orient='records'), default=str)[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000_000, help="rows of the node's Parquet source")
    parser.add_argument(
        "--compare-rows", type=int, default=20_000_000, help="rows for the same-query comparison"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--memory-limit", default="1GB")
    parser.add_argument("--skip-node", action="store_true", help="part 1 only")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-files-", dir="/work" if Path("/work").is_dir() else None))
    print(f"data under {root} ({shutil.disk_usage(root).free / 1e9:.0f} GB free)")
    try:
        compare(root, args.compare_rows, args.repeat, args.memory_limit)
        if not args.skip_node:
            node_run(root, args.rows, args.repeat, args.memory_limit)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
