"""The ``federation`` console script.

``federation node start --config FILE [--quiet]`` runs the node without loading the command line
library (typer, rich, click): a node process then holds only what serving jobs needs (idle
memory, docs/benchmarks.md). Every other command, and ``node start`` with any other argument
(``--help`` among them), goes to the full command line in ``federation/cli.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from protocols.errors import FederationError


def _node_start(args: list[str]) -> tuple[Path, bool] | None:
    """``(config, quiet)`` when ``args`` are exactly a plain ``node start``; else ``None``."""
    if args[:2] != ["node", "start"]:
        return None
    config: Path | None = None
    quiet = False
    rest = args[2:]
    while rest:
        arg = rest.pop(0)
        if arg == "--quiet" and not quiet:
            quiet = True
        elif arg == "--config" and rest and config is None and not rest[0].startswith("-"):
            config = Path(rest.pop(0))
        elif arg.startswith("--config=") and config is None and len(arg) > len("--config="):
            config = Path(arg[len("--config=") :])
        else:
            return None
    return (config, quiet) if config is not None else None


def main() -> None:
    """Run the CLI; a plain ``node start`` without it. Errors as in ``federation.cli.main``: one
    line naming the rule, exit code 1; a bug gets one line and exit code 2."""
    plain = _node_start(sys.argv[1:])
    if plain is None:
        from federation.cli import main as cli_main

        cli_main()
        return
    from nodes.serve import serve

    try:
        serve(*plain)
    except FederationError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug still gets one line, never a stack trace
        if os.environ.get("FEDERATION_DEBUG"):
            raise
        print(
            f"error: internal error ({type(exc).__name__}); set FEDERATION_DEBUG=1 for details",
            file=sys.stderr,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
