"""The ``federation`` console script.

``federation node start --config FILE [--quiet]`` runs the node without loading the command line
library (typer, rich, click): a node process then holds only what serving jobs needs (idle
memory, docs/benchmarks.md). Every other command, and ``node start`` with any other argument
(``--help`` among them), goes to the full command line in ``federation/cli.py``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
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


def run_reporting(command: Callable[[], object], say: Callable[[str], None]) -> None:
    """Run ``command``. Every error a user can cause is a ``FederationError``: one line naming its
    rule through ``say``, exit code 1. Anything else is a bug: one line naming its type, exit code
    2, and the stack trace only with FEDERATION_DEBUG=1."""
    try:
        command()
    except FederationError as exc:
        say(f"error: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug still gets one line, never a stack trace
        if os.environ.get("FEDERATION_DEBUG"):
            raise
        say(f"error: internal error ({type(exc).__name__}); set FEDERATION_DEBUG=1 for details")
        sys.exit(2)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    """Run the CLI; a plain ``node start`` without it, its errors reported alike."""
    plain = _node_start(sys.argv[1:])
    if plain is None:
        from federation.cli import main as cli_main

        cli_main()
        return
    from nodes.serve import serve

    run_reporting(lambda: serve(*plain), _stderr)


if __name__ == "__main__":
    main()
