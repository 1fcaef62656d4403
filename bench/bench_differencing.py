"""What the differencing check costs an exact release, against the same node without it.

    python -m bench.bench_differencing [--rows 200000] [--repeat 15] [--quick]

One node's ``signals`` (Parquet, DuckDB) served by two node contexts in this process, both in exact
mode: one with the check off (``differencing_history = 0``, the baseline), one with it on. Each
query goes through the node's job router (validate, compute, protect, check, audit). Three cases:

* baseline: the query on the node without the check;
* new: a query not on record (a different filter each time): fingerprint, every contributing row
  read and hashed, and the comparison with up to 100 earlier releases;
* repeat: the same query again over unchanged rows: found on record by its fingerprint, which a
  file source's version computes once per query (measured interleaved with the baseline).

Prints p50 latency per case and the ratios to the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.signals import write_signals
from federation.query import parse_query
from nodes.config import load_node_config
from nodes.context import NodeContext
from nodes.daemon import node_router
from nodes.router import JobRouter
from protocols import federation_pb2 as pb

NODE = "douane"
GROUPED = "SELECT region, phenomenon, COUNT(*) AS n FROM signals WHERE year >= 2021{extra} GROUP BY region, phenomenon"


def _router(path: Path, state: Path, history: int) -> tuple[NodeContext, JobRouter]:
    text = path.read_text().replace("[policy]\n", f"[policy]\ndifferencing_history = {history}\n", 1)
    text = text.replace(f'state_dir = "../state/{NODE}"', f'state_dir = "{state}"', 1)
    copy = path.with_name(f"{path.stem}-{history}.toml")
    copy.write_text(text)
    ctx = NodeContext.open(load_node_config(copy))
    return ctx, node_router(ctx)


def _timed(router: JobRouter, sql: str) -> tuple[float, str]:
    job = pb.JobRequest(job_id=uuid.uuid4().hex, query=parse_query(sql), requested_by="bench")
    t0 = time.perf_counter()
    response = router.handle(job)
    elapsed = time.perf_counter() - t0
    outcome = response.WhichOneof("outcome") or ""
    return elapsed, outcome if outcome == "result" else response.refusal.rule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the node's signals")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="50k rows, 8 repeats")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeat = 50_000, 8

    root = Path(tempfile.mkdtemp(prefix="bench-differencing-"))
    _, paths = write_signals(root, args.rows, "127.0.0.1:1")
    base_ctx, base = _router(paths[NODE], root / "state-off", 0)
    on_ctx, guarded = _router(paths[NODE], root / "state-on", 100)
    columns = on_ctx.config.datasets["signals"].columns
    drops = [f" AND {c} <> '{v}'" for c in ("region", "phenomenon") for v in columns[c].domain]
    try:
        sql = GROUPED.format(extra="")
        _timed(base, sql), _timed(guarded, sql)  # warm both engines; the guarded one records it
        baseline, repeat = [], []
        for _ in range(args.repeat):  # interleaved, so both see the same machine load
            baseline.append(_timed(base, sql)[0])
            repeat.append(_timed(guarded, sql)[0])
        # A different filter each time: never a repeat, always the full check.
        new, outcomes = [], []
        for extra in drops[: args.repeat]:
            elapsed, outcome = _timed(guarded, GROUPED.format(extra=extra))
            new.append(elapsed)
            outcomes.append(outcome)
    finally:
        base_ctx.close()
        on_ctx.close()

    b, r, n = (statistics.median(v) * 1000 for v in (baseline, repeat, new))
    print(f"rows: {args.rows:,} per node ({NODE}.signals, Parquet), repeats: {args.repeat}")
    print("| case | p50 (ms) | ratio to baseline |")
    print("|---|---|---|")
    print(f"| baseline (check off) | {b:.1f} | 1.00 |")
    print(f"| repeat of a recorded query | {r:.1f} | {r / b:.2f} |")
    print(f"| new query (full check, history up to 100) | {n:.1f} | {n / b:.2f} |")
    print(f"new-query outcomes: {sorted(set(outcomes))}")


if __name__ == "__main__":
    main()
