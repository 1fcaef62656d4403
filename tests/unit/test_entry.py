"""The console script runs a plain ``node start`` without the command-line library; anything else
goes to the full command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from federation.entry import _node_start, run_reporting
from protocols.errors import FederationError


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


def _fails(error: BaseException) -> None:
    raise error


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (
            FederationError("config", "node om: no such file"),
            1,
            "error: node om: no such file [rule: config]",
        ),
        (ValueError("secret detail"), 2, "error: internal error (ValueError); set FEDERATION_DEBUG=1"),
    ],
)
def test_errors_are_one_line_and_an_exit_code(
    error: BaseException, code: int, line: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEDERATION_DEBUG", raising=False)
    said: list[str] = []
    with pytest.raises(SystemExit) as exit_:
        run_reporting(lambda: _fails(error), said.append)
    assert exit_.value.code == code
    assert len(said) == 1 and said[0].startswith(line), said
    assert "secret detail" not in said[0]  # a bug's message may quote data: its type only
