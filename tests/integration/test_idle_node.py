"""An idle node holds only what serving jobs needs: the SDK, OpenDP, numpy, Paillier and the
metrics library load on first use, and its file sources' DuckDB databases open on their first
query, so a hundred nodes fit on one machine (docs/benchmarks.md).

The node runs in its own process, started the way ``federation node start`` starts it, against a
real coordinator over mutual TLS; the process reports its loaded modules and memory once it is
connected and its offline overlap phase is done.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.config import load_coordinator_config
from coordinator.service import Coordinator
from federation.processes import free_port
from federation.scenario import write_scenario

# Modules a node loads only when a job needs them: the analyst SDK (pandas, pyarrow, sqlglot),
# OpenDP (noise, accounting), phe (overlap sums), prometheus_client (metrics_listen unset), psycopg
# (no PostgreSQL source), scipy (model fits), pyspark (no Spark source), numpy (secure and model
# jobs, the differencing check of exact releases, the overlap shuffle).
LAZY = (
    "numpy",
    "pandas",
    "pyarrow",
    "sqlglot",
    "opendp",
    "phe",
    "gmpy2",
    "prometheus_client",
    "psycopg",
    "starlette",
    "uvicorn",
    "jinja2",  # the officer's console loads them only when [console] is set
    "typer",
    "rich",
    "click",  # the command line: `node start` runs without it (federation/entry.py)
)
# An idle node measured at about 90 MB resident (VmRSS, shared library pages included) and 40 MB
# private (RssAnon); the margins hold on a loaded machine.
MAX_RESIDENT_MB = 115
MAX_PRIVATE_MB = 60

NODE = """
import json, sys, threading, time
from pathlib import Path

import federation.entry  # the console script's module, as `federation node start` loads it
from nodes.check import check_node, errors
from nodes.config import load_node_config
from nodes.daemon import NodeDaemon

from nodes.prepare import prepare_in_child

config = load_node_config(Path(sys.argv[1]))
values = prepare_in_child(Path(sys.argv[1]))  # as `federation node start` does
assert values is not None
assert not errors(check_node(config))
daemon = NodeDaemon(config, preblind_values=values)
worker = threading.Thread(target=daemon.run, daemon=True)
worker.start()
connected = daemon.connected.wait(60)
ready = daemon.overlap.preblinder.wait_ready(60)
time.sleep(1.0)
status = {}
for line in Path("/proc/self/status").read_text().splitlines():
    key, _, value = line.partition(":")
    if key in ("VmRSS", "RssAnon", "RssFile"):
        status[key] = int(value.split()[0]) // 1024
loaded = sorted({name.split(".")[0] for name in sys.modules})
# The first query after idle opens the source's database and answers as DuckDB does over the file.
import duckdb
from nodes.sqlgen import table_name
dataset = config.datasets["cases"]
sql = f"SELECT feitcategorie, count(*) FROM {table_name(dataset)} GROUP BY 1 ORDER BY 1"
first = [list(row) for row in daemon.ctx.sources.fetch(dataset, sql, [])]
scan = "SELECT feitcategorie, count(*) FROM read_parquet(?) GROUP BY 1 ORDER BY 1"
direct = [list(row) for row in duckdb.connect().execute(scan, [str(dataset.source.path)]).fetchall()]
print(json.dumps({"connected": connected, "ready": ready, "memory": status, "modules": loaded,
                  "first": first, "direct": direct}))
daemon.stop()
worker.join(timeout=5)
"""


@pytest.fixture(scope="module")
def node_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("idle")
    address = f"127.0.0.1:{free_port()}"
    paths = write_scenario(root, seed=3, rows=1000, coordinator=address, formats={"om": "parquet"})
    coordinator = Coordinator(load_coordinator_config(paths["coordinator"]))
    coordinator.start()
    try:
        yield paths["om"]
    finally:
        coordinator.stop()


def test_idle_node_loads_no_job_only_module_and_stays_small(node_config: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", NODE, str(node_config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["connected"] and report["ready"], report
    assert not set(LAZY) & set(report["modules"]), sorted(set(LAZY) & set(report["modules"]))
    assert "duckdb" in report["modules"] and "grpc" in report["modules"]  # it does serve
    assert report["memory"]["VmRSS"] <= MAX_RESIDENT_MB, report["memory"]
    assert report["memory"]["RssAnon"] <= MAX_PRIVATE_MB, report["memory"]
    assert report["first"] and report["first"] == report["direct"], report
