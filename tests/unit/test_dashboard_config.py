"""The coordinator's ``[console]`` table: loopback by default, strict like every table."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from coordinator.config import load_coordinator_config
from federation.processes import free_port
from protocols.errors import ConfigError
from protocols.web.settings import DEFAULT_COORDINATOR_PORT


def _write(tmp_path: Path, console: dict | None) -> Path:
    document: dict = {"coordinator": {"insecure": True, "state_dir": "state"}}
    if console is not None:
        document["console"] = console
    path = tmp_path / "coordinator.toml"
    path.write_text(tomli_w.dumps(document))
    return path


def test_no_console_table_serves_no_dashboard(tmp_path: Path) -> None:
    assert load_coordinator_config(_write(tmp_path, None)).console is None


def test_an_empty_console_table_listens_on_loopback(tmp_path: Path) -> None:
    settings = load_coordinator_config(_write(tmp_path, {})).console
    assert settings is not None and settings.listen == f"127.0.0.1:{DEFAULT_COORDINATOR_PORT}"
    assert not settings.https and not settings.remote


@pytest.mark.parametrize(
    ("console", "rule"),
    [
        ({"listen": "0.0.0.0:8480"}, "console_listen"),
        ({"listen": "0.0.0.0:8480", "remote": True}, "console_listen"),  # remote needs TLS
        ({"listen": "127.0.0.1:8480", "unknown_key": 1}, "config"),
        ({"session_minutes": -1}, "config"),
    ],
)
def test_a_console_table_that_would_expose_the_dashboard_is_refused(
    tmp_path: Path, console: dict, rule: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_coordinator_config(_write(tmp_path, console))
    assert refused.value.rule == rule and "[console]" in refused.value.message


def test_a_taken_console_port_stops_the_start_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        document = {
            "coordinator": {"insecure": True, "state_dir": "state", "listen": f"127.0.0.1:{free_port()}"},
            "console": {"listen": f"127.0.0.1:{port}"},
        }
        config = tmp_path / "coordinator.toml"
        config.write_text(tomli_w.dumps(document))
        started = subprocess.run(
            [
                sys.executable,
                "-m",
                "federation.cli",
                "coordinator",
                "start",
                "--config",
                str(config),
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert started.returncode == 1, started.stderr
    assert "rule: console_listen" in started.stderr and "Traceback" not in started.stderr
    assert not (tmp_path / "state" / "console-token").exists()
