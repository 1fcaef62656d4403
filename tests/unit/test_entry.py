"""The console script runs a plain ``node start`` without the command-line library; anything else
goes to the full command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from federation.entry import _node_start


@pytest.mark.parametrize(
    ("args", "plain"),
    [
        (["node", "start", "--config", "n.toml"], (Path("n.toml"), False)),
        (["node", "start", "--quiet", "--config=n.toml"], (Path("n.toml"), True)),
        (["node", "start", "--config", "n.toml", "--help"], None),
        (["node", "start"], None),
        (["node", "start", "--config"], None),
        (["node", "check", "--config", "n.toml"], None),
        (["node", "start", "--config", "a.toml", "--config", "b.toml"], None),
    ],
)
def test_only_a_plain_node_start_skips_the_command_line(
    args: list[str], plain: tuple[Path, bool] | None
) -> None:
    assert _node_start(args) == plain


def test_plain_node_start_reports_an_error_in_one_line_without_the_cli(tmp_path: Path) -> None:
    probe = (
        "import sys, runpy; sys.argv = ['federation', 'node', 'start', '--config', sys.argv[1]]\n"
        "try:\n    runpy.run_module('federation.entry', run_name='__main__')\n"
        "finally:\n    print(sorted(m for m in ('typer', 'rich', 'click') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: config file not found: {tmp_path / 'missing.toml'} [rule: config_missing]"
    ]
    assert done.stdout.strip() == "[]"
