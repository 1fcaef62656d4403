"""A node's start-up reads of its file sources, in a short-lived child process.

Loading a file source opens a DuckDB database to convert and count it, and the overlap offline
phase reads each pre-blinded column's distinct values; a DuckDB database that has been opened
leaves the engine's code and threads in the process for good (about 35 MB resident,
docs/benchmarks.md, "Node memory at idle"). ``federation node start`` therefore runs these reads
in a child process first: it converts and counts every exposed file source (kept in the node's
state folder, as the node itself would) and sends back the distinct values to pre-blind from
them (the node reads those of PostgreSQL and Spark sources itself). The
node then finds every version counted, opens each source's database on its first query, and
blinds the values itself (nodes/preblind.py). The child holds the node's state lock while it
runs, so it never writes beside a running node. If it fails, the node does the same work
itself and reports what went wrong.

    python -m nodes.prepare <node config>     (the child; writes its answer to stdout)
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nodes.config import NodeConfig

log = logging.getLogger("federation.node")

Values = dict[tuple[str, str], list[Any]]
PR_SET_PDEATHSIG = 1  # prctl(2)


def file_config(config: NodeConfig) -> NodeConfig:
    """The node's config with its file sources only: the child opens DuckDB and nothing else.

    A PostgreSQL or Spark source gains nothing from being read in a child (the node opens its
    connection or session anyway, and a local Spark session would start a second JVM), so the
    node reads those itself.
    """
    from nodes.sources import FILE_KINDS

    files = {name: d for name, d in config.datasets.items() if d.exposed and d.source.kind in FILE_KINDS}
    return dataclasses.replace(config, datasets=files)


def has_start_reads(config: NodeConfig) -> bool:
    """Whether the node has a file source for the child to convert, count or read ahead."""
    return bool(file_config(config).datasets)


def prepare_in_child(config_path: Path) -> Values | None:
    """Run the start-up reads in a child process; the values to pre-blind, or ``None`` if it failed."""
    parent = os.getpid()

    def die_with_parent() -> None:
        # Linux: a node stopped (or killed) while the child runs takes the child with it.
        try:
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    done = subprocess.run(
        [sys.executable, "-m", "nodes.prepare", str(config_path)],
        capture_output=True,
        check=False,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - runs before any node thread is started
    )
    if done.returncode != 0:
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        log.warning(
            "start-up reads in a child process failed (%s); the node does them itself", *last or ["?"]
        )
        return None
    values: Values = pickle.loads(done.stdout)  # our own child's answer, over a pipe
    return values


def _read(config_path: Path) -> Values:
    from nodes.config import load_node_config
    from nodes.overlap import all_ids
    from nodes.preblind import preblind_columns
    from nodes.sources import DataSources
    from nodes.state_lock import StateLock

    config = file_config(load_node_config(config_path))
    lock = StateLock(config.state_dir, config.node_id).acquire()
    try:
        sources = DataSources(config)
        try:
            return {(d, c): all_ids(sources, config.datasets[d], c) for d, c in preblind_columns(config)}
        finally:
            sources.close()
    finally:
        lock.release()


def main() -> None:
    values = _read(Path(sys.argv[1]))
    sys.stdout.buffer.write(pickle.dumps(values))


if __name__ == "__main__":
    main()
