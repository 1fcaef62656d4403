"""``federation node start``: check the node, start it and serve until a signal.

Kept apart from the command line (typer, rich) so that a node process loads neither
(``federation/entry.py``; idle memory, docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def serve(config: Path, quiet: bool = False) -> None:
    """Start a node: it checks itself (as `node check`), dials out to the coordinator and serves jobs
    until stopped."""
    from nodes.check import ERROR, NodeCheckFailed, check_node, errors
    from nodes.config import load_node_config
    from nodes.daemon import NodeDaemon
    from nodes.prepare import has_start_reads, prepare_in_child

    setup_logging(not quiet)
    cfg = load_node_config(config)
    # File sources converted and counted, and the values to pre-blind read, in a child process:
    # the node opens no DuckDB database until its first job (idle memory, nodes/prepare.py).
    values = prepare_in_child(config) if has_start_reads(cfg) else None
    findings = check_node(cfg)
    for finding in findings:
        if finding.level != "ok":
            level = logging.ERROR if finding.level == ERROR else logging.WARNING
            logging.getLogger("federation.node").log(
                level, "%s: %s [rule: %s]", finding.subject, finding.message, finding.rule
            )
    if errors(findings):
        raise NodeCheckFailed(cfg, errors(findings))
    daemon = NodeDaemon(cfg, preblind_values=values)
    if daemon.console_server is not None and daemon.console is not None:
        # Printed once, to the terminal that started the node; never through the node's logger.
        print(
            f"officer's console at {daemon.console_server.url} - sign-in token (one use): "
            f"{daemon.console.token.current}\n  (a new token replaces it when used; read it from "
            f"{daemon.console.token.path})",
            file=sys.stderr,
            flush=True,
        )
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    worker = threading.Thread(target=daemon.run, daemon=True)
    worker.start()
    # Until a signal, or until the daemon gives up (the coordinator refused this node for good).
    while worker.is_alive() and not stop.wait(0.5):
        pass
    daemon.stop()
    worker.join(timeout=5)
    if daemon.fatal is not None:
        raise daemon.fatal
