"""A federation whose node cannot start stops what did start: no coordinator is left running."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.errors import FederationError
from tests.integration.conftest import start_federation


def _running_with(config: Path) -> list[int]:
    """Pids of live processes whose command line names ``config``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                status = (proc / "status").read_text()
            except OSError:
                continue
            if str(config).encode() in cmdline and "State:\tZ" not in status:
                pids.append(int(proc.name))
    return pids


def test_a_node_that_cannot_start_leaves_no_process_behind(
    tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str
) -> None:
    written: dict[str, Path] = {}

    def break_kmar(paths: dict[str, Path]) -> None:
        written.update(paths)
        paths["kmar"].write_text("[node\n")  # not TOML: the node exits at once

    with pytest.raises(FederationError) as refused:
        start_federation(
            tmp_path_factory.mktemp("failed-start"), postgres_dsn, nodes=["douane", "kmar"], edit=break_kmar
        )
    assert refused.value.rule == "startup_failed" and "kmar" in str(refused.value)
    assert _running_with(written["coordinator"]) == []
    assert _running_with(written["douane"]) == []
